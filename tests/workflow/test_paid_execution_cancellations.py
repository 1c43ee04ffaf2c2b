"""Cancellations that land inside a money step of workflows/paid_execution.py: while the
reservation is made, while the provider's job is cancelled, while what it billed is settled —
once, by Temporal's cancel, or again and again, as a sweep cancels its batches when one fails.

The dev server, the QPU stand-in behind the unmodified Braket SDK, the real ledger workflow and
every real activity; only the one money step under test is held at its start (a gate the test
opens) so that the cancellations arrive while it is in flight, which the histories confirm.
Every test ends with the books of the account balanced against the stand-in's bill to the cent,
no reservation open and no task queued or running.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ActivityError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.governance.budget_calls import (
    reserve_budget_activity,
    set_budget_limit,
    settle_budget_activity,
    show_budget,
)
from activities.providers.provider_calls import cancel_job_activity
from schemas.budget import (
    LedgerEntry,
    ReservationOutcome,
    ReserveBudgetInput,
    SetLimit,
    SettleBudgetInput,
)
from schemas.execution import Cost
from schemas.pipeline import JobInput, PipelineModel, PollingPolicy
from schemas.request import Graph
from schemas.variational import BatchInput, EvaluationSpec, QaoaFamily
from tests.harness import QPU, LocalStack
from worker import WORKFLOWS, all_activities
from workflows.batch_pass import run_batch

pytestmark = pytest.mark.integration

UNFINISHED = {"CREATED", "QUEUED", "RUNNING", "CANCELLING"}


class HeldBatchInput(PipelineModel):
    batch: BatchInput
    account: str


@workflow.defn(name="CancellableBatchTestWorkflow")
class CancellableBatchTestWorkflow:
    """One paid batch in a task of its own, which the `cancel_batch` signal cancels as a sweep
    cancels its batches; Temporal's cancel reaches it through the workflow's own task."""

    def __init__(self) -> None:
        self._batch: asyncio.Task[object] | None = None

    @workflow.run
    async def run(self, input: HeldBatchInput) -> str:
        self._batch = asyncio.create_task(
            run_batch(
                input.batch,
                account=input.account,
                polling=PollingPolicy(initial_seconds=0.2, ceiling_seconds=1.0),
                compute_queue=None,
                token_label="held",
                max_queue_wait=timedelta(days=1),
                name="held-batch-test",
            )
        )
        try:
            await self._batch
        except asyncio.CancelledError:
            return "cancelled"
        except ActivityError as error:
            # The cancel reached an activity the batch awaited (a poll), which says so.
            if isinstance(error.cause, CancelledError):
                return "cancelled"
            raise
        return "scored"

    @workflow.signal
    def cancel_batch(self) -> None:
        if self._batch is not None:
            self._batch.cancel()


TEST_WORKFLOWS = [*WORKFLOWS, CancellableBatchTestWorkflow]


@dataclass
class Gate:
    """Holds an activity at its start until the test opens it."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self) -> None:
        self.entered.set()
        await self.opened.wait()


def held_reserve(gate: Gate) -> Callable[..., Any]:
    @activity.defn(name="reserve_budget")
    async def reserve(input: ReserveBudgetInput) -> ReservationOutcome:
        await gate.hold()
        return await reserve_budget_activity(input)

    return reserve


def held_settle(gate: Gate) -> Callable[..., Any]:
    @activity.defn(name="settle_budget")
    async def settle(input: SettleBudgetInput) -> LedgerEntry:
        await gate.hold()
        return await settle_budget_activity(input)

    return settle


def held_cancel(gate: Gate) -> Callable[..., Any]:
    @activity.defn(name="cancel_job")
    async def cancel(input: JobInput) -> Cost:
        await gate.hold()
        return await cancel_job_activity(input)

    return cancel


