"""A batch of parameter points prepared as one submission: the family's circuit is built and
transpiled for the backend once; each measurement basis (qubit-wise commuting groups of the
observable) becomes one parameterized template, folded at every ZNE scale factor; every point is
one binding of every template; plus readout-calibration circuits. One batch artifact (a
PlannedBatch that `submit` reads), its cost estimate, and one fingerprint per point.

Folding works on the parameterized template itself (mitiq cannot convert a circuit with free
parameters): G → G (G† G)^k on Qiskit instructions with mitiq's rules for how many gates fold at
a scale factor, so a 1,000-point batch folds each template once instead of 1,000 times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit, qasm2, qasm3
from qiskit.circuit import CircuitInstruction

from activities.experiment.admission import (
    AdmissionError,
    invalid_request,
)
from activities.experiment.plan import BatchTooLargeError, measured
from activities.experiment.plan import readout_calibration as readout_calibration_circuit
from activities.experiment.preprocess import final_positions, map_to_device, rotated_into_basis
from activities.numerics.families import (
    FamilyCircuit,
    describe_family,
    family_circuit,
)
from activities.numerics.observables import (
    measurement_bases,
)
from activities.numerics.zne import (
    Folding,
    ordered_fold_mask,
    to_device_basis,
)
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from activities.variational.batch_sizes import (
    admit_family,
    calibration_circuits,
    circuits_per_point,
    max_points_per_batch,
)
from activities.variational.point_fingerprints import point_fingerprint
from adapters.base import compiled_programs
from adapters.registry import get_adapter
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Capabilities, CircuitBatch, CircuitSpec
from schemas.pipeline import CircuitRole, PlannedBatch
from schemas.request import executed_scale_factors
from schemas.variational import (
    BatchInput,
    EvaluationSpec,
    Point,
    PreparedBatch,
)

BATCH_ARTIFACT = "batch.json"


_NOT_FOLDED = frozenset({"barrier", "measure", "delay", "id"})


class BatchPlan(PlannedBatch):
    """Artifact `batch.json`: the submission as `submit` reads it (a PlannedBatch: templates
    first, each with one binding per point, then readout calibration), and what scoring needs."""

    measured_physical_qubits: list[int]
    bases: list[str]
    parameter_names: list[str]
    family_label: str


def prepare_batch(input: BatchInput) -> PreparedBatch:
    family, evaluation = input.family, input.evaluation
    built = family_circuit(family)
    check_points(built, input.points)
    capabilities = admit_family(family, evaluation)
    _check_size(input, capabilities)
    mapped = map_to_device(built.circuit, capabilities, evaluation.seed)
    physical = final_positions(mapped, built.circuit.num_qubits)
    bases = measurement_bases(built.observable)
    specs: list[CircuitSpec] = []
    roles: list[CircuitRole] = []
    for basis in bases:
        rotated = rotated_into_basis(mapped, basis, physical, capabilities, evaluation.seed)
        for scale, template in _scaled_templates(rotated, evaluation, capabilities.basis_gates):
            specs.append(
                _template_spec(
                    f"{basis}-x{scale:g}", measured(template, physical), built, input.points
                )
            )
            roles.append(CircuitRole(kind="observable", basis=basis, scale_factor=scale))
    if evaluation.readout:
        for bit in "01":
            calibration = readout_calibration_circuit(mapped.num_qubits, physical, ones=bit == "1")
            (translated,) = to_device_basis([calibration], capabilities.basis_gates)
            specs.append(_plain_spec(f"readout-{bit * len(physical)}", translated))
            roles.append(CircuitRole(kind="readout_calibration", prepared_bits=bit * len(physical)))
    batch = CircuitBatch(circuits=specs)
    adapter = get_adapter(evaluation.backend)
    plan = BatchPlan(
        batch=batch,
        roles=roles,
        programs=compiled_programs(adapter, batch, evaluation.shots),
        measured_physical_qubits=physical,
        bases=bases,
        parameter_names=built.parameter_names,
        family_label=describe_family(family),
    )
    batch_uri = artifact_store.put_model(input.artifact_folder, BATCH_ARTIFACT, plan)
    cost = adapter.estimate_cost(batch, evaluation.shots)
    return PreparedBatch(
        batch_uri=batch_uri,
        num_circuits=batch.num_executions,
        cost_estimate=cost,
        fingerprints=[point_fingerprint(family, point, evaluation) for point in input.points],
        tier=capabilities.tier,
        simulated_in_activity=capabilities.simulated_in_activity,
    )


@implements(activity_contracts.prepare_batch)
async def prepare_batch_activity(input: BatchInput) -> PreparedBatch:
    try:
        return await in_child_with_heartbeats(prepare_batch, input)
    except AdmissionError as error:
        raise invalid_request(error) from error


def check_points(built: FamilyCircuit, points: list[Point]) -> None:
    if not points:
        raise AdmissionError("points: a batch needs at least one point")
    width = len(built.parameters)
    for index, point in enumerate(points):
        if len(point) != width:
            raise AdmissionError(
                f"points[{index}]: has {len(point)} values; the family takes {width} "
                f"({', '.join(built.parameter_names)})"
            )
        if not all(math.isfinite(value) for value in point):
            raise AdmissionError(f"points[{index}]: values must be finite, got {point}")


def _check_size(input: BatchInput, capabilities: Capabilities) -> None:
    """Before anything is folded: the batch's circuits from the points and the observable."""
    limit = capabilities.max_circuits_per_job
    per_point = circuits_per_point(input.family, input.evaluation)
    needed = len(input.points) * per_point + calibration_circuits(input.evaluation)
    if needed <= limit:
        return
    most = max_points_per_batch(input.family, input.evaluation, limit)
    raise BatchTooLargeError(
        f"batch {input.label}: {len(input.points)} points need {needed} circuits "
        f"({per_point} per point: measurement bases x "
        f"ZNE scale factors, plus {calibration_circuits(input.evaluation)} for readout "
        f"calibration) but {capabilities.provider}/{capabilities.device} takes at most {limit} "
        f"per job: use at most {most} points per batch"
    )


