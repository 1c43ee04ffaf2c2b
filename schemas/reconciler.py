"""What the reservation reconciler reports (workflows/reservation_reconciler.py)."""

from __future__ import annotations

from typing import Literal

from schemas.budget import LedgerEntry
from schemas.pipeline import PipelineModel


class OpenReservation(PipelineModel):
    """`workflow_status`: RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, TIMED_OUT,
    CONTINUED_AS_NEW, or NOT_FOUND (the workflow's history is gone)."""

    account: str
    entry: LedgerEntry
    workflow_status: str


class SettledReservation(PipelineModel):
    """`outcome` pending: a cancelled provider task has not ended yet; the next round settles it."""

    account: str
    key: str
    workflow_id: str
    outcome: Literal["committed", "released", "pending"]
    detail: str


class ReconcilerRound(PipelineModel):
    settled: list[SettledReservation]
