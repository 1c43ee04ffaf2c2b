"""A device profile: a calibration snapshot of a real device, from which noise models are built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class QubitCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    t1_us: float
    t2_us: float
    readout_p1_given_0: float
    readout_p0_given_1: float
    readout_ns: float


class GateCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gate: str
    qubits: list[int]
    error: float
    duration_ns: float


class DeviceProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    calibrated_at: str
    basis_gates: list[str]
    num_qubits: int
    coupling_map: list[tuple[int, int]]
    qubits: list[QubitCalibration]
    gates: list[GateCalibration]