@dataclass
class Bench:
    client: Client
    standin: LocalStack
    account: str
    task_queue: str = field(default_factory=lambda: f"held-{uuid.uuid4().hex[:10]}")

    def worker(
        self,
        replaced: Callable[..., Any],
        real: Callable[..., Any],
        *,
        workflows: bool = True,
        task_queue: str | None = None,
    ) -> Worker:
        """Every activity (`replaced` instead of `real`), and the workflows unless told not,
        on `task_queue` (the bench's unless given)."""
        activities: Sequence[Callable[..., Any]] = [
            replaced if candidate is real else candidate for candidate in all_activities()
        ]
        return Worker(
            self.client,
            task_queue=task_queue or self.task_queue,
            workflows=TEST_WORKFLOWS if workflows else [],
            activities=activities,
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
            ),
        )

    def workflow_worker(self) -> Worker:
        return Worker(
            self.client,
            task_queue=self.task_queue,
            workflows=TEST_WORKFLOWS,
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
            ),
        )

    async def start(self, ledger_queue: str | None = None) -> WorkflowHandle[Any, str]:
        """The batch on `task_queue`; the account's ledger on `ledger_queue` (the same queue
        unless given)."""
        await set_budget_limit(
            self.client,
            ledger_queue or self.task_queue,
            self.account,
            SetLimit(limit_usd=10.0, by="test"),
        )
        batch = BatchInput(
            owner_id=f"held-{uuid.uuid4().hex[:8]}",
            label="held",
            family=QaoaFamily(
                graph=Graph.model_validate({"nodes": 2, "edges": [{"u": 0, "v": 1}]})
            ),
            points=[[0.3, 0.4], [1.1, -0.2]],
            evaluation=EvaluationSpec.model_validate(
                {"shots": 100, "seed": 3, "backend": {"provider": "braket", "device": QPU}}
            ),
        )
        return await self.client.start_workflow(
            CancellableBatchTestWorkflow.run,
            HeldBatchInput(batch=batch, account=self.account),
            id=f"held-{uuid.uuid4().hex[:10]}",
            task_queue=self.task_queue,
        )

    def tasks(self, handle: WorkflowHandle[Any, str]) -> list[dict]:
        return [t for t in self.standin.tasks() if t["tags"].get("qloop:workflow-id") == handle.id]

    async def assert_books_balance(self) -> Decimal:
        view = await show_budget(self.client, self.account)
        billed = self.standin.billed_usd(account=self.account)
        assert view is not None
        assert abs(Decimal(str(view.committed_usd)) - billed) < Decimal("0.000001"), (
            view.entries,
            billed,
        )
        assert [e for e in view.entries if e.state == "reserved"] == [], view.entries
        assert view.reserved_usd == 0.0
        mine = [t for t in self.standin.tasks() if t["tags"].get("qloop:account") == self.account]
        assert [t["status"] for t in mine if t["status"] in UNFINISHED] == []
        return billed


@pytest_asyncio.fixture
async def bench(dev_server: WorkflowEnvironment, standin: LocalStack) -> AsyncIterator[Bench]:
    standin.set_faults()
    yield Bench(dev_server.client, standin, f"held-{uuid.uuid4().hex[:10]}")
    standin.set_faults()


async def history_of(handle: WorkflowHandle[Any, str]) -> list[HistoryEvent]:
    return [e async for e in handle.fetch_history_events()]


def activity_events(history: list[HistoryEvent], name: str) -> tuple[int, int]:
    """Indexes of the scheduled and completed events of the one run of activity `name`."""
    (scheduled,) = [
        i
        for i, e in enumerate(history)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == name
    ]
    (completed,) = [
        i
        for i, e in enumerate(history)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id
        == history[scheduled].event_id
    ]
    return scheduled, completed


def indexes(history: list[HistoryEvent], event_type: EventType.ValueType) -> list[int]:
    return [i for i, e in enumerate(history) if e.event_type == event_type]


def activity_cancel_requested(history: list[HistoryEvent], scheduled: int) -> bool:
    """Whether the workflow asked to cancel the activity scheduled at index `scheduled`."""
    return any(
        e.activity_task_cancel_requested_event_attributes.scheduled_event_id
        == history[scheduled].event_id
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
    )


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Polls without blocking the event loop the test's worker runs on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.1)


