"""The Temporal Schedule that runs the reservation reconciler (workflows/reservation_reconciler.py).

Every worker that runs workflows makes sure it exists when it starts; the first one creates it.
It lives apart from the reconciler's activity so that creating it imports no provider SDK.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

RECONCILER_SCHEDULE_ID = "qloop-reservation-reconciler"
RECONCILER_WORKFLOW_ID = "qloop-reservation-reconciler-round"


async def ensure_reconciler_schedule(client: Client, task_queue: str, every: timedelta) -> None:
    """Creates the reconciler's schedule unless it exists; overlapping rounds are skipped."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            "ReservationReconcilerWorkflow",
            id=RECONCILER_WORKFLOW_ID,
            task_queue=task_queue,
            static_summary="settle the open reservations of closed workflows",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(RECONCILER_SCHEDULE_ID, schedule)
