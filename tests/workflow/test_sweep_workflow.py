"""SweepWorkflow on a real Temporal dev server with the real activities: Qiskit, Aer, the
fingerprint cache in SQLite, the artifacts on disk. Submissions are counted where the Aer adapter
keeps its jobs ($QLOOP_HOME/aer-jobs/<client token>/request.json), so "nothing was submitted"
means no job exists, not that a counter stayed at zero.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.providers.provider_calls import check_job
from activities.storage import artifact_store
from activities.storage.point_cache import cached_values
from schemas import error_types
from schemas.execution import JobState, JobStatus
from schemas.pipeline import JobInput, PollingPolicy
from schemas.variational import SweepInput, SweepProgress, SweepReport, SweepRequest
from tests.queue_doubles import as_queued_provider
from tests.workflow.conftest import StartWorker
from worker import WORKFLOWS, all_activities

POLLING = PollingPolicy(initial_seconds=0.05, ceiling_seconds=0.2)
GAMMAS = [0.0, 0.3, 0.6]
BETAS = [0.2, 0.5, 0.8]


def triangle_sweep(name: str, **changes: object) -> SweepRequest:
    """QAOA p=1 on a weighted triangle over a 3 x 3 grid: 9 points, batches of 4 after a canary
    of 2 (three submissions)."""
    request = {
        "name": name,
        "family": {
            "kind": "qaoa_maxcut",
            "graph": {
                "nodes": 3,
                "edges": [
                    {"u": 0, "v": 1, "weight": 1.0},
                    {"u": 1, "v": 2, "weight": 2.0},
                    {"u": 0, "v": 2, "weight": 1.5},
                ],
            },
        },
        "points": {"grid": [{"values": GAMMAS}, {"values": BETAS}]},
        "evaluation": {"shots": 400, "seed": 5},
        "batch_size": 4,
        "canary": {"points": 2},
        **changes,
    }
    return SweepRequest.model_validate(request)


@pytest_asyncio.fixture
async def client(dev_server: WorkflowEnvironment, start_worker: StartWorker) -> _OnQueue:
    """A worker with every qloop workflow and activity on a fresh task queue."""
    return _OnQueue(dev_server.client, await start_worker(dev_server.client))


class _OnQueue:
    """The test's client and the worker's task queue."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start(self, input: SweepInput, workflow_id: str | None = None) -> WorkflowHandle:
        return await self.client.start_workflow(
            "SweepWorkflow",
            input,
            id=workflow_id or f"{input.request.name}-{uuid.uuid4().hex[:8]}",
            task_queue=self.task_queue,
            result_type=SweepReport,
        )

    async def sweep(self, request: SweepRequest, **options: object) -> SweepReport:
        handle = await self.start(SweepInput(request=request, polling=POLLING, **options))
        return await handle.result()


def submitted_points(home: Path) -> Counter[tuple[float, ...]]:
    """How often each point went into a batch for the simulator, over every batch prepared in
    QLOOP_HOME's artifact store (its batch.json)."""
    submitted: Counter[tuple[float, ...]] = Counter()
    for batch_file in (home / "artifacts").glob("*/batch.json"):
        batch = json.loads(batch_file.read_text())["batch"]
        template = next(spec for spec in batch["circuits"] if spec.get("parameters"))
        submitted.update(tuple(binding) for binding in template["bindings"])
    return submitted


def job_count(home: Path) -> int:
    """Batches prepared for the simulator (each runs as one `simulate` activity)."""
    return len(list((home / "artifacts").glob("*/batch.json")))


def table(report: SweepReport) -> list[dict[str, str]]:
    with artifact_store.path_of(report.table_uri).open(newline="") as handle:
        return list(csv.DictReader(handle))


