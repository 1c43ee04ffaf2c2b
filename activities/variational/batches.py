"""Batches of parameter points of one circuit family: prepared as one submission, scored point by
point, and compared with the classical reference.

- `prepare_batch`: the family's circuit is built and transpiled for the backend once; each
  measurement basis (qubit-wise commuting groups of the observable) becomes one parameterized
  template, folded at every ZNE scale factor; every point is one binding of every template; plus
  readout-calibration circuits. One batch artifact (a PlannedBatch that `submit` reads), its cost
  estimate, and one fingerprint per point (`point_fingerprint`, the sweep cache's key).
- `score_batch`: counts → per point the observable's raw value, readout correction, zero-noise
  extrapolation and a standard error; every number in one artifact.
- `classical_reference`: the family's classical baseline (brute-force maximum cut, or exact
  diagonalisation) and the exact statevector value at given points.

Folding works on the parameterized template itself (mitiq cannot convert a circuit with free
parameters): G → G (G† G)^k on Qiskit instructions with mitiq's rules for how many gates fold at
a scale factor, so a 1,000-point batch folds each template once instead of 1,000 times.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mitiq.zne.inference import ExtrapolationError, ExtrapolationWarning
from qiskit import QuantumCircuit, qasm2, qasm3
from qiskit.circuit import CircuitInstruction
from qiskit.quantum_info import SparsePauliOp
from scipy.sparse.linalg import eigsh

from activities.experiment.admission import (
    MAX_IDEAL_QUBITS,
    READOUT_CALIBRATION_CIRCUITS,
    AdmissionError,
    invalid_request,
)
from activities.experiment.mitigate import ExtrapolationFailedError
from activities.experiment.plan import BatchTooLargeError, measured
from activities.experiment.plan import readout_calibration as readout_calibration_circuit
from activities.experiment.preprocess import final_positions, map_to_device, rotated_into_basis
from activities.experiment.prevalidate import ideal_value
from activities.numerics import classical
from activities.numerics.families import (
    FamilyCircuit,
    describe_family,
    family_circuit,
    family_observable,
)
from activities.numerics.observables import (
    Distribution,
    FloatArray,
    ProductTerm,
    measurement_bases,
    product_terms,
)
from activities.numerics.readout import confusion_matrices, inverse_matrices, mitigate_factors
from activities.numerics.zne import (
    Extrapolation,
    Folding,
    extrapolate,
    ordered_fold_mask,
    to_device_basis,
)
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from adapters.base import compiled_programs
from adapters.errors import InvalidRequestError, RejectedError
from adapters.registry import get_adapter
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Capabilities, CircuitBatch, CircuitSpec, Cost, JobResult
from schemas.pipeline import CircuitRole, PlannedBatch
from schemas.request import PauliSumObservable, executed_scale_factors
from schemas.variational import (
    BatchInput,
    CircuitFamily,
    EvaluationSpec,
    Point,
    PointValue,
    PreparedBatch,
    QaoaFamily,
    Reference,
    ReferenceInput,
    ScoredBatch,
    ScoreInput,
)

BATCH_ARTIFACT = "batch.json"
SCORES_ARTIFACT = "scores.json"
# Bump when the circuits a family builds change, so cached values of the old circuits are
# not taken for the new ones.
FINGERPRINT_VERSION = 1
# Parameters are fingerprinted at 12 decimals: a grid computed twice (or 0.1 + 0.2 against
# 0.3) is the same point, any difference a circuit could resolve is not.
FINGERPRINT_DECIMALS = 12
# Dense exact diagonalisation up to this width; a sparse Lanczos solver beyond it.
MAX_DENSE_QUBITS = 12
_NOT_FOLDED = frozenset({"barrier", "measure", "delay", "id"})
_GATHER_ELEMENTS = 1 << 20


class BatchPlan(PlannedBatch):
    """Artifact `batch.json`: the submission as `submit` reads it (a PlannedBatch: templates
    first, each with one binding per point, then readout calibration), and what scoring needs."""

    measured_physical_qubits: list[int]
    bases: list[str]
    parameter_names: list[str]
    family_label: str


# --- fingerprints and sizes ------------------------------------------------------------------


def point_fingerprint(
    family: CircuitFamily, point: Sequence[float], evaluation: EvaluationSpec
) -> str:
    """sha256 over canonical JSON of everything that decides a point's value: the family, the
    parameters (rounded, as repr of floats), backend, shots, seed, ZNE and readout settings."""
    identity = {
        "version": FINGERPRINT_VERSION,
        "family": family.model_dump(mode="json"),
        "parameters": [repr(_rounded(value)) for value in point],
        "backend": evaluation.backend.model_dump(mode="json"),
        "shots": evaluation.shots,
        "seed": evaluation.seed,
        "zne": None if evaluation.zne is None else evaluation.zne.model_dump(mode="json"),
        "readout": evaluation.readout,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def circuits_per_point(family: CircuitFamily, evaluation: EvaluationSpec) -> int:
    """Executed circuits each point adds to a batch: measurement bases x ZNE scale factors."""
    bases = measurement_bases(family_observable(family))
    return len(bases) * len(executed_scale_factors(evaluation.zne))


def calibration_circuits(evaluation: EvaluationSpec) -> int:
    """Executed circuits a batch holds whatever its size: readout calibration."""
    return READOUT_CALIBRATION_CIRCUITS if evaluation.readout else 0


def max_points_per_batch(
    family: CircuitFamily, evaluation: EvaluationSpec, max_circuits_per_job: int
) -> int:
    """The most points one submission can hold on a backend (0: not even one fits)."""
    room = max_circuits_per_job - calibration_circuits(evaluation)
    return max(room, 0) // circuits_per_point(family, evaluation)


def admit_family(
    family: CircuitFamily, evaluation: EvaluationSpec, points: int = 1
) -> Capabilities:
    """What can be checked before anything starts (the CLI calls this too): the backend exists
    and is online, the family fits it, `points` points fit one job, and qloop can compute the
    family's classical reference. Refusals are AdmissionErrors whose message starts with the
    field."""
    width = family.num_qubits
    if width > MAX_IDEAL_QUBITS:
        raise AdmissionError(
            f"family: {width} qubits; qloop computes the exact reference of a family by "
            f"statevector and allows at most {MAX_IDEAL_QUBITS}"
        )
    if isinstance(family, QaoaFamily) and width > classical.MAX_BRUTE_FORCE_NODES:
        raise AdmissionError(
            f"family.graph.nodes: {width} nodes; the brute-force MaxCut baseline allows at most "
            f"{classical.MAX_BRUTE_FORCE_NODES}"
        )
    choice = evaluation.backend
    name = f"{choice.provider}/{choice.device}"
    try:
        capabilities = get_adapter(choice).capabilities()
    except (InvalidRequestError, RejectedError) as error:
        raise AdmissionError(f"evaluation.backend: {error.message}") from None
    if capabilities.status != "ONLINE":
        raise AdmissionError(
            f"evaluation.backend: {name} is {capabilities.status}; only an ONLINE device "
            "accepts work"
        )
    if width > capabilities.num_qubits:
        raise AdmissionError(
            f"family: needs {width} qubits but {name} has {capabilities.num_qubits}"
        )
    if evaluation.shots > capabilities.max_shots:
        raise AdmissionError(
            f"evaluation.shots: {evaluation.shots} exceeds the maximum of "
            f"{capabilities.max_shots} on {name}"
        )
    if max_points_per_batch(family, evaluation, capabilities.max_circuits_per_job) < points:
        per_point = circuits_per_point(family, evaluation)
        calibration = calibration_circuits(evaluation)
        raise AdmissionError(
            f"evaluation: a batch of {points} point(s) needs {points * per_point + calibration} "
            f"circuits ({per_point} per point: measurement bases x ZNE scale factors, plus "
            f"{calibration} for readout calibration) but {name} takes at most "
            f"{capabilities.max_circuits_per_job} per job; use fewer ZNE scale factors"
        )
    return capabilities


# --- prepare ---------------------------------------------------------------------------------


def prepare_batch(input: BatchInput) -> PreparedBatch:
    family, evaluation = input.family, input.evaluation
    built = family_circuit(family)
    _check_points(built, input.points)
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


def _check_points(built: FamilyCircuit, points: list[Point]) -> None:
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


def _rounded(value: float) -> float:
    rounded = round(float(value), FINGERPRINT_DECIMALS)
    return rounded + 0.0  # -0.0 and 0.0 are the same angle


# --- folding templates -----------------------------------------------------------------------


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


# --- score -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Measured:
    """One point's measured value at one scale factor, with its shot-noise standard error."""

    value: float
    std_error: float


