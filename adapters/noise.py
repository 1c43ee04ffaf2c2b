"""Noise models built from a device profile: the standard calibration-derived device model.

Each calibrated gate gets thermal relaxation (T1/T2 over the gate's duration) composed with a
depolarizing error sized so that the gate's total average error equals the calibrated error;
every qubit gets its readout assignment error; an optional extra depolarizing error is added on
top of every physical 1- and 2-qubit gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

from qiskit.quantum_info import average_gate_fidelity
from qiskit_aer.noise import (
    NoiseModel,
    QuantumError,
    ReadoutError,
    depolarizing_error,
    thermal_relaxation_error,
)

from adapters.profiles import load_profile
from schemas.profile import DeviceProfile, GateCalibration, QubitCalibration
from schemas.request import DepolarizingNoise

# rz is a virtual frame change on the devices we model: no pulse, no duration, no error.
VIRTUAL_GATES = frozenset({"rz"})
# Profiles rarely calibrate `id`; on IBM devices it is one single-qubit pulse slot, so it
# carries the calibration of `sx` on the same qubit.
ID_FALLBACK_GATE = "sx"


def build_noise_model(profile: DeviceProfile, extra: DepolarizingNoise | None = None) -> NoiseModel:
    """A NoiseModel for `profile`, plus `extra` depolarizing error on every physical gate."""
    model = NoiseModel(basis_gates=list(profile.basis_gates))
    for gate in calibrated_gates(profile):
        error = gate_error(gate, profile.qubits)
        error = _compose(error, _extra_error(len(gate.qubits), extra))
        if error is not None:
            model.add_quantum_error(error, gate.gate, gate.qubits)
    for index, qubit in enumerate(profile.qubits):
        model.add_readout_error(readout_error(qubit), [index])
    return model


@lru_cache(maxsize=16)
def cached_noise_model(profile_name: str, extra: DepolarizingNoise | None) -> NoiseModel:
    """Noise models are costly to build and immutable in use: one per (profile, extra)."""
    return build_noise_model(load_profile(profile_name), extra)


def readout_error(qubit: QubitCalibration) -> ReadoutError:
    p1_given_0, p0_given_1 = qubit.readout_p1_given_0, qubit.readout_p0_given_1
    return ReadoutError([[1 - p1_given_0, p1_given_0], [p0_given_1, 1 - p0_given_1]])


def thermal_error(qubits: Iterable[QubitCalibration], duration_ns: float) -> QuantumError | None:
    """Independent T1/T2 relaxation of each qubit over the gate time (qarg 0 first)."""
    if duration_ns <= 0:
        return None
    error: QuantumError | None = None
    for qubit in qubits:
        t1_ns = qubit.t1_us * 1e3
        # T2 > 2*T1 is unphysical (usually a fit artefact); Aer refuses it.
        t2_ns = min(qubit.t2_us * 1e3, 2 * t1_ns)
        single = thermal_relaxation_error(t1_ns, t2_ns, duration_ns)
        error = single if error is None else error.expand(single)
    return error


def depolarizing_for_target(
    target_error: float, num_qubits: int, relax: QuantumError | None
) -> QuantumError | None:
    """The depolarizing channel that, composed with `relax`, has average error `target_error`.

    With E_dep = (1-p) I + p D, F(E_dep . E_relax) = F_r - p (d F_r - 1) / d, so
    p = d (F_r - F) / (d F_r - 1). When relaxation alone already exceeds the calibrated error
    no depolarizing term is added.
    """
    dim = 2**num_qubits
    relax_fid = 1.0 if relax is None else float(average_gate_fidelity(relax))
    target_error = min(target_error, dim / (dim + 1))
    if target_error <= 1 - relax_fid:
        return None
    param = dim * (relax_fid - (1 - target_error)) / (dim * relax_fid - 1)
    return depolarizing_error(min(param, 4**num_qubits / (4**num_qubits - 1)), num_qubits)


def gate_error(gate: GateCalibration, qubits: list[QubitCalibration]) -> QuantumError | None:
    relax = thermal_error((qubits[q] for q in gate.qubits), gate.duration_ns)
    return _compose(depolarizing_for_target(gate.error, len(gate.qubits), relax), relax)


def _extra_error(num_qubits: int, extra: DepolarizingNoise | None) -> QuantumError | None:
    """`extra` gives the probability of a non-identity Pauli (full depolarizing at 3/4, 15/16);
    Aer's parameter is the weight of the completely depolarizing channel."""
    if extra is None:
        return None
    probability = {1: extra.one_qubit, 2: extra.two_qubit}.get(num_qubits, 0.0)
    if probability <= 0:
        return None
    dim_sq = 4**num_qubits
    return depolarizing_error(probability * dim_sq / (dim_sq - 1), num_qubits)


def _compose(first: QuantumError | None, then: QuantumError | None) -> QuantumError | None:
    if first is None:
        return then
    if then is None:
        return first
    return first.compose(then)


def calibrated_gates(profile: DeviceProfile) -> list[GateCalibration]:
    """The profile's gate calibrations, plus `id` borrowed from `sx` where it is missing."""
    gates = [g for g in profile.gates if g.gate not in VIRTUAL_GATES and not math.isnan(g.error)]
    if "id" not in profile.basis_gates:
        return gates
    have_id = {tuple(g.qubits) for g in gates if g.gate == "id"}
    borrowed = [
        g.model_copy(update={"gate": "id"})
        for g in gates
        if g.gate == ID_FALLBACK_GATE and tuple(g.qubits) not in have_id
    ]
    return gates + borrowed
