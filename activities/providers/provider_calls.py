"""Activities that talk to a provider through the adapter protocol: submit, check, wait, fetch,
cancel.

Provider errors keep their class across the activity boundary as the ApplicationError type, so
the workflow's retry policy retries transient ones and stops on the rest. A job of many provider
tasks leaves `submit` with its task ids in the artifact store, so that no poll carries them
through workflow history; every other call reads them back before it asks the adapter.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TypeVar

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.providers.provider_failures import as_application_error
from activities.runtime.heartbeats import in_thread_with_heartbeats
from activities.storage import artifact_store
from adapters.base import ProgramCompiler
from adapters.errors import ProviderError
from adapters.registry import get_adapter
from schemas import activity_contracts, error_types
from schemas.activity_contracts import implements
from schemas.execution import Cost, JobRef, JobStatus
from schemas.pipeline import FetchedResult, FetchInput, JobInput, PlannedBatch, SubmitInput

ResultT = TypeVar("ResultT")

JOB_PARTS_FOLDER = "provider-jobs"
# How often a cancelled job is asked whether every part of it has ended.
CANCEL_CHECK_SECONDS = 1.0


async def call_provider(work: Callable[[], ResultT]) -> ResultT:
    try:
        return await in_thread_with_heartbeats(work)
    except ProviderError as error:
        raise as_application_error(error) from error


def parts_in_store(job: JobRef) -> JobRef:
    """`job` as workflow history carries it: the task ids of a job of several in the store."""
    parts = job.part_ids
    if len(parts) == 1:
        return job
    name = f"{hashlib.sha256(job.client_token.encode()).hexdigest()[:32]}.json"
    uri = artifact_store.put_json(JOB_PARTS_FOLDER, name, parts)
    return job.model_copy(
        update={"job_id": job.client_token, "parts_uri": uri, "part_count": len(parts)}
    )


def with_parts(job: JobRef) -> JobRef:
    """`job` as an adapter sees it: every task id in `job_id`."""
    if job.parts_uri is None:
        return job
    parts = artifact_store.read_json(job.parts_uri)
    if not isinstance(parts, list) or len(parts) != job.part_count:
        raise ApplicationError(
            f"the task list of job {job.client_token} at {job.parts_uri} does not hold "
            f"{job.part_count} task ids",
            type=error_types.INVALID_REQUEST,
            non_retryable=True,
        )
    return job.model_copy(update={"job_id": ",".join(map(str, parts)), "parts_uri": None})


def submit(input: SubmitInput) -> JobRef:
    planned = artifact_store.read_model(input.batch_uri, PlannedBatch)
    adapter = get_adapter(input.backend)
    if planned.programs is not None and isinstance(adapter, ProgramCompiler):
        job = adapter.submit_programs(planned.programs, input.shots, input.client_token, input.tags)
    else:
        job = adapter.submit(planned.batch, input.shots, input.client_token, input.seed, input.tags)
    return parts_in_store(job)


def check_job(input: JobInput) -> JobStatus:
    return get_adapter(input.backend).status(with_parts(input.job))


def wait_for_job(input: JobInput) -> JobStatus:
    """The job's status once it ended; until then JobNotDone, which the workflow's retry policy
    repeats at its poll ceiling without adding to history."""
    status = check_job(input)
    if status.state.is_final:
        return status
    position = f", queue position {status.queue_position}" if status.queue_position else ""
    # Benign: the SDK logs it at DEBUG, not as a failure with a traceback on every poll.
    raise ApplicationError(
        f"job {input.job.job_id} is {status.state.value}{position}: {status.message or ''}",
        type=error_types.JOB_NOT_DONE,
        category=ApplicationErrorCategory.BENIGN,
    )


def fetch_result(input: FetchInput) -> FetchedResult:
    job = with_parts(input.job)
    result = get_adapter(input.backend).result(job)
    counts_uri = artifact_store.put_model(input.experiment_id, "counts.json", result)
    return FetchedResult(
        counts_uri=counts_uri,
        shots=result.shots,
        actual_cost=Cost(usd=result.cost_usd, detail=f"billed for job {input.job.job_id}"),
    )


def cancel_job(input: JobInput) -> Cost:
    """Cancels whatever of the job still queues or runs, waits until every part of it ended and
    returns what the provider bills for it: a job that finished before the cancel is billed in
    full, a cancelled one for the parts that completed."""
    job = with_parts(input.job)
    adapter = get_adapter(input.backend)
    adapter.cancel(job)
    while (billed := adapter.billed(job)) is None:
        time.sleep(CANCEL_CHECK_SECONDS)
    return billed


@implements(activity_contracts.submit)
async def submit_activity(input: SubmitInput) -> JobRef:
    return await call_provider(lambda: submit(input))


@implements(activity_contracts.check_job)
async def check_job_activity(input: JobInput) -> JobStatus:
    return await call_provider(lambda: check_job(input))


@implements(activity_contracts.wait_for_job)
async def wait_for_job_activity(input: JobInput) -> JobStatus:
    return await call_provider(lambda: wait_for_job(input))


@implements(activity_contracts.fetch_result)
async def fetch_result_activity(input: FetchInput) -> FetchedResult:
    return await call_provider(lambda: fetch_result(input))


@implements(activity_contracts.cancel_job)
async def cancel_job_activity(input: JobInput) -> Cost:
    return await call_provider(lambda: cancel_job(input))
