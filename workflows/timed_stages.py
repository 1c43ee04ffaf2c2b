"""CPU stages run one activity each, timed for the report.

`TimedStages` is the whole mechanism (the activity's options, the timing); an experiment's
progress (workflows/experiment_progress.py) also publishes each stage, an adoption's
(workflows/adopt.py) does not. `StageRunner` is what both offer the functions that run the same
stages for both: preparation (workflows/experiment_preparation.py) and the answer's report
(workflows/experiment_reports.py).

Deterministic workflow code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas.pipeline import Stage
    from workflows.activity_options import COMPUTE_RETRY, COMPUTE_TIMEOUT, HEARTBEAT_TIMEOUT

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


class StageRunner(Protocol):
    @property
    def timings(self) -> dict[str, float]: ...

    async def run_stage(
        self,
        stage: Stage,
        activity: Callable[[ArgT], Awaitable[ResultT]],
        arg: ArgT,
        *,
        task_queue: str | None,
        timeout: timedelta = COMPUTE_TIMEOUT,
        retry: RetryPolicy = COMPUTE_RETRY,
    ) -> ResultT: ...


class TimedStages:
    """Runs stages and keeps how long each took, in seconds by stage name."""

    def __init__(self) -> None:
        self._timings: dict[str, float] = {}

    @property
    def timings(self) -> dict[str, float]:
        return self._timings

    async def run_stage(
        self,
        stage: Stage,
        activity: Callable[[ArgT], Awaitable[ResultT]],
        arg: ArgT,
        *,
        task_queue: str | None,
        timeout: timedelta = COMPUTE_TIMEOUT,
        retry: RetryPolicy = COMPUTE_RETRY,
    ) -> ResultT:
        """One stage as one activity, which heartbeats; `task_queue` None runs it on the
        workflow's own queue."""
        started = workflow.now()
        result = await workflow.execute_activity(
            activity,
            arg,
            task_queue=task_queue,
            start_to_close_timeout=timeout,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=retry,
            summary=stage.value,
        )
        self.record(stage, started)
        return result

    def record(self, stage: Stage, started: datetime) -> None:
        elapsed = workflow.now() - started
        self._timings[stage.value] = round(elapsed.total_seconds(), 3)
