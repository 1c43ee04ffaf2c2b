"""Preprocess: admit the request, choose measurement bases, transpile for the backend and
fingerprint everything; the circuits go to the artifact store as `PreparedCircuits`."""

from __future__ import annotations

import hashlib

import qiskit.qasm2 as qasm2
from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import CouplingMap

from activities.experiment.admission import AdmissionError, admit, invalid_request
from activities.numerics.circuits import describe_observable
from activities.numerics.observables import measurement_bases
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Capabilities
from schemas.pipeline import MeasurementBasis, PreparedCircuits, PreparedExperiment, PreprocessInput

PREPARED_ARTIFACT = "prepared.json"
# Level 1 maps and simplifies without resynthesising two-qubit blocks, which would collapse the
# mirror benchmark (a circuit followed by its inverse) into almost nothing.
OPTIMIZATION_LEVEL = 1


def preprocess(input: PreprocessInput) -> PreparedExperiment:
    request = input.request
    admitted = admit(request)
    caps = admitted.capabilities
    seed = request.execution.seed or 0
    mapped = map_to_device(admitted.circuit, caps, seed)
    measured = final_positions(mapped, admitted.circuit.num_qubits)
    bases = measurement_bases(admitted.observable)
    transpiled = [rotated_into_basis(mapped, basis, measured, caps, seed) for basis in bases]
    texts = [qasm2.dumps(circuit) for circuit in transpiled]
    logical_qasm = qasm2.dumps(admitted.circuit)
    prepared = PreparedCircuits(
        logical_qasm=logical_qasm,
        observable=admitted.observable,
        bases=[MeasurementBasis(basis=b, qasm=text) for b, text in zip(bases, texts, strict=True)],
        measured_physical_qubits=measured,
    )
    return PreparedExperiment(
        artifact_uri=artifact_store.put_model(input.experiment_id, PREPARED_ARTIFACT, prepared),
        capabilities=caps,
        num_qubits=admitted.circuit.num_qubits,
        transpiled_depth=max(circuit.depth() for circuit in transpiled),
        two_qubit_gate_count=max(_two_qubit_gates(circuit) for circuit in transpiled),
        measurement_bases=bases,
        logical_circuit_sha256=sha256(logical_qasm),
        transpiled_circuits_sha256=[sha256(text) for text in texts],
        observable_label=describe_observable(admitted.observable),
        classical_baseline=admitted.classical_baseline,
    )


@implements(activity_contracts.preprocess)
async def preprocess_activity(input: PreprocessInput) -> PreparedExperiment:
    try:
        return await in_child_with_heartbeats(preprocess, input)
    except AdmissionError as error:
        raise invalid_request(error) from error


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def map_to_device(circuit: QuantumCircuit, caps: Capabilities, seed: int) -> QuantumCircuit:
    """The circuit in the device's basis gates, laid out on its coupling map (seeded)."""
    coupling = CouplingMap(caps.coupling_map) if caps.coupling_map else None
    return transpile(
        circuit,
        basis_gates=caps.basis_gates,
        coupling_map=coupling,
        optimization_level=OPTIMIZATION_LEVEL,
        seed_transpiler=seed,
    )


def final_positions(mapped: QuantumCircuit, width: int) -> list[int]:
    """The physical qubit that holds each logical qubit at the end of the mapped circuit."""
    if mapped.layout is None:
        return list(range(width))
    return list(mapped.layout.final_index_layout())


def rotated_into_basis(
    mapped: QuantumCircuit, basis: str, measured: list[int], caps: Capabilities, seed: int
) -> QuantumCircuit:
    """The mapped circuit followed by the rotation into `basis`, on the same physical qubits.

    Rotations are added after mapping, and translated without a coupling map, so every basis
    keeps one layout and `measured_physical_qubits` holds for all of them.
    """
    rotation = QuantumCircuit(mapped.num_qubits)
    for logical, axis in enumerate(reversed(basis)):
        if axis == "Y":
            rotation.sdg(measured[logical])
        if axis in "XY":
            rotation.h(measured[logical])
    if not rotation.data:
        return mapped
    rotated = mapped.compose(rotation)
    return transpile(
        rotated,
        basis_gates=caps.basis_gates,
        optimization_level=OPTIMIZATION_LEVEL,
        seed_transpiler=seed,
    )


def _two_qubit_gates(circuit: QuantumCircuit) -> int:
    return sum(
        1
        for inst in circuit.data
        if inst.operation.num_qubits == 2 and inst.operation.name != "barrier"
    )
