"""workflows/batch_pass.py from inside a tiny workflow, with every activity the real one.

- Time-skipping server, ideal Aer (free, so no budget call): values, the deterministic client
  token shared by every run of a workflow id, and polling on doubling timers behind a queue of
  an hour (the provider's status call is replaced by one that reports a queue, as in the
  experiment workflow's test).
- Dev server and the QPU stand-in (a paid backend): the reservation is made and settled with
  the billed cost, a batch over budget is refused before any task exists, and a failed job
  releases its reservation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.governance.budget_calls import set_budget_limit, show_budget
from activities.governance.policy import evaluate_policy_activity
from activities.variational.batch_preparation import prepare_batch_activity
from activities.variational.classical_reference import classical_reference
from adapters.braket_aws import task_client_token
from schemas import error_types
from schemas.budget import SetLimit
from schemas.execution import JobState
from schemas.paid_keys import client_token, reservation_key
from schemas.pipeline import PipelineModel, PolicyDecision, PolicyInput, PollingPolicy
from schemas.request import Graph
from schemas.variational import (
    BatchInput,
    EvaluationSpec,
    PreparedBatch,
    QaoaFamily,
    ReferenceInput,
    ScoredBatch,
)
from tests.harness import QPU, LocalStack
from tests.queue_doubles import activities_behind_a_queue
from worker import WORKFLOWS, all_activities
from workflows.batch_pass import BudgetExhausted, run_batch

GRAPH = Graph.model_validate(
    {"nodes": 3, "edges": [{"u": 0, "v": 1}, {"u": 1, "v": 2, "weight": 2.0}]}
)
QUEUE_TIME = timedelta(hours=1)
Z_LIMIT = 4.0


class PassInput(PipelineModel):
    batch: BatchInput
    token_label: str
    account: str = "default"
    polling: PollingPolicy = PollingPolicy(initial_seconds=0.1, ceiling_seconds=1.0)
    max_cost_usd: float | None = None
    max_queue_wait: timedelta = timedelta(days=7)


class PassOutcome(PipelineModel):
    prepared: PreparedBatch | None = None
    scored: ScoredBatch | None = None
    refused: str | None = None
    run_id: str
    polled: list[JobState]


@workflow.defn(name="BatchPassTestWorkflow")
class BatchPassTestWorkflow:
    @workflow.run
    async def run(self, input: PassInput) -> PassOutcome:
        polled: list[JobState] = []
        run_id = workflow.info().run_id
        try:
            prepared, scored = await run_batch(
                input.batch,
                account=input.account,
                polling=input.polling,
                compute_queue=None,
                token_label=input.token_label,
                max_queue_wait=input.max_queue_wait,
                name="batch-pass-test",
                max_cost_usd=input.max_cost_usd,
                on_job_status=lambda status: polled.append(status.state),
            )
        except BudgetExhausted as refused:
            return PassOutcome(refused=refused.message, run_id=run_id, polled=polled)
        return PassOutcome(prepared=prepared, scored=scored, run_id=run_id, polled=polled)


def batch_input(points: list[list[float]], **evaluation: object) -> BatchInput:
    return BatchInput(
        owner_id=f"pass-{uuid.uuid4().hex[:8]}",
        label="iter-0000",
        family=QaoaFamily(graph=GRAPH),
        points=points,
        evaluation=EvaluationSpec.model_validate({"shots": 4000, "seed": 3, **evaluation}),
    )


def batch_worker(client: Client, task_queue: str, activities: list | None = None) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, BatchPassTestWorkflow],
        activities=activities or all_activities(),
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )


async def run_pass(
    client: Client, task_queue: str, input: PassInput, workflow_id: str
) -> PassOutcome:
    return await client.execute_workflow(
        BatchPassTestWorkflow.run,
        input,
        id=workflow_id,
        task_queue=task_queue,
        result_type=PassOutcome,
    )


# --- ideal Aer on the time-skipping server ------------------------------------------------------


async def test_a_free_batch_is_simulated_in_one_activity_and_every_run_gives_the_same_counts(
    time_skipping_env: WorkflowEnvironment, qloop_home: Path
) -> None:
    client, task_queue = time_skipping_env.client, f"tq-{uuid.uuid4()}"
    points = [[0.3, 0.4], [1.1, -0.2], [-0.6, 0.9]]
    input = PassInput(batch=batch_input(points), token_label="iter-0000")
    workflow_id = f"pass-{uuid.uuid4()}"
    async with batch_worker(client, task_queue):
        first = await run_pass(client, task_queue, input, workflow_id)
        second = await run_pass(client, task_queue, input, workflow_id)
        history = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]

    assert first.scored is not None and first.prepared is not None and second.scored is not None
    exact = classical_reference(ReferenceInput(family=input.batch.family, points=points))
    for value, truth in zip(first.scored.values, exact.exact_values, strict=True):
        assert abs(value.value - truth) < Z_LIMIT * value.std_error
    assert first.scored.actual_cost.usd == 0.0
    # A local simulator is no job to poll, and keeps nothing on the worker's disk.
    assert first.polled == []
    assert not (qloop_home / "aer-jobs").exists()
    # A second run of the workflow id (a new run id, as after continue-as-new) simulates under
    # the same token, which seeds it: the same counts, on whatever host it runs.
    assert second.run_id != first.run_id
    assert [v.value for v in second.scored.values] == [v.value for v in first.scored.values]
    token = client_token(reservation_key(workflow_id, "iter-0000", 0, "aer/ideal"))
    simulated = [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "simulate"
    ]
    assert [run["client_token"] for run in simulated] == [token]
    # Free backends never touch a ledger.
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert "reserve_budget" not in scheduled and "submit" not in scheduled
    assert scheduled == ["prepare_batch", "evaluate_policy", "simulate", "score_batch"]


async def test_a_long_queue_is_waited_out_without_history_per_poll_at_the_ceiling(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client, task_queue = time_skipping_env.client, f"tq-{uuid.uuid4()}"
    input = PassInput(
        batch=batch_input([[0.2, 0.1]]),
        token_label="queued",
        polling=PollingPolicy(initial_seconds=1, ceiling_seconds=60),
    )
    workflow_id = f"queued-{uuid.uuid4()}"
    async with batch_worker(client, task_queue, activities_behind_a_queue(QUEUE_TIME)):
        outcome = await run_pass(client, task_queue, input, workflow_id)
        history = [e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()]

    timers = [
        timedelta(seconds=e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds())
        for e in history
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    # 1, 2, 4, ..., 32 s on timers, then one activity retried every 60 s until the hour passed,
    # under one timer for what is left of max_queue_wait.
    assert timers[:6] == [timedelta(seconds=s) for s in (1, 2, 4, 8, 16, 32)]
    assert len(timers) == 7 and timedelta(days=6) < timers[6] <= timedelta(days=7)
    assert scheduled.count("check_job") == 6 and scheduled.count("wait_for_job") == 1
    (completed,) = [
        e
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and history[
            e.activity_task_started_event_attributes.scheduled_event_id - 1
        ].activity_task_scheduled_event_attributes.activity_type.name
        == "wait_for_job"
    ]
    assert completed.activity_task_started_event_attributes.attempt >= 50
    assert outcome.polled == [JobState.QUEUED] * 6 + [JobState.DONE]
    assert outcome.scored is not None and len(outcome.scored.values) == 1


async def test_a_cancelled_workflow_cancels_the_job_it_waits_for(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client, task_queue = time_skipping_env.client, f"tq-{uuid.uuid4()}"
    input = PassInput(
        batch=batch_input([[0.2, 0.1]]),
        token_label="cancelled",
        polling=PollingPolicy(initial_seconds=60, ceiling_seconds=600),
    )
    async with batch_worker(client, task_queue, activities_behind_a_queue(QUEUE_TIME)):
        handle = await client.start_workflow(
            BatchPassTestWorkflow.run,
            input,
            id=f"cancelled-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=PassOutcome,
        )
        # No time is skipped until someone waits for the result: the first 60 s timer holds.
        while EventType.EVENT_TYPE_TIMER_STARTED not in [
            event.event_type async for event in handle.fetch_history_events()
        ]:
            await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        history = [e async for e in handle.fetch_history_events()]

    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled[-1] == "cancel_job" and "score_batch" not in scheduled
    assert history[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED


# --- a paid backend: the QPU stand-in on the dev server ---------------------------------------


@pytest_asyncio.fixture
async def paid(
    dev_server: WorkflowEnvironment, standin: LocalStack
) -> AsyncIterator[tuple[Client, str, str]]:
    """A worker on the dev server and a fresh account; the stand-in quiet, with short queues."""
    standin.set_faults()
    task_queue = f"tq-{uuid.uuid4()}"
    async with batch_worker(dev_server.client, task_queue):
        yield dev_server.client, task_queue, f"batch-{uuid.uuid4().hex[:12]}"


def qpu_batch() -> BatchInput:
    # Two points, 100 shots: one program-set task at $0.30 + 2 x 100 x $0.0009.
    return batch_input(
        [[0.3, 0.4], [1.1, -0.2]], shots=100, backend={"provider": "braket", "device": QPU}
    )


async def test_a_paid_batch_reserves_its_estimate_and_settles_what_was_billed(
    paid: tuple[Client, str, str], standin: LocalStack
) -> None:
    client, task_queue, account = paid
    await set_budget_limit(client, task_queue, account, SetLimit(limit_usd=10.0, by="test"))
    workflow_id = f"paid-{uuid.uuid4()}"
    input = PassInput(batch=qpu_batch(), token_label="iter-0003", account=account)
    outcome = await run_pass(client, task_queue, input, workflow_id)

    assert outcome.prepared is not None and outcome.scored is not None
    # Two circuits of 100 shots in one program-set task: $0.30 + 200 x $0.0009.
    assert outcome.prepared.cost_estimate.usd == pytest.approx(0.48)
    assert outcome.scored.actual_cost.usd == pytest.approx(0.48)
    assert all(0.0 <= v.value <= 3.0 for v in outcome.scored.values)
    view = await show_budget(client, account)
    assert view is not None
    (entry,) = view.entries
    assert entry.key == reservation_key(workflow_id, "iter-0003", 0, f"braket/{QPU}")
    assert (entry.state, entry.amount_usd, entry.actual_usd) == ("committed", 0.48, 0.48)
    token = client_token(entry.key)
    assert {t: n for t, n in standin.tasks_per_token().items() if t.startswith(token)} == {
        task_client_token(token, 0): 1,
    }


async def test_a_batch_over_budget_is_refused_before_any_task(
    paid: tuple[Client, str, str], standin: LocalStack
) -> None:
    client, task_queue, account = paid
    await set_budget_limit(client, task_queue, account, SetLimit(limit_usd=0.4, by="test"))
    before = len(standin.tasks())
    input = PassInput(batch=qpu_batch(), token_label="iter-0000", account=account)
    refused = await run_pass(client, task_queue, input, f"poor-{uuid.uuid4()}")
    over_limit = await run_pass(
        client,
        task_queue,
        input.model_copy(update={"account": "default", "max_cost_usd": 0.4}),
        f"limited-{uuid.uuid4()}",
    )

    assert refused.scored is None and refused.refused is not None
    assert "iter-0000" in refused.refused and "$0.40" in refused.refused
    assert over_limit.refused is not None and "more than the $0.40" in over_limit.refused
    assert len(standin.tasks()) == before
    view = await show_budget(client, account)
    assert view is not None and view.entries == [] and view.committed_usd == 0.0


async def test_a_failed_job_fails_the_batch_and_releases_its_reservation(
    paid: tuple[Client, str, str], standin: LocalStack
) -> None:
    client, task_queue, account = paid
    await set_budget_limit(client, task_queue, account, SetLimit(limit_usd=10.0, by="test"))
    standin.set_faults(task_failure_rate=1.0)
    input = PassInput(batch=qpu_batch(), token_label="iter-0001", account=account)
    with pytest.raises(WorkflowFailureError) as failure:
        await run_pass(client, task_queue, input, f"failing-{uuid.uuid4()}")

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "JobFailed"
    assert "iter-0001" in cause.message and "failed" in cause.message
    view = await show_budget(client, account)
    assert view is not None
    (entry,) = view.entries
    assert entry.state == "released" and "iter-0001" in entry.reason and "failed" in entry.reason
    assert view.available_usd == pytest.approx(10.0)


async def test_an_expired_max_queue_wait_cancels_the_queued_batch(
    paid: tuple[Client, str, str], standin: LocalStack
) -> None:
    """Loops and sweeps keep the request's max_queue_wait, as experiments do."""
    client, task_queue, account = paid
    await set_budget_limit(client, task_queue, account, SetLimit(limit_usd=10.0, by="test"))
    standin.set_faults(queue_delay_s=60.0)
    workflow_id = f"deadline-{uuid.uuid4()}"
    input = PassInput(
        batch=qpu_batch(),
        token_label="iter-0002",
        account=account,
        max_queue_wait=timedelta(seconds=3),
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await run_pass(client, task_queue, input, workflow_id)

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == error_types.QUEUE_DEADLINE_EXCEEDED and "iter-0002" in cause.message
    mine = [t for t in standin.tasks() if t["tags"].get("qloop:workflow-id") == workflow_id]
    assert [t["status"] for t in mine] == ["CANCELLED"]
    assert standin.billed_usd(workflow_id=workflow_id) == 0
    view = await show_budget(client, account)
    assert view is not None
    (entry,) = view.entries
    assert entry.state == "released" and view.available_usd == pytest.approx(10.0)


# --- concurrent batches on the dev server -----------------------------------------------------


class TwoPassesInput(PipelineModel):
    paid: BatchInput
    free: BatchInput
    account: str


@workflow.defn(name="TwoBatchPassesTestWorkflow")
class TwoBatchPassesTestWorkflow:
    """Two batches at once, as a sweep runs its window: after its policy check the paid one
    reserves budget, the free one submits at once."""

    def __init__(self) -> None:
        self._statuses = 0

    @workflow.query
    def statuses(self) -> int:
        return self._statuses

    @workflow.run
    async def run(self, input: TwoPassesInput) -> list[ScoredBatch]:
        async def one(batch: BatchInput, label: str) -> ScoredBatch:
            _, scored = await run_batch(
                batch,
                account=input.account,
                polling=PollingPolicy(initial_seconds=0.1, ceiling_seconds=0.2),
                compute_queue=None,
                token_label=label,
                max_queue_wait=timedelta(hours=1),
                name="two-passes-test",
                on_job_status=lambda _: self._count_status(),
            )
            return scored

        return list(await asyncio.gather(one(input.paid, "paid"), one(input.free, "free")))

    def _count_status(self) -> None:
        self._statuses += 1


SLOW_POLICY_CHECK = timedelta(seconds=1)
FREE_BATCH_PREPARED_LATER = timedelta(seconds=0.3)


def activities_with_policy_checks_out_of_order() -> list[Callable[..., Any]]:
    """The paid batch is prepared first and its policy check is slow: the free batch's
    preparation ends while that check runs, as happens on a loaded worker."""

    @activity.defn(name="prepare_batch")
    async def free_batch_prepared_later(input: BatchInput) -> PreparedBatch:
        result = await prepare_batch_activity(input)
        if input.evaluation.backend.provider != "braket":
            await asyncio.sleep(FREE_BATCH_PREPARED_LATER.total_seconds())
        return result

    @activity.defn(name="evaluate_policy")
    async def slow_for_the_paid_batch(input: PolicyInput) -> PolicyDecision:
        if input.backend.provider == "braket":
            await asyncio.sleep(SLOW_POLICY_CHECK.total_seconds())
        return await evaluate_policy_activity(input)

    replaced = {"prepare_batch", "evaluate_policy"}
    return [
        a
        for a in all_activities()
        if a.__temporal_activity_definition.name not in replaced  # type: ignore[attr-defined]
    ] + [free_batch_prepared_later, slow_for_the_paid_batch]


def policy_checks_answered_out_of_order(history: WorkflowHistory) -> bool:
    """The second policy check was asked for while the first ran, and answered first: the
    order a replay must not depend on."""
    events = list(history.events)
    asked = [
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "evaluate_policy"
    ]
    if len(asked) != 2:
        return False
    answered = [
        (e.event_id, e.activity_task_completed_event_attributes.scheduled_event_id)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id in asked
    ]
    first, second = asked
    return [scheduled for _, scheduled in answered] == [second, first] and second < answered[0][0]


async def test_concurrent_batches_replay_whatever_order_their_policy_checks_answer_in(
    dev_server: WorkflowEnvironment, standin: LocalStack
) -> None:
    client, task_queue = dev_server.client, f"two-{uuid.uuid4()}"
    account = f"two-{uuid.uuid4().hex[:12]}"
    input = TwoPassesInput(
        paid=qpu_batch().model_copy(update={"points": [[0.3, 0.4]]}),
        free=batch_input([[1.1, -0.2]]),
        account=account,
    )
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    )
    standin.set_faults()
    history = None
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, TwoBatchPassesTestWorkflow],
        activities=activities_with_policy_checks_out_of_order(),
        workflow_runner=runner,
    ):
        await set_budget_limit(client, task_queue, account, SetLimit(limit_usd=10.0, by="test"))
        # The answers cross in nearly every run; a run where they did not proves nothing.
        for _ in range(5):
            handle = await client.start_workflow(
                TwoBatchPassesTestWorkflow.run,
                input,
                id=f"two-{uuid.uuid4()}",
                task_queue=task_queue,
                result_type=list[ScoredBatch],
            )
            # People watch a sweep: queries arrive while its workflow tasks run.
            while not (await handle.describe()).close_time:
                await handle.query(TwoBatchPassesTestWorkflow.statuses)
            scored = await handle.result()
            candidate = await handle.fetch_history()
            if policy_checks_answered_out_of_order(candidate):
                history = candidate
                break
    assert history is not None, "the two policy checks never answered out of order"
    assert [len(batch.values) for batch in scored] == [1, 1]

    # Concurrent local activities replay in another order than they ran when one finishes in a
    # later workflow task than it started in (temporalio/sdk-python#1578; seen in a sweep whose
    # worker was killed under load: "Activity id of scheduled event '9' does not match activity
    # id of activity command '8'"). Batches run none.
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    assert "core_local_activity" not in markers
    # A worker that restarts replays the history from its start (as after a SIGKILL).
    replayer = Replayer(
        workflows=[TwoBatchPassesTestWorkflow],
        workflow_runner=runner,
        data_converter=client.data_converter,
    )
    await replayer.replay_workflow(history)
