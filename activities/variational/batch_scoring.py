"""A prepared batch scored from its counts: per point the observable's raw value, readout
correction, zero-noise extrapolation and a standard error; every number in one artifact."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from mitiq.zne.inference import ExtrapolationError, ExtrapolationWarning

from activities.experiment.mitigate import ExtrapolationFailedError
from activities.numerics.families import (
    family_observable,
)
from activities.numerics.observables import (
    Distribution,
    FloatArray,
    ProductTerm,
    product_terms,
)
from activities.numerics.readout import confusion_matrices, inverse_matrices, mitigate_factors
from activities.numerics.zne import (
    Extrapolation,
    extrapolate,
)
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from activities.variational.batch_preparation import BatchPlan
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Cost, JobResult
from schemas.variational import (
    BatchInput,
    PointValue,
    ScoredBatch,
    ScoreInput,
)

SCORES_ARTIFACT = "scores.json"


_GATHER_ELEMENTS = 1 << 20


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
