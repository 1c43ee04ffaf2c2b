"""`qloop budget set` and `qloop budget show` through `starter.main` against the real dev server,
with the worker's own workflows and orchestration activities running in process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import starter
from activities.governance.budget_calls import reserve_budget
from cli.output import EXIT_INVALID
from schemas.budget import LedgerView, Reservation, ReserveBudgetInput
from worker import WORKFLOWS, orchestration_activities


@pytest_asyncio.fixture
async def task_queue(
    dev_server: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    queue = f"budget-cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("QLOOP_TASK_QUEUE", queue)
    async with Worker(
        dev_server.client,
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=orchestration_activities(),
    ):
        yield queue


async def qloop(*argv: str) -> int:
    # main() runs its own event loop, so it runs in a thread beside the test's (and the worker's).
    return await asyncio.to_thread(starter.main, list(argv))


def new_account() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


async def test_set_then_show_the_balance_and_entries(
    task_queue: str, dev_server: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    account = new_account()

    assert await qloop("budget", "set", account, "--limit-usd", "250", "--period", "month") == 0
    shown = capsys.readouterr().out
    assert f"budget of account {account}" in shown
    assert "$250.00 per month" in shown
    assert "available       $250.00" in shown

    reservation = Reservation(
        key="exp-1/0", experiment_id="exp-1", amount_usd=240.9, backend="braket/ionq-forte"
    )
    outcome = await reserve_budget(
        dev_server.client, task_queue, ReserveBudgetInput(account=account, reservation=reservation)
    )
    assert outcome.accepted

    assert await qloop("budget", "show", account) == 0
    table = capsys.readouterr().out
    assert "reserved        $240.90" in table
    assert "available       $9.10" in table
    row = next(line for line in table.splitlines() if line.rstrip().endswith("exp-1/0"))
    assert row.split()[1:4] == ["reserved", "$240.90", "-"]
    assert "braket/ionq-forte" in row

    assert await qloop("budget", "set", account, "--limit-usd", "100", "--by", "alice") == 0
    capsys.readouterr()
    assert await qloop("budget", "show", account, "--json") == 0
    view = LedgerView.model_validate(json.loads(capsys.readouterr().out))
    assert (view.limit_usd, view.period, view.period_start, view.limit_set_by) == (
        100.0,
        "none",
        None,
        "alice",
    )
    assert (view.reserved_usd, view.available_usd) == (240.9, 0.0)
    assert [entry.key for entry in view.entries] == ["exp-1/0"]


async def test_showing_an_account_without_a_ledger_says_how_to_create_one(
    task_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = new_account()
    assert await qloop("budget", "show", account) == 1
    assert f"`qloop budget set {account} --limit-usd AMOUNT`" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["set", "Physics Lab", "--limit-usd", "5"], ["'Physics Lab'", "lowercase letters"]),
        (["show", "_lab"], ["'_lab'", "starting with a letter or a digit"]),
        (["set", "lab", "--limit-usd", "-5"], ["'-5'", "0 or more"]),
        (["set", "lab", "--limit-usd", "nan"], ["'nan'", "0 or more"]),
        (["set", "lab", "--limit-usd", "ten"], ["'ten'", "US dollars"]),
        (["set", "lab", "--limit-usd", "5", "--period", "year"], ["'year'", "month"]),
        (["set", "lab"], ["--limit-usd", "required"]),
    ],
)
def test_bad_input_is_refused_with_the_rule(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        starter.main(["budget", *argv])
    assert exit_info.value.code == EXIT_INVALID
    message = capsys.readouterr().err
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
