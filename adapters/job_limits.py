"""How big a job may be: shots within the device's range, at most MAX_CIRCUITS_PER_JOB executed
circuits. The same limits on every provider, so a batch planned for one fits its fallbacks."""

from __future__ import annotations

from adapters.errors import InvalidRequestError
from schemas.execution import CircuitBatch

MAX_SHOTS = 1_000_000
MAX_CIRCUITS_PER_JOB = 500


def check_job_size(
    batch: CircuitBatch, shots: int, shots_range: tuple[int, int] = (1, MAX_SHOTS)
) -> None:
    low, high = max(1, shots_range[0]), shots_range[1]
    if not low <= shots <= high:
        raise InvalidRequestError(f"shots must be between {low} and {high}, got {shots}")
    if batch.num_executions > MAX_CIRCUITS_PER_JOB:
        raise InvalidRequestError(
            f"a job holds at most {MAX_CIRCUITS_PER_JOB} circuits (every binding of a template "
            f"counts), got {batch.num_executions}"
        )
