"""Mitigate: observable per scale factor from the batch's counts (readout-corrected when asked),
zero-noise extrapolation, bootstrap confidence intervals, a plot of the fit and every number
in a json artifact.

`raw` is the unfolded circuit's value with no correction at all; `points` (and the fit through
them) are readout-corrected when readout mitigation is on. `mitigated` is the zero-noise value,
or the readout-corrected unfolded value when ZNE is off; None only when nothing mitigates.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mitiq.zne.inference import ExtrapolationError, ExtrapolationWarning

from activities.experiment.plan import executed_scale_factors, mitigation_seed
from activities.numerics.observables import (
    Distribution,
    FloatArray,
    ProductTerm,
    evaluate,
    product_terms,
)
from activities.numerics.readout import confusion_matrices, inverse_matrices, mitigate_factors
from activities.numerics.zne import bootstrap, extrapolate, percentile_interval, plot_fit
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import JobResult
from schemas.pipeline import (
    CircuitRole,
    MitigateInput,
    MitigationOutcome,
    PlannedBatch,
    PreparedCircuits,
)
from schemas.report import Estimate, ScaledValue
from schemas.request import ZneSpec

PLOT_ARTIFACT = "zne_fit.png"
NUMBERS_ARTIFACT = "mitigation.json"


class ExtrapolationFailedError(ValueError):
    """The zero-noise fit does not converge on the measured values."""


@dataclass(frozen=True)
class Estimator:
    """The statistic bootstrapped: [raw, point per fit scale factor, mitigated or NaN] from the
    batch's distributions, in batch order."""

    terms: list[ProductTerm]
    circuit_index: dict[tuple[str, float], int]
    fit_scale_factors: list[float]
    calibration: tuple[int, int] | None
    zne: ZneSpec | None

    def __call__(self, distributions: Sequence[Distribution]) -> FloatArray:
        raw = self._value(distributions, 1.0, self.terms)
        corrected = self._corrected_terms(distributions)
        points = [self._value(distributions, s, corrected) for s in self.fit_scale_factors]
        return np.array([raw, *points, self._mitigated(distributions, corrected, points)])

    @property
    def mitigates(self) -> bool:
        return self.zne is not None or self.calibration is not None

    def _value(
        self, distributions: Sequence[Distribution], scale: float, terms: list[ProductTerm]
    ) -> float:
        by_basis = {
            basis: distributions[i] for (basis, s), i in self.circuit_index.items() if s == scale
        }
        return evaluate(terms, by_basis)

    def _corrected_terms(self, distributions: Sequence[Distribution]) -> list[ProductTerm]:
        if self.calibration is None:
            return self.terms
        zeros, ones = (distributions[i] for i in self.calibration)
        inverses = inverse_matrices(confusion_matrices(zeros, ones))
        return [
            ProductTerm(t.basis, t.coefficient, mitigate_factors(t.factors, inverses))
            for t in self.terms
        ]

    def _mitigated(
        self,
        distributions: Sequence[Distribution],
        corrected: list[ProductTerm],
        points: list[float],
    ) -> float:
        if self.zne is not None:
            try:
                return extrapolate(
                    self.fit_scale_factors,
                    points,
                    self.zne.extrapolation,
                    self.zne.polynomial_order,
                )
            except ExtrapolationError:
                return float("nan")
        if self.calibration is not None:
            return self._value(distributions, 1.0, corrected)
        return float("nan")


def mitigate(input: MitigateInput) -> MitigationOutcome:
    planned = artifact_store.read_model(input.plan.batch_uri, PlannedBatch)
    result = artifact_store.read_model(input.counts_uri, JobResult)
    prepared = artifact_store.read_model(input.prepared.artifact_uri, PreparedCircuits)
    distributions = _distributions(planned, result, len(prepared.measured_physical_qubits))
    estimator = _estimator(input, planned.roles, prepared)
    nominal = _nominal(estimator, distributions)
    mitigation = input.request.mitigation
    with warnings.catch_warnings():
        # Ill-conditioned fits on some resamplings are expected; they widen the interval.
        warnings.simplefilter("ignore", ExtrapolationWarning)
        samples = bootstrap(
            distributions,
            estimator,
            mitigation.bootstrap_samples,
            np.random.default_rng(mitigation_seed(input.request)),
        )
    level = mitigation.confidence_level
    raw = _estimate(nominal[0], samples[:, 0], level)
    mitigated = _estimate(nominal[-1], samples[:, -1], level) if estimator.mitigates else None
    std_errors = np.nanstd(samples[:, 1:-1], axis=0, ddof=1)
    points = [
        ScaledValue(scale_factor=s, value=float(v), std_error=float(e))
        for s, v, e in zip(estimator.fit_scale_factors, nominal[1:-1], std_errors, strict=True)
    ]
    plot_uri = _plot(input, points, mitigated)
    artifact_uri = artifact_store.put_json(
        input.experiment_id,
        NUMBERS_ARTIFACT,
        _numbers(input, estimator, distributions, raw, mitigated, points, samples),
    )
    return MitigationOutcome(
        raw=raw,
        mitigated=mitigated,
        points=points,
        readout_mitigated=estimator.calibration is not None,
        plot_uri=plot_uri,
        artifact_uri=artifact_uri,
    )


