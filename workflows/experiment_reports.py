"""An experiment's report, however it ends: with a mitigated quantum answer, rejected or
cancelled before one, or answered classically at the end of its fallback chain. Reports are
built by activities on the compute queue; the workflow passes what it recorded (stage timings,
governance, why another backend answered).

Deterministic workflow code.
"""

from __future__ import annotations

from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts
    from schemas.control import Governance
    from schemas.pipeline import (
        ClassicalReportInput,
        EndedReportInput,
        ExecutionPlan,
        MitigateInput,
        PostprocessInput,
        Stage,
    )
    from schemas.report import ExperimentReport, ReusedResult
    from schemas.request import ExperimentRequest
    from workflows.experiment_details import route_summary
    from workflows.experiment_preparation import PreparedRun
    from workflows.experiment_progress import ExperimentProgress
    from workflows.paid_execution import Executed
    from workflows.timed_stages import TimedStages

# The last resort of a fallback chain, named where a backend would be.
CLASSICAL = "classical"


async def answered_report(
    progress: ExperimentProgress,
    task_queue: str | None,
    run: PreparedRun,
    executed: Executed,
    governance: Governance | None,
    reused: ReusedResult | None = None,
) -> ExperimentReport:
    """Mitigates the fetched counts and reports the answer (`reused`: they are an earlier
    experiment's, taken instead of running)."""
    report = await mitigated_report(
        progress.stages,
        task_queue,
        run,
        executed,
        governance=governance,
        produced_by_reason=route_summary(governance),
        reused=reused,
    )
    progress.set(stage=Stage.COMPLETED)
    return report


async def mitigated_report(
    stages: TimedStages,
    task_queue: str | None,
    run: PreparedRun,
    executed: Executed,
    *,
    governance: Governance | None,
    produced_by_reason: str | None,
    reused: ReusedResult | None = None,
) -> ExperimentReport:
    """Mitigate → postprocess of fetched counts, under the workflow's id."""
    experiment_id = workflow.info().workflow_id
    mitigation = await stages.run_stage(
        Stage.MITIGATING,
        activity_contracts.mitigate,
        MitigateInput(
            experiment_id=experiment_id,
            request=run.request,
            prepared=run.prepared,
            plan=run.plan,
            counts_uri=executed.fetched.counts_uri,
            ideal_value=run.prevalidation.ideal_value,
        ),
        task_queue=task_queue,
    )
    report: ExperimentReport = await stages.run_stage(
        Stage.POSTPROCESSING,
        activity_contracts.postprocess,
        PostprocessInput(
            experiment_id=experiment_id,
            request=run.request,
            prepared=run.prepared,
            prevalidation=run.prevalidation,
            plan=run.plan,
            job=executed.job,
            fetched=executed.fetched,
            mitigation=mitigation,
            timings_seconds=stages.timings,
            governance=governance,
            produced_by_reason=produced_by_reason,
            reused=reused,
        ),
        task_queue=task_queue,
    )
    return report


async def ended_report(
    progress: ExperimentProgress,
    task_queue: str | None,
    request: ExperimentRequest,
    status: Literal["rejected", "cancelled"],
    reason: str,
    plan: ExecutionPlan | None,
    governance: Governance,
) -> ExperimentReport:
    """Rejected (by policy, a person or the budget) or cancelled before a quantum answer."""
    report = await progress.stages.run_stage(
        Stage.POSTPROCESSING,
        activity_contracts.ended_report,
        EndedReportInput(
            experiment_id=workflow.info().workflow_id,
            request=request,
            status=status,
            reason=reason,
            estimated_cost_usd=plan.cost_estimate.usd if plan else 0.0,
            actual_cost_usd=0.0,
            timings_seconds=progress.stages.timings,
            governance=governance,
        ),
        task_queue=task_queue,
    )
    progress.set(stage=Stage.REJECTED if status == "rejected" else Stage.CANCELLED, error=reason)
    return report


async def classical_report(
    progress: ExperimentProgress,
    task_queue: str | None,
    run: PreparedRun,
    governance: Governance,
) -> ExperimentReport:
    """The exact value of the observable, computed classically and labelled as such."""
    progress.set(backend=CLASSICAL)
    report = await progress.stages.run_stage(
        Stage.POSTPROCESSING,
        activity_contracts.classical_report,
        ClassicalReportInput(
            experiment_id=workflow.info().workflow_id,
            request=run.request,
            prepared=run.prepared,
            prevalidation=run.prevalidation,
            timings_seconds=progress.stages.timings,
            governance=governance,
            reason=route_summary(governance) or "the fallback chain ends with classical",
        ),
        task_queue=task_queue,
    )
    progress.set(stage=Stage.COMPLETED)
    return report
