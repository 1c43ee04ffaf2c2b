"""A provider queue on the server's (skipped) clock, for time-skipping tests: `check_job` and
`wait_for_job` answer QUEUED for `queue_time` after a job's first poll, then ask the real
adapter. `wait_for_job` raises JobNotDone meanwhile, as the real one does, so its retries at the
poll ceiling are what the workflow waits on.

A local simulator runs in one `simulate` activity, with no queue to stand in front of:
`as_queued_provider` makes the workflow treat the backend as a provider that queues jobs
(submit, polls, fetch), by marking what `preprocess` and `prepare_batch` report about it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.experiment.preprocess import preprocess_activity
from activities.providers.provider_calls import check_job
from activities.variational.batch_preparation import prepare_batch_activity
from schemas import error_types
from schemas.execution import JobState, JobStatus
from schemas.pipeline import JobInput, PreparedExperiment, PreprocessInput
from schemas.variational import BatchInput, PreparedBatch
from worker import all_activities


@activity.defn(name="preprocess")
async def preprocess_for_a_queued_provider(input: PreprocessInput) -> PreparedExperiment:
    prepared = await preprocess_activity(input)
    capabilities = prepared.capabilities.model_copy(update={"simulated_in_activity": False})
    return prepared.model_copy(update={"capabilities": capabilities})


@activity.defn(name="prepare_batch")
async def prepare_batch_for_a_queued_provider(input: BatchInput) -> PreparedBatch:
    prepared = await prepare_batch_activity(input)
    return prepared.model_copy(update={"simulated_in_activity": False})


def as_queued_provider(activities: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
    """`activities` with preprocess and prepare_batch reporting a backend that queues jobs."""
    replaced = {"preprocess", "prepare_batch"}
    return [
        a
        for a in activities
        if a.__temporal_activity_definition.name not in replaced  # type: ignore[attr-defined]
    ] + [preprocess_for_a_queued_provider, prepare_batch_for_a_queued_provider]


def activities_behind_a_queue(queue_time: timedelta) -> list[Callable[..., Any]]:
    entered: dict[str, datetime] = {}

    def queued(input: JobInput) -> JobStatus | None:
        now = activity.info().current_attempt_scheduled_time
        waited = now - entered.setdefault(input.job.job_id, now)
        if waited >= queue_time:
            return None
        remaining = (queue_time - waited) / queue_time
        return JobStatus(state=JobState.QUEUED, queue_position=1 + int(remaining * 40))

    @activity.defn(name="check_job")
    async def check_job_behind_a_queue(input: JobInput) -> JobStatus:
        return queued(input) or check_job(input)

    @activity.defn(name="wait_for_job")
    async def wait_for_job_behind_a_queue(input: JobInput) -> JobStatus:
        status = queued(input)
        if status is not None:
            raise ApplicationError(
                f"queue position {status.queue_position}",
                type=error_types.JOB_NOT_DONE,
                category=ApplicationErrorCategory.BENIGN,
            )
        return check_job(input)

    doubles = [check_job_behind_a_queue, wait_for_job_behind_a_queue]
    names = {"check_job", "wait_for_job"}
    return as_queued_provider(
        [
            a
            for a in all_activities()
            if a.__temporal_activity_definition.name not in names  # type: ignore[attr-defined]
        ]
        + doubles
    )
