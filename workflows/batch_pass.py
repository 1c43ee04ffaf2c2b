"""One batch of parameter points through the execution plane, from inside any workflow.

prepare_batch (compute queue) → budget reservation (paid backends only) → submit → poll with
timers → fetch → settle the actual cost → score_batch (compute queue). LoopWorkflow runs one
batch per iteration, SweepWorkflow one per group of points.

The submission's client token is a function of the workflow id and `token_label` only, not of
the run id: a loop that continued as new, or a worker that died after submitting, finds the job
it already paid for instead of submitting a second one. Deterministic workflow code: it calls
activities by name and imports no numerical library.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import error_types
    from schemas.budget import (
        Release,
        ReleaseBudgetInput,
        Reservation,
        ReservationOutcome,
        ReserveBudgetInput,
        SettleBudgetInput,
        Settlement,
    )
    from schemas.execution import JobRef, JobState, JobStatus
    from schemas.pipeline import (
        FetchedResult,
        FetchInput,
        JobInput,
        PolicyDecision,
        PolicyInput,
        PollingPolicy,
        SubmitInput,
    )
    from schemas.variational import BatchInput, PreparedBatch, ScoredBatch, ScoreInput
    from workflows.activity_options import (
        COMPUTE_RETRY,
        COMPUTE_TIMEOUT,
        ENTITY_RETRY,
        HEARTBEAT_TIMEOUT,
        POLL_TIMEOUT,
        PROVIDER_RETRY,
        PROVIDER_TIMEOUT,
        QUICK_TIMEOUT,
    )
    from workflows.experiment import describe_backend

JobStatusListener = Callable[[JobStatus], None]
ResultT = TypeVar("ResultT")


class BudgetExhausted(Exception):
    """The batch was not submitted: its estimated cost does not fit the account's budget (or the
    caller's cost limit). Nothing was spent on it."""

    def __init__(self, message: str, estimated_cost_usd: float) -> None:
        super().__init__(message)
        self.message = message
        self.estimated_cost_usd = estimated_cost_usd


def batch_client_token(workflow_id: str, token_label: str) -> str:
    """At most 64 characters, as Braket's clientToken allows; the same for every run of the
    workflow id, so continue-as-new and replays find the first submission."""
    digest = hashlib.sha256(f"{workflow_id}/{token_label}".encode()).hexdigest()
    return f"qloop-{digest[:40]}"


def reservation_key(workflow_id: str, run_id: str, token_label: str) -> str:
    return f"{workflow_id}/{run_id}/{token_label}"


@dataclass(frozen=True)
class _Held:
    """A reservation on an account's ledger, to be settled or released."""

    account: str
    key: str


async def run_batch(
    batch: BatchInput,
    *,
    account: str,
    polling: PollingPolicy,
    compute_queue: str | None,
    token_label: str,
    max_cost_usd: float | None = None,
    on_job_status: JobStatusListener | None = None,
) -> tuple[PreparedBatch, ScoredBatch]:
    """Evaluates every point of `batch` as one submission. `token_label` names the submission
    within the workflow (e.g. "iter-0007"): reusing a label reuses its job. A batch whose
    estimate exceeds `max_cost_usd`, or that the account's ledger refuses, raises
    BudgetExhausted before anything is submitted; a job the provider fails raises
    ApplicationError of type JobFailed. `on_job_status` sees every poll's answer (for progress
    queries and search attributes)."""
    prepared: PreparedBatch = await workflow.execute_activity(
        "prepare_batch",
        batch,
        result_type=PreparedBatch,
        task_queue=compute_queue,
        start_to_close_timeout=COMPUTE_TIMEOUT,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=COMPUTE_RETRY,
        summary=f"{token_label}: prepare",
    )
    estimate = prepared.cost_estimate.usd
    if max_cost_usd is not None and estimate > max_cost_usd:
        raise BudgetExhausted(
            f"batch {token_label} would cost ${estimate:.2f}, more than the "
            f"${max_cost_usd:.2f} left under the cost limit",
            estimate,
        )
    decision = await _evaluate_policy(batch, prepared, account)
    held = await _reserve(batch, prepared, account, token_label, decision) if estimate > 0 else None
    fetched = await _execute(batch, prepared, polling, token_label, held, on_job_status)
    if held is not None:
        await _entity_call(
            "settle_budget",
            SettleBudgetInput(
                account=held.account,
                settlement=Settlement(key=held.key, actual_usd=fetched.actual_cost.usd),
            ),
        )
    scored: ScoredBatch = await workflow.execute_activity(
        "score_batch",
        ScoreInput(batch=batch, prepared=prepared, counts_uri=fetched.counts_uri),
        result_type=ScoredBatch,
        task_queue=compute_queue,
        start_to_close_timeout=COMPUTE_TIMEOUT,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=COMPUTE_RETRY,
        summary=f"{token_label}: score",
    )
    return prepared, scored


