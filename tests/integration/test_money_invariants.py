"""The money invariants of the paid execution path (workflows/paid_execution.py), each on the
whole local stack: a real dev server, a real worker process, the QPU stand-in behind the
unmodified Braket SDK. Every test ends by comparing the account's ledger with what the stand-in
billed for the account's tasks (Braket's rule: completed tasks, per task and per shot), to the
cent, and by checking that no reservation is left open and no task left queued or running.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle

from activities.governance.budget_calls import show_budget
from activities.governance.reconciler_schedule import RECONCILER_SCHEDULE_ID
from schemas.budget import LedgerEntry, ledger_workflow_id
from schemas.control import ApprovalDecision, OpsCommand, RerouteCommand
from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from tests.harness import QPU, LocalStack, record_history, run_qloop, running_stack
from tests.server_helpers import wait_until

pytestmark = pytest.mark.integration

POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
QPU_CHOICE = BackendChoice(provider="braket", device=QPU)
IDEAL = BackendChoice(provider="aer", device="ideal")
POLICIES = {
    "accounts": {
        "default": {"budget": {"limit_usd": 100}},
        "reviewed": {
            "budget": {"limit_usd": 100},
            "approval": {"required_for_tiers": ["qpu"], "approvers": ["alice"]},
        },
    }
}
UNFINISHED = {"CREATED", "QUEUED", "RUNNING", "CANCELLING"}
# temporal-dev/qpu-standin.yaml's program-set limits of the stand-in QPU.
STANDIN_PROGRAM_SETS = {"max_executables": 100, "max_total_shots": 200_000}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The reconciler's schedule would otherwise fire every 10 minutes, wall-clock aligned, and
    # settle a terminated workflow's reservation before a test has looked at it: rounds here
    # run only when a test triggers them.
    rounds_on_trigger = {"QLOOP_RECONCILE_MINUTES": str(7 * 24 * 60)}
    folder = tmp_path_factory.mktemp("money")
    with running_stack(folder, "money", policies=POLICIES, worker_env=rounds_on_trigger) as local:
        yield local


@pytest.fixture
def quiet(stack: LocalStack) -> Iterator[None]:
    stack.set_faults()
    yield
    stack.set_faults()


def ghz_on_qpu(
    account: str, scale_factors: list[int] | None = None, **policy: object
) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"money-{account}",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {
                "shots": 100,
                "seed": 5,
                "backend": QPU_CHOICE.model_dump(),
                "fallback": [IDEAL.model_dump()],
            },
            "mitigation": {
                "zne": {"scale_factors": scale_factors} if scale_factors else None,
                "readout": False,
            },
            "policy": {"account": account, **policy},
        }
    )


async def start(client: Client, stack: LocalStack, request: ExperimentRequest) -> WorkflowHandle:
    return await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )


async def progress_when(
    handle: WorkflowHandle, stage: Stage, rerouted: bool = False, timeout: float = 120
) -> Progress:
    """The progress once at `stage` (and, with `rerouted`, after a route change)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        progress = await handle.query("progress", result_type=Progress)
        route = progress.governance.route if progress.governance else []
        if progress.stage == stage and (bool(route) or not rerouted):
            return progress
        assert asyncio.get_running_loop().time() < deadline, f"never {stage}: {progress}"
        await asyncio.sleep(0.1)


def tasks_of(stack: LocalStack, workflow_id: str) -> list[dict]:
    return [t for t in stack.tasks() if t["tags"].get("qloop:workflow-id") == workflow_id]


async def assert_books_balance(client: Client, stack: LocalStack, account: str) -> Decimal:
    """The ledger's committed total is what the stand-in billed the account, to the cent; no
    reservation is open; no task of the account still queues or runs. Returns the bill."""
    view = await show_budget(client, account)
    billed = stack.billed_usd(account=account)
    assert view is not None
    assert round(Decimal(str(view.committed_usd)), 2) == round(billed, 2)
    assert abs(Decimal(str(view.committed_usd)) - billed) < Decimal("0.000001")
    assert view.reserved_usd == 0.0
    assert [e for e in view.entries if e.state == "reserved"] == []
    unfinished = [t for t in stack.tasks() if t["tags"].get("qloop:account") == account]
    assert [t["status"] for t in unfinished if t["status"] in UNFINISHED] == []
    return billed


def new_account() -> str:
    return f"money-{uuid.uuid4().hex[:10]}"