@implements(activity_contracts.mitigate)
async def mitigate_activity(input: MitigateInput) -> MitigationOutcome:
    return await in_child_with_heartbeats(mitigate, input)


def _distributions(planned: PlannedBatch, result: JobResult, num_bits: int) -> list[Distribution]:
    if len(result.counts) != len(planned.roles):
        raise ValueError(
            f"the job returned counts for {len(result.counts)} circuits; the plan has "
            f"{len(planned.roles)}"
        )
    return [Distribution.from_counts(counts, num_bits) for counts in result.counts]


def _estimator(
    input: MitigateInput, roles: list[CircuitRole], prepared: PreparedCircuits
) -> Estimator:
    zne = input.request.mitigation.zne
    circuit_index = {
        (role.basis, role.scale_factor): i
        for i, role in enumerate(roles)
        if role.kind == "observable" and role.basis is not None and role.scale_factor is not None
    }
    expected = {(b.basis, s) for b in prepared.bases for s in executed_scale_factors(zne)}
    if set(circuit_index) != expected:
        raise ValueError("the planned batch does not hold one circuit per basis and scale factor")
    calibration = {
        role.prepared_bits: i for i, role in enumerate(roles) if role.kind == "readout_calibration"
    }
    num_bits = len(prepared.measured_physical_qubits)
    return Estimator(
        terms=product_terms(prepared.observable, [b.basis for b in prepared.bases]),
        circuit_index=circuit_index,
        fit_scale_factors=list(zne.scale_factors) if zne is not None else [1.0],
        calibration=(calibration["0" * num_bits], calibration["1" * num_bits])
        if calibration
        else None,
        zne=zne,
    )


def _nominal(estimator: Estimator, distributions: list[Distribution]) -> FloatArray:
    nominal = estimator(distributions)
    if estimator.zne is not None and not np.isfinite(nominal[-1]):
        raise ExtrapolationFailedError(
            f"the {estimator.zne.extrapolation} zero-noise fit does not converge on the measured "
            f"values {nominal[1:-1].round(4).tolist()}; 'richardson' or 'linear' always fit"
        )
    return nominal


def _estimate(value: float, samples: FloatArray, confidence_level: float) -> Estimate:
    low, high = percentile_interval(samples, confidence_level)
    return Estimate(value=float(value), ci_low=low, ci_high=high)


def _plot(
    input: MitigateInput, points: list[ScaledValue], mitigated: Estimate | None
) -> str | None:
    zne = input.request.mitigation.zne
    if zne is None or mitigated is None:
        return None
    png = plot_fit(
        [p.scale_factor for p in points],
        [p.value for p in points],
        [p.std_error for p in points],
        zne.extrapolation,
        zne.polynomial_order,
        (mitigated.value, mitigated.ci_low, mitigated.ci_high),
        ideal=input.ideal_value,
    )
    return artifact_store.put_bytes(input.experiment_id, PLOT_ARTIFACT, png)


def _numbers(
    input: MitigateInput,
    estimator: Estimator,
    distributions: list[Distribution],
    raw: Estimate,
    mitigated: Estimate | None,
    points: list[ScaledValue],
    samples: FloatArray,
) -> dict[str, object]:
    mitigation = input.request.mitigation
    numbers: dict[str, object] = {
        "observable": input.prepared.observable_label,
        "raw": raw.model_dump(),
        "mitigated": mitigated.model_dump() if mitigated else None,
        "points": [p.model_dump() for p in points],
        "zne": mitigation.zne.model_dump() if mitigation.zne else None,
        "readout_mitigated": estimator.calibration is not None,
        "confidence_level": mitigation.confidence_level,
        "bootstrap_samples": mitigation.bootstrap_samples,
        "bootstrap_failed_fits": int(np.count_nonzero(~np.isfinite(samples[:, -1]))),
        "seed": mitigation_seed(input.request),
    }
    if estimator.calibration is not None:
        zeros, ones = (distributions[i] for i in estimator.calibration)
        numbers["readout_confusion"] = confusion_matrices(zeros, ones).round(6).tolist()
    return numbers
