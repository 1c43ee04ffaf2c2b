"""From a Braket OpenQASM action to a GateModelTaskResult, on Aer with the device's noise model.

The program is parsed by the Braket default simulator's interpreter into Qiskit
(qiskit-braket-provider's `to_qiskit`), so Braket gate names, physical qubits (`$3`) and
`#pragma braket verbatim` boxes mean what they mean on Braket. Programs on physical qubits,
in verbatim boxes, or with qubit rewiring disabled keep their qubits; the others are mapped
onto the device like Braket's compiler would (Qiskit transpiler).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from braket.ir.openqasm import Program
from braket.task_result import GateModelTaskResult
from qiskit import ClassicalRegister, QuantumCircuit, transpile
from qiskit.circuit import BoxOp
from qiskit.transpiler import CouplingMap
from qiskit_aer import AerSimulator
from qiskit_braket_provider.providers.adapter import to_qiskit

from adapters.noise import cached_noise_model
from adapters.profiles import load_profile
from qpu_standin.config import Device
from qpu_standin.errors import validation

OPENQASM_HEADER = "braket.ir.openqasm.program"
_PHYSICAL_QUBIT = re.compile(r"\$\d+")
# The interpreter parses these but Aer would silently drop them: refuse them instead.
_UNSUPPORTED = {
    "result types": re.compile(r"#pragma\s+braket\s+result\b"),
    "pulse calibrations": re.compile(r"^\s*(defcal|cal)\b", re.MULTILINE),
}
_DEFAULT_BASIS = ("cx", "id", "rz", "sx", "x")


@dataclass(frozen=True)
class Compiled:
    circuit: QuantumCircuit
    measured_qubits: list[int]
    measured_clbits: list[int]
    keep_qubits: bool  # physical qubits: no rewiring, no routing


@dataclass(frozen=True)
class DeviceModel:
    """What execution needs from a device: size, basis, coupling, noise profile."""

    qubit_count: int
    basis_gates: tuple[str, ...]
    coupling: frozenset[tuple[int, int]]  # empty: fully connected
    profile: str | None


@lru_cache(maxsize=32)
def device_model(device: Device) -> DeviceModel:
    profile = load_profile(device.profile) if device.profile else None
    if device.connectivity is not None:
        edges = device.connectivity
    else:
        edges = tuple(tuple(edge) for edge in profile.coupling_map) if profile else ()
    return DeviceModel(
        qubit_count=device.qubit_count or (profile.num_qubits if profile else 0),
        basis_gates=tuple(profile.basis_gates) if profile else _DEFAULT_BASIS,
        coupling=frozenset((a, b) for a, b in edges) | frozenset((b, a) for a, b in edges),
        profile=device.profile,
    )


def compile_action(
    action: dict[str, Any], device_parameters: dict[str, Any], device: Device
) -> Compiled:
    """Parse and check a CreateQuantumTask action; ValidationException if the device can't."""
    header = (action.get("braketSchemaHeader") or {}).get("name")
    if header != OPENQASM_HEADER:
        raise validation(f"unsupported action {header!r}; this device runs {OPENQASM_HEADER}")
    try:
        program = Program.parse_obj(action)
    except Exception as error:
        raise validation(f"invalid OpenQASM program: {error}") from error
    for feature, pattern in _UNSUPPORTED.items():
        if pattern.search(program.source):
            raise validation(f"{feature} are not supported on this device; measure instead")
    try:
        circuit = to_qiskit(program)
    except Exception as error:  # the interpreter raises many types for bad programs
        raise validation(f"invalid OpenQASM program: {error}") from error
    keep_qubits = (
        bool(_PHYSICAL_QUBIT.search(program.source))
        or _rewiring_disabled(device_parameters)
        or any(isinstance(i.operation, BoxOp) for i in circuit.data)
    )
    circuit = _inline_boxes(circuit)
    model = device_model(device)
    if circuit.num_qubits > model.qubit_count:
        raise validation(
            f"program uses {circuit.num_qubits} qubits; {device.name} has {model.qubit_count}"
        )
    if keep_qubits:
        _check_connectivity(circuit, model)
    circuit = _with_measurements(circuit, keep_qubits)
    qubits, clbits = _measurement_map(circuit)
    return Compiled(circuit, qubits, clbits, keep_qubits)


def run(compiled: Compiled, device: Device, shots: int, seed: int) -> list[list[int]]:
    """Per-shot measurements, one row per shot, ordered like `compiled.measured_qubits`."""
    (rows,) = run_together([compiled], device, shots, seed)
    return rows


