"""Money under chaos (tests/money_mix.py): at least 40 experiments, 2 loops and 2 sweeps across 3
accounts on the QPU stand-in, with 10 % of tasks failing, lost replies, queue deadlines,
reroutes while queued and while paused, cancels (signal, Temporal's cancel, during submit),
resets of 3 workflows and 10 SIGKILLs of the worker. At the end, for every account: the ledger's
committed total is what the stand-in billed, to the cent; no reservation is open (every
workflow closed); no task still queues or runs; `qloop budget reconcile` finds no difference.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from temporalio.client import Client

from tests.harness import LocalStack
from tests.money_mix import MixPlan, run_money_mix, write_policy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    folder = tmp_path_factory.mktemp("money-chaos")
    local = LocalStack(
        folder, task_queue=f"money-{uuid.uuid4().hex[:8]}", policy_file=write_policy(folder)
    )
    local.start()
    local.start_worker()
    try:
        yield local
    finally:
        local.stop()


async def test_every_dollar_is_accounted_for_through_every_fault(
    stack: LocalStack, client: Client
) -> None:
    outcome = await run_money_mix(client, stack, MixPlan())

    assert outcome.workflows == 44
    assert outcome.kills == 10 and outcome.kills_with_tasks_in_flight >= 5
    # The whole story at once when an account does not balance (pytest cuts a long repr).
    assert all(books.balanced for books in outcome.books), "\n".join(
        [f"workflows closed as {outcome.closed}"]
        + [
            f"{b.account}: committed {b.committed_usd}, billed {b.billed_usd}, open "
            f"{b.open_reservation_owners}, unfinished {b.unfinished_tasks}, reconcile exit "
            f"{b.reconcile_exit}\n{b.reconcile_report}"
            for b in outcome.books
            if not b.balanced
        ]
    )
    for books in outcome.books:
        assert books.committed_usd > 0, books
        assert abs(books.committed_usd - books.billed_usd) < 0.000001, books
        assert books.open_reservations == 0, books
        assert books.unfinished_tasks == 0, books
        assert books.reconcile_exit == 0, books.reconcile_report
        assert "no difference" in books.reconcile_report
