"""Contracts of the backend-health entity: one circuit breaker per backend, shared by every
experiment that submits to that backend.

Experiments ask for a `Permit` before they submit and report an `Outcome` after each attempt;
operators read a `HealthView` and may reset the breaker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.pipeline import PipelineModel

BreakerState = Literal["closed", "open", "half_open"]

HEALTH_WORKFLOW_PREFIX = "backend-health:"


def health_workflow_id(backend_key: str) -> str:
    """The id of the one health entity of a backend (`describe_backend(choice)` gives the key)."""
    return f"{HEALTH_WORKFLOW_PREFIX}{backend_key}"


class BreakerSettings(PipelineModel):
    """`failure_threshold` consecutive failures open the breaker; it stays open `open_seconds`,
    then lets one probe through; a probe that does not report within `probe_lease_seconds` loses
    its lease so that another experiment can probe."""

    failure_threshold: int = Field(default=3, ge=1)
    open_seconds: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    probe_lease_seconds: float = Field(default=1800.0, gt=0, allow_inf_nan=False)


class Transition(PipelineModel):
    at: datetime
    from_state: BreakerState
    to_state: BreakerState
    reason: str


class BreakerSnapshot(PipelineModel):
    """Everything the breaker remembers; carried across continue-as-new."""

    state: BreakerState = "closed"
    consecutive_failures: int = 0
    opened_at: datetime | None = None
    last_failure: str = ""
    probe_holder: str | None = None
    probe_granted_at: datetime | None = None
    transitions: list[Transition] = Field(default_factory=list)


class HealthInput(PipelineModel):
    """`state` None starts a fresh, closed breaker; continue-as-new passes the snapshot on."""

    backend: str
    settings: BreakerSettings = BreakerSettings()
    state: BreakerSnapshot | None = None


class PermitRequest(PipelineModel):
    experiment_id: str


class Permit(PipelineModel):
    """`probe` True: this caller is the one experiment allowed through a half-open breaker, and
    its reported outcome decides whether the breaker closes or opens again."""

    allowed: bool
    state: BreakerState
    probe: bool = False
    reason: str


class Outcome(PipelineModel):
    experiment_id: str
    success: bool
    detail: str = ""


class ResetRequest(PipelineModel):
    """An operator closes the breaker by hand; `by` names who, for the record."""

    by: str
    reason: str = ""


class HealthView(PipelineModel):
    """What operators see. `transitions` holds the most recent state changes, newest last;
    `next_probe_at` is set while open, `probe_holder` while a probe is out."""

    backend: str
    state: BreakerState
    consecutive_failures: int
    opened_at: datetime | None = None
    last_failure: str = ""
    next_probe_at: datetime | None = None
    probe_holder: str | None = None
    transitions: list[Transition] = Field(default_factory=list)


class AcquireBackendInput(PipelineModel):
    backend: str
    experiment_id: str


class ReportOutcomeInput(PipelineModel):
    backend: str
    experiment_id: str
    success: bool
    detail: str = ""
