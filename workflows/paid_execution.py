"""The one path every paid submission takes: reserve → submit → wait → fetch → settle.

Experiments, loop iterations and sweep batches all run their provider work through
`PaidExecution`; they differ only in how they are steered (`Steering`: pause, reroute, cancel
and progress for experiments, nothing for loops and sweeps). The money rules it keeps:

- Reservation key and client token come from the workflow id, the submission's name, a number
  and the backend, never from the run id: a run reset to before its submission, or continued as
  new, asks for the same key and token, and the provider hands back the job it already has
  instead of starting a second. The ledger never accepts a closed key as a new reservation: a
  released key moves the submission to its next number (a new job, reserved anew); a committed
  one means this job was paid and settled, so it is found again and not settled twice.
- Every job the provider accepted ends cancelled or committed at what the provider bills for
  it. Whatever ends the path early — a failed task of a batch, the queue deadline, a reroute, a
  cancel signal, Temporal's own cancellation, a failed fetch — cancels what still queues or runs,
  waits until every part ended and commits what the provider billed (a job that finished first
  is billed in full), or releases the reservation when nothing was billed.
- Money steps finish: a cancellation that arrives while `reserve`, `submit`, `cancel_job`,
  `settle` or `release` runs lets the step finish (so the reservation, the job and what was
  billed are known), however often it arrives, and takes effect once the books are straight.
  One that arrives with the step's result takes effect where the workflow next waits.
- Waiting: short polls on durable timers while the interval doubles; once it reaches its
  ceiling one `wait_for_job` activity retries at the ceiling until the job ended, which adds
  nothing to history per poll (samples-python `polling/infrequent`), so a wait of weeks stays
  small. A pause, reroute or cancel interrupts it at once.

Deterministic workflow code: activities are called by name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts, error_types
    from schemas.budget import (
        Release,
        ReleaseBudgetInput,
        Reservation,
        ReservationOutcome,
        ReserveBudgetInput,
        SettleBudgetInput,
        Settlement,
    )
    from schemas.execution import Cost, JobRef, JobState, JobStatus
    from schemas.paid_keys import client_token, reservation_key, task_tags
    from schemas.pipeline import (
        FetchedResult,
        FetchInput,
        JobInput,
        PolicyDecision,
        PollingPolicy,
        SimulateInput,
        Stage,
        SubmitInput,
    )
    from schemas.request import BackendChoice
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

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
StatusListener = Callable[[JobStatus], None]

# Histories recorded before waits at the poll ceiling became one retried activity replay with
# timers all the way.
WAIT_AT_CEILING_PATCH = "wait-for-job-at-poll-ceiling"
# Histories recorded before local simulators ran as one compute activity replay submit, polls
# and fetch for them too.
LOCAL_SIMULATION_PATCH = "local-simulation-as-compute-activity"
# Histories recorded before every money step finished through cancellations cancelled a ledger
# call, or a submission cancelled twice, where the cancellation found it.
MONEY_STEPS_FINISH_PATCH = "money-steps-finish-through-cancellation"
# Histories recorded before a cancellation that arrived with a money step's result was held for
# the next wait counted it against that step.
CANCEL_WITH_RESULT_PATCH = "cancel-with-result-lands-after-the-step"


def is_remote(choice: BackendChoice) -> bool:
    """Remote backends (a device ARN) can fail, queue and cost money; local simulators cannot."""
    return choice.device.startswith("arn:")


def describe_backend(choice: BackendChoice) -> str:
    profile = f":{choice.noise_profile}" if choice.noise_profile else ""
    return f"{choice.provider}/{choice.device}{profile}"


class Steering(Protocol):
    """How the workflow that owns a paid execution steers it."""

    def interrupted(self) -> bool:
        """A pause, reroute or cancel waits to be acted on."""
        ...

    async def checkpoint(self) -> None:
        """Acts on it: holds while paused, raises to leave the path."""
        ...

    def on_stage(self, stage: Stage) -> None: ...

    def on_status(self, status: JobStatus) -> None: ...

    async def job_done(self, job: JobRef) -> None:
        """The provider finished the job, before its result is fetched."""
        ...


class Unsteered:
    """Loops and sweeps: nobody pauses a batch; `on_status` sees every poll."""

    def __init__(self, on_status: StatusListener | None = None) -> None:
        self._on_status = on_status

    def interrupted(self) -> bool:
        return False

    async def checkpoint(self) -> None:
        return None

    def on_stage(self, stage: Stage) -> None:
        return None

    def on_status(self, status: JobStatus) -> None:
        if self._on_status is not None:
            self._on_status(status)

    async def job_done(self, job: JobRef) -> None:
        return None


class Executed(NamedTuple):
    job: JobRef
    fetched: FetchedResult


@dataclass(frozen=True)
class PaidWork:
    """One submission. `submission` names it within its workflow ("run", "iter-0007");
    `purpose` is the ledger's note and the prefix of activity summaries; `name` (the
    experiment's, loop's or sweep's) tags its provider tasks with the account and workflow id."""

    account: str
    backend: BackendChoice
    batch_uri: str
    shots: int
    seed: int | None
    estimated_usd: float
    submission: str
    purpose: str
    artifact_folder: str
    polling: PollingPolicy
    max_queue_wait: timedelta
    name: str = ""
    # A local simulator (Capabilities.simulated_in_activity): one compute activity on
    # `compute_task_queue` (None: the workflow's own queue) instead of submit, polls and fetch.
    simulated_in_activity: bool = False
    compute_task_queue: str | None = None


