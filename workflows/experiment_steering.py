"""What people and ops tooling tell a running experiment, and when it acts on it.

Approve and reject (signal or update) are checked against the approval the experiment waits for
(a listed approver, signed when the account requires it, counted once); pause, resume, reroute
and cancel are remembered until the experiment reaches a point where it can act on them cleanly
(`check_interrupts`). ExperimentWorkflow's message handlers are thin wrappers over this class;
what it decides is recorded in the experiment's governance by the workflow.

Deterministic workflow code: it reads the clock and the workflow's identity from `workflow`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import error_types
    from schemas.control import (
        ApprovalDecision,
        OpsCommand,
        OpsEvent,
        RecordedDecision,
        RerouteCommand,
    )
    from schemas.pipeline import ApprovalRequirement, Stage
    from schemas.request import BackendChoice
    from schemas.signatures import check_decision

Verdict = Literal["approved", "rejected"]
OpsAction = Literal["pause", "resume", "reroute", "cancel"]


class LeaveBackend(Exception):
    """Give up the current backend: for `to`, or the next one of the fallback chain."""

    def __init__(
        self,
        kind: Literal["reroute", "fallback"],
        why: str,
        to: BackendChoice | None = None,
    ) -> None:
        super().__init__(why)
        self.kind = kind
        self.why = why
        self.to = to
        self.cancelled_job: str | None = None


class CancelRequested(Exception):
    """The `cancel` signal, raised at the next point where the experiment can stop cleanly."""

    def __init__(self, command: OpsCommand) -> None:
        super().__init__(command.reason)
        self.command = command


class ExperimentSteering:
    """The approval an experiment waits for, the decision it got, and the ops commands it has
    yet to act on."""

    def __init__(self) -> None:
        self.pending_approval: ApprovalRequirement | None = None
        self.approval_requested_at: datetime | None = None
        self.decision: RecordedDecision | None = None
        # Fingerprints of the signed decisions counted in this run: none counts twice.
        self._counted_signatures: set[str] = set()
        self.paused = False
        self._reroute: RerouteCommand | None = None
        self._cancel: OpsCommand | None = None

    # --- approvals ---------------------------------------------------------------------------

    def await_decision(self, requirement: ApprovalRequirement) -> None:
        self.pending_approval = requirement
        self.approval_requested_at = workflow.now()
        self.decision = None

    def decide(
        self, verdict: Verdict, decision: ApprovalDecision, stage: Stage
    ) -> RecordedDecision:
        """The decision as counted, or one with verdict "refused" and a note saying why."""
        pending = self.pending_approval
        if pending is None:
            note = f"nothing awaits approval (stage {stage.value})"
        elif decision.approver not in pending.approvers:
            note = (
                f"{decision.approver!r} is not an approver for this experiment; "
                f"approvers: {', '.join(pending.approvers)}"
            )
        elif self.decision is not None:
            note = f"already {self.decision.verdict} by {self.decision.approver}"
        elif (refusal := self._signature_refusal(verdict, decision, pending)) is not None:
            note = refusal
        else:
            signature = decision.signature if pending.signed else None
            self.decision = RecordedDecision(
                verdict=verdict,
                approver=decision.approver,
                reason=decision.reason,
                at=workflow.now(),
                key_id=signature.key_id if signature else "",
                signed_at=signature.issued_at if signature else None,
            )
            return self.decision
        refused = RecordedDecision(
            verdict="refused",
            approver=decision.approver,
            reason=decision.reason,
            at=workflow.now(),
            note=f"{'approve' if verdict == 'approved' else 'reject'} refused: {note}",
        )
        workflow.logger.warning("approval decision refused: %s", refused.note)
        return refused

    def _signature_refusal(
        self, verdict: Verdict, decision: ApprovalDecision, pending: ApprovalRequirement
    ) -> str | None:
        """Why a decision does not count for an account that requires signed decisions (None:
        it counts, and is remembered so that it never counts again)."""
        if not pending.signed:
            return None
        info = workflow.info()
        check = check_decision(
            experiment_id=info.workflow_id,
            run_id=info.run_id,
            verdict=verdict,
            approver=decision.approver,
            reason=decision.reason,
            signature=decision.signature,
            public_keys=pending.public_keys,
            requested_at=self.approval_requested_at or workflow.now(),
            now=workflow.now(),
            counted=self._counted_signatures,
        )
        if check.refusal is None:
            self._counted_signatures.add(check.fingerprint)
        return check.refusal

    # --- ops commands --------------------------------------------------------------------------

    def pause(self, command: OpsCommand) -> OpsEvent:
        self.paused = True
        return self._event("pause", command)

    def resume(self, command: OpsCommand) -> OpsEvent:
        self.paused = False
        return self._event("resume", command)

    def reroute(self, command: RerouteCommand) -> OpsEvent:
        self._reroute = command
        return self._event("reroute", command)

    def cancel(self, command: OpsCommand) -> OpsEvent:
        self._cancel = command
        return self._event("cancel", command)

    @staticmethod
    def _event(action: OpsAction, command: OpsCommand) -> OpsEvent:
        return OpsEvent(at=workflow.now(), action=action, by=command.by, reason=command.reason)

    def interrupt_pending(self) -> bool:
        """A reroute or cancel waits to be acted on."""
        return self._reroute is not None or self._cancel is not None

    async def sleep(self, interval: timedelta, summary: str) -> None:
        """A durable sleep that a reroute or cancel ends at once, and is then acted on."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                self.interrupt_pending, timeout=interval, timeout_summary=summary
            )
        self.check_interrupts()

    def check_interrupts(self) -> None:
        """Acts on a pending cancel (CancelRequested) or reroute (LeaveBackend, once)."""
        if self._cancel is not None:
            raise CancelRequested(self._cancel)
        if self._reroute is not None:
            command, self._reroute = self._reroute, None
            by = f" by {command.by}" if command.by else ""
            reason = f": {command.reason}" if command.reason else ""
            raise LeaveBackend("reroute", f"rerouted{by}{reason}", to=command.backend)


def counted_or_raise(decision: RecordedDecision) -> RecordedDecision:
    """An update's answer: the counted decision, or an error saying why it was refused."""
    if decision.verdict == "refused":
        raise ApplicationError(decision.note, type=error_types.DECISION_REFUSED, non_retryable=True)
    return decision
