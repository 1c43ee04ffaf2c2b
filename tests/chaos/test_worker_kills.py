"""Any worker may die at any moment: 32 SIGKILLs of the only worker while mixed workflows run —
experiments with ZNE on the noisy Aer profile (topped up so that CPU stages keep coming until
the last kill), experiments on the QPU stand-in in two waves (a fifth of whose
CreateQuantumTask replies are lost), a variational loop and a sweep; at least 20 of them see a
kill while they run.

Half the kills come at random moments, half are aimed at a CPU stage while it runs (the test
watches the workflows' pending activities); the histories, not timing luck, show where they
landed. Every workflow must complete with the answer an uninterrupted run gives (the Aer ones
are seeded, so their numbers must be identical), the stand-in must hold exactly one task per
client token, no activity may wait out a start-to-close timeout, and every activity a kill cost
must be running again within 30 s plus the poll interval.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle

from activities.variational.loop_trajectory import read_trajectory
from schemas.loop import LoopInput, TrajectoryEntry, TrajectoryView
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from schemas.variational import LoopReport, LoopRequest, SweepInput, SweepReport, SweepRequest
from tests.harness import QPU, REPO_ROOT, LocalStack
from workflows.activity_options import HEARTBEAT_TIMEOUT, QUICK_TIMEOUT

KILLS = 32
NOISY_AT_START = 8
MIN_RUNNING = 7  # workflows kept running until the last kill
QPU_WAVES = (4, 14)
QPU_PER_WAVE = 4
AIMED_AT_CPU = 10  # at least this many kills must land inside a CPU stage
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=2.0)
LOST_WORKER_TIMEOUTS = (TimeoutType.TIMEOUT_TYPE_HEARTBEAT, TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE)
STALL_LIMIT = timedelta(seconds=30) + timedelta(seconds=POLLING.ceiling_seconds)
CPU_STAGES = frozenset(
    {
        "preprocess",
        "prevalidate",
        "plan",
        "mitigate",
        "postprocess",
        "prepare_batch",
        "score_batch",
        "classical_reference",
        "expand_sweep",
        "write_sweep_results",
    }
)
TRIANGLE = {
    "kind": "qaoa_maxcut",
    "graph": {
        "nodes": 3,
        "edges": [{"u": 0, "v": 1, "weight": 1.0}, {"u": 1, "v": 2, "weight": 1.0}],
    },
}
NOISY = {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"}


def noisy_experiment(index: int) -> ExperimentRequest:
    """ZNE at three scale factors with readout mitigation on the Guadalupe profile: GHZ, or QAOA
    on a small weighted graph (its angles optimised classically in preprocess)."""
    problem: dict[str, Any] = (
        {"kind": "ghz", "num_qubits": 3 + index % 2}
        if index % 2 == 0
        else {
            "kind": "qaoa_maxcut",
            "graph": {
                "nodes": 4,
                "edges": [
                    {"u": 0, "v": 1, "weight": 1.0},
                    {"u": 1, "v": 2, "weight": 2.0},
                    {"u": 2, "v": 3, "weight": 1.0},
                    {"u": 3, "v": 0, "weight": 1.5},
                ],
            },
        }
    )
    return ExperimentRequest.model_validate(
        {
            "name": f"noisy-{index}",
            "problem": problem,
            "execution": {"shots": 2000, "seed": 100 + index, "backend": NOISY},
        }
    )


def qpu_experiment(index: int) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"qpu-{index}",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {
                "shots": 300,
                "seed": index,
                "backend": {"provider": "braket", "device": QPU},
            },
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": False},
        }
    )


def loop_request() -> LoopRequest:
    data = yaml.safe_load((REPO_ROOT / "examples" / "vqe_h2.yaml").read_text())
    data.update(name="chaos-vqe", limits={"max_iterations": 10})
    data["evaluation"]["shots"] = 20_000
    data["optimizer"]["patience"] = 11
    return LoopRequest.model_validate(data)


def sweep_request() -> SweepRequest:
    return SweepRequest.model_validate(
        {
            "name": "chaos-sweep",
            "family": TRIANGLE,
            "points": {"grid": [{"start": 0.0, "stop": 1.0, "num": 9}, {"values": [0.3, 0.6]}]},
            "evaluation": {"shots": 500, "seed": 5},
            "batch_size": 3,
            "canary": {"points": 2},
        }
    )


@dataclass
class Run:
    """The workflows of one round, by kind."""

    noisy: list[WorkflowHandle[Any, ExperimentReport]]
    loop: WorkflowHandle[Any, LoopReport]
    sweep: WorkflowHandle[Any, SweepReport]
    qpu: list[WorkflowHandle[Any, ExperimentReport]]
    _results: dict[str, asyncio.Task[Any]] = field(default_factory=dict)

    @property
    def handles(self) -> list[WorkflowHandle[Any, Any]]:
        return [*self.noisy, self.loop, self.sweep, *self.qpu]

    def running(self) -> int:
        for handle in self.handles:
            if handle.id not in self._results:
                self._results[handle.id] = asyncio.ensure_future(handle.result())
        return sum(not result.done() for result in self._results.values())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("kills"), task_queue=f"kills-{uuid.uuid4().hex[:8]}")
    local.start()
    try:
        yield local
    finally:
        local.stop()


async def start_experiment(
    client: Client, stack: LocalStack, request: ExperimentRequest, label: str
) -> WorkflowHandle[Any, ExperimentReport]:
    return await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"{label}-{request.name}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )


async def start_aer_workflows(
    client: Client, stack: LocalStack, label: str, noisy_indices: range
) -> Run:
    noisy = [
        await start_experiment(client, stack, noisy_experiment(i), label) for i in noisy_indices
    ]
    loop = await client.start_workflow(
        "LoopWorkflow",
        LoopInput(request=loop_request(), polling=POLLING),
        id=f"{label}-loop-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=LoopReport,
    )
    sweep = await client.start_workflow(
        "SweepWorkflow",
        SweepInput(request=sweep_request(), polling=POLLING),
        id=f"{label}-sweep-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=SweepReport,
    )
    return Run(noisy=noisy, loop=loop, sweep=sweep, qpu=[])


def sweep_values(stack: LocalStack, report: SweepReport) -> list[dict[str, str]]:
    table = stack.read_artifact(report.table_uri).decode()
    return [
        {key: row[key] for key in ("index", "value", "std_error", "raw")}
        for row in csv.DictReader(io.StringIO(table))
    ]


async def trajectory(handle: WorkflowHandle[Any, LoopReport]) -> list[TrajectoryEntry]:
    return read_trajectory(await handle.query("trajectory", result_type=TrajectoryView))


async def running_cpu_stage(handles: list[WorkflowHandle[Any, Any]], since: float) -> bool:
    """Whether a CPU stage started after `since` (wall clock) is running right now."""
    descriptions = await asyncio.gather(
        *(handle.describe() for handle in handles), return_exceptions=True
    )
    for description in descriptions:
        if isinstance(description, BaseException) or description.status is None:
            continue
        for pending in description.raw_description.pending_activities:
            if (
                pending.activity_type.name in CPU_STAGES
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and pending.last_started_time.ToDatetime().timestamp() > since
            ):
                return True
    return False


async def histories(client: Client, handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    """The events of every run of the workflow (loops and sweeps continue as new)."""
    events: list[HistoryEvent] = []
    async for execution in client.list_workflows(f"WorkflowId = '{handle.id}'"):
        history = await client.get_workflow_handle(
            handle.id, run_id=execution.run_id
        ).fetch_history()
        events.extend(history.events)
    return events


@dataclass(frozen=True)
class LostAttempt:
    activity: str
    kill: float
    stall: float  # seconds from the kill to the attempt that finished the activity
    while_scheduled: bool  # the activity existed when the kill came (else a dead poller took it)


def lost_attempts(events: list[HistoryEvent], kills: list[float]) -> list[LostAttempt]:
    """Every activity whose last attempt followed one that a kill cost, with the kill that cost
    it: the last one before that start. A kill costs a heartbeat timeout, or the start-to-close
    timeout of an activity that finishes in seconds; no other activity may ever wait out its
    start-to-close timeout. The kill may come just before the activity is scheduled: the server
    can hand a new task to a poll the dead worker left open."""
    scheduled: dict[int, tuple[str, float, timedelta]] = {}
    lost: list[LostAttempt] = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (
                attributes.activity_type.name,
                event.event_time.ToDatetime().timestamp(),
                attributes.start_to_close_timeout.ToTimedelta(),
            )
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            continue
        started = event.activity_task_started_event_attributes
        timeout = started.last_failure.timeout_failure_info.timeout_type
        if started.attempt < 2 or timeout not in LOST_WORKER_TIMEOUTS:
            continue
        activity, scheduled_at, limit = scheduled[started.scheduled_event_id]
        assert timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT or limit <= QUICK_TIMEOUT, (
            f"{activity} waited out a start-to-close timeout of {limit}"
        )
        started_at = event.event_time.ToDatetime().timestamp()
        before = [kill for kill in kills if kill < started_at]
        assert before, f"{activity} timed out with no kill before"
        kill = before[-1]
        lost.append(LostAttempt(activity, kill, started_at - kill, kill >= scheduled_at))
    return lost


async def test_thirty_kills_across_twenty_workflows(stack: LocalStack, client: Client) -> None:
    stack.set_faults(queue_delay_s=[3, 10], lost_response_rate={"CreateQuantumTask": 0.2})
    worker = stack.start_worker()
    chooser = random.Random(20261203)
    run = await start_aer_workflows(client, stack, "chaos", range(NOISY_AT_START))
    aimed = set(chooser.sample(range(KILLS), KILLS // 2))
    kills: list[float] = []
    restarted = time.time()
    for number in range(KILLS):
        if number in QPU_WAVES:  # the QPU experiments come in two waves, while the kills go on
            run.qpu.extend(
                [
                    await start_experiment(client, stack, qpu_experiment(10 * number + i), "chaos")
                    for i in range(QPU_PER_WAVE)
                ]
            )
        # Fresh noisy experiments keep CPU stages coming until the last kill.
        while run.running() < MIN_RUNNING:
            request = noisy_experiment(len(run.noisy))
            run.noisy.append(await start_experiment(client, stack, request, "chaos"))
        if number in aimed:
            deadline = time.monotonic() + 30
            while not await running_cpu_stage(run.handles, restarted):
                assert time.monotonic() < deadline, f"no CPU stage ran for 30 s: {run.running()}"
                await asyncio.sleep(0.1)
            await asyncio.sleep(chooser.uniform(0.0, 0.3))
        else:
            await asyncio.sleep(chooser.uniform(0.5, 5.0))
        kills.append(time.time())
        stack.kill_worker(worker)
        worker = stack.start_worker()
        restarted = time.time()
        if number in aimed:
            # The stage's next attempt starts before the next kill: its history then names this
            # kill as what cost the attempt (a history keeps only an activity's last attempt).
            await asyncio.sleep(HEARTBEAT_TIMEOUT.total_seconds() + 3)

    noisy = await asyncio.wait_for(asyncio.gather(*(h.result() for h in run.noisy)), 600)
    qpu = await asyncio.wait_for(asyncio.gather(*(h.result() for h in run.qpu)), 600)
    loop = await asyncio.wait_for(run.loop.result(), 600)
    sweep = await asyncio.wait_for(run.sweep.result(), 600)
    chaos_trajectory = await trajectory(run.loop)

    # The same seeded Aer workflows again, uninterrupted.
    # The second sweep must measure again, not read the first one's values from the cache.
    stack.forget_point_cache()
    reference = await start_aer_workflows(client, stack, "reference", range(len(run.noisy)))
    expected_noisy = await asyncio.wait_for(
        asyncio.gather(*(h.result() for h in reference.noisy)), 600
    )
    expected_loop = await asyncio.wait_for(reference.loop.result(), 600)
    expected_trajectory = await trajectory(reference.loop)
    expected_sweep = sweep_values(stack, await asyncio.wait_for(reference.sweep.result(), 600))
    stack.kill_worker(worker)

    events = {handle.id: await histories(client, handle) for handle in run.handles}
    killed_while_running = [
        workflow_id
        for workflow_id, history in events.items()
        if any(
            history[0].event_time.ToDatetime().timestamp()
            < kill
            < history[-1].event_time.ToDatetime().timestamp()
            for kill in kills
        )
    ]
    assert len(killed_while_running) >= 20, killed_while_running
    # The same answers as without kills, to the last digit where the work is seeded.
    for report, wanted in zip(noisy, expected_noisy, strict=True):
        assert report.produced_by == "simulator"
        assert (report.raw, report.mitigated) == (wanted.raw, wanted.mitigated), report.name
    assert chaos_trajectory == expected_trajectory
    assert (loop.best_value, loop.iterations) == (
        expected_loop.best_value,
        expected_loop.iterations,
    )
    assert sweep.status == "completed"
    assert sweep_values(stack, sweep) == expected_sweep
    for report in qpu:
        assert report.produced_by == "hardware"
        assert 0.7 < report.raw.value <= 1.0, report.experiment_id
    # Nothing paid twice: one stand-in task per task token of every QPU experiment.
    tokens = stack.tasks_per_token()
    mine = {
        t: n for t, n in tokens.items() if any(t.startswith(r.provenance.client_token) for r in qpu)
    }
    assert len(mine) == len(qpu)  # two circuits each, as one program-set task
    assert set(mine.values()) == {1}, {t: n for t, n in mine.items() if n != 1}

    # Where the kills landed, from the histories.
    lost = [attempt for history in events.values() for attempt in lost_attempts(history, kills)]
    in_cpu_stages = {
        attempt.kill
        for attempt in lost
        if attempt.activity in CPU_STAGES and attempt.while_scheduled
    }
    assert len(in_cpu_stages) >= AIMED_AT_CPU, (
        f"only {len(in_cpu_stages)} kills landed in a CPU stage: "
        f"{sorted({a.activity for a in lost})}"
    )
    worst = max(lost, key=lambda attempt: attempt.stall)
    assert worst.stall <= STALL_LIMIT.total_seconds(), worst
    assert worst.stall >= HEARTBEAT_TIMEOUT.total_seconds()  # a lost attempt was measured
    print(
        f"{len(kills)} kills, {len(in_cpu_stages)} inside CPU stages, {len(lost)} attempts lost, "
        f"longest stall {worst.stall:.1f} s ({worst.activity})"
    )