@dataclass
class PaidExecution:
    work: PaidWork
    steering: Steering
    # Bumped past every key of this submission the ledger already released.
    number: int = 0
    reserved: bool = False
    # The key's job was paid and settled by an earlier run (a reset): found again, never
    # settled twice.
    settled_before: bool = False
    job: JobRef | None = None
    # What `abandon` cancelled, for the record.
    cancelled_job: str | None = None
    # How the reservation ended: the committed amount, or released.
    committed_usd: float | None = None
    released: bool = False
    # A cancellation arrived while a money step ran; it takes effect once that step is booked.
    cancel_deferred: bool = False

    @property
    def key(self) -> str:
        return reservation_key(
            workflow.info().workflow_id,
            self.work.submission,
            self.number,
            describe_backend(self.work.backend),
        )

    @property
    def token(self) -> str:
        return client_token(self.key)

    # --- money ------------------------------------------------------------------------------

    async def reserve(self, decision: PolicyDecision) -> ReservationOutcome:
        """Reserves the estimate before anything is submitted; free work reserves nothing."""
        if self.work.estimated_usd <= 0:
            return ReservationOutcome(accepted=True, message="free", available_usd=0.0)
        while True:
            outcome = await self._money_step(
                activity_contracts.reserve_budget,
                ReserveBudgetInput(
                    account=self.work.account,
                    reservation=Reservation(
                        key=self.key,
                        experiment_id=workflow.info().workflow_id,
                        amount_usd=self.work.estimated_usd,
                        backend=describe_backend(self.work.backend),
                        note=self.work.purpose,
                    ),
                    initial_limit_usd=decision.budget_default.limit_usd,
                    initial_period=decision.budget_default.period,
                ),
            )
            if outcome.closed_as == "released" and not self.cancel_deferred:
                self.number += 1
                continue
            if outcome.closed_as == "committed":
                self.settled_before = True
                outcome = outcome.model_copy(update={"accepted": True})
            else:
                self.reserved = outcome.accepted
            if self.cancel_deferred:
                await self.release("cancelled while reserving")
                raise asyncio.CancelledError
            return outcome

    async def _commit(self, actual_usd: float) -> None:
        if self.settled_before:
            self.committed_usd = actual_usd
        if not self.reserved:
            return
        await self._money_step(
            activity_contracts.settle_budget,
            SettleBudgetInput(
                account=self.work.account,
                settlement=Settlement(key=self.key, actual_usd=actual_usd),
            ),
        )
        self.reserved = False
        self.committed_usd = actual_usd

    async def release(self, reason: str) -> None:
        if not self.reserved:
            return
        await self._money_step(
            activity_contracts.release_budget,
            ReleaseBudgetInput(
                account=self.work.account, release=Release(key=self.key, reason=reason)
            ),
        )
        self.reserved = False
        self.released = True

    # --- the path ------------------------------------------------------------------------------

    async def run(self) -> Executed:
        """Submit, wait, fetch and settle; whatever stops it on the way is settled by `abandon`
        and raised again."""
        try:
            await self.steering.checkpoint()
            if self.work.simulated_in_activity and workflow.patched(LOCAL_SIMULATION_PATCH):
                job, fetched = await self._simulate()
            else:
                job = await self._submit()
                await self._wait(job)
                await self.steering.job_done(job)
                fetched = await self._fetch(job)
        except (Exception, asyncio.CancelledError) as stop:
            await self.abandon(why(stop))
            raise
        self.job = None
        await self._commit(fetched.actual_cost.usd)
        if self.cancel_deferred:
            raise asyncio.CancelledError
        return Executed(job, fetched)

    async def abandon(self, reason: str) -> None:
        """Cancels the job (if any) and commits what the provider billed for it, or releases
        the reservation when nothing was billed."""
        job = self.job
        if job is not None:
            self.job = None
            billed: Cost | None = await self._finish(
                workflow.start_activity(
                    activity_contracts.cancel_job,
                    JobInput(backend=self.work.backend, job=job),
                    start_to_close_timeout=PROVIDER_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=PROVIDER_RETRY,
                    summary=self._summary("cancel"),
                )
            )
            self.cancelled_job = job.job_id
            # Histories recorded before cancel_job said what was billed carry no answer.
            if billed is not None and billed.usd > 0:
                await self._commit(billed.usd)
                return
        await self.release(reason)

    async def _simulate(self) -> Executed:
        """A local simulator: one compute activity runs the batch and stores its counts. A
        pause, reroute or cancel stops the run at once; it runs again from the start when the
        experiment goes on (free, and the same seed gives the same counts)."""
        while (executed := await self._simulate_once()) is None:
            await self.steering.checkpoint()
        return executed

    async def _simulate_once(self) -> Executed | None:
        """The run's result; None when a pause, reroute or cancel stopped it."""
        self.steering.on_stage(Stage.SIMULATING)
        handle = workflow.start_activity(
            activity_contracts.simulate,
            SimulateInput(
                artifact_folder=self.work.artifact_folder,
                backend=self.work.backend,
                batch_uri=self.work.batch_uri,
                shots=self.work.shots,
                seed=self.work.seed,
                client_token=self.token,
            ),
            task_queue=self.work.compute_task_queue,
            start_to_close_timeout=COMPUTE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=COMPUTE_RETRY,
            summary=self._summary("simulate"),
        )
        await workflow.wait_condition(lambda: handle.done() or self.steering.interrupted())
        if not handle.done():
            await _cancelled(handle)
            return None
        simulated = handle.result()
        return Executed(simulated.job, simulated.fetched)

    async def _submit(self) -> JobRef:
        self.steering.on_stage(Stage.SUBMITTING)
        handle = workflow.start_activity(
            activity_contracts.submit,
            SubmitInput(
                backend=self.work.backend,
                batch_uri=self.work.batch_uri,
                shots=self.work.shots,
                seed=self.work.seed,
                client_token=self.token,
                tags=task_tags(
                    self.work.account,
                    workflow.info().workflow_id,
                    self.work.submission,
                    self.work.name,
                    self.token,
                ),
            ),
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=self._summary("submit"),
        )
        # The provider may already hold the job: a cancellation lets the submission finish so
        # that `abandon` can cancel it.
        try:
            job: JobRef = await self._finish(handle, ridden_out_before_patch=1)
            self.job = job
        except ActivityError:
            if self.cancel_deferred:
                raise asyncio.CancelledError from None
            raise
        if self.cancel_deferred:
            raise asyncio.CancelledError
        return job

    async def _wait(self, job: JobRef) -> None:
        self.steering.on_stage(Stage.WAITING)
        deadline = workflow.now() + self.work.max_queue_wait
        interval = timedelta(seconds=self.work.polling.initial_seconds)
        ceiling = timedelta(seconds=self.work.polling.ceiling_seconds)
        while True:
            await self.steering.checkpoint()
            if interval >= ceiling and workflow.patched(WAIT_AT_CEILING_PATCH):
                status = await self._wait_at_ceiling(job, ceiling, deadline)
                if status is None:
                    continue
            else:
                status = await self._poll(job)
            self.steering.on_status(status)
            if status.state is JobState.DONE:
                return
            if status.state.is_final:
                raise ApplicationError(
                    f"job {job.job_id} of {self.work.purpose} on {job.device} ended "
                    f"{status.state.value}: {status.message or 'no reason given'}",
                    type=error_types.JOB_FAILED,
                    non_retryable=True,
                )
            if workflow.now() >= deadline:
                raise self._deadline_passed(job, status.state)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    self.steering.interrupted,
                    timeout=min(interval, max(deadline - workflow.now(), timedelta(seconds=1))),
                    timeout_summary=self._summary("wait for provider"),
                )
            interval = min(interval * 2, ceiling)

    async def _poll(self, job: JobRef) -> JobStatus:
        status: JobStatus = await workflow.execute_activity(
            activity_contracts.check_job,
            JobInput(backend=self.work.backend, job=job),
            start_to_close_timeout=POLL_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=self._summary("poll"),
        )
        return status

    async def _wait_at_ceiling(
        self, job: JobRef, ceiling: timedelta, deadline: datetime
    ) -> JobStatus | None:
        """The job's final status; None when a pause, reroute or cancel interrupted the wait
        (the caller acts on it, then waits again). Past the deadline: QueueDeadlineExceeded."""
        remaining = deadline - workflow.now()
        if remaining <= timedelta(0):
            raise self._deadline_passed(job, JobState.QUEUED)
        handle = workflow.start_activity(
            activity_contracts.wait_for_job,
            JobInput(backend=self.work.backend, job=job),
            start_to_close_timeout=POLL_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=ceiling,
                backoff_coefficient=1.0,
                maximum_interval=ceiling,
                non_retryable_error_types=PROVIDER_RETRY.non_retryable_error_types,
            ),
            summary=self._summary("wait for provider"),
        )
        try:
            await workflow.wait_condition(
                lambda: handle.done() or self.steering.interrupted(),
                timeout=remaining,
                timeout_summary=self._summary("max_queue_wait"),
            )
        except TimeoutError:
            await _cancelled(handle)
            raise self._deadline_passed(job, JobState.QUEUED) from None
        if not handle.done():
            await _cancelled(handle)
            return None
        status: JobStatus = handle.result()
        return status

    def _deadline_passed(self, job: JobRef, state: JobState) -> ApplicationError:
        return ApplicationError(
            f"job {job.job_id} of {self.work.purpose} still {state.value} after max_queue_wait "
            f"of {self.work.max_queue_wait}",
            type=error_types.QUEUE_DEADLINE_EXCEEDED,
            non_retryable=True,
        )

    async def _fetch(self, job: JobRef) -> FetchedResult:
        self.steering.on_stage(Stage.FETCHING)
        fetched: FetchedResult = await workflow.execute_activity(
            activity_contracts.fetch_result,
            FetchInput(experiment_id=self.work.artifact_folder, backend=self.work.backend, job=job),
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=self._summary("fetch"),
        )
        return fetched

    def _summary(self, what: str) -> str:
        return f"{self.work.purpose}: {what}" if self.work.purpose else what

    async def _money_step(
        self, activity: Callable[[ArgT], Awaitable[ResultT]], arg: ArgT
    ) -> ResultT:
        """A ledger call, finished whatever cancellations arrive meanwhile."""
        return await self._finish(
            workflow.start_activity(
                activity,
                arg,
                start_to_close_timeout=QUICK_TIMEOUT,
                retry_policy=ENTITY_RETRY,
                summary=activity_contracts.name_of(activity),
            )
        )

    async def _finish(
        self, handle: workflow.ActivityHandle[ResultT], *, ridden_out_before_patch: int = 0
    ) -> ResultT:
        """The activity's result, however often the workflow or the task running this execution
        is cancelled meanwhile: a reservation, submission, settlement or cancellation left half
        done would leave money unaccounted for. A cancellation that arrived is remembered in
        `cancel_deferred` for the caller to act on once the step is booked. Histories recorded
        before rode out `ridden_out_before_patch` cancellations and cancelled the activity at
        the next.

        A cancellation that arrives together with the step's result (both in one workflow task)
        is held for the workflow's next wait, as if it had arrived just after. Temporal does not
        always hand such a pair to the workflow in one activation: a worker meeting them for
        the first time may run the step's result before it sees the cancellation, while a
        worker replaying that history sees both at once. Only if both readings take the same
        path does the replay issue the commands the first run recorded."""
        cancel_with_result_waits = workflow.patched(CANCEL_WITH_RESULT_PATCH)
        cancellations = 0
        while True:
            try:
                return await asyncio.shield(handle)
            except asyncio.CancelledError:
                if handle.cancelled():
                    raise
                if handle.done() and cancel_with_result_waits:
                    _cancel_at_next_wait()
                    return handle.result()
                cancellations += 1
                self.cancel_deferred = True
                if cancellations > ridden_out_before_patch and not workflow.patched(
                    MONEY_STEPS_FINISH_PATCH
                ):
                    handle.cancel()
                    raise


def why(error: BaseException) -> str:
    """An activity's own failure rather than the wrapper's "Activity task failed"."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, ActivityError) and error.cause is not None:
        return str(error.cause)
    return str(error)


def _cancel_at_next_wait() -> None:
    """Cancels the running task again: asyncio delivers it where the task next waits."""
    task = asyncio.current_task()
    assert task is not None  # workflow code always runs in a task
    task.cancel()


async def _cancelled(handle: workflow.ActivityHandle[ResultT]) -> None:
    handle.cancel()
    with contextlib.suppress(ActivityError, asyncio.CancelledError):
        await handle
