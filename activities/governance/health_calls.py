"""Activities through which an experiment consults and informs its backend's circuit breaker.

Both reach the backend's `BackendHealthWorkflow` with update-with-start, so the entity is created
by whoever needs it first, with the breaker settings of the worker's environment
(QLOOP_BREAKER_*); an entity that already runs keeps the settings it was started with.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.health import (
    AcquireBackendInput,
    BreakerSettings,
    HealthInput,
    HealthView,
    Outcome,
    Permit,
    PermitRequest,
    ReportOutcomeInput,
    health_workflow_id,
)
from schemas.settings import current_settings

HEALTH_WORKFLOW = "BackendHealthWorkflow"


def _start_health_entity(
    backend: str, task_queue: str, settings: BreakerSettings
) -> WithStartWorkflowOperation:
    return WithStartWorkflowOperation(
        HEALTH_WORKFLOW,
        HealthInput(backend=backend, settings=settings),
        id=health_workflow_id(backend),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"circuit breaker of {backend}",
    )


async def acquire_backend(
    client: Client,
    task_queue: str,
    input: AcquireBackendInput,
    settings: BreakerSettings,
    update_id: str | None = None,
) -> Permit:
    """May `input.experiment_id` submit to `input.backend` now? `update_id` makes a retried call
    return the first call's permit instead of asking twice."""
    return await client.execute_update_with_start_workflow(
        "acquire",
        PermitRequest(experiment_id=input.experiment_id),
        start_workflow_operation=_start_health_entity(input.backend, task_queue, settings),
        id=update_id,
        result_type=Permit,
    )


async def report_backend_outcome(
    client: Client,
    task_queue: str,
    input: ReportOutcomeInput,
    settings: BreakerSettings,
    update_id: str | None = None,
) -> HealthView:
    """Tells the breaker how an attempt on `input.backend` ended; `update_id` keeps a retried
    call from counting the same failure twice."""
    return await client.execute_update_with_start_workflow(
        "report",
        Outcome(experiment_id=input.experiment_id, success=input.success, detail=input.detail),
        start_workflow_operation=_start_health_entity(input.backend, task_queue, settings),
        id=update_id,
        result_type=HealthView,
    )


def _update_id_for_this_activity(kind: str) -> str:
    # Stable across retries of one activity, distinct between activities: the server answers a
    # repeated update id with the first answer.
    info = activity.info()
    return f"{kind}:{info.workflow_id}:{info.workflow_run_id}:{info.activity_id}"


def breaker_settings() -> BreakerSettings:
    """The breaker of a new backend, from QLOOP_BREAKER_* (schemas/settings.py)."""
    configured = current_settings()
    return BreakerSettings(
        failure_threshold=configured.breaker_failures,
        open_seconds=configured.breaker_open_seconds,
        probe_lease_seconds=configured.breaker_probe_lease_seconds,
    )


@implements(activity_contracts.acquire_backend)
async def acquire_backend_activity(input: AcquireBackendInput) -> Permit:
    return await acquire_backend(
        activity.client(),
        activity.info().task_queue,
        input,
        breaker_settings(),
        _update_id_for_this_activity("acquire"),
    )


@implements(activity_contracts.report_backend_outcome)
async def report_backend_outcome_activity(input: ReportOutcomeInput) -> HealthView:
    return await report_backend_outcome(
        activity.client(),
        activity.info().task_queue,
        input,
        breaker_settings(),
        _update_id_for_this_activity("report"),
    )
