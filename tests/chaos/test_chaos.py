"""Chaos on the whole local stack: experiments wait in the QPU stand-in's queue while the
Temporal server and the stand-in are restarted, and the provider throttles and fails (worker
kills: test_worker_kills.py). Every experiment must complete with the right answer, and the stand-in
must hold exactly one task per submission token: nothing is lost and nothing is paid twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.harness import QPU, LocalStack
from tests.server_helpers import wait_until

EXPERIMENTS = 10
# ZNE at scale factors 1 and 3, readout correction off: two circuits, one program-set task.
TASKS_PER_EXPERIMENT = 1
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=2.0)


def qpu_request(index: int) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"chaos-{index}",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {
                "shots": 300,
                "seed": index,
                "backend": {"provider": "braket", "device": QPU},
            },
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": False},
        }
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("chaos"), task_queue=f"chaos-{uuid.uuid4().hex[:8]}")
    local.start()
    try:
        yield local
    finally:
        local.stop()


async def start_experiments(client: Client, stack: LocalStack, label: str) -> list[WorkflowHandle]:
    return [
        await client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=qpu_request(index), polling=POLLING),
            id=f"{label}-{index}-{uuid.uuid4().hex[:6]}",
            task_queue=stack.task_queue,
            result_type=ExperimentReport,
        )
        for index in range(EXPERIMENTS)
    ]


async def results(handles: list[WorkflowHandle], timeout: float = 300) -> list[ExperimentReport]:
    return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout)


def assert_right_answers(reports: list[ExperimentReport]) -> None:
    for report in reports:
        assert report.produced_by == "hardware"
        assert 0.7 < report.raw.value <= 1.0, report.experiment_id


def assert_one_task_per_token(stack: LocalStack, reports: list[ExperimentReport]) -> None:
    per_token = stack.tasks_per_token()
    mine = {
        token: count
        for token, count in per_token.items()
        if any(token.startswith(r.provenance.client_token) for r in reports)
    }
    assert len(mine) == len(reports) * TASKS_PER_EXPERIMENT
    assert set(mine.values()) == {1}, {t: c for t, c in mine.items() if c != 1}


async def test_temporal_server_restart_while_experiments_wait(
    stack: LocalStack, client: Client
) -> None:
    stack.set_faults(queue_delay_s=[8, 12])
    worker = stack.start_worker()
    before = len(stack.tasks())
    handles = await start_experiments(client, stack, "server")
    await asyncio.to_thread(wait_until, lambda: len(stack.tasks()) >= before + EXPERIMENTS, 120)
    await asyncio.to_thread(stack.restart_temporal)
    reports = await results(handles)
    stack.kill_worker(worker)

    assert_right_answers(reports)
    assert_one_task_per_token(stack, reports)


async def test_standin_restart_while_tasks_are_queued(stack: LocalStack, client: Client) -> None:
    stack.set_faults(queue_delay_s=[8, 12])
    worker = stack.start_worker()
    handles = await start_experiments(client, stack, "standin")
    before = len(stack.tasks())
    await asyncio.to_thread(wait_until, lambda: len(stack.tasks()) >= before + EXPERIMENTS, 120)
    await asyncio.to_thread(stack.restart_standin)
    stack.set_faults(queue_delay_s=[2, 4])  # run-time settings do not survive the restart
    reports = await results(handles)
    stack.kill_worker(worker)

    assert_right_answers(reports)
    assert_one_task_per_token(stack, reports)


async def test_throttling_and_server_errors_are_retried(stack: LocalStack, client: Client) -> None:
    stack.set_faults(queue_delay_s=[1, 3], throttle_rate={"*": 0.3}, error_rate={"*": 0.1})
    worker = stack.start_worker()
    handles = await start_experiments(client, stack, "throttled")
    reports = await results(handles)
    stack.kill_worker(worker)

    assert_right_answers(reports)
    assert_one_task_per_token(stack, reports)
    retried = 0
    for handle in handles:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                retried += event.activity_task_started_event_attributes.attempt > 1
    assert retried > 0, "no activity needed a retry: the faults did not reach qloop"
