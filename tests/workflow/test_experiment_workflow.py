"""ExperimentWorkflow on the time-skipping test server: a QPU queue of hours passes in seconds.

Every activity is the real one (real Qiskit, Aer and mitiq) except the provider's status call,
which is replaced by a queue that reports `queued` with a falling position until three hours of
(skipped) time have passed, as a busy QPU would.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.provider_calls import check_job
from schemas.execution import JobState, JobStatus
from schemas.pipeline import ExperimentInput, JobInput, PollingPolicy, Progress, Stage
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from worker import WORKFLOWS, all_activities
from workflows import search_attributes as attrs

QUEUE_TIME = timedelta(hours=3)


QUEUE_ENTERED: dict[str, datetime] = {}


@activity.defn(name="check_job")
async def check_job_behind_a_queue(input: JobInput) -> JobStatus:
    # The queue is measured on the server's (skipped) clock from the first poll of the job.
    now = activity.info().current_attempt_scheduled_time
    waited = now - QUEUE_ENTERED.setdefault(input.job.job_id, now)
    if waited < QUEUE_TIME:
        remaining = (QUEUE_TIME - waited) / QUEUE_TIME
        return JobStatus(state=JobState.QUEUED, queue_position=1 + int(remaining * 40))
    return check_job(input)


def activities_behind_a_queue() -> list:
    return [a for a in all_activities() if a.__temporal_activity_definition.name != "check_job"] + [
        check_job_behind_a_queue
    ]


def ghz_request(**execution: object) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "ghz-queued",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {"shots": 2000, "seed": 11, **execution},
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": False},
        }
    )


async def test_hours_in_a_qpu_queue_pass_in_seconds(time_skipping_env: WorkflowEnvironment) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    polling = PollingPolicy(initial_seconds=1, ceiling_seconds=600)
    async with Worker(
        time_skipping_env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities_behind_a_queue(),
    ):
        started = time.monotonic()
        handle = await time_skipping_env.client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=ghz_request(), polling=polling),
            id=f"queued-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=ExperimentReport,
        )
        report = await handle.result()
        wall = time.monotonic() - started
        progress = await handle.query("progress", result_type=Progress)

    assert wall < 120
    assert report.timings_seconds["waiting"] >= QUEUE_TIME.total_seconds()
    assert report.ideal_value == pytest.approx(1.0)
    assert 0.5 < report.raw.value <= 1.0
    assert progress.stage == Stage.COMPLETED
    # Backoff: 1, 2, 4 ... 512 s, then every 600 s: about 26 polls for 3 hours, not thousands.
    assert 15 <= progress.polls <= 40
    timers = [
        event
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert len(timers) == progress.polls - 1
    found = (await handle.describe()).typed_search_attributes
    assert found.get(attrs.JOB_STATUS) == "done"
    assert found.get(attrs.STAGE) == "completed"


BAD_QASM = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nfrobnicate q[0];\n'


async def test_a_request_that_bypassed_the_cli_is_refused_once_without_retries(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    request = ExperimentRequest.model_validate(
        {
            "name": "bad-qasm",
            "problem": {
                "kind": "qasm",
                "qasm": BAD_QASM,
                "observable": {"kind": "bitstring_probability", "bitstrings": ["00"]},
            },
        }
    )
    async with Worker(
        time_skipping_env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=all_activities(),
    ):
        handle = await time_skipping_env.client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=request),
            id=f"refused-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        progress = await handle.query("progress", result_type=Progress)
    message = str(failure.value.cause)
    assert "preprocessing failed" in message
    assert "line 4" in message and "frobnicate" in message
    assert progress.stage == Stage.FAILED
    attempts = [
        event
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert len(attempts) == 1
