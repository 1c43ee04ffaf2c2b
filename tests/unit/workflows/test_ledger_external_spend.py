"""The budget ledger's record of money spent outside qloop (adopted provider tasks), without
Temporal: recorded whatever the limit, $0 entries for failed and cancelled tasks, once per key,
and never over a key that closed otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from schemas.adoption import ledger_key
from schemas.budget import RESERVATION_CLOSED, ExternalSpend, LedgerState, Release, Reservation
from workflows.budget_ledger import MAX_CLOSED_ENTRIES, LedgerBook

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
ARN = "arn:aws:braket:us-east-1:123456789012:quantum-task/one"


def spend(key: str, usd: float, reason: str = "") -> ExternalSpend:
    return ExternalSpend(key=key, experiment_id="adopt-1", actual_usd=usd, reason=reason)


def test_spend_is_committed_whatever_the_limit() -> None:
    book = LedgerBook("lab", LedgerState(limit_usd=1.0))
    entry = book.record_spend(spend(ledger_key(ARN), 5.25), NOW)
    assert entry.state == "committed" and entry.actual_usd == 5.25
    view = book.view(NOW)
    assert view.committed_usd == 5.25 and view.available_usd == 0.0


def test_failed_and_cancelled_tasks_are_recorded_at_zero_with_their_reason() -> None:
    book = LedgerBook("lab", LedgerState(limit_usd=10.0))
    entry = book.record_spend(spend("adopt:failed", 0.0, "FAILED: injected"), NOW)
    assert (entry.state, entry.actual_usd, entry.reason) == ("committed", 0.0, "FAILED: injected")
    assert book.view(NOW).committed_usd == 0.0


def test_a_key_recorded_twice_counts_once_and_a_different_amount_is_refused() -> None:
    book = LedgerBook("lab", LedgerState(limit_usd=10.0))
    first = book.record_spend(spend("adopt:a", 1.5), NOW)
    assert book.record_spend(spend("adopt:a", 1.5), NOW + timedelta(minutes=1)) == first
    assert book.view(NOW).committed_usd == 1.5
    with pytest.raises(ApplicationError) as refused:
        book.record_spend(spend("adopt:a", 2.0), NOW)
    assert refused.value.type == RESERVATION_CLOSED


def test_a_reserved_or_released_key_cannot_record_spend() -> None:
    book = LedgerBook("lab", LedgerState(limit_usd=10.0))
    book.reserve(Reservation(key="k", experiment_id="e", amount_usd=1.0), NOW)
    with pytest.raises(ApplicationError):
        book.check_spend(spend("k", 1.0))
    book.release(Release(key="k", reason="r"), NOW)
    with pytest.raises(ApplicationError):
        book.record_spend(spend("k", 1.0), NOW)


def test_a_recorded_key_dropped_at_continue_as_new_is_not_counted_again() -> None:
    book = LedgerBook("lab", LedgerState(limit_usd=1e6, period="day"))
    yesterday = NOW - timedelta(days=2)
    book.record_spend(spend("adopt:old", 3.0), yesterday)
    for i in range(MAX_CLOSED_ENTRIES + 1):
        book.record_spend(spend(f"adopt:{i}", 0.0), yesterday)
    carried = LedgerBook("lab", book.carried_state(NOW))
    assert "adopt:old" not in {entry.key for entry in carried.view(NOW).entries}
    carried.record_spend(spend("adopt:old", 3.0), NOW)
    assert carried.view(NOW).committed_usd == 0.0
