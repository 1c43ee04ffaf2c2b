"""Contracts of the execution plane: what crosses the boundary between qloop and a provider.

Circuits cross as OpenQASM 2 text; counts come back keyed by bitstrings in qloop's canonical
order (Qiskit's: the rightmost character is classical bit 0), whatever the provider uses.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ContractModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(StrEnum):
    SIMULATOR = "simulator"
    NOISY_SIMULATOR = "noisy_simulator"
    QPU = "qpu"


class Pricing(ContractModel):
    """Published prices: per task plus per shot (QPUs), or per minute with a minimum."""

    per_task_usd: float = 0.0
    per_shot_usd: float = 0.0
    per_minute_usd: float = 0.0
    minimum_billed_seconds: float = 0.0
    source: str = ""
    as_of: str = ""


class Capabilities(ContractModel):
    provider: str
    device: str
    tier: Tier
    num_qubits: int
    basis_gates: list[str]
    coupling_map: list[tuple[int, int]] | None = None
    max_shots: int
    max_circuits_per_job: int
    cancellable: bool
    pricing: Pricing = Pricing()
    status: str = "ONLINE"


class CircuitSpec(ContractModel):
    """One circuit of a batch: OpenQASM 2 text measuring into a single classical register."""

    name: str
    qasm: str
    num_qubits: int
    num_clbits: int


class CircuitBatch(ContractModel):
    circuits: Annotated[list[CircuitSpec], Field(min_length=1)]


class Cost(ContractModel):
    usd: float
    detail: str = ""


class JobRef(ContractModel):
    provider: str
    device: str
    job_id: str
    client_token: str
    submitted_at: datetime


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobStatus(ContractModel):
    state: JobState
    queue_position: int | None = None
    message: str | None = None


class JobResult(ContractModel):
    """Counts per circuit, in batch order, keyed by canonical bitstrings."""

    counts: list[dict[str, int]]
    shots: int
    duration_seconds: float | None = None
    cost_usd: float = 0.0


class ErrorClass(StrEnum):
    """How a provider error is handled: retried, fallen back from, never retried, reported."""

    TRANSIENT = "transient"
    REJECTED = "rejected"
    INVALID = "invalid"
    JOB_FAILED = "job_failed"