def score_batch(input: ScoreInput) -> ScoredBatch:
    plan = artifact_store.read_model(input.prepared.batch_uri, BatchPlan)
    result = artifact_store.read_model(input.counts_uri, JobResult)
    batch, evaluation = input.batch, input.batch.evaluation
    if len(result.counts) != plan.batch.num_executions:
        raise ValueError(
            f"the job returned counts for {len(result.counts)} circuits; batch {batch.label} "
            f"ran {plan.batch.num_executions}"
        )
    num_bits = len(plan.measured_physical_qubits)
    offsets = np.cumsum([0] + [spec.num_executions for spec in plan.batch.circuits]).tolist()
    terms = product_terms(family_observable(batch.family), plan.bases)
    confusion = _readout_confusion(plan, result, offsets, num_bits)
    raw_terms = _by_basis(terms)
    corrected = raw_terms
    if confusion is not None:
        corrected = _by_basis(_corrected(terms, inverse_matrices(confusion)))
    fit_scales = list(evaluation.zne.scale_factors) if evaluation.zne is not None else [1.0]
    values: list[PointValue] = []
    details: list[dict[str, object]] = []
    for index, point in enumerate(batch.points):
        by_scale = _point_distributions(plan, result, offsets, index, num_bits)
        raw = _measure(raw_terms, by_scale[1.0])
        points = [_measure(corrected, by_scale[scale]) for scale in fit_scales]
        value = _mitigated(batch, index, fit_scales, points, raw, confusion is not None)
        fingerprint = input.prepared.fingerprints[index]
        values.append(
            PointValue(
                parameters=list(point),
                value=value.value,
                std_error=value.std_error,
                raw=raw.value,
                fingerprint=fingerprint,
            )
        )
        details.append(
            {
                "parameters": list(point),
                "fingerprint": fingerprint,
                "value": value.value,
                "std_error": value.std_error,
                "raw": raw.value,
                "raw_std_error": raw.std_error,
                "scaled": [
                    {"scale_factor": s, "value": p.value, "std_error": p.std_error}
                    for s, p in zip(fit_scales, points, strict=True)
                ],
            }
        )
    cost = Cost(usd=result.cost_usd, detail=f"billed for {plan.batch.num_executions} circuits")
    record: dict[str, object] = {
        "label": batch.label,
        "family": plan.family_label,
        "parameter_names": plan.parameter_names,
        "backend": evaluation.backend.model_dump(mode="json"),
        "shots": result.shots,
        "seed": evaluation.seed,
        "zne": None if evaluation.zne is None else evaluation.zne.model_dump(mode="json"),
        "readout_mitigated": confusion is not None,
        "counts_uri": input.counts_uri,
        "batch_uri": input.prepared.batch_uri,
        "actual_cost_usd": cost.usd,
        "points": details,
    }
    if confusion is not None:
        record["readout_confusion"] = confusion.round(6).tolist()
    uri = artifact_store.put_json(batch.artifact_folder, SCORES_ARTIFACT, record)
    return ScoredBatch(values=values, actual_cost=cost, artifact_uri=uri)


