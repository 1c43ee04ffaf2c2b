"""Before anything is paid: the request's circuits are built and transpiled (preprocess),
checked on a simulator (prevalidate) and planned as one batch with its cost estimate (plan),
each a heartbeating activity on the compute queue.

Deterministic workflow code.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts
    from schemas.pipeline import (
        ExecutionPlan,
        PlanInput,
        PreparedExperiment,
        PreprocessInput,
        PrevalidateInput,
        Prevalidation,
        Stage,
    )
    from schemas.request import ExperimentRequest
    from workflows import search_attributes as attrs
    from workflows.experiment_progress import ExperimentProgress
    from workflows.timed_stages import TimedStages


@dataclass(frozen=True)
class PreparedRun:
    """A request prepared for one backend, ready to be paid for."""

    request: ExperimentRequest
    prepared: PreparedExperiment
    prevalidation: Prevalidation
    plan: ExecutionPlan


def with_resolved_seed(request: ExperimentRequest) -> ExperimentRequest:
    """A request without a seed gets one from the workflow's deterministic RNG, so every run is
    reproducible from its manifest."""
    if request.execution.seed is not None:
        return request
    execution = request.execution.model_copy(update={"seed": workflow.random().randrange(2**32)})
    return request.model_copy(update={"execution": execution})


async def prepare(
    progress: ExperimentProgress, task_queue: str | None, request: ExperimentRequest
) -> PreparedRun:
    """The run, its estimate shown in the progress and as a search attribute."""
    run = await prepared_run(progress.stages, task_queue, request)
    progress.set(estimated_cost_usd=run.plan.cost_estimate.usd)
    workflow.upsert_search_attributes(
        [attrs.ESTIMATED_COST_USD.value_set(run.plan.cost_estimate.usd)]
    )
    return run


async def prepared_run(
    stages: TimedStages, task_queue: str | None, request: ExperimentRequest
) -> PreparedRun:
    """Preprocess → prevalidate → plan, under the workflow's id."""
    experiment_id = workflow.info().workflow_id
    prepared = await stages.run_stage(
        Stage.PREPROCESSING,
        activity_contracts.preprocess,
        PreprocessInput(experiment_id=experiment_id, request=request),
        task_queue=task_queue,
    )
    prevalidation = await stages.run_stage(
        Stage.PREVALIDATING,
        activity_contracts.prevalidate,
        PrevalidateInput(experiment_id=experiment_id, request=request, prepared=prepared),
        task_queue=task_queue,
    )
    plan = await stages.run_stage(
        Stage.PLANNING,
        activity_contracts.plan,
        PlanInput(experiment_id=experiment_id, request=request, prepared=prepared),
        task_queue=task_queue,
    )
    return PreparedRun(request, prepared, prevalidation, plan)