def run_together(
    programs: list[Compiled], device: Device, shots: int, seed: int
) -> list[list[list[int]]]:
    """`run` of every program, in one Aer job (a program set's executables: one job costs
    about a twentieth of one per program)."""
    model = device_model(device)
    coupling = (
        CouplingMap([list(edge) for edge in sorted(model.coupling)]) if model.coupling else None
    )
    mapped = [
        transpile(
            compiled.circuit,
            basis_gates=list(model.basis_gates),
            coupling_map=coupling,
            initial_layout=list(range(compiled.circuit.num_qubits))
            if compiled.keep_qubits
            else None,
            optimization_level=0 if compiled.keep_qubits else 1,
            seed_transpiler=seed,
        )
        for compiled in programs
    ]
    noise = cached_noise_model(model.profile, None) if model.profile else None
    simulator = AerSimulator(noise_model=noise)
    result = simulator.run(mapped, shots=shots, memory=True, seed_simulator=seed).result()
    return [_rows(result.get_memory(index), compiled) for index, compiled in enumerate(programs)]


def _rows(memory: list[str], compiled: Compiled) -> list[list[int]]:
    rows = []
    for word in memory:
        bits = word.replace(" ", "")
        rows.append([int(bits[-1 - clbit]) for clbit in compiled.measured_clbits])
    return rows


def result_document(
    *,
    task_arn: str,
    device_arn: str,
    shots: int,
    action: dict[str, Any],
    measured_qubits: list[int],
    measurements: list[list[int]],
    created_at: float,
    ended_at: float,
) -> str:
    """results.json as Braket writes it for a gate-model QPU task."""
    document = {
        "braketSchemaHeader": {"name": "braket.task_result.gate_model_task_result", "version": "1"},
        "measurements": measurements,
        "measuredQubits": measured_qubits,
        "taskMetadata": {
            "braketSchemaHeader": {"name": "braket.task_result.task_metadata", "version": "1"},
            "id": task_arn,
            "shots": shots,
            "deviceId": device_arn,
            "createdAt": iso_time(created_at),
            "endedAt": iso_time(ended_at),
            "status": "COMPLETED",
        },
        "additionalMetadata": {"action": action},
    }
    return GateModelTaskResult.parse_obj(document).json(exclude_none=True)


def iso_time(epoch: float) -> str:
    """Braket's timestamp form, 24 characters: 2024-05-01T12:00:00.000Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _rewiring_disabled(device_parameters: dict[str, Any]) -> bool:
    paradigm = device_parameters.get("paradigmParameters") or {}
    return bool(paradigm.get("disableQubitRewiring"))


def _inline_boxes(circuit: QuantumCircuit) -> QuantumCircuit:
    """Verbatim boxes become their contents: Aer does not run BoxOp."""
    if not any(isinstance(i.operation, BoxOp) for i in circuit.data):
        return circuit
    flat = circuit.copy_empty_like()
    for instruction in circuit.data:
        if isinstance(instruction.operation, BoxOp):
            body = instruction.operation.blocks[0]
            flat.compose(body, qubits=instruction.qubits, clbits=instruction.clbits, inplace=True)
        else:
            flat.append(instruction)
    return flat


def _check_connectivity(circuit: QuantumCircuit, model: DeviceModel) -> None:
    if not model.coupling:
        return
    for instruction in circuit.data:
        if instruction.operation.num_qubits != 2 or instruction.operation.name == "barrier":
            continue
        a, b = (circuit.find_bit(q).index for q in instruction.qubits)
        if (a, b) not in model.coupling:
            raise validation(
                f"{instruction.operation.name} on qubits {a}, {b}: not connected on this device "
                "(physical qubits and verbatim boxes are not rewired)"
            )


def _with_measurements(circuit: QuantumCircuit, keep_qubits: bool) -> QuantumCircuit:
    """A program without measurements measures every qubit it declares (physical: every one it
    uses), as on Braket."""
    if any(i.operation.name == "measure" for i in circuit.data):
        return circuit
    if keep_qubits:
        used = sorted({circuit.find_bit(q).index for i in circuit.data for q in i.qubits})
    else:
        used = list(range(circuit.num_qubits))
    measured = circuit.copy()
    register = ClassicalRegister(len(used), "braket_measured")
    measured.add_register(register)
    for clbit, qubit in enumerate(used):
        measured.measure(qubit, register[clbit])
    return measured


def _measurement_map(circuit: QuantumCircuit) -> tuple[list[int], list[int]]:
    """(measured qubits, their classical bits), in classical-bit order."""
    by_clbit: dict[int, int] = {}
    for instruction in circuit.data:
        if instruction.operation.name == "measure":
            qubit = circuit.find_bit(instruction.qubits[0]).index
            by_clbit[circuit.find_bit(instruction.clbits[0]).index] = qubit
    if not by_clbit:
        raise validation("program measures no qubit")
    clbits = sorted(by_clbit)
    return [by_clbit[c] for c in clbits], clbits


def parse_json_field(value: Any, name: str) -> dict[str, Any]:
    """JsonValue members arrive as JSON text; an empty one is an empty object."""
    if value in (None, ""):
        return {}
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError) as error:
        raise validation(f"{name} is not valid JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise validation(f"{name} must be a JSON object")
    return parsed