@implements(activity_contracts.score_batch)
async def score_batch_activity(input: ScoreInput) -> ScoredBatch:
    return await in_child_with_heartbeats(score_batch, input)


def _point_distributions(
    plan: BatchPlan, result: JobResult, offsets: list[int], point: int, num_bits: int
) -> dict[float, dict[str, Distribution]]:
    by_scale: dict[float, dict[str, Distribution]] = {}
    for position, role in enumerate(plan.roles):
        if role.kind != "observable" or role.basis is None or role.scale_factor is None:
            continue
        counts = result.counts[offsets[position] + point]
        by_scale.setdefault(role.scale_factor, {})[role.basis] = Distribution.from_counts(
            counts, num_bits
        )
    return by_scale


def _readout_confusion(
    plan: BatchPlan, result: JobResult, offsets: list[int], num_bits: int
) -> FloatArray | None:
    calibration = {
        role.prepared_bits: Distribution.from_counts(result.counts[offsets[i]], num_bits)
        for i, role in enumerate(plan.roles)
        if role.kind == "readout_calibration"
    }
    if not calibration:
        return None
    return confusion_matrices(calibration["0" * num_bits], calibration["1" * num_bits])


def _corrected(terms: list[ProductTerm], inverses: FloatArray) -> list[ProductTerm]:
    return [
        ProductTerm(t.basis, t.coefficient, mitigate_factors(t.factors, inverses)) for t in terms
    ]


