"""The provider-neutral execution protocol every adapter implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from schemas.execution import (
    Capabilities,
    CircuitBatch,
    Cost,
    JobRef,
    JobResult,
    JobStatus,
    ProviderProgram,
)


class Adapter(Protocol):
    """Submission is asynchronous and idempotent on `client_token`: submitting the same token
    twice returns the first job. `tags` go with every task a provider keeps (qloop's account,
    workflow id and experiment name), so its own task list can be compared with the ledger.
    Counts come back in qloop's canonical bit order."""

    def capabilities(self) -> Capabilities: ...

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost: ...

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef: ...

    def status(self, job: JobRef) -> JobStatus: ...

    def result(self, job: JobRef) -> JobResult: ...

    def cancel(self, job: JobRef) -> None: ...

    def billed(self, job: JobRef) -> Cost | None:
        """What the provider bills for the job once every part of it has ended (on Braket: the
        completed tasks, per task and per shot; failed and cancelled ones cost nothing); None
        while a part still queues, runs or is being cancelled."""
        ...

    def calibration(self) -> dict[str, str] | None: ...


@runtime_checkable
class LocalSimulator(Protocol):
    """A simulator that can also run a batch where it is called, synchronously: in a child
    process of the compute pool, inside an activity that heartbeats. The same batch, shots and
    seed give the same counts on any host, so a run lost with its host is simply run again."""

    def simulate_here(self, batch: CircuitBatch, shots: int, seed: int) -> JobResult: ...


@runtime_checkable
class ProgramCompiler(Protocol):
    """A remote provider whose circuits are compiled for the device where CPU work runs (plan
    and prepare_batch, in the compute role, store the programs with the batch), so the role that
    submits them imports no circuit library. Submission is idempotent on `client_token` as in
    `Adapter.submit`."""

    def compile(self, batch: CircuitBatch, shots: int) -> list[ProviderProgram]: ...

    def submit_programs(
        self,
        programs: list[ProviderProgram],
        shots: int,
        client_token: str,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef: ...


def compiled_programs(
    adapter: Adapter, batch: CircuitBatch, shots: int
) -> list[ProviderProgram] | None:
    """The batch's programs for a ProgramCompiler, None for any other adapter."""
    if isinstance(adapter, ProgramCompiler):
        return adapter.compile(batch, shots)
    return None
