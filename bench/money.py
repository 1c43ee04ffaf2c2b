"""Every dollar accounted for, at scale: the money chaos mix of tests/money_mix.py with at least
200 workflows.

Measured, per account and in total:
- drift: the ledger's committed total minus what the QPU stand-in billed (Braket's rule:
  completed tasks, per task and per shot). Target: $0.00.
- unexplained tasks: tasks the stand-in billed for a workflow whose ledger entries do not add up
  to it, as `qloop budget reconcile` reports them. Target: 0.
- waiting cost in history: events and bytes per day of waiting of one experiment whose
  500-task job queues for 30 days (time-skipping server, tests/provider_doubles.py), against
  the same experiment whose job does not queue (the baseline measured in the same run).

Runs its own local stack on free ports in a temporary folder.
`python bench/money.py [EXPERIMENTS]` (default 200; loops and sweeps scale with it).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from adapters import registry
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from tests.conftest import start_time_skipping_server
from tests.harness import LocalStack
from tests.money_mix import MixPlan, run_money_mix, write_policy
from tests.provider_doubles import QueuedManyTaskProvider
from worker import WORKFLOWS, all_activities

DAYS = 30


async def chaos(experiments: int) -> None:
    plan = MixPlan(
        experiments=experiments,
        loops=max(2, experiments // 40),
        sweeps=max(2, experiments // 40),
        kills=max(10, experiments // 10),
        resets=max(3, experiments // 20),
    )
    with tempfile.TemporaryDirectory(prefix="qloop-bench-money-") as folder:
        stack = LocalStack(
            Path(folder),
            task_queue=f"money-{uuid.uuid4().hex[:8]}",
            policy_file=write_policy(Path(folder)),
        )
        stack.start()
        stack.start_worker()
        try:
            client = await Client.connect(stack.address, data_converter=pydantic_data_converter)
            outcome = await run_money_mix(client, stack, plan)
        finally:
            stack.stop()
    drift = sum((b.committed_usd - b.billed_usd for b in outcome.books), Decimal(0))
    unexplained = sum(b.reconcile_report.count("DIFFERENCE") for b in outcome.books)
    print(
        f"chaos mix: {outcome.workflows} workflows ({plan.experiments} experiments, "
        f"{plan.loops} loops, {plan.sweeps} sweeps), {plan.kills} worker kills "
        f"({outcome.kills_with_tasks_in_flight} with tasks in flight), {outcome.seconds} s; "
        f"closed: {outcome.closed}"
    )
    for books in outcome.books:
        print(
            f"  {books.account}: committed ${books.committed_usd:.6f}, billed "
            f"${books.billed_usd:.6f}, drift ${books.committed_usd - books.billed_usd:.6f}, "
            f"open reservations {books.open_reservations}, unfinished tasks "
            f"{books.unfinished_tasks}, reconcile exit {books.reconcile_exit}"
        )
    print(f"drift (target $0.00): ${drift:.6f}")
    print(f"tasks billed that no ledger entry explains (target 0): {unexplained}")


async def history_per_day() -> None:
    env = await start_time_skipping_server()
    try:
        queued = await waiting_history(env, timedelta(days=DAYS))
        baseline = await waiting_history(env, timedelta(0))
    finally:
        await env.shutdown()
    events = (queued[0] - baseline[0]) / DAYS
    size = (queued[1] - baseline[1]) / DAYS
    print(
        f"history of an experiment whose 500-task job queues {DAYS} days: {queued[0]} events, "
        f"{queued[1]} bytes; without a queue: {baseline[0]} events, {baseline[1]} bytes; "
        f"per day of waiting: {events:.1f} events, {size:.0f} bytes "
        f"(ratio to the whole baseline history: {events / baseline[0]:.3f} / "
        f"{size / baseline[1]:.3f})"
    )


async def waiting_history(env: WorkflowEnvironment, queue_time: timedelta) -> tuple[int, int]:
    registry._CACHE[BackendChoice(provider="aer", device="ideal")] = QueuedManyTaskProvider(
        500, queue_time
    )
    request = ExperimentRequest.model_validate(
        {
            "name": "bench-waiting",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {"shots": 1000, "seed": 3},
            "mitigation": {"zne": None, "readout": False},
            "policy": {"max_queue_wait": "P40D"},
        }
    )
    task_queue = f"bench-{uuid.uuid4()}"
    async with Worker(
        env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=all_activities()
    ):
        handle = await env.client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(
                request=request, polling=PollingPolicy(initial_seconds=1, ceiling_seconds=300)
            ),
            id=f"bench-waiting-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=ExperimentReport,
        )
        await handle.result()
    events = [event async for event in handle.fetch_history_events()]
    return len(events), sum(event.ByteSize() for event in events)


async def main() -> None:
    experiments = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    await history_per_day()
    await chaos(experiments)


if __name__ == "__main__":
    asyncio.run(main())
