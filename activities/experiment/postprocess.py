"""Postprocess: turn the mitigated numbers into the problem's objective, compare them with the
classical baseline and the ideal reference, and write the report and its manifest. A run that
asked for reuse leaves its counts for the next one (activities/experiment/result_reuse.py); a
reused answer says whose counts it took, and costs nothing."""

from __future__ import annotations

from importlib import metadata

from activities.experiment.result_reuse import remember, reuse_summary
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from adapters.registry import get_adapter
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Tier
from schemas.pipeline import ClassicalReportInput, EndedReportInput, PostprocessInput
from schemas.report import (
    BackendRecord,
    CostSummary,
    Estimate,
    ExperimentReport,
    Objective,
    Provenance,
    ZneOutcome,
)
from schemas.request import ExperimentRequest, QaoaMaxcutProblem

SDK_PACKAGES = (
    "qloop",
    "temporalio",
    "qiskit",
    "qiskit-aer",
    "mitiq",
    "amazon-braket-sdk",
    "numpy",
)


def sdk_versions() -> dict[str, str]:
    versions = {}
    for package in SDK_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def objective_for(input: PostprocessInput) -> Objective | None:
    """QAOA MaxCut is judged by its approximation ratio (expected cut / maximum cut); GHZ and
    mirror circuits by the probability of their ideal outcome; raw QASM has no objective."""
    problem = input.request.problem
    raw = input.mitigation.raw.value
    mitigated = input.mitigation.mitigated.value if input.mitigation.mitigated else None
    ideal = input.prevalidation.ideal_value
    baseline = input.prepared.classical_baseline
    if isinstance(problem, QaoaMaxcutProblem) and baseline is not None and baseline.value > 0:

        def ratio(cut: float) -> float:
            return cut / baseline.value

        return Objective(
            name="approximation_ratio",
            raw=ratio(raw),
            mitigated=None if mitigated is None else ratio(mitigated),
            ideal=ratio(ideal),
            baseline=1.0,
        )
    if problem.kind in ("ghz", "mirror"):
        return Objective(
            name="success_probability", raw=raw, mitigated=mitigated, ideal=ideal, baseline=1.0
        )
    return None


def production_label(input: PostprocessInput) -> tuple[str, str]:
    capabilities = input.prepared.capabilities
    where = f"{capabilities.provider}/{capabilities.device} ({capabilities.tier.value})"
    produced_by = "hardware" if capabilities.tier is Tier.QPU else "simulator"
    if input.produced_by_reason:
        reason = input.produced_by_reason
    elif capabilities.tier is Tier.QPU:
        reason = f"ran on the requested QPU {where}"
    else:
        reason = f"ran on the requested simulator {where}"
    reused = reuse_summary(input.reused) if input.reused is not None else None
    return produced_by, reason if reused is None else f"{reason}; {reused}"


def artifact_uris(input: PostprocessInput) -> dict[str, str]:
    uris = {
        "prepared": input.prepared.artifact_uri,
        "prevalidation": input.prevalidation.artifact_uri,
        "batch": input.plan.batch_uri,
        "counts": input.fetched.counts_uri,
        "mitigation": input.mitigation.artifact_uri,
    }
    if input.mitigation.plot_uri:
        uris["zne_plot"] = input.mitigation.plot_uri
    return uris


def postprocess(input: PostprocessInput) -> ExperimentReport:
    request: ExperimentRequest = input.request
    backend = request.execution.backend
    if input.reused is None and input.plan.reuse is not None:
        remember(input.plan.reuse, input.experiment_id, input.job, input.fetched)
    calibration = get_adapter(backend).calibration()
    artifacts = artifact_uris(input)
    if calibration is not None:
        artifacts["calibration"] = artifact_store.put_json(
            input.experiment_id, "calibration.json", calibration
        )
    artifacts.update(report_locations(input.experiment_id))
    produced_by, reason = production_label(input)
    mitigation = input.mitigation
    seed = request.execution.seed if request.execution.seed is not None else 0
    versions = sdk_versions()
    report = ExperimentReport(
        experiment_id=input.experiment_id,
        name=request.name,
        produced_by=produced_by,
        produced_by_reason=reason,
        observable=input.prepared.observable_label,
        value=mitigation.mitigated or mitigation.raw,
        raw=mitigation.raw,
        mitigated=mitigation.mitigated,
        ideal_value=input.prevalidation.ideal_value,
        zne=zne_outcome(input),
        readout_mitigated=mitigation.readout_mitigated,
        objective=objective_for(input),
        classical_baseline=input.prepared.classical_baseline,
        cost=CostSummary(
            estimated_usd=0.0 if input.reused else input.plan.cost_estimate.usd,
            actual_usd=input.fetched.actual_cost.usd,
        ),
        timings_seconds=input.timings_seconds,
        governance=input.governance,
        reused=input.reused,
        provenance=Provenance(
            backend=BackendRecord(
                provider=backend.provider,
                device=backend.device,
                tier=input.prepared.capabilities.tier,
                noise_profile=backend.noise_profile,
            ),
            calibration=calibration,
            logical_circuit_sha256=input.prepared.logical_circuit_sha256,
            executed_circuits_sha256=input.plan.executed_circuits_sha256,
            job_id=input.job.job_id,
            client_token=input.job.client_token,
            shots=request.execution.shots,
            seeds={"transpiler": seed, "simulator": seed, "bootstrap": seed},
            sdk_versions=versions,
            schema_version=request.schema_version,
            artifacts=artifacts,
        ),
    )
    write_report(report, request, artifacts, versions)
    return report


