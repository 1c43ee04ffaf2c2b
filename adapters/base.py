"""The provider-neutral execution protocol every adapter implements."""

from __future__ import annotations

from typing import Protocol

from schemas.execution import (
    Capabilities,
    CircuitBatch,
    Cost,
    JobRef,
    JobResult,
    JobStatus,
)


class Adapter(Protocol):
    """Submission is asynchronous and idempotent on `client_token`: submitting the same token
    twice returns the first job. Counts come back in qloop's canonical bit order."""

    def capabilities(self) -> Capabilities: ...

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost: ...

    def submit(
        self, batch: CircuitBatch, shots: int, client_token: str, seed: int | None
    ) -> JobRef: ...

    def status(self, job: JobRef) -> JobStatus: ...

    def result(self, job: JobRef) -> JobResult: ...

    def cancel(self, job: JobRef) -> None: ...

    def calibration(self) -> dict[str, str] | None: ...