def _template_spec(
    name: str, template: QuantumCircuit, built: FamilyCircuit, points: list[Point]
) -> CircuitSpec:
    return CircuitSpec(
        name=name,
        qasm=qasm3.dumps(template),
        num_qubits=template.num_qubits,
        num_clbits=template.num_clbits,
        parameters=built.parameter_names,
        bindings=[list(point) for point in points],
    )


def _plain_spec(name: str, circuit: QuantumCircuit) -> CircuitSpec:
    return CircuitSpec(
        name=name,
        qasm=qasm2.dumps(circuit),
        num_qubits=circuit.num_qubits,
        num_clbits=circuit.num_clbits,
    )


def _scaled_templates(
    template: QuantumCircuit, evaluation: EvaluationSpec, basis_gates: Sequence[str]
) -> list[tuple[float, QuantumCircuit]]:
    zne = evaluation.zne
    if zne is None:
        return [(1.0, template)]
    scales = executed_scale_factors(zne)
    folded = [fold_template(template, scale, zne.folding, evaluation.seed) for scale in scales]
    return list(zip(scales, to_device_basis(folded, basis_gates), strict=True))


def fold_template(
    circuit: QuantumCircuit, scale_factor: float, method: Folding, seed: int
) -> QuantumCircuit:
    """Unitary folding of a (parameterized) circuit, as mitiq folds a bound one.

    global: U (U† U)^k, then the last gates folded once more until the gate count reaches
    scale_factor times the original (mitiq's `fold_global`). Local methods: every gate G
    becomes G (G† G)^m with m the same for all gates, plus one more fold for the gates taken
    from the left, the right, or at random (seeded) until the scale is reached."""
    if scale_factor < 1.0:
        raise ValueError(f"scale factors must be >= 1, got {scale_factor}")
    gates = [inst for inst in circuit.data if inst.operation.name not in _NOT_FOLDED]
    if method == "global":
        return _fold_global(circuit, gates, scale_factor)
    folds = _local_fold_counts(len(gates), scale_factor, method, seed)
    folded = circuit.copy_empty_like()
    position = 0
    for inst in circuit.data:
        folded.append(inst)
        if inst.operation.name in _NOT_FOLDED:
            continue
        for _ in range(folds[position]):
            folded.append(_inverse(inst))
            folded.append(inst)
        position += 1
    return folded


def _fold_global(
    circuit: QuantumCircuit, gates: list[CircuitInstruction], scale_factor: float
) -> QuantumCircuit:
    full_folds, fraction = divmod(scale_factor - 1.0, 2.0)
    folded = circuit.copy()
    inverse = circuit.inverse()
    for _ in range(int(full_folds)):
        folded.compose(inverse, inplace=True)
        folded.compose(circuit, inplace=True)
    partial = round(fraction * len(gates) / 2.0)
    tail = gates[len(gates) - partial :]
    for inst in reversed(tail):
        folded.append(_inverse(inst))
    for inst in tail:
        folded.append(inst)
    return folded


def _local_fold_counts(
    num_gates: int, scale_factor: float, method: Folding, seed: int
) -> list[int]:
    ordered = ordered_fold_mask(
        [1.0] * num_gates, scale_factor, from_left=method != "gates_from_right"
    )
    if method != "gates_at_random":
        return ordered
    uniform = int((scale_factor - 1.0) / 2.0)
    extra = sum(ordered) - uniform * num_gates
    chosen = np.random.default_rng(seed).choice(num_gates, size=extra, replace=False)
    counts = [uniform] * num_gates
    for index in chosen:
        counts[int(index)] += 1
    return counts


def _inverse(inst: CircuitInstruction) -> CircuitInstruction:
    return inst.replace(operation=inst.operation.inverse())
