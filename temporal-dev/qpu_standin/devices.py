"""GetDevice's deviceCapabilities for an emulated gate-model QPU.

Braket's schemas have no provider-neutral top-level capabilities document, so the stand-in uses
IQM's (`braket.device_schema.iqm.iqm_device_capabilities`): an OpenQASM action (and a program-set
action where the device's config gives its limits), gate-model QPU
paradigm properties (qubits, native gates, connectivity), service properties (shots range, cost,
poll interval) and the standardized calibration block (T1, T2, readout and gate fidelities),
none of it IQM-specific. `AwsDevice.properties` parses it like any QPU's.
"""

from __future__ import annotations

import time
from typing import Any

from braket.device_schema.iqm import IqmDeviceCapabilities

from adapters.profiles import load_profile
from qpu_standin.calibration import calibration_start
from qpu_standin.config import Device
from qpu_standin.executor import OPENQASM_HEADER, device_model
from qpu_standin.program_sets import PROGRAM_SET_HEADER
from schemas.profile import DeviceProfile

# Braket names of the gates a Qiskit/IBM-style profile calibrates.
_BRAKET_GATE_NAMES = {
    "cx": "cnot",
    "id": "i",
    "rz": "rz",
    "sx": "v",
    "x": "x",
    "cz": "cz",
    "ecr": "ecr",
    "rx": "rx",
    "ry": "ry",
    "h": "h",
}
SUPPORTED_OPERATIONS = (
    "ccnot",
    "cnot",
    "cphaseshift",
    "cphaseshift00",
    "cphaseshift01",
    "cphaseshift10",
    "cswap",
    "cy",
    "cz",
    "ecr",
    "h",
    "i",
    "iswap",
    "phaseshift",
    "pswap",
    "rx",
    "ry",
    "rz",
    "s",
    "si",
    "swap",
    "t",
    "ti",
    "u",
    "v",
    "vi",
    "x",
    "xx",
    "xy",
    "y",
    "yy",
    "z",
    "zz",
)


def capabilities(device: Device, poll_interval_ms: int) -> str:
    model = device_model(device)
    profile = load_profile(device.profile) if device.profile else None
    document: dict[str, Any] = {
        "braketSchemaHeader": {
            "name": "braket.device_schema.iqm.iqm_device_capabilities",
            "version": "1",
        },
        "service": _service(device, poll_interval_ms, profile),
        "action": {OPENQASM_HEADER: _action(), **_program_set_action(device)},
        "deviceParameters": {},
        "paradigm": _paradigm(device, model.qubit_count, model.coupling, model.basis_gates),
        "standardized": _standardized(profile) if profile else None,
    }
    return IqmDeviceCapabilities.parse_obj(document).json(exclude_none=True)


def _service(
    device: Device, poll_interval_ms: int, profile: DeviceProfile | None
) -> dict[str, Any]:
    return {
        "braketSchemaHeader": {
            "name": "braket.device_schema.device_service_properties",
            "version": "1",
        },
        "executionWindows": [
            {"executionDay": "Everyday", "windowStartHour": "00:00", "windowEndHour": "23:59:59"}
        ],
        "shotsRange": [device.min_shots, device.max_shots],
        "deviceCost": {"price": device.price_per_shot, "unit": "shot"},
        "deviceDocumentation": {
            "summary": f"qloop QPU stand-in emulating {device.profile or 'a noiseless device'}; "
            f"${device.price_per_task} per task plus ${device.price_per_shot} per shot",
        },
        "deviceLocation": "local",
        # The current calibration epoch's start (qpu_standin/calibration.py).
        "updatedAt": calibration_start(device, profile, time.time()),
        "getTaskPollIntervalMillis": poll_interval_ms,
    }


def _action() -> dict[str, Any]:
    return {
        "actionType": OPENQASM_HEADER,
        "version": ["1"],
        "supportedOperations": list(SUPPORTED_OPERATIONS),
        "supportedModifiers": [],
        "supportedPragmas": ["verbatim"],
        "forbiddenPragmas": [],
        "supportPhysicalQubits": True,
        "supportsPartialVerbatimBox": True,
        "requiresContiguousQubitIndices": False,
        "requiresAllQubitsMeasurement": False,
        "supportsUnassignedMeasurements": True,
        "disabledQubitRewiringSupported": True,
        "supportedResultTypes": [],
    }


def _program_set_action(device: Device) -> dict[str, Any]:
    limits = device.program_sets
    if limits is None:
        return {}
    action: dict[str, Any] = {
        "actionType": PROGRAM_SET_HEADER,
        "version": ["1"],
        "maximumExecutables": limits.max_executables,
        "maximumTotalShots": limits.max_total_shots,
    }
    if limits.min_total_shots is not None:
        action["minimumTotalShots"] = limits.min_total_shots
    return {PROGRAM_SET_HEADER: action}


def _paradigm(
    device: Device, qubit_count: int, coupling: frozenset[tuple[int, int]], basis: tuple[str, ...]
) -> dict[str, Any]:
    graph: dict[str, list[str]] = {}
    for a, b in sorted(coupling):
        graph.setdefault(str(a), []).append(str(b))
    natives = device.native_gates or tuple(_BRAKET_GATE_NAMES.get(g, g) for g in basis)
    return {
        "braketSchemaHeader": {
            "name": "braket.device_schema.gate_model_qpu_paradigm_properties",
            "version": "1",
        },
        "qubitCount": qubit_count,
        "nativeGateSet": list(natives),
        "connectivity": {"fullyConnected": not coupling, "connectivityGraph": graph},
    }


def _standardized(profile: DeviceProfile) -> dict[str, Any]:
    one_qubit = {}
    for index, qubit in enumerate(profile.qubits):
        readout = 1 - (qubit.readout_p0_given_1 + qubit.readout_p1_given_0) / 2
        fidelities = [{"fidelityType": {"name": "READOUT"}, "fidelity": readout}]
        fidelities += [
            {"fidelityType": {"name": "RANDOMIZED_BENCHMARKING"}, "fidelity": 1 - gate.error}
            for gate in profile.gates
            if gate.gate == "sx" and gate.qubits == [index]
        ]
        one_qubit[str(index)] = {
            "T1": {"value": qubit.t1_us * 1e-6, "standardError": None, "unit": "S"},
            "T2": {"value": qubit.t2_us * 1e-6, "standardError": None, "unit": "S"},
            "oneQubitFidelity": fidelities,
        }
    two_qubit: dict[str, Any] = {}
    for gate in profile.gates:
        if len(gate.qubits) == 2:
            key = "-".join(str(q) for q in gate.qubits)
            two_qubit[key] = {
                "twoQubitGateFidelity": [
                    {
                        "gateName": _BRAKET_GATE_NAMES.get(gate.gate, gate.gate).upper(),
                        "fidelity": 1 - gate.error,
                        "fidelityType": {"name": "RANDOMIZED_BENCHMARKING"},
                    }
                ]
            }
    return {
        "braketSchemaHeader": {
            "name": "braket.device_schema.standardized_gate_model_qpu_device_properties",
            "version": "1",
        },
        "oneQubitProperties": one_qubit,
        "twoQubitProperties": two_qubit,
    }
