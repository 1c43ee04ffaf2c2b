"""ReservationReconcilerWorkflow: one round of settling the open reservations of closed workflows.

A Temporal Schedule (`qloop-reservation-reconciler`, every QLOOP_RECONCILE_MINUTES, default 10)
starts one run per round; the round itself is one activity
(activities/governance/open_reservations.py) that settles each orphaned reservation as the paid
execution path would have, and the run's result lists what it did and why, for the Web UI and
`temporal schedule describe`.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts
    from schemas.reconciler import ReconcilerRound
    from workflows.activity_options import ENTITY_RETRY, HEARTBEAT_TIMEOUT

ROUND_TIMEOUT = timedelta(minutes=30)


@workflow.defn(name="ReservationReconcilerWorkflow")
class ReservationReconcilerWorkflow:
    @workflow.run
    async def run(self) -> ReconcilerRound:
        round: ReconcilerRound = await workflow.execute_activity(
            activity_contracts.settle_orphaned_reservations,
            start_to_close_timeout=ROUND_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary="settle the open reservations of closed workflows",
        )
        return round
