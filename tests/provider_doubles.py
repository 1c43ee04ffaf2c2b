"""A provider double for time-skipping tests of long waits: Aer underneath, seen by qloop as a
Braket-like job of `tasks` provider tasks (their ids joined by commas, as BraketAwsAdapter
returns them) that queues for `queue_time` of the server's (skipped) clock from its first poll.

It stands in for the QPU stand-in where the stand-in cannot go: the stand-in's queue runs on the
wall clock, so a month in its queue would take a month. Everything else is real: the submission
goes through the `submit` activity (which moves the task ids to the artifact store), polls and
waits through the real activities, the counts come from a real Aer simulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from temporalio import activity

from adapters.aer import AerAdapter
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    Cost,
    JobRef,
    JobResult,
    JobState,
    JobStatus,
)


class QueuedManyTaskProvider:
    def __init__(self, tasks: int, queue_time: timedelta) -> None:
        self._aer = AerAdapter("ideal")
        self._tasks = tasks
        self._queue_time = queue_time
        self._entered: dict[str, datetime] = {}
        self.polls_seen = 0

    def capabilities(self) -> Capabilities:
        return self._aer.capabilities()

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return self._aer.estimate_cost(batch, shots)

    def calibration(self) -> dict[str, str] | None:
        return self._aer.calibration()

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        job = self._aer.submit(batch, shots, client_token, seed, tags)
        ids = [job.job_id, *(f"{job.job_id}-task-{index}" for index in range(1, self._tasks))]
        return job.model_copy(update={"job_id": ",".join(ids)})

    def status(self, job: JobRef) -> JobStatus:
        simulated = self._simulated(job)
        self.polls_seen += 1
        now = activity.info().current_attempt_scheduled_time
        waited = now - self._entered.setdefault(simulated.job_id, now)
        if waited < self._queue_time:
            return JobStatus(
                state=JobState.QUEUED,
                queue_position=1 + int(1000 * (1 - waited / self._queue_time)),
                message=f"0 of {self._tasks} tasks completed",
            )
        return self._aer.status(simulated)

    def result(self, job: JobRef) -> JobResult:
        return self._aer.result(self._simulated(job))

    def cancel(self, job: JobRef) -> None:
        self._aer.cancel(self._simulated(job))

    def billed(self, job: JobRef) -> Cost | None:
        return self._aer.billed(self._simulated(job))

    def _simulated(self, job: JobRef) -> JobRef:
        ids = job.part_ids
        assert len(ids) == self._tasks, f"the job came back with {len(ids)} of {self._tasks} ids"
        return job.model_copy(update={"job_id": ids[0]})
