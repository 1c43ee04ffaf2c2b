"""An experiment's governance as it grows: which approvals it waited for and got, which ops
commands and refused decisions arrived, where it was routed and why, and what it reserved and
settled. Every change is published in the experiment's progress, so the `progress` query and
the Web UI show it while the experiment runs; the report carries the final record.

Deterministic workflow code.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas.control import (
        ApprovalRecord,
        BudgetRecord,
        Governance,
        OpsEvent,
        RecordedDecision,
        RouteChange,
    )
    from workflows.experiment_progress import ExperimentProgress


class GovernanceRecord:
    def __init__(self, progress: ExperimentProgress, account: str, requested_backend: str) -> None:
        self.current = Governance(account=account, requested_backend=requested_backend)
        self._progress = progress

    def approval(self, record: ApprovalRecord) -> None:
        self._update(approvals=[*self.current.approvals, record])

    def route_change(self, change: RouteChange) -> None:
        self._update(route=[*self.current.route, change])

    def ops_event(self, event: OpsEvent) -> None:
        self._update(ops=[*self.current.ops, event])

    def refused_decision(self, decision: RecordedDecision) -> None:
        self._update(refused_decisions=[*self.current.refused_decisions, decision])

    def reservation(self, record: BudgetRecord) -> None:
        self._update(budget=[*self.current.budget, record])

    def settlement(self, key: str, *, committed_usd: float | None, released: bool) -> None:
        """The reservation `key` was committed at `committed_usd` or released; nothing to record
        while it is neither."""
        if committed_usd is None and not released:
            return
        changes: dict[str, object] = (
            {"released": True} if released else {"committed_usd": committed_usd}
        )
        self._update(
            budget=[
                record.model_copy(update=changes) if record.reservation_key == key else record
                for record in self.current.budget
            ]
        )

    def _update(self, **changes: object) -> None:
        self.current = self.current.model_copy(update=changes)
        self._progress.set(governance=self.current)
