"""Waiting is cheap and survives restarts.

Deployment measured: one orchestration worker (workflows + provider calls) and one compute
worker (the CPU-heavy stages), as worker.py's roles describe; the orchestration worker is the
one that is killed and whose memory and CPU are counted.

1. Resume: experiments wait in the QPU stand-in's queue at their poll ceiling P (one
   `wait_for_job` activity each, retried every P seconds by the server); the worker is killed
   with SIGKILL and restarted at once. Measured: time from the kill until every waiting
   experiment has polled again (an attempt started after the kill), as a ratio of P.
   Target: <= P + 2 s.
2. Scale: N experiments (default 1,000) waiting at once on one worker. Measured: the worker's
   resident memory and CPU while they wait, per waiting experiment, against the same worker
   idle. Targets: < 200 MB added for 1,000; duplicate tasks at the stand-in: 0.
3. Kills inside CPU stages: for each kind of CPU stage (and a local simulation), the compute
   worker is killed with SIGKILL while that stage runs, and restarted at once. Measured: time
   from the restart to the stage's completion. Target: <= 30 s each (the stage's heartbeat
   timeout, a retry's first backoff and the stage's own duration).

Runs its own local stack (Temporal dev server + stand-in) on free ports in a temporary folder.
`python bench/restart.py [stages] [resume] [scale]` runs some parts only (default: all).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from schemas.error_types import JOB_NOT_DONE
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.request import ExperimentRequest
from tests.harness import QPU, LocalStack

POLL_SECONDS = float(os.environ.get("QLOOP_BENCH_POLL_SECONDS", "5"))
RESUME_EXPERIMENTS = 10
WAITING = int(os.environ.get("QLOOP_BENCH_WAITING", "1000"))
CPU_WINDOW_SECONDS = 60.0
MB = 1024 * 1024


def request(index: int) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"waiting-{index}",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {
                "shots": 100,
                "seed": index,
                "backend": {"provider": "braket", "device": QPU},
            },
            "mitigation": {"zne": None, "readout": False},
        }
    )


async def start(
    client: Client, stack: LocalStack, count: int, polling: PollingPolicy
) -> list[WorkflowHandle]:
    handles = []
    for index in range(count):
        handles.append(
            await client.start_workflow(
                "ExperimentWorkflow",
                ExperimentInput(
                    request=request(index),
                    polling=polling,
                    compute_task_queue=stack.compute_task_queue,
                ),
                id=f"bench-wait-{index}-{uuid.uuid4().hex[:6]}",
                task_queue=stack.task_queue,
            )
        )
    return handles


async def wait_until_queued(
    client: Client, stack: LocalStack, expected: int, timeout: float
) -> None:
    """Until `expected` experiments have polled the provider and found their job queued (the
    visibility store answers this, so no query reaches the busy worker)."""
    query = (
        f"TaskQueue = '{stack.task_queue}' AND ExecutionStatus = 'Running' "
        "AND QloopStage = 'waiting' AND QloopJobStatus = 'queued'"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.count_workflows(query)).count >= expected:
            return
        await asyncio.sleep(2)
    raise TimeoutError(f"fewer than {expected} experiments reached the provider's queue")


async def waiting_at_ceiling(handles: list[WorkflowHandle], timeout: float) -> None:
    """Until every experiment waits at its poll ceiling: its one `wait_for_job` activity has
    polled the provider and is retried at the ceiling until the job ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polls = await asyncio.gather(*(last_poll(handle) for handle in handles))
        if None not in polls:
            return
        await asyncio.sleep(2)
    raise TimeoutError("not every experiment reached its poll ceiling")


