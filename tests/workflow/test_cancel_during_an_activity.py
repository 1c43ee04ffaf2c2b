"""Temporal's cancel arriving while an experiment, a loop or a sweep awaits one of its compute
activities: the workflow ends cancelled (an experiment with its `cancelled` report), never
failed with "Cancelled" as its reason.

The dev server and every real activity; only the activity under test is held at its start,
heartbeating, until the test has cancelled the workflow, and the history shows that the cancel
request reached it while it ran.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.experiment.preprocess import preprocess_activity
from activities.variational.batch_preparation import prepare_batch_activity
from activities.variational.sweep_results import plan_sweep_activity
from schemas.loop import LoopInput
from schemas.pipeline import ExperimentInput
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from schemas.variational import LoopRequest, SweepInput, SweepRequest
from tests.harness import REPO_ROOT
from tests.workflow.conftest import StartWorker
from worker import all_activities

pytestmark = pytest.mark.integration


class Held:
    """Holds an activity at its start, heartbeating, until the test lets it go on."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def hold(self) -> None:
        self.entered.set()
        while not self.released.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.1)


def held_version(real: Callable[..., Any], name: str, held: Held) -> Callable[..., Any]:
    """The real activity `name`, held at its start (its type hints kept, for the payloads)."""

    @functools.wraps(real, updated=())
    async def held_activity(input: Any) -> Any:
        await held.hold()
        return await real(input)

    return activity.defn(name=name)(held_activity)


async def cancel_while_held(
    client: Client, handle: WorkflowHandle[Any, Any], held: Held, activity_name: str
) -> None:
    """Cancels the workflow once the held activity runs, and checks from the history that the
    cancel request reached that activity before it closed."""
    await asyncio.wait_for(held.entered.wait(), 60)
    await handle.cancel()
    try:
        for _ in range(100):
            events = (await handle.fetch_history()).events
            if any(
                e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED for e in events
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        held.released.set()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    requested = [
        scheduled[e.activity_task_cancel_requested_event_attributes.scheduled_event_id]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
    ]
    assert requested == [activity_name], requested


def worker_activities(real: Callable[..., Any], name: str, held: Held) -> list[Any]:
    replaced = held_version(real, name, held)
    return [replaced if candidate is real else candidate for candidate in all_activities()]


async def test_an_experiment_cancelled_in_preprocessing_reports_cancelled(
    dev_server: WorkflowEnvironment, start_worker: StartWorker, qloop_home: object
) -> None:
    held = Held()
    client = dev_server.client
    queue = await start_worker(client, worker_activities(preprocess_activity, "preprocess", held))
    request = ExperimentRequest.model_validate(
        {
            "name": "cancelled-in-preprocessing",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {"shots": 200, "seed": 1},
            "mitigation": {"zne": None, "readout": False},
        }
    )
    handle = await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request),
        id=f"cancel-preprocess-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        result_type=ExperimentReport,
    )
    await cancel_while_held(client, handle, held, "preprocess")
    report = await handle.result()
    assert report.status == "cancelled", report.status_reason


async def test_a_loop_cancelled_while_preparing_a_batch_ends_cancelled(
    dev_server: WorkflowEnvironment, start_worker: StartWorker, qloop_home: object
) -> None:
    held = Held()
    client = dev_server.client
    queue = await start_worker(
        client, worker_activities(prepare_batch_activity, "prepare_batch", held)
    )
    content = yaml.safe_load((REPO_ROOT / "examples" / "vqe_h2.yaml").read_text())
    content.update(name="cancelled-loop", limits={"max_iterations": 3})
    request = LoopRequest.model_validate(content)
    handle = await client.start_workflow(
        "LoopWorkflow",
        LoopInput(request=request),
        id=f"cancel-loop-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    await cancel_while_held(client, handle, held, "prepare_batch")
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError), ended.value.cause


async def test_a_sweep_cancelled_while_planning_ends_cancelled(
    dev_server: WorkflowEnvironment, start_worker: StartWorker, qloop_home: object
) -> None:
    held = Held()
    client = dev_server.client
    queue = await start_worker(client, worker_activities(plan_sweep_activity, "plan_sweep", held))
    content = yaml.safe_load((REPO_ROOT / "examples" / "sweep_qaoa.yaml").read_text())
    content.update(name="cancelled-sweep")
    request = SweepRequest.model_validate(content)
    handle = await client.start_workflow(
        "SweepWorkflow",
        SweepInput(request=request),
        id=f"cancel-sweep-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    await cancel_while_held(client, handle, held, "plan_sweep")
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError), ended.value.cause
