"""ExperimentWorkflow on the time-skipping test server: a QPU queue of hours passes in seconds.

Every activity is the real one (real Qiskit, Aer and mitiq) except the provider's status calls,
which are replaced by a queue (tests/queue_doubles.py) that reports `queued` with a falling
position until three hours of (skipped) time have passed, as a busy QPU would.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.queue_doubles import activities_behind_a_queue
from worker import WORKFLOWS, all_activities
from workflows import search_attributes as attrs

QUEUE_TIME = timedelta(hours=3)


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
        activities=activities_behind_a_queue(QUEUE_TIME),
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
    # Backoff: polls after 1, 2, 4 ... 512 s on timers, then one activity retried every 600 s
    # (under one timer for the queue deadline): history does not grow while the job queues.
    history = [event async for event in handle.fetch_history_events()]
    timers = [e for e in history if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert (scheduled.count("check_job"), scheduled.count("wait_for_job")) == (10, 1)
    assert progress.polls == 11 and len(timers) == 11
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
