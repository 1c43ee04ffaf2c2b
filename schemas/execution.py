"""Contracts of the execution plane: what crosses the boundary between qloop and a provider.

Circuits cross as OpenQASM text (2 for a plain circuit, 3 for a parameterized template with
its bindings); counts come back keyed by bitstrings in qloop's canonical order (Qiskit's: the
rightmost character is classical bit 0), whatever the provider uses.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class ProgramSetLimits(ContractModel):
    """How many circuits one provider task may hold as a program set (Braket's
    braket.ir.openqasm.program_set action): at most `max_executables`, their shots together
    within [`min_total_shots`, `max_total_shots`]."""

    max_executables: int = Field(ge=1)
    max_total_shots: int = Field(ge=1)
    min_total_shots: int | None = Field(default=None, ge=1)


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
    # A local simulator that runs a batch inside one compute activity (adapters.base
    # LocalSimulator) instead of queueing it as a provider job.
    simulated_in_activity: bool = False
    # None: one circuit per provider task.
    program_sets: ProgramSetLimits | None = None


class CircuitSpec(ContractModel):
    """One circuit of a batch, measuring into a single classical register.

    Without `parameters`: OpenQASM 2 text, one circuit. With `parameters`: an OpenQASM 3
    template declaring its free parameters as `input float[64] NAME;`, and every row of
    `bindings` (one value per name of `parameters`, in that order) is one circuit to run, so
    the template is parsed and compiled once for the whole batch. A name the template no
    longer uses (the compiler may drop a gate whose angle is always 0) is ignored.
    """

    name: str
    qasm: str
    num_qubits: int
    num_clbits: int
    parameters: list[str] = []
    bindings: list[list[float]] = []

    @model_validator(mode="after")
    def _bindings_fit(self) -> CircuitSpec:
        if not self.parameters:
            if self.bindings:
                raise ValueError(f"circuit {self.name!r} has bindings but no parameters")
            return self
        if len(set(self.parameters)) != len(self.parameters):
            raise ValueError(f"circuit {self.name!r} names a parameter twice: {self.parameters}")
        if not self.bindings:
            raise ValueError(f"circuit {self.name!r} has parameters but no bindings")
        width = len(self.parameters)
        for row, values in enumerate(self.bindings):
            if len(values) != width:
                raise ValueError(
                    f"binding {row} of circuit {self.name!r} has {len(values)} values; the "
                    f"template takes {width} ({', '.join(self.parameters)})"
                )
            if not all(math.isfinite(value) for value in values):
                raise ValueError(f"binding {row} of circuit {self.name!r} is not finite: {values}")
        return self

    @property
    def num_executions(self) -> int:
        """How many circuits this spec runs: one per binding, or one."""
        return len(self.bindings) if self.parameters else 1


class CircuitBatch(ContractModel):
    """Results come back one per executed circuit, in batch order: template by template, and
    within a template binding by binding."""

    circuits: Annotated[list[CircuitSpec], Field(min_length=1)]

    @property
    def num_executions(self) -> int:
        """How many circuits the batch runs (what providers limit and bill per task)."""
        return sum(spec.num_executions for spec in self.circuits)

    def identity(self) -> dict[str, Any]:
        """The batch as JSON for fingerprints: fields at their defaults are left out, so a batch
        without parameters has the fingerprint it had before templates existed."""
        return self.model_dump(mode="json", exclude_defaults=True)


class Cost(ContractModel):
    usd: float
    detail: str = ""


class JobRef(ContractModel):
    """A submitted job. A job of several provider tasks (a Braket batch) names them all in
    `job_id`, joined by commas, as an adapter sees it; in workflow history it carries the
    client token as `job_id` and the task ids in the artifact store (`parts_uri`, `part_count`),
    so that a 500-task batch costs history the same few hundred bytes as one task."""

    provider: str
    device: str
    job_id: str
    client_token: str
    submitted_at: datetime
    parts_uri: str | None = None
    part_count: Annotated[int, Field(ge=1)] = 1

    @property
    def part_ids(self) -> list[str]:
        return self.job_id.split(",")


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


class ProviderProgram(ContractModel):
    """One provider task's program compiled for a remote device, as its API takes it (for
    Braket, the CreateQuantumTask `action` and `deviceParameters` JSON): one executed circuit,
    or a program set of `executables` of them, in batch order, each run `shots` times. Compiled
    where compute runs, so the role that submits needs no circuit library."""

    name: str
    action: str
    device_parameters: str
    executables: int = Field(default=1, ge=1)


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
