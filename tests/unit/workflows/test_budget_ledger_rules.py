"""The budget ledger's rules without Temporal: fit, idempotency, periods, bounding, and which
refusals the budget activities treat as final."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.governance.budget_calls import ledger_refusal
from schemas.budget import (
    BUDGET_EXCEEDED,
    MAX_REFUSED_LIMIT_CHANGES,
    RESERVATION_CLOSED,
    UNKNOWN_RESERVATION,
    LedgerInput,
    LedgerState,
    Release,
    Reservation,
    SetLimit,
    Settlement,
    format_usd,
    ledger_workflow_id,
)
from workflows.budget_ledger import (
    CLOSED_ENTRY_GRACE,
    MAX_CLOSED_ENTRIES,
    LedgerBook,
    next_period_start,
    period_start,
)

# A Wednesday.
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)


def book(limit_usd: float, period: str = "none", account: str = "lab") -> LedgerBook:
    return LedgerBook(account, LedgerState(limit_usd=limit_usd, period=period))


def reservation(key: str, amount_usd: float, experiment_id: str = "exp-1") -> Reservation:
    return Reservation(key=key, experiment_id=experiment_id, amount_usd=amount_usd)


def refusal_of(action: object, *args: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        action(*args)  # type: ignore[operator]
    return raised.value


# --- periods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "start", "following"),
    [
        ("none", None, None),
        ("day", datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC)),
        ("week", datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
        ("month", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_periods_are_utc_calendar_periods(
    period: str, start: datetime | None, following: datetime | None
) -> None:
    assert period_start(period, NOW) == start  # type: ignore[arg-type]
    assert next_period_start(period, NOW) == following  # type: ignore[arg-type]


def test_december_rolls_over_into_january_and_local_times_count_in_utc() -> None:
    assert next_period_start("month", datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    # 01:00 on the 19th in UTC+2 is still the 18th in UTC.
    local = datetime(2026, 11, 19, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert period_start("day", local) == datetime(2026, 11, 18, tzinfo=UTC)


def test_money_is_shown_in_cents_unless_finer() -> None:
    assert format_usd(240.9) == "$240.90"
    assert format_usd(1234.5) == "$1,234.50"
    assert format_usd(0.0009) == "$0.0009"
    assert format_usd(0.30000000000000004) == "$0.30"


def test_account_names_follow_the_request_rule() -> None:
    assert ledger_workflow_id("lab-7") == "budget-lab-7"
    with pytest.raises(ValidationError, match="account"):
        LedgerInput(account="Lab 7")


# --- fit ----------------------------------------------------------------------------------------


def test_reservations_fit_up_to_the_cent_and_no_further() -> None:
    ledger = book(0.3)
    for index in range(3):
        ledger.reserve(reservation(f"exp-{index}/0", 0.1), NOW)
    refusal = refusal_of(ledger.reserve, reservation("exp-3/0", 0.1), NOW)

    assert refusal.type == BUDGET_EXCEEDED
    assert refusal.message == (
        "account 'lab': a reservation of $0.10 does not fit: $0.00 available of a $0.30 limit "
        "($0.30 reserved, $0.00 committed this period)"
    )
    assert refusal.details == (0.0,)
    view = ledger.view(NOW)
    assert (view.reserved_usd, view.available_usd, len(view.entries)) == (0.3, 0.0, 3)


def test_an_account_without_a_budget_says_how_to_set_one() -> None:
    refusal = refusal_of(book(0.0).check_reservation, reservation("exp/0", 5.0), NOW)
    assert "$0.00 available of a $0.00 limit" in refusal.message
    assert "qloop budget set lab --limit-usd" in refusal.message


def test_a_free_run_fits_even_on_an_account_over_its_limit() -> None:
    ledger = book(10.0)
    ledger.reserve(reservation("paid/0", 10.0), NOW)
    ledger.commit(Settlement(key="paid/0", actual_usd=12.0), NOW)

    receipt = ledger.reserve(reservation("simulator/0", 0.0), NOW)

    assert receipt.entry.state == "reserved"
    assert receipt.available_usd == 0.0
    assert ledger.view(NOW).available_usd == 0.0


def test_a_handler_rechecks_what_its_validator_saw() -> None:
    """Validators of concurrent updates may all run before the first handler: both see $1."""
    ledger = book(1.0)
    first, second = reservation("a/0", 1.0, "a"), reservation("b/0", 1.0, "b")
    ledger.check_reservation(first, NOW)
    ledger.check_reservation(second, NOW)

    ledger.reserve(first, NOW)
    refusal = refusal_of(ledger.reserve, second, NOW)

    assert refusal.type == BUDGET_EXCEEDED
    assert ledger.view(NOW).reserved_usd == 1.0


def test_lowering_the_limit_below_the_spend_shows_nothing_available() -> None:
    ledger = book(100.0, "month")
    ledger.reserve(reservation("a/0", 60.0), NOW)
    ledger.set_limit(SetLimit(limit_usd=40.0, period="month", by="alice"), NOW)

    view = ledger.view(NOW)
    assert (view.limit_usd, view.reserved_usd, view.available_usd) == (40.0, 60.0, 0.0)
    assert (view.limit_set_by, view.limit_set_at) == ("alice", NOW)
    assert refusal_of(ledger.reserve, reservation("b/0", 0.01), NOW).type == BUDGET_EXCEEDED


# --- idempotency --------------------------------------------------------------------------------


def test_an_open_key_never_reserves_twice() -> None:
    ledger = book(10.0)
    first = ledger.reserve(reservation("exp/0", 6.0), NOW).entry
    later = NOW + timedelta(minutes=5)
    ledger.check_reservation(reservation("exp/0", 6.0), later)
    again = ledger.reserve(reservation("exp/0", 6.0), later)

    assert (again.created, again.entry.key, again.entry.created_at) == (False, first.key, NOW)
    view = ledger.view(later)
    assert (view.reserved_usd, len(view.entries)) == (6.0, 1)


@pytest.mark.parametrize("closing", ["committed", "released"])
def test_a_closed_key_is_never_accepted_as_a_new_reservation(closing: str) -> None:
    ledger = book(10.0)
    ledger.reserve(reservation("exp/0", 6.0), NOW)
    if closing == "committed":
        ledger.commit(Settlement(key="exp/0", actual_usd=5.0), NOW)
    else:
        ledger.release(Release(key="exp/0", reason="rerouted"), NOW)
    before = ledger.view(NOW)

    later = NOW + timedelta(minutes=5)
    refusal = refusal_of(ledger.reserve, reservation("exp/0", 6.0), later)

    assert refusal.type == RESERVATION_CLOSED and refusal.details == (closing,)
    assert f"was already {closing} and is never reserved again" in refusal.message
    after = ledger.view(later)
    assert (after.reserved_usd, after.committed_usd, len(after.entries)) == (
        before.reserved_usd,
        before.committed_usd,
        1,
    )


def test_a_closed_key_stays_refused_after_its_entry_is_dropped() -> None:
    ledger = book(1000.0)
    ledger.reserve(reservation("old/0", 1.0), NOW)
    ledger.release(Release(key="old/0", reason="cancelled"), NOW)
    later = NOW + timedelta(hours=1)
    for index in range(MAX_CLOSED_ENTRIES + 5):
        ledger.reserve(reservation(f"filler/{index}", 0.01), later)
        ledger.commit(Settlement(key=f"filler/{index}", actual_usd=0.01), later)
    next_week = NOW + timedelta(days=8)
    carried = LedgerBook("lab", ledger.carried_state(next_week))

    assert "old/0" not in {entry.key for entry in carried.view(next_week).entries}
    refusal = refusal_of(carried.reserve, reservation("old/0", 1.0), next_week)
    assert refusal.type == RESERVATION_CLOSED and refusal.details == ("released",)


def test_commit_records_the_actual_cost_once() -> None:
    ledger = book(10.0)
    ledger.reserve(reservation("exp/0", 6.0), NOW)
    later = NOW + timedelta(hours=1)

    committed = ledger.commit(Settlement(key="exp/0", actual_usd=4.5), later)
    again = ledger.commit(Settlement(key="exp/0", actual_usd=4.5), later + timedelta(minutes=1))

    assert (committed.state, committed.actual_usd, committed.updated_at) == (
        "committed",
        4.5,
        later,
    )
    assert again == committed
    view = ledger.view(later)
    assert (view.reserved_usd, view.committed_usd, view.available_usd) == (0.0, 4.5, 5.5)
    conflict = refusal_of(ledger.commit, Settlement(key="exp/0", actual_usd=5.0), later)
    assert conflict.type == RESERVATION_CLOSED
    assert "already committed at $4.50" in conflict.message and "not $5.00" in conflict.message


def test_a_commit_above_the_reservation_is_recorded_and_nothing_is_left() -> None:
    ledger = book(10.0)
    ledger.reserve(reservation("exp/0", 9.0), NOW)
    ledger.commit(Settlement(key="exp/0", actual_usd=11.0), NOW)
    view = ledger.view(NOW)
    assert (view.committed_usd, view.available_usd) == (11.0, 0.0)


def test_release_frees_the_money_once_and_never_a_committed_cost() -> None:
    ledger = book(10.0)
    ledger.reserve(reservation("a/0", 6.0), NOW)
    ledger.reserve(reservation("b/0", 4.0), NOW)

    released = ledger.release(Release(key="a/0", reason="cancelled"), NOW)
    again = ledger.release(Release(key="a/0", reason="cleanup"), NOW)
    ledger.commit(Settlement(key="b/0", actual_usd=4.0), NOW)

    assert (released.state, released.reason) == ("released", "cancelled")
    assert again == released
    assert ledger.view(NOW).available_usd == 6.0
    refused = refusal_of(ledger.release, Release(key="b/0", reason="cleanup"), NOW)
    assert refused.type == RESERVATION_CLOSED
    assert "committed at $4.00" in refused.message
    closed = refusal_of(ledger.commit, Settlement(key="a/0", actual_usd=1.0), NOW)
    assert closed.type == RESERVATION_CLOSED and "was released (cancelled)" in closed.message


@pytest.mark.parametrize("action", ["commit", "release"])
def test_unknown_keys_are_refused_with_the_key_named(action: str) -> None:
    ledger = book(10.0)
    if action == "commit":
        refusal = refusal_of(ledger.check_commit, Settlement(key="ghost/0", actual_usd=1.0))
    else:
        refusal = refusal_of(ledger.check_release, Release(key="ghost/0", reason="cleanup"))
    assert refusal.type == UNKNOWN_RESERVATION
    assert f"cannot {action} 'ghost/0'" in refusal.message


# --- periods in the ledger ---------------------------------------------------------------------


def test_spend_of_a_closed_period_stops_counting() -> None:
    ledger = book(10.0, "day")
    ledger.reserve(reservation("open/0", 3.0), NOW)
    ledger.reserve(reservation("spent/0", 5.0), NOW)
    ledger.commit(Settlement(key="spent/0", actual_usd=5.0), NOW)
    assert ledger.view(NOW).available_usd == 2.0

    tomorrow = NOW + timedelta(days=1)
    view = ledger.view(tomorrow)
    assert view.period_start == datetime(2026, 11, 19, tzinfo=UTC)
    assert (view.reserved_usd, view.committed_usd, view.available_usd) == (0.0, 0.0, 10.0)

    # Yesterday's open reservation can still be settled; it counts in yesterday's period.
    ledger.commit(Settlement(key="open/0", actual_usd=3.0), tomorrow)
    assert ledger.view(tomorrow).available_usd == 10.0
    assert ledger.view(NOW).committed_usd == 8.0


# --- bounding for continue-as-new --------------------------------------------------------------


def carried(ledger: LedgerBook, now: datetime) -> LedgerBook:
    return LedgerBook(ledger.account, ledger.carried_state(now))


def test_continue_as_new_keeps_open_reservations_and_the_current_period() -> None:
    ledger = book(100.0, "day")
    last_week = NOW - timedelta(days=7)
    ledger.reserve(reservation("old-open/0", 1.0), last_week)
    ledger.reserve(reservation("old-closed/0", 2.0), last_week)
    ledger.commit(Settlement(key="old-closed/0", actual_usd=2.0), last_week)
    ledger.reserve(reservation("today-closed/0", 3.0), NOW)
    ledger.commit(Settlement(key="today-closed/0", actual_usd=3.0), NOW)
    ledger.reserve(reservation("today-open/0", 4.0), NOW)
    ledger.set_limit(SetLimit(limit_usd=50.0, period="day", by="bob"), NOW)

    next_run = carried(ledger, NOW)

    assert [e.key for e in next_run.view(NOW).entries] == [
        "today-open/0",
        "today-closed/0",
        "old-open/0",
    ]
    assert next_run.view(NOW) == ledger.view(NOW).model_copy(
        update={"entries": next_run.view(NOW).entries}
    )
    assert next_run.commit(Settlement(key="old-open/0", actual_usd=1.0), NOW).state == "committed"


def test_entries_closed_within_the_grace_period_are_kept_for_retries() -> None:
    ledger = book(100.0, "day")
    just_before_midnight = datetime(2026, 11, 18, 23, 59, tzinfo=UTC)
    ledger.reserve(reservation("late/0", 5.0), just_before_midnight)
    ledger.commit(Settlement(key="late/0", actual_usd=5.0), just_before_midnight)

    after_midnight = just_before_midnight + timedelta(minutes=2)
    next_run = carried(ledger, after_midnight)
    assert next_run.commit(Settlement(key="late/0", actual_usd=5.0), after_midnight).key == "late/0"
    assert next_run.view(after_midnight).committed_usd == 0.0

    much_later = just_before_midnight + CLOSED_ENTRY_GRACE + timedelta(minutes=1)
    assert carried(ledger, much_later).view(much_later).entries == []


def test_closed_entries_beyond_the_bound_are_folded_into_an_exact_total() -> None:
    ledger = book(10_000.0, "month")
    count = MAX_CLOSED_ENTRIES + 40
    for index in range(count):
        at = NOW - timedelta(hours=2) + timedelta(seconds=index)
        ledger.reserve(reservation(f"exp-{index}/0", 1.5), at)
        ledger.commit(Settlement(key=f"exp-{index}/0", actual_usd=1.25), at)
    ledger.reserve(reservation("open/0", 7.0), NOW - timedelta(days=40))
    before = ledger.view(NOW)

    next_run = carried(ledger, NOW)
    after = next_run.view(NOW)

    assert len(after.entries) == MAX_CLOSED_ENTRIES + 1
    assert {e.key for e in after.entries} >= {"open/0", f"exp-{count - 1}/0"}
    assert "exp-0/0" not in {e.key for e in after.entries}
    assert (after.committed_usd, after.reserved_usd, after.available_usd) == (
        before.committed_usd,
        before.reserved_usd,
        before.available_usd,
    )
    assert after.folded_committed_usd == 40 * 1.25
    # Carried again, the folded total stays exact and is not counted twice.
    assert carried(next_run, NOW).view(NOW).committed_usd == count * 1.25
    # Next month it no longer counts.
    next_month = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    assert carried(next_run, next_month).view(next_month).committed_usd == 0.0


# --- what the activities treat as final -------------------------------------------------------


def test_only_the_ledgers_own_refusals_are_final() -> None:
    refused = WorkflowUpdateFailedError(
        ApplicationError("account 'lab': ... does not fit", 2.5, type=BUDGET_EXCEEDED)
    )
    final = ledger_refusal(refused)
    assert final is not None
    assert (final.type, final.details, final.non_retryable) == (BUDGET_EXCEEDED, (2.5,), True)

    # The server rejects an update no worker processed; a retry of the activity delivers it.
    unprocessed = ApplicationError("wasn't processed by worker", type="UnprocessedUpdate")
    assert ledger_refusal(WorkflowUpdateFailedError(unprocessed)) is None
    assert ledger_refusal(WorkflowUpdateFailedError(RuntimeError("worker bug"))) is None


def test_refused_limit_changes_are_kept_up_to_a_bound_and_carried() -> None:
    ledger = book(10.0)
    for index in range(MAX_REFUSED_LIMIT_CHANGES + 5):
        ledger.refuse_limit_change(SetLimit(limit_usd=float(index), by="mallory"), "forged", NOW)
    kept = ledger.view(NOW).refused_limit_changes
    assert len(kept) == MAX_REFUSED_LIMIT_CHANGES
    assert kept[-1].limit_usd == MAX_REFUSED_LIMIT_CHANGES + 4
    assert ledger.limit_usd == 10.0
    carried = LedgerBook("lab", ledger.carried_state(NOW))
    assert carried.view(NOW).refused_limit_changes == kept
