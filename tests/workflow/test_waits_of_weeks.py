"""Waits of weeks on the time-skipping server: an experiment whose 500-task batch queues for 30
days, and a sweep with two 500-task batches in flight for 30 days. Each history must stay under
2,000 events and 2 MB: the task ids live in the artifact store, and once the poll interval
reached its ceiling one `wait_for_job` activity retries at the ceiling without adding history.

The provider is tests/provider_doubles.py (Aer underneath, 500 task ids per job, a queue on the
server's skipped clock); every activity is the real one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from adapters import registry
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from schemas.variational import SweepInput, SweepReport, SweepRequest
from tests.provider_doubles import QueuedManyTaskProvider
from tests.queue_doubles import as_queued_provider
from worker import WORKFLOWS, all_activities
from workflows import sweep

TASKS = 500
QUEUE_TIME = timedelta(days=30)
POLLING = PollingPolicy(initial_seconds=1, ceiling_seconds=3600)
MAX_EVENTS = 2_000
MAX_BYTES = 2 * 1024 * 1024


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[QueuedManyTaskProvider]:
    double = QueuedManyTaskProvider(TASKS, QUEUE_TIME)
    monkeypatch.setitem(registry._CACHE, BackendChoice(provider="aer", device="ideal"), double)
    yield double


async def history_size(handle: WorkflowHandle) -> tuple[int, int, list[str]]:
    """(events, bytes, scheduled activity types) of the workflow's history."""
    events = [event async for event in handle.fetch_history_events()]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    return len(events), sum(event.ByteSize() for event in events), scheduled


async def test_an_experiment_whose_500_task_batch_queues_for_30_days_keeps_a_small_history(
    time_skipping_env: WorkflowEnvironment, provider: QueuedManyTaskProvider
) -> None:
    client, task_queue = time_skipping_env.client, f"tq-{uuid.uuid4()}"
    request = ExperimentRequest.model_validate(
        {
            "name": "month-in-a-queue",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {"shots": 1000, "seed": 3},
            "mitigation": {"zne": None, "readout": False},
            "policy": {"max_queue_wait": "P40D"},
        }
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=as_queued_provider(all_activities()),
    ):
        handle = await client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=request, polling=POLLING),
            id=f"month-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=ExperimentReport,
        )
        report = await handle.result()

    events, size, scheduled = await history_size(handle)
    assert report.status == "completed"
    assert report.timings_seconds["waiting"] >= QUEUE_TIME.total_seconds()
    assert provider.polls_seen > 30 * 24  # hourly at the ceiling, for a month
    assert scheduled.count("wait_for_job") == 1
    assert events < MAX_EVENTS and size < MAX_BYTES, (events, size)


async def test_a_sweep_with_two_500_task_batches_in_flight_for_30_days_keeps_a_small_history(
    time_skipping_env: WorkflowEnvironment,
    provider: QueuedManyTaskProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The double is free (a paid batch needs the budget ledger's update-with-start, which the
    time-skipping server does not implement) and local, so the sweep would poll it as it polls a
    local simulator, whose batch ends soon (every 0.5 s at most); it queues like a QPU, so the
    sweep is given a QPU's pacing: the request's polling policy."""
    monkeypatch.setattr(sweep, "LOCAL_POLL_CEILING", POLLING.ceiling_seconds)
    client, task_queue = time_skipping_env.client, f"tq-{uuid.uuid4()}"
    request = SweepRequest.model_validate(
        {
            "name": "month-long-sweep",
            "family": {
                "kind": "qaoa_maxcut",
                "graph": {"nodes": 3, "edges": [{"u": 0, "v": 1}, {"u": 1, "v": 2}]},
            },
            "points": {
                "grid": [
                    {"start": 0.0, "stop": 1.0, "num": 25},
                    {"start": 0.0, "stop": 1.0, "num": 40},
                ]
            },
            "evaluation": {"shots": 100, "seed": 5},
            "batch_size": 500,
            "canary": None,
            "policy": {"max_queue_wait": "P40D"},
        }
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=as_queued_provider(all_activities()),
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            "SweepWorkflow",
            SweepInput(request=request, polling=POLLING, batches_in_flight=2),
            id=f"month-sweep-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=SweepReport,
        )
        report = await handle.result()

    events, size, scheduled = await history_size(handle)
    assert report.points_evaluated == 1000
    assert scheduled.count("wait_for_job") >= 2
    assert provider.polls_seen > 2 * 30 * 24
    assert events < MAX_EVENTS and size < MAX_BYTES, (events, size)