async def last_poll(handle: WorkflowHandle) -> datetime | None:
    """When the experiment's `wait_for_job` activity last asked the provider and found the job
    not done (the end of that attempt; an attempt lost with its worker ends in a timeout)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        failure = pending.last_failure.application_failure_info
        if pending.activity_type.name == "wait_for_job" and failure.type == JOB_NOT_DONE:
            return pending.last_attempt_complete_time.ToDatetime(tzinfo=UTC)
    return None


async def first_poll_after(handle: WorkflowHandle, moment: datetime) -> float | None:
    """Seconds from `moment` until the experiment polled the provider again (retries of the
    `wait_for_job` activity leave no event in history; the server's description has them)."""
    polled = await last_poll(handle)
    if polled is not None and polled > moment:
        return (polled - moment).total_seconds()
    return None


async def timeouts_after(handle: WorkflowHandle, moment: datetime) -> list[str]:
    """What the kill cost this experiment: work the dead worker had started, found by timeout."""
    lost = []
    async for event in handle.fetch_history_events():
        if event.event_time.ToDatetime(tzinfo=UTC) <= moment:
            continue
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            lost.append("an activity (heartbeat timeout)")
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            # Every experiment's next task waits out the short sticky schedule-to-start timeout;
            # only a task the dead worker had started costs the full task timeout.
            timeout = event.workflow_task_timed_out_event_attributes.timeout_type
            if timeout == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE:
                lost.append("a started workflow task (task timeout)")
    return lost


async def measure_resume(stack: LocalStack, client: Client) -> None:
    stack.set_faults(queue_delay_s=3600)
    compute = stack.start_worker("compute")
    worker = stack.start_worker("orchestration")
    polling = PollingPolicy(initial_seconds=POLL_SECONDS, ceiling_seconds=POLL_SECONDS)
    handles = await start(client, stack, RESUME_EXPERIMENTS, polling)
    await waiting_at_ceiling(handles, 180)
    await asyncio.sleep(POLL_SECONDS)  # let the polls spread over the interval
    killed_at = datetime.now(UTC)
    stack.kill_worker(worker)
    worker = stack.start_worker("orchestration")
    deadline = time.monotonic() + 10 * POLL_SECONDS + 60
    resumes: list[float | None] = [None] * len(handles)
    while time.monotonic() < deadline and None in resumes:
        await asyncio.sleep(0.5)
        # The first attempt after the kill is kept: later ones start P seconds apart.
        seen = await asyncio.gather(*(first_poll_after(h, killed_at) for h in handles))
        resumes = [old if old is not None else new for old, new in zip(resumes, seen, strict=True)]
    lost = [await timeouts_after(handle, killed_at) for handle in handles]
    for handle in handles:
        await handle.terminate("benchmark done")
    stack.kill_worker(worker)
    stack.kill_worker(compute)
    if None in resumes:
        raise RuntimeError("some experiments never polled again after the restart")
    latest = max(r for r in resumes if r is not None)
    target = (POLL_SECONDS + 2) / POLL_SECONDS
    print(
        f"resume after kill -9: {RESUME_EXPERIMENTS} waiting, poll every P = {POLL_SECONDS:.0f} s"
    )
    print(f"  last experiment polled again after {latest:6.2f} s")
    for index, (resume, costs) in enumerate(zip(resumes, lost, strict=True)):
        if costs:
            print(f"  experiment {index}: {resume:.2f} s, the kill cost it {', '.join(costs)}")
    print(f"  ratio to P  {latest / POLL_SECONDS:6.2f}  (target <= {target:.2f}, that is P + 2 s)")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def measure_scale(stack: LocalStack, client: Client) -> None:
    stack.set_faults(queue_delay_s=7200)
    compute = stack.start_worker("compute")
    worker = stack.start_worker("orchestration")
    process = psutil.Process(worker.pid)
    await start(client, stack, 1, PollingPolicy())
    await wait_until_queued(client, stack, 1, 180)  # every module imported, caches warm
    idle_rss = process.memory_info().rss
    idle_cpu, idle_wall = cpu_seconds(process), time.monotonic()
    await asyncio.sleep(CPU_WINDOW_SECONDS / 4)
    idle_cpu_rate = (cpu_seconds(process) - idle_cpu) / (time.monotonic() - idle_wall)

    started = time.monotonic()
    await start(client, stack, WAITING, PollingPolicy())
    await wait_until_queued(client, stack, WAITING + 1, 3600)
    ramp = time.monotonic() - started
    waiting_rss = process.memory_info().rss
    cpu_before, wall_before = cpu_seconds(process), time.monotonic()
    await asyncio.sleep(CPU_WINDOW_SECONDS)
    cpu_rate = (cpu_seconds(process) - cpu_before) / (time.monotonic() - wall_before)
    duplicates = sum(count - 1 for count in stack.tasks_per_token().values())
    stack.kill_worker(worker)
    stack.kill_worker(compute)

    added = (waiting_rss - idle_rss) / MB
    print(f"{WAITING} experiments waiting on one worker (reached in {ramp:.0f} s)")
    print(f"  worker RSS idle {idle_rss / MB:7.1f} MB, waiting {waiting_rss / MB:7.1f} MB")
    print(
        f"  added memory    {added:7.1f} MB = {added * 1024 / WAITING:6.1f} KB per experiment"
        f"  (target < 200 MB per 1,000: {added * 1000 / WAITING:.0f} MB)"
    )
    print(
        f"  worker CPU      idle {idle_cpu_rate * 100:5.1f} %, waiting {cpu_rate * 100:5.1f} %"
        f" = {cpu_rate * 1000 / WAITING:.3f} ms CPU per second per waiting experiment"
    )
    print(f"  duplicate tasks at the stand-in: {duplicates}  (target 0)")


# A request that keeps every CPU stage busy for a while: eight qubits of QASMBench's dnn_n8 on
# the noisy Guadalupe profile, a Pauli sum measured in three bases, ZNE at four scale factors
# with readout calibration, many shots and bootstrap samples.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "qasmbench"
STAGE_TARGET_SECONDS = 30.0
CPU_STAGES = ("preprocess", "prevalidate", "plan", "mitigate", "postprocess")


def heavy_request(index: int) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"heavy-{index}",
            "problem": {
                "kind": "qasm",
                "qasm": (CORPUS / "dnn_n8.qasm").read_text(),
                "observable": {
                    "kind": "pauli_sum",
                    "terms": [
                        {"pauli": "ZZZZZZZZ", "coefficient": 1.0},
                        {"pauli": "XXXXXXXX", "coefficient": 0.5},
                        {"pauli": "YYIIYYII", "coefficient": 0.25},
                    ],
                },
            },
            "execution": {
                "shots": 20_000,
                "seed": index,
                "backend": {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"},
            },
            "mitigation": {
                "zne": {"scale_factors": [1, 3, 5, 7]},
                "readout": True,
                "bootstrap_samples": 2000,
            },
        }
    )


