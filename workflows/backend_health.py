"""BackendHealthWorkflow: one long-lived circuit breaker per backend.

Experiments consult it before submitting (`acquire`) and report to it after each attempt
(`report`), so a backend that keeps failing is left alone for a while by every experiment at once
instead of each of them finding out by itself.

- closed: every request is allowed; `failure_threshold` consecutive failures open the breaker.
- open: requests are refused until `open_seconds` have passed; the next `acquire` after that
  moves it to half_open and makes its caller the probe.
- half_open: only the probe is allowed. Its success closes the breaker, its failure opens it
  again for a fresh period. A probe that never reports (worker lost, experiment cancelled)
  loses its lease after `probe_lease_seconds`, and the next caller becomes the probe.

Any success closes the breaker, whoever reports it and in whatever state: a job that just
succeeded on the backend is direct evidence that the backend works now. Failures of experiments
other than the probe, reported while open or half_open, come from jobs let through before the
breaker opened; they are counted and remembered but neither re-open nor extend the open period,
because the breaker already acted on the outage they describe.

`CircuitBreaker` is the pure state machine (time is passed in); the workflow is its durable
shell and feeds it `workflow.now()`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas.health import (
        BreakerSettings,
        BreakerSnapshot,
        BreakerState,
        HealthInput,
        HealthView,
        Outcome,
        Permit,
        PermitRequest,
        ResetRequest,
        Transition,
    )

# Enough to read the recent history of a flapping backend; older transitions are in the
# workflow's event history.
MAX_TRANSITIONS = 25


def _at(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class CircuitBreaker:
    """The breaker of one backend. Every method takes the current time; nothing reads a clock."""

    def __init__(
        self, backend: str, settings: BreakerSettings, snapshot: BreakerSnapshot | None = None
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.snapshot = snapshot or BreakerSnapshot()

    @property
    def _open_period(self) -> timedelta:
        return timedelta(seconds=self.settings.open_seconds)

    @property
    def _probe_lease(self) -> timedelta:
        return timedelta(seconds=self.settings.probe_lease_seconds)

    def acquire(self, experiment_id: str, now: datetime) -> Permit:
        current = self.snapshot
        if current.state == "closed":
            return Permit(
                allowed=True,
                state="closed",
                reason=(
                    f"breaker closed ({current.consecutive_failures} of "
                    f"{self.settings.failure_threshold} consecutive failures)"
                ),
            )
        if current.state == "open":
            assert current.opened_at is not None
            next_probe_at = current.opened_at + self._open_period
            if now < next_probe_at:
                return Permit(
                    allowed=False,
                    state="open",
                    reason=(
                        f"breaker open since {_at(current.opened_at)} after "
                        f"{current.consecutive_failures} consecutive failures "
                        f"(last: {current.last_failure or 'no detail'}); "
                        f"next probe after {_at(next_probe_at)}"
                    ),
                )
            self._move_to(
                "half_open",
                now,
                f"open period of {self.settings.open_seconds:g}s over; "
                f"probe granted to {experiment_id}",
            )
            return self._grant_probe(experiment_id, now, "first request after the open period")
        return self._acquire_half_open(experiment_id, now)

    def _acquire_half_open(self, experiment_id: str, now: datetime) -> Permit:
        current = self.snapshot
        assert current.probe_granted_at is not None
        if current.probe_holder == experiment_id:
            # The holder asking again is a retried request, not a second probe.
            return self._grant_probe(experiment_id, now, "probe already held by this experiment")
        lease_ends = current.probe_granted_at + self._probe_lease
        if now >= lease_ends:
            self._record(
                Transition(
                    at=now,
                    from_state="half_open",
                    to_state="half_open",
                    reason=(
                        f"probe by {current.probe_holder} did not report within "
                        f"{self.settings.probe_lease_seconds:g}s; probe granted to {experiment_id}"
                    ),
                )
            )
            return self._grant_probe(experiment_id, now, "previous probe's lease expired")
        return Permit(
            allowed=False,
            state="half_open",
            reason=(
                f"breaker half-open: probe by {current.probe_holder} in flight since "
                f"{_at(current.probe_granted_at)} (lease until {_at(lease_ends)}); "
                f"last failure: {current.last_failure or 'no detail'}"
            ),
        )

    def _grant_probe(self, experiment_id: str, now: datetime, why: str) -> Permit:
        self.snapshot = self.snapshot.model_copy(
            update={"probe_holder": experiment_id, "probe_granted_at": now}
        )
        return Permit(
            allowed=True,
            state="half_open",
            probe=True,
            reason=f"breaker half-open: {experiment_id} is the probe ({why})",
        )

    def report(self, outcome: Outcome, now: datetime) -> HealthView:
        current = self.snapshot
        if outcome.success:
            if current.state != "closed":
                who = "probe" if outcome.experiment_id == current.probe_holder else "experiment"
                self._close(now, f"{who} {outcome.experiment_id} succeeded")
            else:
                self.snapshot = current.model_copy(update={"consecutive_failures": 0})
            return self.view()

        failures = current.consecutive_failures + 1
        detail = f"{outcome.experiment_id}: {outcome.detail or 'failed without detail'}"
        self.snapshot = current.model_copy(
            update={"consecutive_failures": failures, "last_failure": detail}
        )
        if current.state == "closed" and failures >= self.settings.failure_threshold:
            self._open(now, f"{failures} consecutive failures (last: {detail})")
        elif current.state == "half_open" and outcome.experiment_id == current.probe_holder:
            self._open(now, f"probe failed (last: {detail})")
        return self.view()

    def reset(self, request: ResetRequest, now: datetime) -> HealthView:
        because = f": {request.reason}" if request.reason else ""
        self._close(now, f"reset by {request.by}{because}")
        return self.view()

    def view(self) -> HealthView:
        current = self.snapshot
        next_probe_at = (
            current.opened_at + self._open_period
            if current.state == "open" and current.opened_at is not None
            else None
        )
        return HealthView(
            backend=self.backend,
            state=current.state,
            consecutive_failures=current.consecutive_failures,
            opened_at=current.opened_at,
            last_failure=current.last_failure,
            next_probe_at=next_probe_at,
            probe_holder=current.probe_holder,
            transitions=current.transitions,
        )

    def _open(self, now: datetime, reason: str) -> None:
        self._move_to("open", now, reason)
        self.snapshot = self.snapshot.model_copy(
            update={"opened_at": now, "probe_holder": None, "probe_granted_at": None}
        )

    def _close(self, now: datetime, reason: str) -> None:
        self._move_to("closed", now, reason)
        self.snapshot = self.snapshot.model_copy(
            update={
                "consecutive_failures": 0,
                "opened_at": None,
                "probe_holder": None,
                "probe_granted_at": None,
            }
        )

    def _move_to(self, state: BreakerState, now: datetime, reason: str) -> None:
        self._record(
            Transition(at=now, from_state=self.snapshot.state, to_state=state, reason=reason)
        )
        self.snapshot = self.snapshot.model_copy(update={"state": state})

    def _record(self, transition: Transition) -> None:
        transitions = [*self.snapshot.transitions, transition][-MAX_TRANSITIONS:]
        self.snapshot = self.snapshot.model_copy(update={"transitions": transitions})


@workflow.defn(name="BackendHealthWorkflow")
class BackendHealthWorkflow:
    """Never completes on its own; continues as new when the server suggests it, carrying the
    breaker's snapshot. Settings are those it was started with and travel with it."""

    @workflow.init
    def __init__(self, input: HealthInput) -> None:
        # Built here, not in run(): with update-with-start the first update can be handled
        # before run() starts.
        self._breaker = CircuitBreaker(input.backend, input.settings, input.state)

    @workflow.run
    async def run(self, input: HealthInput) -> None:
        self._publish()
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(
            HealthInput(
                backend=input.backend, settings=input.settings, state=self._breaker.snapshot
            )
        )

    @workflow.update(name="acquire")
    def acquire(self, request: PermitRequest) -> Permit:
        permit = self._breaker.acquire(request.experiment_id, workflow.now())
        self._publish()
        return permit

    @acquire.validator
    def _validate_acquire(self, request: PermitRequest) -> None:
        if not request.experiment_id.strip():
            raise ValueError("acquire needs a non-empty experiment_id (the asking experiment)")

    @workflow.update(name="report")
    def report(self, outcome: Outcome) -> HealthView:
        view = self._breaker.report(outcome, workflow.now())
        self._publish()
        return view

    @workflow.signal(name="report")
    def report_signal(self, outcome: Outcome) -> None:
        """The same report as a signal, for senders that cannot wait for an answer."""
        self._breaker.report(outcome, workflow.now())
        self._publish()

    @workflow.update(name="reset")
    def reset(self, request: ResetRequest) -> HealthView:
        view = self._breaker.reset(request, workflow.now())
        self._publish()
        return view

    @reset.validator
    def _validate_reset(self, request: ResetRequest) -> None:
        if not request.by.strip():
            raise ValueError("reset needs `by`: the name of the operator resetting the breaker")

    @workflow.query(name="view")
    def view(self) -> HealthView:
        return self._breaker.view()

    def _publish(self) -> None:
        view = self._breaker.view()
        lines = [
            f"**Backend:** {view.backend}",
            f"**Breaker:** {view.state}, {view.consecutive_failures} consecutive failures",
        ]
        if view.next_probe_at is not None:
            lines.append(f"**Next probe after:** {_at(view.next_probe_at)}")
        if view.probe_holder is not None:
            lines.append(f"**Probe:** {view.probe_holder}")
        if view.last_failure:
            lines.append(f"**Last failure:** {view.last_failure}")
        workflow.set_current_details("\n\n".join(lines))
