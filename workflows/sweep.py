"""SweepWorkflow: one circuit family evaluated at every point of a grid or list, in batches.

expand the points (an artifact; history carries index ranges) and look them up in the
fingerprint cache, in one activity (a point evaluated before with the same circuit, parameters,
backend, shots and seed is neither run nor paid for again) → group the rest into batches of one
submission each → the canary batch alone, checked (finite, within the observable's range, within
max_deviation of the exact value), while the points of the first batches after it are fetched →
the other batches, `batches_in_flight` at a time → the table and plot.

Each batch is written to a partial artifact and stored in the cache as soon as it finishes, so a
sweep resumes where it stopped whatever interrupts it: a killed worker (Temporal replays; no
activity that finished runs again, and a batch in flight finds its job through its client
token), a reset, or a new run of the same request (the cache holds every finished batch; only
batches that were in flight run again). An exhausted budget stops the sweep with its partial
results.

History stays bounded: about 40 events per batch on a simulator (its points, prepare, policy,
one `simulate` activity, score, store, and the workflow tasks between them), so 1,000 points in
5 batches take 210 to 216 events in `bench/sweep.py`; waiting in a QPU queue adds 8 events per
poll.
The sweep continues as new between two batches when the server suggests it, and at least every
`batches_per_run` batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts
    from schemas.execution import JobState, JobStatus
    from schemas.index_ranges import (
        IndexRange,
        as_ranges,
        range_count,
        range_indices,
        split_ranges,
        subtract_ranges,
    )
    from schemas.pipeline import PollingPolicy
    from schemas.sweep import (
        BatchPoints,
        BatchPointsInput,
        CacheLookupInput,
        CanaryCheckInput,
        ExpandSweepInput,
        StoreBatchInput,
        SweepLayout,
        SweepResultsInput,
        batch_label,
        sweep_goal,
    )
    from schemas.variational import (
        BatchInput,
        CanaryVerdict,
        Point,
        PreparedBatch,
        ReferenceInput,
        ScoredBatch,
        SweepBatch,
        SweepCarry,
        SweepInput,
        SweepProgress,
        SweepReport,
        SweepRequest,
        SweepStage,
        SweepStatus,
    )
    from workflows import search_attributes as attrs
    from workflows.activity_options import COMPUTE_RETRY, COMPUTE_TIMEOUT, HEARTBEAT_TIMEOUT
    from workflows.batch_pass import BudgetExhausted, run_batch
    from workflows.cancellation import cancelled_by_request
    from workflows.paid_execution import MONEY_STEPS_FINISH_PATCH, describe_backend, is_remote

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")

# Polling a local simulator: the longest wait before a full batch has set the pace, and the
# shortest wait between polls (a poll is an activity round trip of some 10 ms).
LOCAL_POLL_CEILING = 0.5
MIN_POLL_SECONDS = 0.05
FINAL_STAGES = {
    "completed": SweepStage.COMPLETED,
    "canary_failed": SweepStage.CANARY_FAILED,
    "budget_exhausted": SweepStage.BUDGET_EXHAUSTED,
}


@dataclass(frozen=True)
class Pace:
    """How long the last finished batch of `points` points took, from submission to done."""

    points: int
    seconds: float


def plan_batches(
    pending: list[IndexRange], canary_points: int, points_per_batch: int
) -> list[list[IndexRange]]:
    """The canary (the first `canary_points` points still to run) as a batch of its own, then
    the rest in batches of `points_per_batch`, all in grid order."""
    batches: list[list[IndexRange]] = []
    rest = pending
    if canary_points > 0 and rest:
        canary, rest = split_ranges(rest, min(canary_points, points_per_batch))
        batches.append(canary)
    while rest:
        batch, rest = split_ranges(rest, points_per_batch)
        batches.append(batch)
    return batches


def submission_label(label: str, request: SweepRequest, points: list[Point]) -> str:
    """Names a batch's submission by what it evaluates: a replay after a worker's death, a reset
    or a new run under the same workflow id that submits the same points again finds the job
    already paid for, and never one submitted for other points."""
    content = json.dumps(
        [request.family.model_dump(mode="json"), request.evaluation.model_dump(mode="json"), points]
    )
    return f"{label}/{hashlib.sha256(content.encode()).hexdigest()[:12]}"


CONTINUE_WITH_BATCHES_IN_FLIGHT_PATCH = "sweep-continue-with-batches-in-flight"
PLAN_IN_ONE_ACTIVITY_PATCH = "sweep-plan-in-one-activity"
POINTS_DURING_CANARY_PATCH = "sweep-points-during-canary"


def ranges_key(indices: Sequence[IndexRange]) -> tuple[tuple[int, int], ...]:
    return tuple((r.start, r.stop) for r in indices)


@workflow.defn(name="SweepWorkflow")
class SweepWorkflow:
    def __init__(self) -> None:
        self._progress = SweepProgress(stage=SweepStage.EXPANDING, backend="")
        self._published_stage: SweepStage | None = None
        self._compute_queue: str | None = None
        self._next_batch = 0
        self._first_number = 0
        # The numbers of the batches this run finished (earlier runs finished batches 0 to
        # carry.batches_done - 1), and the last job status of each batch in flight.
        self._completed: list[int] = []
        self._jobs: dict[str, JobStatus] = {}
        # When each job in flight was first seen, and how long the last finished one took.
        self._job_seen: dict[str, datetime] = {}
        self._pace: Pace | None = None
        # The points of batches fetched before they start, by their index ranges.
        self._points_ahead: dict[tuple[tuple[int, int], ...], asyncio.Task[BatchPoints]] = {}

    @workflow.query(name="progress")
    def progress(self) -> SweepProgress:
        return self._progress

    @workflow.run
    async def run(self, input: SweepInput) -> SweepReport:
        request = input.request
        self._compute_queue = input.compute_task_queue
        carry = input.carry or SweepCarry(
            started_at=workflow.now(),
            runs=1,
            batches_done=0,
            points_done=0,
            points_cached=0,
            cost_usd=0.0,
            estimated_cost_usd=0.0,
        )
        self._next_batch = carry.next_batch if carry.next_batch is not None else carry.batches_done
        self._first_number = self._next_batch
        backend = request.evaluation.backend
        workflow.upsert_search_attributes(
            [
                attrs.BACKEND.value_set(describe_backend(backend)),
                attrs.PROVIDER.value_set(backend.provider),
                attrs.ACCOUNT.value_set(request.policy.account),
            ]
        )
        self._set_progress(
            stage=SweepStage.EXPANDING,
            backend=describe_backend(backend),
            batches_done=carry.batches_done,
            points_done=carry.points_done,
            points_cached=carry.points_cached,
            cost_usd=carry.cost_usd,
            estimated_cost_usd=carry.estimated_cost_usd,
            canary=carry.canary,
        )
        try:
            return await self._sweep(input, carry)
        except (ActivityError, ApplicationError) as error:
            if cancelled_by_request(error):
                raise
            # An activity that failed for good, or a job the provider failed (batch_pass).
            cause = error.cause if isinstance(error, ActivityError) else error
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            failed_stage = self._progress.stage
            self._set_progress(stage=SweepStage.FAILED, error=f"{failed_stage.value}: {message}")
            raise ApplicationError(
                f"sweep failed in {failed_stage.value}: {message}",
                type=cause.type if isinstance(cause, ApplicationError) else None,
                non_retryable=True,
            ) from error

    async def _sweep(self, input: SweepInput, carry: SweepCarry) -> SweepReport:
        request = input.request
        expand = ExpandSweepInput(sweep_id=workflow.info().workflow_id, request=request)
        if workflow.patched(PLAN_IN_ONE_ACTIVITY_PATCH):
            # One dispatch instead of two: each costs some 90 ms while the sweep has nothing
            # else in flight (README, sweep benchmark).
            plan = await self._activity(activity_contracts.plan_sweep, expand)
            layout, lookup = plan.layout, plan.lookup
            self._set_progress(points_total=layout.num_points)
        else:
            layout = await self._activity(activity_contracts.expand_sweep, expand)
            self._set_progress(stage=SweepStage.LOOKING_UP_CACHE, points_total=layout.num_points)
            lookup = await self._activity(
                activity_contracts.lookup_sweep_cache, CacheLookupInput(layout=layout)
            )
        if input.carry is None:
            # Later runs find this sweep's own finished batches in the cache as well.
            self._set_progress(points_cached=lookup.cached)
        canary_points = request.canary.points if request.canary and carry.canary is None else 0
        # Batches in flight at the last continue-as-new run first, under their own numbers.
        carried = carry.in_flight
        batches = plan_batches(
            subtract_ranges(lookup.pending, (r for batch in carried for r in batch.indices)),
            canary_points,
            layout.points_per_batch,
        )
        self._set_progress(batches_total=carry.batches_done + len(carried) + len(batches))
        status: SweepStatus = "completed"
        reason = ""
        queue = [*carried, *(SweepBatch(indices=indices) for indices in batches)]
        if canary_points > 0 and batches:
            canary = queue.pop(len(carried))
            if workflow.patched(POINTS_DURING_CANARY_PATCH):
                self._fetch_points_ahead(layout, queue[: self._window(input)])
            outcome = await self._run_one(input, layout, self._take_number(), canary.indices, True)
            if isinstance(outcome, str):
                status, reason = "budget_exhausted", outcome
            elif outcome is not None and not outcome.passed:
                status = "canary_failed"
                reason = "canary failed: " + "; ".join(outcome.problems)
        if status == "completed" and queue:
            refusal = await self._run_rest(input, layout, queue, carry)
            if refusal is not None:
                status, reason = "budget_exhausted", refusal
        await self._unused_points_fetched()
        return await self._report(input, layout, status, reason, carry)

    async def _unused_points_fetched(self) -> None:
        """Lets the points fetched for batches that did not start in this run (the canary
        failed, the budget ran out, the run continues as new) arrive, so no activity is left
        behind."""
        if self._points_ahead:
            await workflow.wait(list(self._points_ahead.values()))

    def _window(self, input: SweepInput) -> int:
        """How many batches run at once: one at a time under a cost limit, so that each batch's
        estimate meets what is left."""
        return 1 if input.request.policy.max_cost_usd is not None else input.batches_in_flight

    def _fetch_points_ahead(self, layout: SweepLayout, batches: list[SweepBatch]) -> None:
        """Fetches the points of the batches that start after the canary while it runs: they
        then start one dispatch sooner (README, sweep benchmark)."""
        for batch in batches:
            self._points_ahead[ranges_key(batch.indices)] = asyncio.create_task(
                self._activity(
                    activity_contracts.sweep_batch_points,
                    BatchPointsInput(layout=layout, indices=batch.indices),
                )
            )

    async def _run_rest(
        self,
        input: SweepInput,
        layout: SweepLayout,
        queue: list[SweepBatch],
        carry: SweepCarry,
    ) -> str | None:
        """The batches after the canary, `batches_in_flight` at a time (one at a time under a
        cost limit, so that each batch's estimate meets what is left): the next batch is
        submitted while the last one runs or is scored, and each is stored as soon as it ends.
        When the run is due to continue as new it starts no more batches and continues as new
        as soon as one batch finished in it, carrying the batches still in flight (a batch
        queued at a provider for weeks holds up nothing). Returns why the budget stopped the
        sweep (batches in flight still finish), or None."""
        window = self._window(input)
        in_flight: list[tuple[asyncio.Task[CanaryVerdict | str | None], SweepBatch]] = []
        refusal: str | None = None
        continuing = False
        try:
            while True:
                while queue and refusal is None and len(in_flight) < window:
                    launched = self._next_batch - self._first_number
                    if launched > 0 and self._should_continue_as_new(input, launched):
                        continuing = True
                        break
                    queued = queue.pop(0)
                    number = self._take_number() if queued.number is None else queued.number
                    batch = self._run_one(input, layout, number, queued.indices, False)
                    in_flight.append(
                        (
                            asyncio.create_task(batch),
                            SweepBatch(number=number, indices=queued.indices),
                        )
                    )
                if continuing and refusal is None and self._may_leave_in_flight(in_flight):
                    break
                if not in_flight:
                    break
                tasks = [task for task, _ in in_flight]
                done, _ = await workflow.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in [task for task in tasks if task in done]:
                    in_flight = [entry for entry in in_flight if entry[0] is not task]
                    outcome = task.result()
                    if isinstance(outcome, str) and refusal is None:
                        refusal = outcome
        except BaseException:
            # A batch failed for good, or the sweep was cancelled: the others stop too (their
            # jobs cancelled, their reservations released) before the sweep ends.
            for task, _ in in_flight:
                task.cancel()
            await self._all_ended([task for task, _ in in_flight])
            raise
        if continuing and refusal is None:
            # The batches in flight are left as they are: the next run finds their reservations
            # and jobs again by their numbers.
            await self._unused_points_fetched()
            next_carry = self._carry(carry, queue, [batch for _, batch in in_flight])
            workflow.continue_as_new(input.model_copy(update={"carry": next_carry}))
        return refusal

    async def _all_ended(self, tasks: list[asyncio.Task[CanaryVerdict | str | None]]) -> None:
        """Waits until every cancelled batch settled its money, whatever cancellation of the
        sweep arrives meanwhile: a batch left behind would leave its job and reservation open.
        Histories recorded before stopped waiting at the first such cancellation."""
        while unfinished := [task for task in tasks if not task.done()]:
            try:
                await workflow.wait(unfinished)
            except asyncio.CancelledError:
                if not workflow.patched(MONEY_STEPS_FINISH_PATCH):
                    raise

    def _may_leave_in_flight(self, in_flight: Sequence[tuple[object, SweepBatch]]) -> bool:
        """A run due to continue as new does so once a batch finished in it (so that every run
        makes progress), whatever is still in flight. Runs recorded before that drained their
        batches first."""
        if not in_flight:
            return True
        return bool(self._completed) and workflow.patched(CONTINUE_WITH_BATCHES_IN_FLIGHT_PATCH)

    def _take_number(self) -> int:
        """Batches are numbered as they start, across the runs of the sweep."""
        number = self._next_batch
        self._next_batch += 1
        return number

    async def _run_one(
        self,
        input: SweepInput,
        layout: SweepLayout,
        number: int,
        indices: list[IndexRange],
        is_canary: bool,
    ) -> CanaryVerdict | str | None:
        """Runs one batch and stores its results. Returns the canary's verdict (None for other
        batches), or why the budget stopped the sweep."""
        request = input.request
        label = batch_label(number)
        self._set_progress(stage=SweepStage.CANARY if is_canary else SweepStage.RUNNING)
        ahead = self._points_ahead.pop(ranges_key(indices), None)
        chosen = await (
            ahead
            if ahead is not None
            else self._activity(
                activity_contracts.sweep_batch_points,
                BatchPointsInput(layout=layout, indices=indices),
            )
        )
        batch = BatchInput(
            owner_id=workflow.info().workflow_id,
            label=label,
            family=request.family,
            points=chosen.points,
            evaluation=request.evaluation,
        )
        limit = request.policy.max_cost_usd
        try:
            prepared, scored = await run_batch(
                batch,
                account=request.policy.account,
                polling=self._polling(input, range_count(indices)),
                compute_queue=self._compute_queue,
                token_label=submission_label(label, request, chosen.points),
                max_queue_wait=request.policy.max_queue_wait,
                name=request.name,
                max_cost_usd=None if limit is None else max(limit - self._progress.cost_usd, 0),
                on_job_status=lambda status: self._job_status(label, len(chosen.points), status),
            )
        except BudgetExhausted as exhausted:
            return f"budget: {exhausted.message}"
        finally:
            self._jobs.pop(label, None)
            self._job_seen.pop(label, None)
        verdict = await self._check_canary(request, scored) if is_canary else None
        await self._activity(
            activity_contracts.store_sweep_batch,
            StoreBatchInput(
                sweep_id=workflow.info().workflow_id,
                label=label,
                layout=layout,
                indices=indices,
                values=scored.values,
                cache=verdict is None or verdict.passed,
                cost_usd=scored.actual_cost.usd,
            ),
        )
        self._completed.append(number)
        self._batch_done(layout, prepared, scored, range_count(indices))
        return verdict

    async def _check_canary(self, request: SweepRequest, scored: ScoredBatch) -> CanaryVerdict:
        assert request.canary is not None
        exact: list[float] | None = None
        if request.canary.max_deviation is not None:
            reference = await self._activity(
                activity_contracts.classical_reference,
                ReferenceInput(family=request.family, points=[v.parameters for v in scored.values]),
            )
            exact = reference.exact_values
        verdict = await self._activity(
            activity_contracts.check_sweep_canary,
            CanaryCheckInput(
                family=request.family,
                spec=request.canary,
                values=scored.values,
                exact_values=exact,
            ),
        )
        self._set_progress(canary=verdict)
        return verdict

    def _batch_done(
        self,
        layout: SweepLayout,
        prepared: PreparedBatch,
        scored: ScoredBatch,
        points: int,
    ) -> None:
        progress = self._progress
        done = progress.points_done + points
        remaining = max(layout.num_points - done - progress.points_cached, 0)
        spent_estimate = progress.estimated_cost_usd + prepared.cost_estimate.usd
        per_point = prepared.cost_estimate.usd / points if points else 0.0
        # The whole sweep's estimate: what the batches so far were estimated at, plus the rest at
        # the last batch's price per point.
        total_estimate = spent_estimate + per_point * remaining
        self._set_progress(
            points_done=done,
            batches_done=progress.batches_done + 1,
            cost_usd=progress.cost_usd + scored.actual_cost.usd,
            estimated_cost_usd=spent_estimate,
            estimated_total_usd=round(total_estimate, 6),
        )
        workflow.upsert_search_attributes(
            [attrs.ESTIMATED_COST_USD.value_set(round(total_estimate, 6))]
        )

    def _should_continue_as_new(self, input: SweepInput, launched: int) -> bool:
        return launched >= input.batches_per_run or workflow.info().is_continue_as_new_suggested()

    def _carry(
        self,
        carry: SweepCarry,
        queue: list[SweepBatch],
        in_flight: list[SweepBatch],
    ) -> SweepCarry:
        progress = self._progress
        # Carried batches this run did not get to start are carried again.
        not_started = [batch for batch in queue if batch.number is not None]
        return SweepCarry(
            started_at=carry.started_at,
            runs=carry.runs + 1,
            batches_done=progress.batches_done,
            points_done=progress.points_done,
            points_cached=progress.points_cached,
            cost_usd=progress.cost_usd,
            estimated_cost_usd=progress.estimated_cost_usd,
            canary=progress.canary,
            finished_batches=as_ranges(self._finished_batches(carry)),
            next_batch=self._next_batch,
            in_flight=[*in_flight, *not_started],
        )

    def _finished_batches(self, carry: SweepCarry) -> list[int]:
        """The numbers of every batch finished so far, in this run and the earlier ones."""
        before = (
            range_indices(carry.finished_batches)
            if carry.finished_batches is not None
            else range(carry.batches_done)
        )
        return sorted([*before, *self._completed])

    async def _report(
        self,
        input: SweepInput,
        layout: SweepLayout,
        status: SweepStatus,
        reason: str,
        carry: SweepCarry,
    ) -> SweepReport:
        request = input.request
        sweep_id = workflow.info().workflow_id
        self._set_progress(stage=SweepStage.WRITING_RESULTS)
        results = await self._activity(
            activity_contracts.write_sweep_results,
            SweepResultsInput(
                sweep_id=sweep_id,
                request=request,
                layout=layout,
                batches=as_ranges(self._finished_batches(carry)),
            ),
        )
        progress = self._progress
        self._set_progress(stage=FINAL_STAGES[status], error=reason or None)
        return SweepReport(
            sweep_id=sweep_id,
            name=request.name,
            status=status,
            status_reason=reason,
            family=request.family.kind,
            backend=progress.backend,
            goal=sweep_goal(request.family),
            points_total=layout.num_points,
            points_evaluated=results.evaluated,
            points_cached=results.cached,
            points_pending=results.missing,
            batches_total=progress.batches_total,
            batches_done=progress.batches_done,
            best=results.best,
            canary=progress.canary,
            estimated_cost_usd=progress.estimated_cost_usd,
            cost_usd=progress.cost_usd,
            table_uri=results.table_uri,
            plot_uri=results.plot_uri,
            points_uri=layout.points_uri,
            elapsed_seconds=round((workflow.now() - carry.started_at).total_seconds(), 3),
            runs=carry.runs,
        )

    async def _activity(self, activity: Callable[[ArgT], Awaitable[ResultT]], arg: ArgT) -> ResultT:
        """The sweep's own activities run on the compute queue, beside the artifacts they
        read and write, in child processes, heartbeating."""
        result = await workflow.execute_activity(
            activity,
            arg,
            task_queue=self._compute_queue,
            start_to_close_timeout=COMPUTE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=COMPUTE_RETRY,
            summary=activity_contracts.name_of(activity).replace("_", " "),
        )
        return result

    def _job_status(self, label: str, points: int, status: JobStatus) -> None:
        self._jobs[label] = status
        now = workflow.now()
        first_seen = self._job_seen.setdefault(label, now)
        if status.state is JobState.DONE:
            self._pace = Pace(points=points, seconds=(now - first_seen).total_seconds())
        workflow.set_current_details(self._details_markdown())

    def _polling(self, input: SweepInput, points: int) -> PollingPolicy:
        """A local simulator has no queue: a batch takes about as long as the last one of its
        size took, so the first poll waits 90 % of that (never sooner than the policy's first
        wait) and later ones an eighth of it, instead of doubling well past the end. Remote
        backends keep the sweep's policy: their queues make the last batch no guide."""
        base = input.polling
        if is_remote(input.request.evaluation.backend):
            return base
        pace = self._pace
        if pace is None or pace.points * 2 < points:
            return base.model_copy(
                update={"ceiling_seconds": min(base.ceiling_seconds, LOCAL_POLL_CEILING)}
            )
        expected = pace.seconds * points / pace.points
        return PollingPolicy(
            initial_seconds=min(max(0.9 * expected, base.initial_seconds), base.ceiling_seconds),
            ceiling_seconds=min(max(expected / 8, MIN_POLL_SECONDS), base.ceiling_seconds),
        )

    def _set_progress(self, **changes: object) -> None:
        self._progress = self._progress.model_copy(update=changes)
        if self._progress.stage != self._published_stage:
            self._published_stage = self._progress.stage
            workflow.upsert_search_attributes([attrs.STAGE.value_set(self._progress.stage.value)])
        workflow.set_current_details(self._details_markdown())

    def _details_markdown(self) -> str:
        progress = self._progress
        lines = [
            f"**Stage:** {progress.stage.value}",
            f"**Backend:** {progress.backend}",
            f"**Points:** {progress.points_done:,} evaluated, {progress.points_cached:,} from "
            f"the cache, of {progress.points_total:,}",
            f"**Batches:** {progress.batches_done} of {progress.batches_total} done",
            f"**Cost so far:** ${progress.cost_usd:.2f} (estimated "
            f"${progress.estimated_cost_usd:.2f})",
        ]
        if progress.estimated_total_usd is not None:
            lines.append(f"**Whole sweep:** about ${progress.estimated_total_usd:.2f}")
        for label, job in self._jobs.items():
            queue = f", queue position {job.queue_position}" if job.queue_position else ""
            lines.append(f"**{label}:** job {job.state.value}{queue}")
        if progress.canary is not None:
            verdict = "passed" if progress.canary.passed else "failed"
            lines.append(f"**Canary:** {verdict} ({progress.canary.points} points)")
            lines.extend(f"- {problem}" for problem in progress.canary.problems)
        if progress.error:
            lines.append(f"**Stopped:** {progress.error}")
        return "\n\n".join(lines)
