"""Circuits compiled for a Braket device: translated from Qiskit (qiskit-braket-provider),
checked against what GetDevice says, boxed verbatim in a QPU's native gates, and serialized as
the OpenQASM action and device parameters CreateQuantumTask takes. CPU work with the Braket SDK,
so it runs where compute runs (plan and prepare_batch store the programs); the orchestration role
only sends them (adapters/braket_aws.py). Also the Capabilities a device's properties allow.
"""

from __future__ import annotations

import json
import warnings

from braket.circuits import Circuit, Instruction
from braket.circuits.compiler_directive import CompilerDirective
from braket.circuits.measure import Measure
from braket.circuits.serialization import (
    IRType,
    OpenQASMSerializationProperties,
    QubitReferenceType,
)
from braket.device_schema import GateModelParameters
from braket.device_schema.ionq import IonqDeviceParameters
from braket.device_schema.oqc import OqcDeviceParameters
from braket.device_schema.rigetti import RigettiDeviceParameters
from braket.device_schema.simulators import GateModelSimulatorDeviceParameters
from braket.ir.openqasm import Program as OpenQasmProgram
from braket.ir.openqasm import ProgramSet
from braket.schema_common import BraketSchemaBase
from qiskit import QuantumCircuit
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit_braket_provider import to_braket
from qiskit_braket_provider.providers.target import (
    gateset_from_properties,
    native_gate_connectivity,
    native_gate_set,
)

from adapters.braket_device import OPENQASM_ACTION, PROGRAM_SET_ACTION, BraketDevice
from adapters.circuits import bound_circuits, clbit_qubits, execution_name, parse_circuit
from adapters.errors import InvalidRequestError
from adapters.job_limits import MAX_CIRCUITS_PER_JOB, check_job_size
from adapters.program_sets import task_sizes
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    CircuitSpec,
    Pricing,
    ProviderProgram,
    Tier,
)

PROVIDER = "braket"
STANDARD_GATES = frozenset(get_standard_gate_name_mapping())
STANDARD_GATE_QUBITS = {
    name: gate.num_qubits for name, gate in get_standard_gate_name_mapping().items()
}


def device_capabilities(device: BraketDevice, pricing: Pricing) -> Capabilities:
    """A QPU is targeted in its native gates (on its coupling map), so folded ZNE circuits reach
    it as they are. Where Qiskit cannot express those (IonQ's gpi/ms), or on a simulator, the
    supported operations serve, without gates on three or more qubits, which Qiskit's
    transpiler cannot route on a coupling map."""
    native = native_gate_set(device.properties) & STANDARD_GATES if device.is_qpu else set()
    gates = native or {
        gate
        for gate in gateset_from_properties(device.properties.action[OPENQASM_ACTION])
        if gate in STANDARD_GATES and STANDARD_GATE_QUBITS[gate] <= 2
    }
    connectivity = native_gate_connectivity(device.properties) if device.is_qpu else None
    return Capabilities(
        provider=PROVIDER,
        device=device.arn,
        tier=Tier.QPU if device.is_qpu else Tier.SIMULATOR,
        num_qubits=device.qubit_count,
        basis_gates=[*sorted((gates & STANDARD_GATES) - {"global_phase"}), "measure"],
        coupling_map=None if connectivity is None else [tuple(e) for e in connectivity],
        max_shots=device.shots_range[1],
        max_circuits_per_job=MAX_CIRCUITS_PER_JOB,
        cancellable=True,
        pricing=pricing,
        status=device.status,
        program_sets=device.program_set_limits,
    )


def compile_programs(
    device: BraketDevice, batch: CircuitBatch, shots: int
) -> list[ProviderProgram]:
    """One program per task: a program set of several executed circuits where the device runs
    them (adapters/program_sets.py says how many), else one circuit; every circuit checked
    against the device before any task exists."""
    check_job_size(batch, shots, device.shots_range)
    programs = [program for spec in batch.circuits for program in _programs_of(spec, device)]
    tasks: list[ProviderProgram] = []
    start = 0
    for size in task_sizes(len(programs), shots, device.program_set_limits):
        group = programs[start : start + size]
        tasks.append(group[0] if size == 1 else _program_set(group, device))
        start += size
    return tasks


def program_sources(program: ProviderProgram) -> list[str]:
    """The OpenQASM source of each circuit a task's program runs, in order."""
    header = json.loads(program.action)["braketSchemaHeader"]["name"]
    if header == PROGRAM_SET_ACTION:
        return [single.source for single in ProgramSet.parse_raw(program.action).programs]
    return [OpenQasmProgram.parse_raw(program.action).source]


