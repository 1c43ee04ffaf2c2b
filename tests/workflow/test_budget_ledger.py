"""BudgetLedgerWorkflow on a real Temporal dev server with an in-process worker, and its period
rollover on the time-skipping server (a day passes in a second).

Experiments reach the ledger through the activities of activities/governance/budget_calls.py; here
the same functions are called with the test's client, and once from a probe workflow through the
real activity wrappers, as the experiment workflow does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.governance.budget_calls import (
    release_budget,
    release_budget_activity,
    reserve_budget,
    reserve_budget_activity,
    set_budget_limit,
    settle_budget,
    settle_budget_activity,
    show_budget,
)
from activities.governance.policy import budget_admins_activity
from schemas.budget import (
    BUDGET_EXCEEDED,
    LIMIT_CHANGE_REFUSED,
    RESERVATION_CLOSED,
    UNKNOWN_RESERVATION,
    LedgerEntry,
    LedgerInput,
    LedgerView,
    Release,
    ReleaseBudgetInput,
    Reservation,
    ReservationOutcome,
    ReserveBudgetInput,
    SetLimit,
    SettleBudgetInput,
    Settlement,
    ledger_workflow_id,
)
from schemas.pipeline import PipelineModel
from schemas.signatures import own_key_id, public_key_text, sign_limit_change
from workflows.budget_ledger import BudgetLedgerWorkflow


class ProbeInput(PipelineModel):
    account: str
    amount_usd: float


class ProbeResult(PipelineModel):
    first: ReservationOutcome
    retried: ReservationOutcome
    committed: LedgerEntry
    unknown_release: LedgerEntry | None
    refused_release: str


@workflow.defn(name="BudgetProbeWorkflow")
class BudgetProbeWorkflow:
    """Uses the budget activities the way the experiment workflow does."""

    @workflow.run
    async def run(self, input: ProbeInput) -> ProbeResult:
        options = {
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=3),
        }
        key = f"{workflow.info().workflow_id}/0"
        reservation = ReserveBudgetInput(
            account=input.account,
            reservation=Reservation(
                key=key, experiment_id=workflow.info().workflow_id, amount_usd=input.amount_usd
            ),
        )
        first = await workflow.execute_activity(
            "reserve_budget", reservation, result_type=ReservationOutcome, **options
        )
        retried = await workflow.execute_activity(
            "reserve_budget", reservation, result_type=ReservationOutcome, **options
        )
        committed = await workflow.execute_activity(
            "settle_budget",
            SettleBudgetInput(
                account=input.account,
                settlement=Settlement(key=key, actual_usd=input.amount_usd / 2),
            ),
            result_type=LedgerEntry,
            **options,
        )
        unknown_release = await workflow.execute_activity(
            "release_budget",
            ReleaseBudgetInput(account=input.account, release=Release(key="nope", reason="test")),
            result_type=LedgerEntry | None,
            **options,
        )
        try:
            await workflow.execute_activity(
                "release_budget",
                ReleaseBudgetInput(account=input.account, release=Release(key=key, reason="test")),
                result_type=LedgerEntry | None,
                **options,
            )
            refused_release = ""
        except ActivityError as error:
            cause = error.cause
            refused_release = (
                f"{cause.type}: {cause.message}"
                if isinstance(cause, ApplicationError)
                else str(cause)
            )
        return ProbeResult(
            first=first,
            retried=retried,
            committed=committed,
            unknown_release=unknown_release,
            refused_release=refused_release,
        )


@workflow.defn(name="ReserveAsExperimentWorkflow")
class ReserveAsExperimentWorkflow:
    """One reservation through the reserve_budget activity and its retries, as an experiment
    makes it."""

    @workflow.run
    async def run(self, input: ReserveBudgetInput) -> ReservationOutcome:
        return await workflow.execute_activity(
            "reserve_budget",
            input,
            result_type=ReservationOutcome,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
        )


@dataclass
class Ledgers:
    client: Client
    task_queue: str

    async def reserve(self, account: str, key: str, amount_usd: float) -> ReservationOutcome:
        reservation = Reservation(key=key, experiment_id=key.split("/")[0], amount_usd=amount_usd)
        return await reserve_budget(
            self.client,
            self.task_queue,
            ReserveBudgetInput(account=account, reservation=reservation),
        )

    async def reserve_as_experiment(
        self, account: str, key: str, amount_usd: float
    ) -> ReservationOutcome:
        reservation = Reservation(key=key, experiment_id=key.split("/")[0], amount_usd=amount_usd)
        return await self.client.execute_workflow(
            "ReserveAsExperimentWorkflow",
            ReserveBudgetInput(account=account, reservation=reservation),
            id=f"reserve-{uuid.uuid4().hex}",
            task_queue=self.task_queue,
            result_type=ReservationOutcome,
        )

    async def set_limit(self, account: str, limit_usd: float, period: str = "none") -> LedgerView:
        return await set_budget_limit(
            self.client,
            self.task_queue,
            account,
            SetLimit(limit_usd=limit_usd, period=period, by="test"),  # type: ignore[arg-type]
        )

    async def view(self, account: str) -> LedgerView:
        view = await show_budget(self.client, account)
        assert view is not None, f"account {account} has no ledger"
        return view


def in_process_worker(client: Client, task_queue: str) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BudgetLedgerWorkflow, BudgetProbeWorkflow, ReserveAsExperimentWorkflow],
        activities=[
            reserve_budget_activity,
            settle_budget_activity,
            release_budget_activity,
            budget_admins_activity,
        ],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )


@pytest_asyncio.fixture
async def ledgers(dev_server: WorkflowEnvironment) -> AsyncIterator[Ledgers]:
    task_queue = f"budget-{uuid.uuid4().hex[:8]}"
    async with in_process_worker(dev_server.client, task_queue):
        yield Ledgers(dev_server.client, task_queue)


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


async def update_events(client: Client, workflow_id: str) -> list[EventType.ValueType]:
    kinds = {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    }
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [event.event_type for event in history.events if event.event_type in kinds]


async def test_a_first_reservation_creates_the_ledger_with_no_budget(ledgers: Ledgers) -> None:
    account = new_account()

    outcome = await ledgers.reserve(account, "exp/0", 1.0)

    assert not outcome.accepted
    assert outcome.message.startswith(
        f"account '{account}': a reservation of $1.00 does not fit: $0.00 available of a $0.00 "
        "limit ($0.00 reserved, $0.00 committed this period)"
    )
    assert f"qloop budget set {account}" in outcome.message
    assert outcome.available_usd == 0.0
    # A validator's refusal leaves no trace in the ledger's history.
    assert await update_events(ledgers.client, ledger_workflow_id(account)) == []
    free = await ledgers.reserve(account, "simulator/0", 0.0)
    assert free.accepted


async def test_the_validator_refuses_what_does_not_fit(ledgers: Ledgers) -> None:
    account = new_account()
    await ledgers.set_limit(account, 5.0)
    assert (await ledgers.reserve(account, "a/0", 3.5)).accepted

    with pytest.raises(WorkflowUpdateFailedError) as raised:
        await ledgers.client.get_workflow_handle(ledger_workflow_id(account)).execute_update(
            "reserve", Reservation(key="b/0", experiment_id="b", amount_usd=2.0)
        )

    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == BUDGET_EXCEEDED
    assert cause.message == (
        f"account '{account}': a reservation of $2.00 does not fit: $1.50 available of a $5.00 "
        "limit ($3.50 reserved, $0.00 committed this period)"
    )
    outcome = await ledgers.reserve(account, "b/0", 2.0)
    assert (outcome.accepted, outcome.available_usd) == (False, 1.5)


async def test_reserve_is_idempotent_commit_and_release_settle_it(ledgers: Ledgers) -> None:
    account = new_account()
    await ledgers.set_limit(account, 10.0)

    first = await ledgers.reserve(account, "a/0", 6.0)
    retried = await ledgers.reserve(account, "a/0", 6.0)
    assert first.accepted and retried.accepted
    assert "already exists" in retried.message
    assert (await ledgers.view(account)).reserved_usd == 6.0

    committed = await settle_budget(
        ledgers.client,
        SettleBudgetInput(account=account, settlement=Settlement(key="a/0", actual_usd=5.0)),
    )
    assert (committed.state, committed.actual_usd) == ("committed", 5.0)
    closed = await ledgers.reserve(account, "a/0", 6.0)
    assert (closed.accepted, closed.closed_as) == (False, "committed")
    assert (await ledgers.reserve(account, "b/0", 4.0)).accepted
    released = await release_budget(
        ledgers.client,
        ReleaseBudgetInput(account=account, release=Release(key="b/0", reason="cancelled")),
    )
    assert released is not None and released.state == "released"

    view = await ledgers.view(account)
    assert (view.reserved_usd, view.committed_usd, view.available_usd) == (0.0, 5.0, 5.0)
    assert [(e.key, e.state) for e in view.entries] == [("b/0", "released"), ("a/0", "committed")]

    with pytest.raises(ApplicationError) as unknown:
        await settle_budget(
            ledgers.client,
            SettleBudgetInput(account=account, settlement=Settlement(key="c/0", actual_usd=1.0)),
        )
    assert (unknown.value.type, unknown.value.non_retryable) == (UNKNOWN_RESERVATION, True)
    with pytest.raises(ApplicationError) as spent:
        await release_budget(
            ledgers.client,
            ReleaseBudgetInput(account=account, release=Release(key="a/0", reason="cleanup")),
        )
    assert spent.value.type == RESERVATION_CLOSED
    assert "committed at $5.00" in spent.value.message
    no_ledger = ReleaseBudgetInput(account=new_account(), release=Release(key="x", reason="x"))
    assert await release_budget(ledgers.client, no_ledger) is None


async def test_the_activities_serve_a_workflow(ledgers: Ledgers) -> None:
    account = new_account()
    await ledgers.set_limit(account, 100.0)

    result = await ledgers.client.execute_workflow(
        "BudgetProbeWorkflow",
        ProbeInput(account=account, amount_usd=40.0),
        id=f"probe-{uuid.uuid4().hex[:8]}",
        task_queue=ledgers.task_queue,
        result_type=ProbeResult,
    )

    assert result.first.accepted and result.first.available_usd == 60.0
    assert result.retried.accepted and result.retried.available_usd == 60.0
    assert (result.committed.state, result.committed.actual_usd) == ("committed", 20.0)
    assert result.unknown_release is None
    assert result.refused_release.startswith(f"{RESERVATION_CLOSED}: account '{account}'")
    assert (await ledgers.view(account)).available_usd == 80.0


@pytest.mark.parametrize("run", range(3))
async def test_concurrent_reservations_never_spend_the_same_dollar(
    ledgers: Ledgers, run: int
) -> None:
    account = new_account()
    fitting, contenders, amount = 7, 24, 2.5
    await ledgers.set_limit(account, fitting * amount)
    observed: list[LedgerView] = []
    racing = True

    async def watch() -> None:
        while racing:
            observed.append(await ledgers.view(account))

    watcher = asyncio.create_task(watch())
    outcomes = await asyncio.gather(
        *(
            ledgers.reserve_as_experiment(account, f"exp-{index}/0", amount)
            for index in range(contenders)
        )
    )
    racing = False
    await watcher

    accepted = [o for o in outcomes if o.accepted]
    assert len(accepted) == fitting
    assert all("does not fit" in o.message for o in outcomes if not o.accepted)
    final = await ledgers.view(account)
    assert (final.reserved_usd, final.available_usd, len(final.entries)) == (
        fitting * amount,
        0.0,
        fitting,
    )
    assert observed, "the watcher saw no view during the race"
    for view in [*observed, final]:
        assert view.available_usd >= 0.0
        assert view.reserved_usd + view.committed_usd <= view.limit_usd


async def test_continue_as_new_keeps_every_entry_and_the_balance(ledgers: Ledgers) -> None:
    account = new_account()
    workflow_id = ledger_workflow_id(account)
    handle = await ledgers.client.start_workflow(
        "BudgetLedgerWorkflow",
        LedgerInput(account=account, limit_usd=100.0, max_history_events=30),
        id=workflow_id,
        task_queue=ledgers.task_queue,
    )
    first_run = handle.result_run_id

    for index in range(12):
        assert (await ledgers.reserve(account, f"seq-{index}/0", 2.0)).accepted
        if index % 3 == 0:
            await settle_budget(
                ledgers.client,
                SettleBudgetInput(
                    account=account, settlement=Settlement(key=f"seq-{index}/0", actual_usd=1.0)
                ),
            )
        elif index % 3 == 1:
            await release_budget(
                ledgers.client,
                ReleaseBudgetInput(
                    account=account, release=Release(key=f"seq-{index}/0", reason="done")
                ),
            )
    # Reservations racing with a continue-as-new are neither lost nor doubled.
    burst = await asyncio.gather(
        *(ledgers.reserve_as_experiment(account, f"burst-{index}/0", 3.0) for index in range(20))
    )
    assert sum(o.accepted for o in burst) == 20

    first = ledgers.client.get_workflow_handle(workflow_id, run_id=first_run)
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    view = await ledgers.view(account)
    states = {e.key: e.state for e in view.entries}
    assert len(states) == 32
    assert [states[f"seq-{i}/0"] for i in range(3)] == ["committed", "released", "reserved"]
    # 4 open seq reservations ($8), 20 burst ($60), 4 commits of $1.
    assert (view.reserved_usd, view.committed_usd, view.available_usd) == (68.0, 4.0, 28.0)
    assert (await ledgers.reserve(account, "seq-2/0", 2.0)).accepted
    assert (await ledgers.view(account)).reserved_usd == 68.0


async def test_a_new_period_frees_the_limit(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    task_queue = f"budget-{uuid.uuid4().hex[:8]}"
    account = new_account()
    async with in_process_worker(client, task_queue):
        ledgers = Ledgers(client, task_queue)
        await ledgers.set_limit(account, 10.0, "day")
        assert (await ledgers.reserve(account, "today/0", 10.0)).accepted
        assert not (await ledgers.reserve(account, "later/0", 10.0)).accepted
        before = await ledgers.view(account)

        await time_skipping_env.sleep(timedelta(days=1))

        after = await ledgers.view(account)
        assert before.period_start is not None
        assert after.period_start == before.period_start + timedelta(days=1)
        assert (after.reserved_usd, after.available_usd) == (0.0, 10.0)
        assert (await ledgers.reserve(account, "later/0", 10.0)).accepted
        # Yesterday's reservation can still be committed; it counts against yesterday.
        await settle_budget(
            client,
            SettleBudgetInput(
                account=account, settlement=Settlement(key="today/0", actual_usd=9.0)
            ),
        )
        final = await ledgers.view(account)
        # The ledger wakes at every period boundary; left running without a worker, its next
        # workflow task would hold the shared time-skipping server's clock for later tests.
        await client.get_workflow_handle(ledger_workflow_id(account)).terminate("test over")
        assert (final.reserved_usd, final.committed_usd, final.available_usd) == (10.0, 0.0, 0.0)
        assert [e.key for e in final.entries] == ["later/0", "today/0"]


async def test_budget_admins_allow_only_their_signed_limit_changes(
    ledgers: Ledgers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = new_account()
    carol, mallory = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(
        yaml.safe_dump(
            {
                "accounts": {
                    account: {"budget_admins": {"carol": public_key_text(carol.public_key())}}
                }
            }
        )
    )
    monkeypatch.setenv("QLOOP_POLICY_FILE", str(policy_file))
    workflow_id = ledger_workflow_id(account)
    # A short history bound, so that the ledger continues as new in the middle of the test.
    first_run = (
        await ledgers.client.start_workflow(
            "BudgetLedgerWorkflow",
            LedgerInput(account=account, limit_usd=10.0, max_history_events=40),
            id=workflow_id,
            task_queue=ledgers.task_queue,
        )
    ).result_run_id

    async def refusal(command: SetLimit) -> str:
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await set_budget_limit(ledgers.client, ledgers.task_queue, account, command)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == LIMIT_CHANGE_REFUSED
        assert cause.message.startswith(f"account '{account}': limit change refused: ")
        return cause.message.split("limit change refused: ", 1)[1]

    def signed(key: Ed25519PrivateKey, limit_usd: float, at: datetime) -> SetLimit:
        signature = sign_limit_change(key, account, limit_usd, "month", "carol", at)
        return SetLimit(limit_usd=limit_usd, period="month", by="carol", signature=signature)

    now = datetime.now(UTC)
    assert (await refusal(SetLimit(limit_usd=1e6, by="carol"))).startswith("unsigned: ")
    forged = signed(carol, 50.0, now).model_copy(update={"limit_usd": 1e6})
    assert (await refusal(forged)).startswith("forged: ")
    assert (await refusal(signed(mallory, 1e6, now))).startswith("wrong key: ")
    assert (await refusal(SetLimit(limit_usd=1e6, by="mallory"))).startswith("not listed: ")

    change = signed(carol, 50.0, now)
    view = await set_budget_limit(ledgers.client, ledgers.task_queue, account, change)
    assert (view.limit_usd, view.period, view.limit_set_by) == (50.0, "month", "carol")
    assert view.limit_key_id == own_key_id(carol)

    first = ledgers.client.get_workflow_handle(workflow_id, run_id=first_run)
    for index in range(40):
        if (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            break
        assert (await ledgers.reserve(account, f"fill-{index}/0", 0.5)).accepted
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    # The time of the applied signed change is carried across continue-as-new: sent again,
    # it is refused.
    assert (await refusal(change)).startswith("replayed: ")

    final = await ledgers.view(account)
    assert (final.limit_usd, final.limit_key_id) == (50.0, own_key_id(carol))
    assert [refused.why.split(":")[0] for refused in final.refused_limit_changes] == [
        "unsigned",
        "forged",
        "wrong key",
        "not listed",
        "replayed",
    ]
    assert final.refused_limit_changes[1].limit_usd == 1e6


async def test_a_policy_file_that_cannot_be_read_refuses_limit_changes(
    ledgers: Ledgers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = new_account()
    missing = tmp_path / "moved-away.yaml"
    monkeypatch.setenv("QLOOP_POLICY_FILE", str(missing))
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await ledgers.set_limit(account, 1e6)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == LIMIT_CHANGE_REFUSED
    assert "budget admins could not be read from the policy" in cause.message
    assert str(missing) in cause.message
    assert (await ledgers.view(account)).limit_usd == 0.0
