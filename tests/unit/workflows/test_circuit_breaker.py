"""The circuit breaker's state machine, driven with explicit times (no Temporal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.governance.health_calls import breaker_settings
from schemas.health import (
    BreakerSettings,
    Outcome,
    ResetRequest,
    health_workflow_id,
)
from workflows.backend_health import MAX_TRANSITIONS, CircuitBreaker

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = BreakerSettings(failure_threshold=3, open_seconds=60, probe_lease_seconds=600)
BACKEND = "braket/arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16"


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def fail(breaker: CircuitBreaker, experiment_id: str, at: datetime, detail: str = "boom") -> None:
    breaker.report(Outcome(experiment_id=experiment_id, success=False, detail=detail), at)


def succeed(breaker: CircuitBreaker, experiment_id: str, at: datetime) -> None:
    breaker.report(Outcome(experiment_id=experiment_id, success=True), at)


def opened_breaker() -> CircuitBreaker:
    """Open since T0 after three failures; its open period ends at T0 + 60 s."""
    breaker = CircuitBreaker(BACKEND, SETTINGS)
    for index in range(3):
        fail(breaker, f"exp-{index}", T0, detail=f"throttled {index}")
    return breaker


def test_closed_allows_everyone_and_counts_failures() -> None:
    breaker = CircuitBreaker(BACKEND, SETTINGS)
    fail(breaker, "a", T0)
    fail(breaker, "b", T0)
    permit = breaker.acquire("c", seconds(1))
    assert (permit.allowed, permit.state, permit.probe) == (True, "closed", False)
    assert "2 of 3" in permit.reason
    assert breaker.view().consecutive_failures == 2


def test_threshold_failures_open_the_breaker() -> None:
    breaker = opened_breaker()
    view = breaker.view()
    assert view.state == "open"
    assert view.opened_at == T0
    assert view.next_probe_at == seconds(60)
    assert view.last_failure == "exp-2: throttled 2"
    assert [(t.from_state, t.to_state) for t in view.transitions] == [("closed", "open")]
    assert "3 consecutive failures" in view.transitions[0].reason


def test_open_refuses_with_a_reason_naming_since_last_failure_and_next_probe() -> None:
    breaker = opened_breaker()
    permit = breaker.acquire("late", seconds(59))
    assert (permit.allowed, permit.state, permit.probe) == (False, "open", False)
    assert permit.reason == (
        "breaker open since 2026-01-01T12:00:00+00:00 after 3 consecutive failures "
        "(last: exp-2: throttled 2); next probe after 2026-01-01T12:01:00+00:00"
    )


def test_after_the_open_period_exactly_one_caller_gets_the_probe() -> None:
    breaker = opened_breaker()
    first = breaker.acquire("prober", seconds(60))
    second = breaker.acquire("other", seconds(61))
    assert (first.allowed, first.state, first.probe) == (True, "half_open", True)
    assert (second.allowed, second.state, second.probe) == (False, "half_open", False)
    assert "probe by prober in flight" in second.reason
    assert breaker.view().probe_holder == "prober"
    assert breaker.view().transitions[-1].to_state == "half_open"


def test_the_probe_holder_asking_again_keeps_its_probe() -> None:
    breaker = opened_breaker()
    breaker.acquire("prober", seconds(60))
    again = breaker.acquire("prober", seconds(62))
    assert (again.allowed, again.probe) == (True, True)


def test_probe_success_closes_and_resets_failures() -> None:
    breaker = opened_breaker()
    breaker.acquire("prober", seconds(60))
    succeed(breaker, "prober", seconds(70))
    view = breaker.view()
    assert (view.state, view.consecutive_failures, view.opened_at) == ("closed", 0, None)
    assert view.probe_holder is None
    assert view.transitions[-1].reason == "probe prober succeeded"
    assert breaker.acquire("next", seconds(71)).allowed


def test_probe_failure_reopens_for_a_fresh_period() -> None:
    breaker = opened_breaker()
    breaker.acquire("prober", seconds(60))
    fail(breaker, "prober", seconds(70), detail="still down")
    view = breaker.view()
    assert (view.state, view.opened_at, view.next_probe_at) == ("open", seconds(70), seconds(130))
    assert view.consecutive_failures == 4
    assert view.last_failure == "prober: still down"
    assert not breaker.acquire("someone", seconds(129)).allowed
    assert breaker.acquire("someone", seconds(130)).probe


def test_a_probe_that_never_reports_loses_its_lease() -> None:
    breaker = opened_breaker()
    breaker.acquire("lost", seconds(60))
    assert not breaker.acquire("waiting", seconds(60 + 599)).allowed
    taken_over = breaker.acquire("waiting", seconds(60 + 600))
    assert (taken_over.allowed, taken_over.probe) == (True, True)
    assert breaker.view().probe_holder == "waiting"
    assert "lost did not report" in breaker.view().transitions[-1].reason
    # The expired holder is no longer the probe: its late failure does not re-open the breaker.
    fail(breaker, "lost", seconds(700))
    assert breaker.view().state == "half_open"
    fail(breaker, "waiting", seconds(701))
    assert breaker.view().state == "open"


def test_a_success_in_closed_resets_the_count() -> None:
    breaker = CircuitBreaker(BACKEND, SETTINGS)
    fail(breaker, "a", T0)
    fail(breaker, "b", T0)
    succeed(breaker, "c", T0)
    fail(breaker, "d", T0)
    fail(breaker, "e", T0)
    view = breaker.view()
    assert (view.state, view.consecutive_failures) == ("closed", 2)


def test_late_failures_while_open_neither_extend_nor_reopen() -> None:
    breaker = opened_breaker()
    fail(breaker, "in-flight", seconds(30), detail="queue lost")
    view = breaker.view()
    assert (view.opened_at, view.consecutive_failures) == (T0, 4)
    assert view.last_failure == "in-flight: queue lost"
    assert len(view.transitions) == 1


def test_a_non_probe_failure_in_half_open_leaves_the_decision_to_the_probe() -> None:
    breaker = opened_breaker()
    breaker.acquire("prober", seconds(60))
    fail(breaker, "in-flight", seconds(61))
    assert breaker.view().state == "half_open"
    assert breaker.view().probe_holder == "prober"


def test_a_non_probe_success_in_half_open_closes_the_breaker() -> None:
    breaker = opened_breaker()
    breaker.acquire("prober", seconds(60))
    succeed(breaker, "in-flight", seconds(61))
    view = breaker.view()
    assert view.state == "closed"
    assert view.transitions[-1].reason == "experiment in-flight succeeded"


def test_reset_closes_and_records_who() -> None:
    breaker = opened_breaker()
    view = breaker.reset(ResetRequest(by="alice", reason="provider fixed it"), seconds(5))
    assert (view.state, view.consecutive_failures) == ("closed", 0)
    assert view.transitions[-1].reason == "reset by alice: provider fixed it"
    assert breaker.acquire("x", seconds(6)).allowed


def test_transitions_are_bounded_newest_last() -> None:
    breaker = CircuitBreaker(BACKEND, BreakerSettings(failure_threshold=1, open_seconds=1))
    for index in range(MAX_TRANSITIONS):
        fail(breaker, f"f{index}", seconds(index))
        breaker.reset(ResetRequest(by="ops", reason=str(index)), seconds(index))
    transitions = breaker.view().transitions
    assert len(transitions) == MAX_TRANSITIONS
    assert transitions[-1].reason == f"reset by ops: {MAX_TRANSITIONS - 1}"


def test_a_snapshot_restores_the_same_breaker() -> None:
    breaker = opened_breaker()
    breaker.acquire("prober", seconds(60))
    restored = CircuitBreaker(BACKEND, SETTINGS, breaker.snapshot)
    assert restored.view() == breaker.view()
    assert not restored.acquire("other", seconds(61)).allowed


def test_health_workflow_id_uses_the_backend_key() -> None:
    assert health_workflow_id("aer/noisy:ibm_guadalupe") == "backend-health:aer/noisy:ibm_guadalupe"


def test_breaker_settings_come_from_the_environment_or_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert breaker_settings() == BreakerSettings()
    monkeypatch.setenv("QLOOP_BREAKER_FAILURES", "5")
    monkeypatch.setenv("QLOOP_BREAKER_OPEN_SECONDS", "2.5")
    monkeypatch.setenv("QLOOP_BREAKER_PROBE_LEASE_SECONDS", "10")
    assert breaker_settings() == BreakerSettings(
        failure_threshold=5, open_seconds=2.5, probe_lease_seconds=10.0
    )
