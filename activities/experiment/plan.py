"""Plan: every measurement basis folded at every ZNE scale factor, plus readout calibration,
as one batch in the device's gate set, with its cost estimate; with `execution.reuse:
within_calibration`, also the batch's fingerprint and any earlier result stored under it
(activities/experiment/result_reuse.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from qiskit import ClassicalRegister, QuantumCircuit, qasm2

from activities.experiment.result_reuse import look_up
from activities.numerics.zne import fold, to_device_basis
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from adapters.base import compiled_programs
from adapters.registry import get_adapter
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import CircuitBatch, CircuitSpec
from schemas.pipeline import (
    CircuitRole,
    ExecutionPlan,
    MeasurementBasis,
    PlanInput,
    PlannedBatch,
    PreparedCircuits,
)
from schemas.request import ExperimentRequest, executed_scale_factors

BATCH_ARTIFACT = "batch.json"


class BatchTooLargeError(ValueError):
    """The planned batch has more circuits than the device accepts in one job."""


def plan(input: PlanInput) -> ExecutionPlan:
    prepared = artifact_store.read_model(input.prepared.artifact_uri, PreparedCircuits)
    basis_gates = input.prepared.capabilities.basis_gates
    circuits: list[QuantumCircuit] = []
    roles: list[CircuitRole] = []
    for basis in prepared.bases:
        for scale, folded in zip(*_scaled(basis, input.request, basis_gates), strict=True):
            circuits.append(measured(folded, prepared.measured_physical_qubits))
            roles.append(CircuitRole(kind="observable", basis=basis.basis, scale_factor=scale))
    if input.request.mitigation.readout:
        qubits = prepared.measured_physical_qubits
        for bit in "01":
            calibration = readout_calibration(circuits[0].num_qubits, qubits, ones=bit == "1")
            circuits.extend(to_device_basis([calibration], basis_gates))
            roles.append(CircuitRole(kind="readout_calibration", prepared_bits=bit * len(qubits)))
    _check_size(len(circuits), input.prepared.capabilities.max_circuits_per_job)
    batch = CircuitBatch(circuits=[_spec(c, role) for c, role in zip(circuits, roles, strict=True)])
    adapter = get_adapter(input.request.execution.backend)
    programs = compiled_programs(adapter, batch, input.request.execution.shots)
    batch_uri = artifact_store.put_model(
        input.experiment_id,
        BATCH_ARTIFACT,
        PlannedBatch(batch=batch, roles=roles, programs=programs),
    )
    return ExecutionPlan(
        batch_uri=batch_uri,
        num_circuits=len(circuits),
        executed_circuits_sha256=[sha256(spec.qasm) for spec in batch.circuits],
        cost_estimate=adapter.estimate_cost(batch, input.request.execution.shots),
        reuse=look_up(adapter, batch, input.request, input.prepared.capabilities.tier),
    )


@implements(activity_contracts.plan)
async def plan_activity(input: PlanInput) -> ExecutionPlan:
    return await in_child_with_heartbeats(plan, input)


def mitigation_seed(request: ExperimentRequest) -> int:
    """Seeds random folding and the bootstrap; the workflow resolves a missing seed before
    planning, so 0 is only the default of direct calls."""
    return request.execution.seed if request.execution.seed is not None else 0


def load_qasm(text: str) -> QuantumCircuit:
    # The legacy instruction set knows every gate qiskit.qasm2.dumps writes (sx, sxdg, ...).
    return qasm2.loads(text, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)


def measured(circuit: QuantumCircuit, physical_qubits: Sequence[int]) -> QuantumCircuit:
    """`circuit` with physical qubit `physical_qubits[i]` measured into classical bit i."""
    result = circuit.copy()
    register = ClassicalRegister(len(physical_qubits), "meas")
    result.add_register(register)
    for bit, qubit in enumerate(physical_qubits):
        result.measure(qubit, register[bit])
    return result


def readout_calibration(width: int, physical_qubits: Sequence[int], ones: bool) -> QuantumCircuit:
    circuit = QuantumCircuit(width, name=f"readout-{int(ones)}")
    if ones:
        circuit.x(list(physical_qubits))
    return measured(circuit, physical_qubits)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _scaled(
    basis: MeasurementBasis, request: ExperimentRequest, basis_gates: Sequence[str]
) -> tuple[list[float], list[QuantumCircuit]]:
    circuit = load_qasm(basis.qasm)
    zne = request.mitigation.zne
    if zne is None:
        return [1.0], [circuit]
    scales = executed_scale_factors(zne)
    folded = fold(circuit, scales, zne.folding, mitigation_seed(request))
    return scales, to_device_basis(folded, basis_gates)


def _check_size(num_circuits: int, limit: int) -> None:
    if num_circuits > limit:
        raise BatchTooLargeError(
            f"the plan needs {num_circuits} circuits (measurement bases x scale factors, plus "
            f"readout calibration) but the device takes at most {limit} per job: use fewer "
            "scale factors or a Pauli sum with fewer measurement bases"
        )


def _spec(circuit: QuantumCircuit, role: CircuitRole) -> CircuitSpec:
    if role.kind == "readout_calibration":
        name = f"readout-{role.prepared_bits}"
    else:
        name = f"{role.basis}-x{role.scale_factor:g}"
    return CircuitSpec(
        name=name,
        qasm=qasm2.dumps(circuit),
        num_qubits=circuit.num_qubits,
        num_clbits=circuit.num_clbits,
    )