async def activity_types(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_a_second_run_finds_every_point_cached_and_submits_nothing(
    client: _OnQueue, qloop_home: Path
) -> None:
    request = triangle_sweep("cached-twice")
    first = await client.sweep(request)
    assert first.status == "completed"
    assert (first.points_evaluated, first.points_cached, first.points_pending) == (9, 0, 0)
    assert (first.batches_done, first.batches_total) == (3, 3)
    assert job_count(qloop_home) == 3
    assert all(count == 1 for count in submitted_points(qloop_home).values())

    second_handle = await client.start(SweepInput(request=request, polling=POLLING))
    second = await second_handle.result()
    assert second.status == "completed"
    assert (second.points_evaluated, second.points_cached, second.batches_total) == (0, 9, 0)
    assert second.cost_usd == 0.0
    assert job_count(qloop_home) == 3
    scheduled = await activity_types(second_handle)
    assert not {"prepare_batch", "submit", "score_batch"} & set(scheduled)
    # The second table holds the first run's values, now marked as cached.
    first_rows, second_rows = table(first), table(second)
    assert [row["value"] for row in second_rows] == [row["value"] for row in first_rows]
    assert {row["cached"] for row in first_rows} == {"no"}
    assert {row["cached"] for row in second_rows} == {"yes"}
    assert second.best == first.best


async def test_the_table_has_one_row_per_point_in_grid_order(client: _OnQueue) -> None:
    report = await client.sweep(triangle_sweep("grid-order"))
    rows = table(report)
    assert [int(row["index"]) for row in rows] == list(range(9))
    grid = list(itertools.product(GAMMAS, BETAS))  # first axis slowest
    assert [(float(row["gamma_0"]), float(row["beta_0"])) for row in rows] == grid
    total_weight = 4.5
    for row in rows:
        assert 0.0 <= float(row["value"]) <= total_weight
        assert float(row["std_error"]) > 0.0
        assert len(row["fingerprint"]) == 64
    # At gamma = 0 the state is |+++> whatever beta: every cut has probability 1/8, so the
    # expected cut is half the total weight.
    for row in rows[:3]:
        assert math.isclose(
            float(row["value"]), total_weight / 2, abs_tol=5 * float(row["std_error"])
        )
    assert report.best is not None
    assert report.goal == "maximize"
    assert report.best.value == max(float(row["value"]) for row in rows)
    plot = artifact_store.path_of(report.plot_uri or "").read_bytes()
    assert plot.startswith(b"\x89PNG")


async def test_a_failed_canary_stops_the_sweep_before_the_rest(
    client: _OnQueue, qloop_home: Path
) -> None:
    # 400 shots cannot estimate a cut within 1e-9 of its exact value.
    request = triangle_sweep("canary-fails", canary={"points": 2, "max_deviation": 1e-9})
    report = await client.sweep(request)
    assert report.status == "canary_failed"
    assert report.canary is not None and not report.canary.passed
    assert len(report.canary.problems) == 2
    assert "max_deviation" in report.status_reason
    assert (report.batches_done, report.points_evaluated, report.points_pending) == (1, 2, 7)
    assert job_count(qloop_home) == 1
    assert sum(submitted_points(qloop_home).values()) == 2
    rows = table(report)
    assert [row["cached"] for row in rows] == ["no", "no"] + [""] * 7
    assert all(row["value"] == "" for row in rows[2:])
    # A failed canary's values are kept in the table, never in the cache.
    assert cached_values([row["fingerprint"] for row in rows]) == {}


async def test_a_terminated_sweep_started_again_runs_only_unfinished_batches(
    client: _OnQueue, qloop_home: Path
) -> None:
    request = triangle_sweep("terminated", batch_size=1, canary=None)
    handle = await client.start(
        SweepInput(request=request, polling=PollingPolicy(initial_seconds=0.3, ceiling_seconds=0.3))
    )
    while True:
        progress = await handle.query("progress", result_type=SweepProgress)
        if progress.batches_done >= 3:
            break
        await asyncio.sleep(0.05)
    await handle.terminate("interrupted by the test")
    folder = qloop_home / "artifacts" / handle.id
    fingerprints = (folder / "fingerprints.txt").read_text().split("\n")
    points = np.load(folder / "points.npy")
    finished = cached_values(fingerprints)
    assert 3 <= len(finished) < 9

    report = await client.sweep(request)
    assert report.status == "completed"
    assert report.points_cached + report.points_evaluated == 9
    # Terminating a workflow does not stop its running activities: a batch in flight may still
    # have stored its point after `finished` was read, and the second run then finds it too.
    in_flight = SweepInput(request=request).batches_in_flight
    assert len(finished) <= report.points_cached <= len(finished) + in_flight
    counts = submitted_points(qloop_home)
    assert len(counts) == 9
    for point, fingerprint in zip(points, fingerprints, strict=True):
        if fingerprint in finished:
            assert counts[tuple(point)] == 1, f"finished point {point} was submitted again"
    # Only the batches in flight when the sweep was terminated (one point each) may have been
    # submitted twice.
    assert sum(1 for count in counts.values() if count > 1) <= in_flight


async def test_continue_as_new_between_batches_keeps_the_whole_sweep(
    client: _OnQueue, qloop_home: Path
) -> None:
    request = triangle_sweep("continued")
    handle = await client.start(SweepInput(request=request, polling=POLLING, batches_per_run=1))
    report = await handle.result()
    assert report.status == "completed"
    assert (report.points_evaluated, report.points_cached, report.batches_done) == (9, 0, 3)
    assert report.runs == 3
    assert report.canary is not None and report.canary.passed
    assert job_count(qloop_home) == 3
    assert {row["cached"] for row in table(report)} == {"no"}
    first_run = client.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    history = await first_run.fetch_history()
    assert history.events[-1].event_type == (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )


HELD_JOB_SECONDS = 3.0


def activities_holding_the_first_job() -> list[Callable[..., Any]]:
    """The provider answers QUEUED for the first job polled until HELD_JOB_SECONDS after its
    first poll; every other job as the real adapter does."""
    first_polled: dict[str, float] = {}

    def held(input: JobInput) -> bool:
        now = time.monotonic()
        first_polled.setdefault(input.job.client_token, now)
        order = list(first_polled).index(input.job.client_token)
        return order == 0 and now - first_polled[input.job.client_token] < HELD_JOB_SECONDS

    @activity.defn(name="check_job")
    async def check_job_holding(input: JobInput) -> JobStatus:
        return JobStatus(state=JobState.QUEUED) if held(input) else check_job(input)

    @activity.defn(name="wait_for_job")
    async def wait_for_job_holding(input: JobInput) -> JobStatus:
        if held(input):
            raise ApplicationError(
                "held", type=error_types.JOB_NOT_DONE, category=ApplicationErrorCategory.BENIGN
            )
        return check_job(input)

    replaced = {"check_job", "wait_for_job"}
    return as_queued_provider(
        [
            a
            for a in all_activities()
            if a.__temporal_activity_definition.name not in replaced  # type: ignore[attr-defined]
        ]
        + [check_job_holding, wait_for_job_holding]
    )


def submit_tokens(history: WorkflowHistory) -> list[str]:
    return [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)[
            "client_token"
        ]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "submit"
    ]