async def running(handle: WorkflowHandle, activity: str) -> bool:
    description = await handle.describe()
    return any(
        pending.activity_type.name == activity
        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for pending in description.raw_description.pending_activities
    )


async def completed_after(handle: WorkflowHandle, activity: str, moment: datetime) -> float | None:
    names: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            names[event.event_id] = scheduled.activity_type.name
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            at = event.event_time.ToDatetime(tzinfo=UTC)
            if names.get(completed.scheduled_event_id) == activity and at > moment:
                return (at - moment).total_seconds()
    return None


async def kill_inside(stack: LocalStack, client: Client, activity: str, index: int) -> float:
    """Starts a heavy experiment, kills the compute worker while `activity` runs, restarts it
    and returns the seconds from the restart to the activity's completion."""
    compute = stack.start_worker("compute")
    handle = await start_heavy(client, stack, index)
    deadline = time.monotonic() + 600
    while not await running(handle, activity):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{activity} never ran")
        await asyncio.sleep(0.02)
    stack.kill_worker(compute)
    compute = stack.start_worker("compute")
    restarted = datetime.now(UTC)
    await asyncio.wait_for(handle.result(), 600)
    stack.kill_worker(compute)
    seconds = await completed_after(handle, activity, restarted)
    if seconds is None:
        raise RuntimeError(f"{activity} did not complete after the restart")
    return seconds


async def start_heavy(client: Client, stack: LocalStack, index: int) -> WorkflowHandle:
    return await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(
            request=heavy_request(index),
            polling=PollingPolicy(initial_seconds=0.25, ceiling_seconds=2.0),
            compute_task_queue=stack.compute_task_queue,
        ),
        id=f"bench-heavy-{index}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
    )


async def kill_inside_simulation(stack: LocalStack, client: Client, index: int) -> float:
    """Kills the orchestration worker (whose compute pool runs local simulations) while the
    experiment's Aer job simulates; seconds from the restart to the fetched result."""
    compute = stack.start_worker("compute")
    orchestration = stack.start_worker("orchestration")
    handle = await start_heavy(client, stack, index)
    deadline = time.monotonic() + 600
    while (await handle.describe()).search_attributes.get("QloopStage") != ["waiting"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the experiment never waited for its simulation")
        await asyncio.sleep(0.02)
    stack.kill_worker(orchestration)
    orchestration = stack.start_worker("orchestration")
    restarted = datetime.now(UTC)
    await asyncio.wait_for(handle.result(), 600)
    stack.kill_worker(orchestration)
    stack.kill_worker(compute)
    seconds = await completed_after(handle, "fetch_result", restarted)
    if seconds is None:
        raise RuntimeError("the result was not fetched after the restart")
    return seconds


async def measure_cpu_stage_kills(stack: LocalStack, client: Client) -> None:
    print("kill -9 of the worker inside each CPU stage, restarted at once")
    print(f"  {'stage':<22} {'restart to completion':>22}   target <= {STAGE_TARGET_SECONDS:.0f} s")
    worst = 0.0
    orchestration = stack.start_worker("orchestration")
    for index, stage in enumerate(CPU_STAGES):
        seconds = await kill_inside(stack, client, stage, index)
        worst = max(worst, seconds)
        print(f"  {stage:<22} {seconds:>20.1f} s")
    stack.kill_worker(orchestration)
    seconds = await kill_inside_simulation(stack, client, len(CPU_STAGES))
    worst = max(worst, seconds)
    print(f"  {'simulation (Aer job)':<22} {seconds:>20.1f} s")
    print(f"  longest {worst:.1f} s  (target <= {STAGE_TARGET_SECONDS:.0f} s)")


MEASUREMENTS = {
    "stages": measure_cpu_stage_kills,
    "resume": measure_resume,
    "scale": measure_scale,
}


async def main(parts: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="qloop-bench-restart-"))
    # Room in the budget for every waiting experiment: an account out of money would keep the
    # rest from ever reaching the provider's queue.
    policy = folder / "policies.yaml"
    policy.write_text("accounts:\n  default:\n    budget: {limit_usd: 100000, period: month}\n")
    stack = LocalStack(folder, task_queue=f"bench-{uuid.uuid4().hex[:8]}", policy_file=policy)
    stack.start()
    try:
        client = await Client.connect(stack.address, data_converter=pydantic_data_converter)
        for part in parts:
            await MEASUREMENTS[part](stack, client)
    finally:
        stack.stop()


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(MEASUREMENTS)
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        sys.exit(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    asyncio.run(main(chosen))