@dataclass(frozen=True)
class _BasisTerms:
    """The terms measured in one basis, stacked: coefficients (T,) and factors (T, n, 2)."""

    coefficients: FloatArray
    factors: FloatArray

    def per_outcome(self, distribution: Distribution) -> FloatArray:
        """The terms' sum on each distinct outcome: prod_i factors[t, i, x_i], summed over t."""
        bits = distribution.bits.astype(np.intp)
        outcomes, width = bits.shape
        qubits = np.arange(width)[None, :]
        # Terms in chunks, so the (terms, outcomes, qubits) array stays a few MB.
        chunk = max(1, _GATHER_ELEMENTS // max(outcomes * width, 1))
        total = np.zeros(outcomes)
        for start in range(0, len(self.coefficients), chunk):
            picked = self.factors[start : start + chunk, qubits, bits]
            total += self.coefficients[start : start + chunk] @ picked.prod(axis=2)
        return total


def _by_basis(terms: list[ProductTerm]) -> dict[str, _BasisTerms]:
    grouped: dict[str, list[ProductTerm]] = {}
    for term in terms:
        grouped.setdefault(term.basis, []).append(term)
    return {
        basis: _BasisTerms(
            coefficients=np.array([t.coefficient for t in group]),
            factors=np.stack([t.factors for t in group]),
        )
        for basis, group in grouped.items()
    }


def _measure(terms: dict[str, _BasisTerms], distributions: dict[str, Distribution]) -> _Measured:
    """The observable and its shot-noise standard error: terms measured in one basis are
    correlated (their sum's variance counts), bases are independent."""
    value, variance = 0.0, 0.0
    for basis, grouped in terms.items():
        distribution = distributions[basis]
        per_outcome = grouped.per_outcome(distribution)
        probabilities = distribution.weights / distribution.total
        mean = float(probabilities @ per_outcome)
        value += mean
        variance += float(probabilities @ (per_outcome - mean) ** 2) / distribution.total
    return _Measured(value, math.sqrt(variance))


def _mitigated(
    batch: BatchInput,
    index: int,
    scales: list[float],
    points: list[_Measured],
    raw: _Measured,
    readout: bool,
) -> _Measured:
    """The zero-noise value when ZNE is on (its error propagated through the fit to first
    order), else the readout-corrected value, else the raw one. The readout calibration's own
    shot noise is not propagated: it is shared by every point of the batch."""
    zne = batch.evaluation.zne
    if zne is None:
        return points[0] if readout else raw
    values = [p.value for p in points]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        try:
            zero = extrapolate(scales, values, zne.extrapolation, zne.polynomial_order)
            gradient = _fit_gradient(scales, values, zne.extrapolation, zne.polynomial_order)
        except ExtrapolationError as error:
            raise ExtrapolationFailedError(
                f"batch {batch.label}, point {index} {batch.points[index]}: the "
                f"{zne.extrapolation} zero-noise fit does not converge on "
                f"{np.round(values, 4).tolist()} ({error}); 'richardson' or 'linear' always fit"
            ) from error
    errors = np.array([p.std_error for p in points])
    return _Measured(zero, float(np.sqrt(np.sum((gradient * errors) ** 2))))


def _fit_gradient(
    scales: list[float], values: list[float], method: Extrapolation, order: int | None
) -> FloatArray:
    """d(zero-noise value)/d(value at each scale), by central differences (exact for the
    linear fits: Richardson, linear, polynomial)."""
    step = 1e-6 * max(1.0, max(abs(v) for v in values))
    gradient = np.empty(len(values))
    for i in range(len(values)):
        up, down = list(values), list(values)
        up[i] += step
        down[i] -= step
        high, low = extrapolate(scales, up, method, order), extrapolate(scales, down, method, order)
        gradient[i] = (high - low) / (2 * step)
    return gradient


# --- classical reference -----------------------------------------------------------------------


def classical_reference(input: ReferenceInput) -> Reference:
    family = input.family
    if family.num_qubits > MAX_IDEAL_QUBITS:
        raise AdmissionError(
            f"family: {family.num_qubits} qubits; the exact reference allows at most "
            f"{MAX_IDEAL_QUBITS}"
        )
    built = family_circuit(family)
    if isinstance(family, QaoaFamily):
        optimum = classical.max_cut(family.graph)
        method, baseline = "brute_force_maxcut", optimum.value
    else:
        method, baseline = "exact_diagonalisation", ground_energy(family.hamiltonian)
    if input.points:
        _check_points(built, input.points)
    exact = [ideal_value(built.bind(point), built.observable) for point in input.points]
    return Reference(baseline_method=method, baseline_value=baseline, exact_values=exact)


@implements(activity_contracts.classical_reference)
async def classical_reference_activity(input: ReferenceInput) -> Reference:
    try:
        return await in_child_with_heartbeats(classical_reference, input)
    except AdmissionError as error:
        raise invalid_request(error) from error


def ground_energy(hamiltonian: PauliSumObservable) -> float:
    """The lowest eigenvalue of the Pauli sum (Hermitian: real coefficients)."""
    operator = SparsePauliOp(
        [term.pauli for term in hamiltonian.terms],
        [term.coefficient for term in hamiltonian.terms],
    )
    if hamiltonian.num_qubits <= MAX_DENSE_QUBITS:
        return float(np.linalg.eigvalsh(operator.to_matrix())[0])
    lowest = eigsh(operator.to_matrix(sparse=True), k=1, which="SA", return_eigenvectors=False)
    return float(lowest[0])