def _program_set(programs: list[ProviderProgram], device: BraketDevice) -> ProviderProgram:
    """One task running `programs` in order. Its device parameters are those of the largest
    program: the service reads only whether qubits may be rewired, the same for all of them."""
    action = ProgramSet(programs=[OpenQasmProgram.parse_raw(p.action) for p in programs])
    qubits = max(
        int(json.loads(p.device_parameters)["paradigmParameters"]["qubitCount"]) for p in programs
    )
    paradigm = GateModelParameters(qubitCount=qubits, disableQubitRewiring=device.is_qpu)
    return ProviderProgram(
        name=f"{programs[0].name} .. {programs[-1].name}",
        action=action.json(),
        device_parameters=device_parameters(device.arn, paradigm).json(exclude_none=True),
        executables=len(programs),
    )


def _programs_of(spec: CircuitSpec, device: BraketDevice) -> list[ProviderProgram]:
    """One program per executed circuit of the spec, checked once on the template."""
    template = parse_circuit(spec)
    if template.num_clbits != spec.num_clbits:
        raise InvalidRequestError(
            f"circuit {spec.name!r} declares {spec.num_clbits} clbits but its QASM has "
            f"{template.num_clbits}"
        )
    clbit_qubits(template, spec.name)
    return [
        _program(execution_name(spec, row), circuit, device)
        for row, circuit in enumerate(bound_circuits(spec, template))
    ]


def _program(name: str, circuit: QuantumCircuit, device: BraketDevice) -> ProviderProgram:
    gateset = gateset_from_properties(device.properties.action[OPENQASM_ACTION])
    program = translate(circuit, name, gateset - {"global_phase"})
    _check_program(name, program, device)
    # Native gates on a QPU go in a verbatim box, so the provider's compiler cannot undo a
    # fold; qubit rewiring is off so qloop's layout stays.
    if device.native_gates and gate_names(program) <= device.native_gates:
        program = _in_verbatim_box(program)
    properties = (
        OpenQASMSerializationProperties(qubit_reference_type=QubitReferenceType.PHYSICAL)
        if device.is_qpu
        else None
    )
    action = program.to_ir(IRType.OPENQASM, serialization_properties=properties)
    paradigm = GateModelParameters(
        qubitCount=program.qubit_count, disableQubitRewiring=device.is_qpu
    )
    parameters = device_parameters(device.arn, paradigm)
    return ProviderProgram(
        name=name, action=action.json(), device_parameters=parameters.json(exclude_none=True)
    )


def device_parameters(device_arn: str, paradigm: GateModelParameters) -> BraketSchemaBase:
    """The deviceParameters document of a gate-model task, by the device's provider as the
    Braket SDK chooses it when it creates a task (the provider's own schema, else the
    simulators')."""
    provider = device_arn.lower()
    if "ionq" in provider:
        return IonqDeviceParameters(paradigmParameters=paradigm)
    if "rigetti" in provider:
        return RigettiDeviceParameters(paradigmParameters=paradigm)
    if "oqc" in provider:
        return OqcDeviceParameters(paradigmParameters=paradigm)
    return GateModelSimulatorDeviceParameters(paradigmParameters=paradigm)


def translate(circuit: QuantumCircuit, name: str, basis: set[str] | None = None) -> Circuit:
    """Through qiskit-braket-provider at optimization_level 0, so ZNE folds survive."""
    try:
        with warnings.catch_warnings():
            # Dropped barriers and global phase do not change any count.
            warnings.simplefilter("ignore", UserWarning)
            return to_braket(circuit, basis_gates=basis, optimization_level=0)
    except Exception as exc:
        message = f"circuit {name!r} cannot be translated to Braket: {exc}"
        raise InvalidRequestError(message) from exc


def gate_names(circuit: Circuit) -> set[str]:
    return {
        inst.operator.name.lower()
        for inst in circuit.instructions
        if not isinstance(inst.operator, Measure | CompilerDirective)
    }


def without_measurements(circuit: Circuit) -> Circuit:
    kept = [inst for inst in circuit.instructions if not isinstance(inst.operator, Measure)]
    return Circuit(kept)


def _check_program(name: str, program: Circuit, device: BraketDevice) -> None:
    if program.qubit_count > device.qubit_count:
        raise InvalidRequestError(
            f"circuit {name!r} uses {program.qubit_count} qubits; {device.arn} has "
            f"{device.qubit_count}"
        )
    unsupported = gate_names(program) - device.supported_gates
    if unsupported:
        raise InvalidRequestError(
            f"circuit {name!r} needs gates {sorted(unsupported)} that {device.arn} does not "
            f"support; supported: {sorted(device.supported_gates)}"
        )


def _in_verbatim_box(program: Circuit) -> Circuit:
    boxed = Circuit().add_verbatim_box(without_measurements(program))
    for inst in program.instructions:
        if isinstance(inst.operator, Measure):
            boxed.add_instruction(Instruction(inst.operator, inst.target))
    return boxed
