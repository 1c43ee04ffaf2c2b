"""Waiting is cheap and survives restarts.

Deployment measured: one orchestration worker (workflows + provider calls) and one compute
worker (the CPU-heavy stages), as worker.py's roles describe; the orchestration worker is the
one that is killed and whose memory and CPU are counted.

1. Resume: experiments wait in the QPU stand-in's queue, polled every P seconds; the worker is
   killed with SIGKILL and restarted at once. Measured: time from the kill until every waiting
   experiment has polled again, as a ratio of P. Target: <= P + 2 s.
2. Scale: N experiments (default 1,000) waiting at once on one worker. Measured: the worker's
   resident memory and CPU while they wait, per waiting experiment, against the same worker
   idle. Targets: < 200 MB added for 1,000; duplicate tasks at the stand-in: 0.

Runs its own local stack (Temporal dev server + stand-in) on free ports in a temporary folder.
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

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

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


async def first_poll_after(handle: WorkflowHandle, moment: datetime) -> float | None:
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        at = event.event_time.ToDatetime(tzinfo=UTC)
        if at > moment:
            return (at - moment).total_seconds()
    return None


async def measure_resume(stack: LocalStack, client: Client) -> None:
    stack.set_faults(queue_delay_s=3600)
    compute = stack.start_worker("compute")
    worker = stack.start_worker("orchestration")
    polling = PollingPolicy(initial_seconds=POLL_SECONDS, ceiling_seconds=POLL_SECONDS)
    handles = await start(client, stack, RESUME_EXPERIMENTS, polling)
    await wait_until_queued(client, stack, RESUME_EXPERIMENTS, 180)
    await asyncio.sleep(POLL_SECONDS)  # let the polls spread over the interval
    killed_at = datetime.now(UTC)
    stack.kill_worker(worker)
    worker = stack.start_worker("orchestration")
    deadline = time.monotonic() + 10 * POLL_SECONDS + 60
    resumes: list[float | None] = [None] * len(handles)
    while time.monotonic() < deadline and None in resumes:
        await asyncio.sleep(1)
        resumes = list(await asyncio.gather(*(first_poll_after(h, killed_at) for h in handles)))
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


async def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="qloop-bench-restart-"))
    stack = LocalStack(folder, task_queue=f"bench-{uuid.uuid4().hex[:8]}")
    stack.start()
    try:
        client = await Client.connect(stack.address, data_converter=pydantic_data_converter)
        await measure_resume(stack, client)
        await measure_scale(stack, client)
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
