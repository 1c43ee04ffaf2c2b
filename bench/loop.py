"""What a durable loop iteration costs: LoopWorkflow on VQE H2 (examples/vqe_h2.yaml, ideal
Aer) against the same SPSA iterations run in one process, calling the same functions directly
(prepare_batch, the Aer adapter's submit / status / fetch, score_batch; no Temporal). Both runs
use the same seeds, and the bench checks that they follow the same trajectory, so they time
exactly the same evaluations.

Runs against TEMPORAL_ADDRESS (the local stack: `make dev`), with its own in-process worker.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.worker import Worker

from activities.providers.provider_calls import check_job, fetch_result, submit
from activities.variational.batch_preparation import prepare_batch
from activities.variational.batch_scoring import score_batch
from activities.variational.loop_trajectory import read_trajectory
from schemas.execution import JobState
from schemas.loop import (
    LoopInput,
    TrajectoryEntry,
    TrajectoryView,
    default_initial_point,
    load_loop_request,
)
from schemas.pipeline import FetchInput, JobInput, SubmitInput
from schemas.variational import BatchInput, LoopReport, LoopRequest, ScoreInput
from worker import WORKFLOWS, all_activities, connect
from workflows import spsa
from workflows.loop import iteration_seed

ITERATIONS = int(os.environ.get("QLOOP_BENCH_LOOP_ITERATIONS", "30"))
RUNS = int(os.environ.get("QLOOP_BENCH_RUNS", "3"))
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vqe_h2.yaml"


def bench_request() -> LoopRequest:
    request = load_loop_request(EXAMPLE)
    return request.model_copy(
        update={
            "name": "bench-loop",
            "limits": request.limits.model_copy(update={"max_iterations": ITERATIONS}),
            # No convergence stop: both runs do exactly ITERATIONS iterations.
            "optimizer": request.optimizer.model_copy(update={"patience": ITERATIONS + 1}),
        }
    )


def evaluate_directly(
    request: LoopRequest, owner: str, points: list[list[float]], k: int
) -> list[float]:
    """One iteration's batch through the same functions the activities wrap."""
    evaluation = request.evaluation.model_copy(
        update={"seed": iteration_seed(request.evaluation.seed, k)}
    )
    batch = BatchInput(
        owner_id=owner,
        label=f"iter-{k:04d}",
        family=request.family,
        points=points,
        evaluation=evaluation,
    )
    prepared = prepare_batch(batch)
    backend = evaluation.backend
    job = submit(
        SubmitInput(
            backend=backend,
            batch_uri=prepared.batch_uri,
            shots=evaluation.shots,
            seed=evaluation.seed,
            client_token=f"{owner}-{k}",
        )
    )
    while check_job(JobInput(backend=backend, job=job)).state != JobState.DONE:
        time.sleep(0.001)
    fetched = fetch_result(
        FetchInput(experiment_id=batch.artifact_folder, backend=backend, job=job)
    )
    scored = score_batch(ScoreInput(batch=batch, prepared=prepared, counts_uri=fetched.counts_uri))
    return [value.value for value in scored.values]


def loop_directly(request: LoopRequest) -> list[TrajectoryEntry]:
    owner = f"bench-direct-{uuid.uuid4().hex[:8]}"
    state = spsa.start(request.optimizer, request.goal, default_initial_point(request))
    entries = []
    for k in range(ITERATIONS):
        values = evaluate_directly(request, owner, spsa.ask(state), k)
        told = spsa.tell(state, values)
        assert told.best_value is not None
        entries.append(
            TrajectoryEntry(
                iteration=k,
                point=state.point,
                values=values,
                best_value=told.best_value,
                cost_usd=0.0,
            )
        )
        state = told
    return entries


async def main() -> None:
    os.environ.setdefault("QLOOP_HOME", tempfile.mkdtemp(prefix="qloop-bench-"))
    request = bench_request()
    client = await connect()
    task_queue = f"bench-loop-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=task_queue, workflows=WORKFLOWS, activities=all_activities()
    ):

        async def through_temporal() -> tuple[float, list[TrajectoryEntry]]:
            started = time.perf_counter()
            handle = await client.start_workflow(
                "LoopWorkflow",
                LoopInput(request=request),
                id=f"bench-loop-{uuid.uuid4().hex}",
                task_queue=task_queue,
                result_type=LoopReport,
            )
            report = await handle.result()
            elapsed = time.perf_counter() - started
            view = await handle.query("trajectory", result_type=TrajectoryView)
            assert report.iterations == ITERATIONS
            return elapsed, read_trajectory(view)

        await through_temporal()  # warm-up: imports, transpiler and simulator caches
        loop_directly(request)

        temporal_times, direct_times = [], []
        for _ in range(RUNS):
            elapsed, trajectory = await through_temporal()
            temporal_times.append(elapsed)
            started = time.perf_counter()
            direct = loop_directly(request)
            direct_times.append(time.perf_counter() - started)
            if [(e.point, e.values) for e in trajectory] != [(e.point, e.values) for e in direct]:
                raise SystemExit("the two loops diverged: they did not time the same evaluations")

    # Per iteration: the workflow's whole run (baseline, final evaluation and trajectory writing
    # included) divided by its iterations, against the bare iterations.
    temporal = statistics.median(temporal_times) / ITERATIONS
    direct = statistics.median(direct_times) / ITERATIONS
    print(
        f"VQE H2 on ideal Aer, {request.evaluation.shots} shots, 2 points per iteration; "
        f"{ITERATIONS} iterations x {RUNS} runs (median)"
    )
    print(f"  LoopWorkflow (Temporal)      {1000 * temporal:8.1f} ms per iteration")
    print(f"  same evaluations directly    {1000 * direct:8.1f} ms per iteration")
    print(f"  orchestration per iteration  {1000 * (temporal - direct):8.1f} ms")
    print(f"ratio LoopWorkflow / direct : {temporal / direct:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