async def signal_processed(handle: WorkflowHandle[Any, str]) -> None:
    """Sends `cancel_batch` and returns once a workflow task has handled it (a signal that
    arrives while a workflow task runs is written to the history after it)."""
    sent = len(indexes(await history_of(handle), EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED))
    await handle.signal(CancellableBatchTestWorkflow.cancel_batch)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        history = await history_of(handle)
        signals = indexes(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        handled = indexes(history, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        if len(signals) > sent and handled and handled[-1] > signals[-1]:
            return
        assert asyncio.get_running_loop().time() < deadline, "the signal was never handled"
        await asyncio.sleep(0.05)


async def test_a_cancel_during_the_reservation_releases_what_was_reserved(
    bench: Bench,
) -> None:
    gate = Gate()
    async with bench.worker(held_reserve(gate), reserve_budget_activity):
        handle = await bench.start()
        await asyncio.wait_for(gate.entered.wait(), 60)
        await handle.cancel()
        await signal_processed(handle)
        gate.opened.set()
        outcome = await asyncio.wait_for(handle.result(), 60)
        history = await history_of(handle)
        assert outcome == "cancelled"
        scheduled, completed = activity_events(history, "reserve_budget")
        cancel = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        (workflow_cancel,) = indexes(history, cancel)
        assert scheduled < workflow_cancel < completed
        assert not activity_cancel_requested(history, scheduled)
        assert activity_events(history, "release_budget")[0] > completed
        assert bench.tasks(handle) == []
        view = await show_budget(bench.client, bench.account)
        assert view is not None and [e.state for e in view.entries] == ["released"]
        assert await bench.assert_books_balance() == 0


async def test_a_cancel_that_arrives_with_the_reservation_lands_after_it_and_replays(
    bench: Bench,
) -> None:
    """The reservation completes and Temporal's cancel arrives while no worker runs the
    workflow, so the next workflow task holds both. A worker meeting such a pair may run the
    result before it sees the cancellation (as it did in the money chaos suite, where the replay
    then failed with "scheduled event 'submit' does not match 'ended_report'"); the workflow
    takes that path whichever way the pair is handed to it: the batch is submitted, its job
    cancelled at once, and the history replays."""
    gate = Gate()
    # The ledger's workflow keeps running on a queue of its own while the batch's stops.
    ledgers = f"{bench.task_queue}-ledgers"
    async with (
        bench.worker(held_reserve(gate), reserve_budget_activity, workflows=False),
        bench.worker(reserve_budget_activity, reserve_budget_activity, task_queue=ledgers),
    ):
        workflows = bench.workflow_worker()
        running = asyncio.create_task(workflows.run())
        handle = await bench.start(ledger_queue=ledgers)
        await asyncio.wait_for(gate.entered.wait(), 60)
        await workflows.shutdown()
        await running
        gate.opened.set()
        await until_in_history(handle, reserved)
        await handle.cancel()
        cancel = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
        await until_in_history(handle, lambda history: bool(indexes(history, cancel)))
        async with bench.workflow_worker():
            outcome = await asyncio.wait_for(handle.result(), 60)
        history = await history_of(handle)
        # Asked while the ledger's worker still runs.
        billed = await bench.assert_books_balance()
    assert (outcome, billed) == ("cancelled", 0)
    _, completed = activity_events(history, "reserve_budget")
    (workflow_cancel,) = indexes(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    tasks_done = indexes(history, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    # One workflow task met both: none completed between the result and the cancellation.
    assert completed < workflow_cancel
    assert not [i for i in tasks_done if completed < i < workflow_cancel]
    submitted, _ = activity_events(history, "submit")
    assert submitted > workflow_cancel
    assert activity_events(history, "cancel_job")[0] > submitted
    assert [t["status"] for t in bench.tasks(handle)] == ["CANCELLED"]
    replayed = await Replayer(
        workflows=TEST_WORKFLOWS,
        data_converter=bench.client.data_converter,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    ).replay_workflow(WorkflowHistory(handle.id, history), raise_on_replay_failure=False)
    assert replayed.replay_failure is None


async def until_in_history(
    handle: WorkflowHandle[Any, str], holds: Callable[[list[HistoryEvent]], bool]
) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while not holds(await history_of(handle)):
        assert asyncio.get_running_loop().time() < deadline, "the history never showed it"
        await asyncio.sleep(0.1)


def reserved(history: list[HistoryEvent]) -> bool:
    return any(
        e.activity_task_completed_event_attributes.scheduled_event_id == s.event_id
        for s in history
        if s.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and s.activity_task_scheduled_event_attributes.activity_type.name == "reserve_budget"
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    )


async def test_cancels_during_the_settlement_commit_what_was_billed(bench: Bench) -> None:
    gate = Gate()
    async with bench.worker(held_settle(gate), settle_budget_activity):
        handle = await bench.start()
        await asyncio.wait_for(gate.entered.wait(), 120)
        await handle.cancel()
        await signal_processed(handle)
        await signal_processed(handle)
        gate.opened.set()
        outcome = await asyncio.wait_for(handle.result(), 60)
        history = await history_of(handle)
        assert outcome == "cancelled"
        scheduled, completed = activity_events(history, "settle_budget")
        signals = indexes(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        assert len(signals) == 2 and all(scheduled < i < completed for i in signals)
        assert not activity_cancel_requested(history, scheduled)
        assert [t["status"] for t in bench.tasks(handle)] == ["COMPLETED"]
        billed = await bench.assert_books_balance()
        assert billed == Decimal("0.30") + 2 * 100 * Decimal("0.00090")
        view = await show_budget(bench.client, bench.account)
        assert view is not None and [e.state for e in view.entries] == ["committed"]


async def test_a_batch_cancelled_again_while_its_jobs_are_cancelled_still_settles(
    bench: Bench,
) -> None:
    gate = Gate()
    bench.standin.set_faults(queue_delay_s=600.0)
    async with bench.worker(held_cancel(gate), cancel_job_activity):
        handle = await bench.start()
        await until(lambda: len(bench.tasks(handle)) == 1, timeout=120)
        await signal_processed(handle)
        await asyncio.wait_for(gate.entered.wait(), 60)
        await signal_processed(handle)
        await signal_processed(handle)
        gate.opened.set()
        outcome = await asyncio.wait_for(handle.result(), 60)
        history = await history_of(handle)
        assert outcome == "cancelled"
        scheduled, completed = activity_events(history, "cancel_job")
        signals = indexes(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        assert len(signals) == 3 and signals[0] < scheduled
        assert all(scheduled < i < completed for i in signals[1:])
        assert not activity_cancel_requested(history, scheduled)
        assert [t["status"] for t in bench.tasks(handle)] == ["CANCELLED"]
        assert activity_events(history, "release_budget")[0] > completed
        assert await bench.assert_books_balance() == 0