async def test_a_sweep_continues_as_new_with_a_batch_in_flight_and_pays_for_it_once(
    dev_server: WorkflowEnvironment, start_worker: StartWorker, qloop_home: Path
) -> None:
    # Three batches of 3 points, two at a time, two per run: the first run continues as new as
    # soon as one of its two batches finished, while the other (the job polled first) still
    # waits at the provider.
    request = triangle_sweep("in-flight", canary=None, batch_size=3)
    task_queue = await start_worker(dev_server.client, activities_holding_the_first_job())
    handle = await _OnQueue(dev_server.client, task_queue).start(
        SweepInput(request=request, polling=POLLING, batches_in_flight=2, batches_per_run=2)
    )
    report = await handle.result()
    first_run = dev_server.client.get_workflow_handle(
        handle.id, run_id=handle.first_execution_run_id
    )
    first = await first_run.fetch_history()
    last = await handle.fetch_history()

    assert report.status == "completed" and report.runs == 2
    assert (report.points_evaluated, report.points_cached, report.batches_done) == (9, 0, 3)
    assert first.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    # The first run submitted two batches and stored one: the other was in flight.
    assert len(submit_tokens(first)) == 2
    assert (await activity_types(first_run)).count("store_sweep_batch") == 1
    # The next run submitted it again under the same token, and found the job already there.
    carried = set(submit_tokens(first)) & set(submit_tokens(last))
    assert len(carried) == 1
    assert job_count(qloop_home) == 3
    assert set(submitted_points(qloop_home).values()) == {1}
    assert {row["cached"] for row in table(report)} == {"no"}
    replayer = Replayer(workflows=WORKFLOWS, data_converter=dev_server.client.data_converter)
    await replayer.replay_workflow(first)
    await replayer.replay_workflow(last)


async def test_a_sweep_history_replays_deterministically(
    client: _OnQueue, dev_server: WorkflowEnvironment
) -> None:
    request = triangle_sweep("replayed", canary={"points": 2, "max_deviation": 0.5})
    handle = await client.start(SweepInput(request=request, polling=POLLING))
    report = await handle.result()
    assert report.status == "completed"
    assert "classical_reference" in await activity_types(handle)
    history = await handle.fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=dev_server.client.data_converter)
    await replayer.replay_workflow(history)