async def test_a_released_key_is_never_accepted_as_a_new_reservation(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    """The issue's reproduction: awaiting approval, paused, approved, rerouted while paused (to
    the same QPU), resumed. The second attempt reserves anew and pays within its budget."""
    handle = await start(client, stack, ghz_on_qpu("reviewed"))
    await progress_when(handle, Stage.AWAITING_APPROVAL)
    await handle.signal("pause", OpsCommand(by="ops", reason="hold"))
    await handle.signal("approve", ApprovalDecision(approver="alice", reason="go"))
    await progress_when(handle, Stage.PAUSED)
    await handle.signal("reroute", RerouteCommand(backend=QPU_CHOICE, by="ops", reason="again"))
    await progress_when(handle, Stage.AWAITING_APPROVAL, rerouted=True)
    await handle.signal("resume", OpsCommand(by="ops"))
    await handle.signal("approve", ApprovalDecision(approver="alice", reason="go again"))
    report = await asyncio.wait_for(handle.result(), 180)

    assert report.status == "completed" and report.produced_by == "hardware"
    view = await show_budget(client, "reviewed")
    assert view is not None
    mine = [e for e in view.entries if e.experiment_id == handle.id]
    assert sorted(e.state for e in mine) == ["committed", "released"]
    (released,) = [e for e in mine if e.state == "released"]
    (committed,) = [e for e in mine if e.state == "committed"]
    assert released.key != committed.key
    assert Decimal(str(committed.actual_usd)) == stack.billed_usd(workflow_id=handle.id) > 0
    assert report.cost.actual_usd == committed.actual_usd


@pytest.fixture
def one_task_per_circuit(stack: LocalStack) -> Iterator[None]:
    """The stand-in QPU as a device without program sets: every circuit is a task of its own."""
    stack.admin("config", {"devices": {QPU: {"program_sets": None}}})
    yield
    stack.admin("config", {"devices": {QPU: {"program_sets": STANDIN_PROGRAM_SETS}}})


async def test_a_partial_batch_failure_cancels_queued_siblings_and_commits_what_was_billed(
    stack: LocalStack, client: Client, quiet: None, one_task_per_circuit: None
) -> None:
    account = new_account()
    stack.set_faults(queue_delay_s=0.0, run_time_s=1.5)
    handle = await start(client, stack, ghz_on_qpu(account, scale_factors=[1, 3, 5, 7, 9]))
    wait_until(
        lambda: any(t["status"] == "COMPLETED" for t in tasks_of(stack, handle.id)), timeout=120
    )
    stack.set_faults(queue_delay_s=0.0, run_time_s=1.5, task_failure_rate=1.0)
    report = await asyncio.wait_for(handle.result(), 180)
    stack.set_faults()

    await record_history(client, handle.id, "paid-partial-failure")
    statuses = [t["status"] for t in tasks_of(stack, handle.id)]
    assert len(statuses) == 5
    assert {"COMPLETED", "FAILED", "CANCELLED"} <= set(statuses), statuses
    assert report.status == "completed" and report.produced_by == "simulator"
    assert "failed" in report.produced_by_reason
    billed = await assert_books_balance(client, stack, account)
    assert billed == statuses.count("COMPLETED") * (Decimal("0.30") + 100 * Decimal("0.0009"))
    assert report.governance is not None
    (record,) = report.governance.budget
    assert Decimal(str(record.committed_usd)) == billed and not record.released


async def test_an_expired_max_queue_wait_cancels_what_is_still_queued(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    account = new_account()
    stack.set_faults(queue_delay_s=60.0)
    handle = await start(client, stack, ghz_on_qpu(account, max_queue_wait="PT3S"))
    report = await asyncio.wait_for(handle.result(), 120)
    stack.set_faults()

    (task,) = tasks_of(stack, handle.id)
    assert task["status"] == "CANCELLED"
    assert report.produced_by == "simulator" and "max_queue_wait" in report.produced_by_reason
    assert await assert_books_balance(client, stack, account) == 0
    view = await show_budget(client, account)
    assert view is not None and [e.state for e in view.entries] == ["released"]


async def test_a_cancel_after_the_job_finished_settles_it(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    account = new_account()
    stack.set_faults(queue_delay_s=2.0)
    handle = await start(client, stack, ghz_on_qpu(account))
    await progress_when(handle, Stage.WAITING)
    await handle.signal("pause", OpsCommand(by="ops", reason="hold polling"))
    await progress_when(handle, Stage.PAUSED)
    wait_until(
        lambda: [t["status"] for t in tasks_of(stack, handle.id)] == ["COMPLETED"], timeout=60
    )
    await handle.signal("cancel", OpsCommand(by="carol", reason="changed my mind"))
    report = await asyncio.wait_for(handle.result(), 120)

    assert report.status == "cancelled"
    billed = await assert_books_balance(client, stack, account)
    assert billed == Decimal("0.30") + 100 * Decimal("0.0009")
    view = await show_budget(client, account)
    assert view is not None and [e.state for e in view.entries] == ["committed"]
    assert report.governance is not None
    (record,) = report.governance.budget
    assert Decimal(str(record.committed_usd)) == billed


async def test_a_cancel_while_submit_is_in_flight_never_loses_the_task(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    account = new_account()
    stack.set_faults(queue_delay_s=60.0, throttle_rate={"CreateQuantumTask": 1.0})
    handle = await start(client, stack, ghz_on_qpu(account))
    await progress_when(handle, Stage.SUBMITTING)
    await asyncio.sleep(2)  # the submission is retried against throttling meanwhile
    await handle.cancel()
    await asyncio.sleep(1)
    stack.set_faults(queue_delay_s=60.0)  # now the submission goes through
    report = await asyncio.wait_for(handle.result(), 120)

    history = [e async for e in handle.fetch_history_events()]
    cancel_requested = next(
        i
        for i, e in enumerate(history)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    )
    submitted = next(
        i
        for i, e in enumerate(history)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and history[
            e.activity_task_completed_event_attributes.scheduled_event_id - 1
        ].activity_task_scheduled_event_attributes.activity_type.name
        == "submit"
    )
    assert cancel_requested < submitted  # the cancel landed while submit was in flight
    await record_history(client, handle.id, "paid-cancel-during-submit")
    assert report.status == "cancelled"
    (task,) = tasks_of(stack, handle.id)
    assert task["status"] == "CANCELLED"
    assert await assert_books_balance(client, stack, account) == 0


async def test_a_reset_finds_the_first_job_instead_of_paying_for_a_second(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    account = new_account()
    handle = await start(client, stack, ghz_on_qpu(account))
    first = await asyncio.wait_for(handle.result(), 120)
    tasks_before = tasks_of(stack, handle.id)

    reset = await client.workflow_service.reset_workflow_execution(
        reset_request(client, handle, await first_workflow_task_completed(handle))
    )
    second = await asyncio.wait_for(
        client.get_workflow_handle(
            handle.id, run_id=reset.run_id, result_type=ExperimentReport
        ).result(),
        120,
    )

    await record_history(client, handle.id, "paid-reset")
    assert second.status == "completed" and second.produced_by == "hardware"
    assert tasks_of(stack, handle.id) == tasks_before
    assert second.provenance is not None and first.provenance is not None
    assert second.provenance.job_id == first.provenance.job_id
    billed = await assert_books_balance(client, stack, account)
    assert billed == Decimal("0.30") + 100 * Decimal("0.0009")
    view = await show_budget(client, account)
    assert view is not None and [e.state for e in view.entries] == ["committed"]


async def first_workflow_task_completed(handle: WorkflowHandle) -> int:
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return event.event_id
    raise AssertionError("no completed workflow task")


def reset_request(
    client: Client, handle: WorkflowHandle, event_id: int
) -> ResetWorkflowExecutionRequest:
    return ResetWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=handle.id),
        reason="money test: reset to before the submission",
        workflow_task_finish_event_id=event_id,
        request_id=str(uuid.uuid4()),
    )


# --- reservations of closed workflows: the reconciler and the budget commands -------------------


async def qloop(stack: LocalStack, *args: str) -> tuple[int, str, str]:
    return await run_qloop(stack.worker_env(), *args, timeout=120)


async def entry_of(client: Client, account: str, workflow_id: str) -> LedgerEntry:
    view = await show_budget(client, account)
    assert view is not None
    (entry,) = [e for e in view.entries if e.experiment_id == workflow_id]
    return entry


async def entry_closed(client: Client, account: str, workflow_id: str) -> LedgerEntry:
    for _ in range(300):
        entry = await entry_of(client, account, workflow_id)
        if entry.state != "reserved":
            return entry
        await asyncio.sleep(0.2)
    raise AssertionError(f"the reservation of {workflow_id} stayed open")


@pytest.mark.parametrize("finished", [False, True], ids=["queued", "finished"])
async def test_the_reconciler_settles_the_reservations_of_closed_workflows(
    stack: LocalStack, client: Client, quiet: None, finished: bool
) -> None:
    """A workflow terminated while its task queues (or after the task ran, before it was
    fetched) leaves an open reservation; `qloop budget reconcile` reports it, the reconciler's
    scheduled round cancels the task or commits what it was billed, and then nothing differs."""
    account = new_account()
    stack.set_faults(queue_delay_s=2.0 if finished else 60.0)
    handle = await start(client, stack, ghz_on_qpu(account))
    await progress_when(handle, Stage.WAITING)
    if finished:
        await handle.signal("pause", OpsCommand(by="ops", reason="hold polling"))
        await progress_when(handle, Stage.PAUSED)
        wait_until(
            lambda: [t["status"] for t in tasks_of(stack, handle.id)] == ["COMPLETED"], timeout=60
        )
    await handle.terminate(reason="operator mistake")

    code, listing, stderr = await qloop(stack, "budget", "reservations", account)
    assert code == 0, stderr
    assert "TERMINATED" in listing and handle.id in listing
    code, report, _ = await qloop(stack, "budget", "reconcile", account)
    assert code == 1 and f"DIFFERENCE {handle.id}" in report and "TERMINATED" in report

    await client.get_schedule_handle(RECONCILER_SCHEDULE_ID).trigger()
    entry = await entry_closed(client, account, handle.id)

    (task,) = tasks_of(stack, handle.id)
    if finished:
        assert task["status"] == "COMPLETED" and entry.state == "committed"
        assert Decimal(str(entry.actual_usd)) == Decimal(task["billedUsd"]) > 0
    else:
        assert task["status"] == "CANCELLED" and entry.state == "released"
        assert f"reconciler: workflow {handle.id} is TERMINATED" in entry.reason
    await assert_books_balance(client, stack, account)
    code, report, stderr = await qloop(stack, "budget", "reconcile", account)
    assert code == 0, report + stderr
    assert "no difference" in report
    if finished:
        await record_history(client, ledger_workflow_id(account), "budget-ledger")
        async for execution in client.list_workflows(
            "WorkflowType = 'ReservationReconcilerWorkflow'"
        ):
            await record_history(client, execution.id, "reservation-reconciler")
            break


async def test_budget_release_frees_an_open_reservation_by_hand(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    account = new_account()
    handle = await start(client, stack, ghz_on_qpu(account))
    await handle.signal("pause", OpsCommand(by="ops", reason="before submission"))
    await progress_when(handle, Stage.PAUSED)
    await handle.terminate(reason="abandoned")
    key = (await entry_of(client, account, handle.id)).key

    code, _, stderr = await qloop(
        stack, "budget", "release", "no-such-key", "--by", "dana", "--reason", "x"
    )
    assert code != 0 and "no open reservation 'no-such-key'" in stderr
    code, stdout, stderr = await qloop(
        stack, "budget", "release", key, "--by", "dana", "--reason", "workflow abandoned"
    )
    assert code == 0, stderr
    assert "TERMINATED" in stdout
    entry = await entry_of(client, account, handle.id)
    assert (entry.state, entry.reason) == ("released", "released by dana: workflow abandoned")
    assert tasks_of(stack, handle.id) == []
    await assert_books_balance(client, stack, account)


async def test_failed_executables_of_a_program_set_commit_what_was_billed(
    stack: LocalStack, client: Client, quiet: None
) -> None:
    """Five ZNE circuits in one program-set task; two of them fail on the device (seed 0 draws
    0.84, 0.76, 0.42, 0.26, 0.51 at a rate of 0.5). The task completes, Braket bills it for the
    three that ran; qloop counts the job failed, falls back to the simulator and commits that.
    Last in the module: the failure counts towards the QPU's circuit breaker, and with the two
    failures above it would open the breaker for the tests after it."""
    account = new_account()
    stack.set_faults(seed=0, executable_failure_rate=0.5)
    handle = await start(client, stack, ghz_on_qpu(account, scale_factors=[1, 3, 5, 7, 9]))
    report = await asyncio.wait_for(handle.result(), 180)
    stack.set_faults()

    (task,) = tasks_of(stack, handle.id)
    assert task["status"] == "COMPLETED"
    assert report.status == "completed" and report.produced_by == "simulator"
    assert "2 of 5 executables of the program set failed" in report.produced_by_reason
    billed = await assert_books_balance(client, stack, account)
    assert billed == Decimal("0.30") + 3 * 100 * Decimal("0.0009")
    assert report.governance is not None
    (record,) = report.governance.budget
    assert Decimal(str(record.committed_usd)) == billed and not record.released
