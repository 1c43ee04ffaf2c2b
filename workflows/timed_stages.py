"""CPU stages run one activity each, timed for the report.

`TimedStages` is the whole mechanism (the activity's options, the timing). An experiment's
progress (workflows/experiment_progress.py) publishes each stage as it begins (`on_stage`); an
adoption (workflows/adopt.py) publishes none. Both run the same stages through the same
functions: preparation (workflows/experiment_preparation.py) and the answer's report
(workflows/experiment_reports.py).

Deterministic workflow code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas.pipeline import Stage
    from workflows.activity_options import COMPUTE_RETRY, COMPUTE_TIMEOUT, HEARTBEAT_TIMEOUT

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


StageListener = Callable[[Stage], None]


class TimedStages:
    """Runs stages and keeps how long each took, in seconds by stage name; `on_stage` hears of
    each stage before its activity starts."""

    def __init__(self, on_stage: StageListener | None = None) -> None:
        self._timings: dict[str, float] = {}
        self._on_stage = on_stage

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
        if self._on_stage is not None:
            self._on_stage(stage)
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
