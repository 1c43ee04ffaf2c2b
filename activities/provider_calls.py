"""Activities that talk to a provider through the adapter protocol: submit, check, fetch, cancel.

Provider errors keep their class across the activity boundary as the ApplicationError type, so
the workflow's retry policy retries transient ones and stops on the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import artifact_store
from activities.heartbeats import in_thread_with_heartbeats
from adapters.errors import ProviderError
from adapters.registry import get_adapter
from schemas.execution import Cost, ErrorClass, JobRef, JobStatus
from schemas.pipeline import FetchedResult, FetchInput, JobInput, PlannedBatch, SubmitInput

ResultT = TypeVar("ResultT")

ERROR_TYPES = {
    ErrorClass.TRANSIENT: "Transient",
    ErrorClass.REJECTED: "Rejected",
    ErrorClass.INVALID: "InvalidRequest",
    ErrorClass.JOB_FAILED: "JobFailed",
}


def as_application_error(error: ProviderError) -> ApplicationError:
    return ApplicationError(
        error.message,
        type=ERROR_TYPES[error.error_class],
        non_retryable=error.error_class is not ErrorClass.TRANSIENT,
    )


async def call_provider(work: Callable[[], ResultT]) -> ResultT:
    try:
        return await in_thread_with_heartbeats(work)
    except ProviderError as error:
        raise as_application_error(error) from error


def submit(input: SubmitInput) -> JobRef:
    planned = artifact_store.read_model(input.batch_uri, PlannedBatch)
    adapter = get_adapter(input.backend)
    return adapter.submit(planned.batch, input.shots, input.client_token, input.seed)


def check_job(input: JobInput) -> JobStatus:
    return get_adapter(input.backend).status(input.job)


def fetch_result(input: FetchInput) -> FetchedResult:
    result = get_adapter(input.backend).result(input.job)
    counts_uri = artifact_store.put_model(input.experiment_id, "counts.json", result)
    return FetchedResult(
        counts_uri=counts_uri,
        shots=result.shots,
        actual_cost=Cost(usd=result.cost_usd, detail=f"billed for job {input.job.job_id}"),
    )


def cancel_job(input: JobInput) -> None:
    get_adapter(input.backend).cancel(input.job)


@activity.defn(name="submit")
async def submit_activity(input: SubmitInput) -> JobRef:
    return await call_provider(lambda: submit(input))


@activity.defn(name="check_job")
async def check_job_activity(input: JobInput) -> JobStatus:
    return await call_provider(lambda: check_job(input))


@activity.defn(name="fetch_result")
async def fetch_result_activity(input: FetchInput) -> FetchedResult:
    return await call_provider(lambda: fetch_result(input))


@activity.defn(name="cancel_job")
async def cancel_job_activity(input: JobInput) -> None:
    await call_provider(lambda: cancel_job(input))