def write_report(
    report: ExperimentReport,
    request: ExperimentRequest,
    artifacts: dict[str, str],
    versions: dict[str, str],
) -> None:
    artifact_store.put_model(report.experiment_id, "report.json", report)
    artifact_store.put_json(
        report.experiment_id,
        "manifest.json",
        {
            "experiment_id": report.experiment_id,
            "request": request.model_dump(mode="json"),
            "artifacts": artifacts,
            "sdk_versions": versions,
        },
    )


def report_locations(experiment_id: str) -> dict[str, str]:
    return {
        "report": artifact_store.url_of(experiment_id, "report.json"),
        "manifest": artifact_store.url_of(experiment_id, "manifest.json"),
    }


def classical_report(input: ClassicalReportInput) -> ExperimentReport:
    """The exact classical value of the observable (the statevector prevalidation computed),
    reported as what it is: no quantum device produced it."""
    request = input.request
    ideal = input.prevalidation.ideal_value
    exact = Estimate(value=ideal, ci_low=ideal, ci_high=ideal)
    artifacts = {
        "prepared": input.prepared.artifact_uri,
        "prevalidation": input.prevalidation.artifact_uri,
        **report_locations(input.experiment_id),
    }
    versions = sdk_versions()
    seed = request.execution.seed if request.execution.seed is not None else 0
    report = ExperimentReport(
        experiment_id=input.experiment_id,
        name=request.name,
        produced_by="classical",
        produced_by_reason=f"exact statevector simulation on the worker's CPU; {input.reason}",
        observable=input.prepared.observable_label,
        value=exact,
        ideal_value=ideal,
        classical_baseline=input.prepared.classical_baseline,
        cost=CostSummary(estimated_usd=0.0, actual_usd=0.0),
        timings_seconds=input.timings_seconds,
        governance=input.governance,
        provenance=Provenance(
            backend=BackendRecord(provider="classical", device="statevector", tier=Tier.SIMULATOR),
            logical_circuit_sha256=input.prepared.logical_circuit_sha256,
            executed_circuits_sha256=[],
            job_id=None,
            client_token=None,
            shots=0,
            seeds={"transpiler": seed},
            sdk_versions=versions,
            schema_version=request.schema_version,
            artifacts=artifacts,
        ),
    )
    write_report(report, request, artifacts, versions)
    return report


def ended_report(input: EndedReportInput) -> ExperimentReport:
    """The record of an experiment that ended without an answer (rejected or cancelled)."""
    artifacts = report_locations(input.experiment_id)
    report = ExperimentReport(
        experiment_id=input.experiment_id,
        name=input.request.name,
        status=input.status,
        status_reason=input.reason,
        cost=CostSummary(estimated_usd=input.estimated_cost_usd, actual_usd=input.actual_cost_usd),
        timings_seconds=input.timings_seconds,
        governance=input.governance,
    )
    write_report(report, input.request, artifacts, sdk_versions())
    return report


def zne_outcome(input: PostprocessInput) -> ZneOutcome | None:
    zne = input.request.mitigation.zne
    if zne is None:
        return None
    return ZneOutcome(
        folding=zne.folding,
        extrapolation=zne.extrapolation,
        points=input.mitigation.points,
        plot_uri=input.mitigation.plot_uri,
    )


@implements(activity_contracts.postprocess)
async def postprocess_activity(input: PostprocessInput) -> ExperimentReport:
    return await in_child_with_heartbeats(postprocess, input)


@implements(activity_contracts.classical_report)
async def classical_report_activity(input: ClassicalReportInput) -> ExperimentReport:
    return await in_child_with_heartbeats(classical_report, input)


@implements(activity_contracts.ended_report)
async def ended_report_activity(input: EndedReportInput) -> ExperimentReport:
    return await in_child_with_heartbeats(ended_report, input)