async def _evaluate_policy(
    batch: BatchInput, prepared: PreparedBatch, account: str
) -> PolicyDecision:
    """The account's policy applies to every batch. Loops and sweeps have no one to wait for, so
    a batch that would need a person's approval is refused like one the policy forbids."""
    decision: PolicyDecision = await workflow.execute_local_activity(
        "evaluate_policy",
        PolicyInput(
            account=account,
            backend=batch.evaluation.backend,
            tier=prepared.tier,
            shots=batch.evaluation.shots,
            estimated_cost_usd=prepared.cost_estimate.usd,
        ),
        result_type=PolicyDecision,
        start_to_close_timeout=QUICK_TIMEOUT,
        retry_policy=ENTITY_RETRY,
        summary="policy",
    )
    if not decision.allowed:
        raise ApplicationError(
            f"policy rule {decision.rule}: {decision.message}",
            type="PolicyRefused",
            non_retryable=True,
        )
    if decision.approval is not None:
        raise ApplicationError(
            f"policy: {decision.approval.why}; loops and sweeps cannot wait for approval by "
            f"{', '.join(decision.approval.approvers)} — run this backend as single experiments "
            "or ask for a policy that allows it",
            type="PolicyRefused",
            non_retryable=True,
        )
    return decision


async def _reserve(
    batch: BatchInput,
    prepared: PreparedBatch,
    account: str,
    token_label: str,
    decision: PolicyDecision,
) -> _Held:
    info = workflow.info()
    reservation = Reservation(
        key=reservation_key(info.workflow_id, info.run_id, token_label),
        experiment_id=info.workflow_id,
        amount_usd=prepared.cost_estimate.usd,
        backend=describe_backend(batch.evaluation.backend),
        note=f"{batch.label}: {len(batch.points)} points, {prepared.num_circuits} circuits",
    )
    outcome: ReservationOutcome = await _entity_call(
        "reserve_budget",
        ReserveBudgetInput(
            account=account,
            reservation=reservation,
            initial_limit_usd=decision.budget_default.limit_usd,
            initial_period=decision.budget_default.period,
        ),
        ReservationOutcome,
    )
    if not outcome.accepted:
        raise BudgetExhausted(f"batch {token_label}: {outcome.message}", reservation.amount_usd)
    return _Held(account=account, key=reservation.key)


async def _execute(
    batch: BatchInput,
    prepared: PreparedBatch,
    polling: PollingPolicy,
    token_label: str,
    held: _Held | None,
    on_job_status: JobStatusListener | None,
) -> FetchedResult:
    """Submit, wait and fetch; the reservation is released and a submitted job cancelled when
    anything on the way fails or the workflow is cancelled."""
    backend = batch.evaluation.backend
    job: JobRef | None = None
    try:
        job = await workflow.execute_activity(
            "submit",
            SubmitInput(
                backend=backend,
                batch_uri=prepared.batch_uri,
                shots=batch.evaluation.shots,
                seed=batch.evaluation.seed,
                client_token=batch_client_token(workflow.info().workflow_id, token_label),
            ),
            result_type=JobRef,
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=f"{token_label}: submit",
        )
        await _wait_until_done(batch, job, polling, token_label, on_job_status)
        return await workflow.execute_activity(
            "fetch_result",
            FetchInput(experiment_id=batch.artifact_folder, backend=backend, job=job),
            result_type=FetchedResult,
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=f"{token_label}: fetch",
        )
    except asyncio.CancelledError:
        if job is not None:
            await workflow.execute_activity(
                "cancel_job",
                JobInput(backend=backend, job=job),
                start_to_close_timeout=PROVIDER_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=PROVIDER_RETRY,
                summary=f"{token_label}: cancel",
            )
        await _release(held, f"batch {token_label} cancelled")
        raise
    except Exception as error:
        await _release(held, f"batch {token_label} failed: {_why(error)}")
        raise


async def _wait_until_done(
    batch: BatchInput,
    job: JobRef,
    polling: PollingPolicy,
    token_label: str,
    on_job_status: JobStatusListener | None,
) -> None:
    """Short polls with durable timers in between, the interval doubling to the ceiling: no
    activity slot or thread is held while the provider works."""
    interval = timedelta(seconds=polling.initial_seconds)
    ceiling = timedelta(seconds=polling.ceiling_seconds)
    while True:
        status: JobStatus = await workflow.execute_activity(
            "check_job",
            JobInput(backend=batch.evaluation.backend, job=job),
            result_type=JobStatus,
            start_to_close_timeout=POLL_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=f"{token_label}: poll",
        )
        if on_job_status is not None:
            on_job_status(status)
        if status.state is JobState.DONE:
            return
        if status.state.is_final:
            raise ApplicationError(
                f"job {job.job_id} of batch {token_label} on {job.device} ended "
                f"{status.state.value}: {status.message or 'no reason given'}",
                type=error_types.JOB_FAILED,
                non_retryable=True,
            )
        await workflow.sleep(interval, summary=f"{token_label}: wait for provider")
        interval = min(interval * 2, ceiling)


def _why(error: Exception) -> str:
    """An activity's own failure rather than the wrapper's "Activity task failed"."""
    if isinstance(error, ActivityError) and error.cause is not None:
        return str(error.cause)
    return str(error)


async def _release(held: _Held | None, reason: str) -> None:
    if held is None:
        return
    await _entity_call(
        "release_budget",
        ReleaseBudgetInput(account=held.account, release=Release(key=held.key, reason=reason)),
    )


async def _entity_call(
    activity: str, arg: object, result_type: type[ResultT] | None = None
) -> ResultT:
    return await workflow.execute_activity(
        activity,
        arg,
        result_type=result_type,
        start_to_close_timeout=QUICK_TIMEOUT,
        retry_policy=ENTITY_RETRY,
        summary=activity,
    )
