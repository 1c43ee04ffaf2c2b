"""What qloop's orchestration costs: the full pipeline (ZNE off, ideal Aer, a 2-qubit circuit)
from start to report, against
- the engine's floor: a bare workflow running the same number of no-op activities on the
  same server and worker, and
- calling the same stage functions directly in one process.

Runs against TEMPORAL_ADDRESS (the local stack: `make dev`), with its own in-process worker.
Target: qloop <= 1.5x the engine floor.
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

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from floor_workflow import FloorWorkflow, noop  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from activities.experiment.mitigate import mitigate  # noqa: E402
from activities.experiment.plan import plan  # noqa: E402
from activities.experiment.postprocess import postprocess  # noqa: E402
from activities.experiment.preprocess import preprocess  # noqa: E402
from activities.experiment.prevalidate import prevalidate  # noqa: E402
from activities.providers.provider_calls import check_job, fetch_result, submit  # noqa: E402
from schemas.execution import JobState  # noqa: E402
from schemas.pipeline import (  # noqa: E402
    ExperimentInput,
    FetchInput,
    JobInput,
    MitigateInput,
    PlanInput,
    PostprocessInput,
    PreprocessInput,
    PrevalidateInput,
    SubmitInput,
)
from schemas.report import ExperimentReport  # noqa: E402
from schemas.request import ExperimentRequest  # noqa: E402
from worker import WORKFLOWS, all_activities, connect  # noqa: E402

RUNS = int(os.environ.get("QLOOP_BENCH_RUNS", "15"))
BELL = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\ncx q[0],q[1];\n'
REQUEST = ExperimentRequest.model_validate(
    {
        "name": "bench-overhead",
        "problem": {
            "kind": "qasm",
            "qasm": BELL,
            "observable": {"kind": "pauli_sum", "terms": [{"pauli": "ZZ"}]},
        },
        "execution": {"shots": 1000, "seed": 1},
        "mitigation": {"zne": None, "readout": False},
    }
)


def run_directly(experiment_id: str) -> ExperimentReport:
    request = REQUEST
    prepared = preprocess(PreprocessInput(experiment_id=experiment_id, request=request))
    prevalidation = prevalidate(
        PrevalidateInput(experiment_id=experiment_id, request=request, prepared=prepared)
    )
    execution_plan = plan(
        PlanInput(experiment_id=experiment_id, request=request, prepared=prepared)
    )
    backend = request.execution.backend
    job = submit(
        SubmitInput(
            backend=backend,
            batch_uri=execution_plan.batch_uri,
            shots=request.execution.shots,
            seed=request.execution.seed,
            client_token=experiment_id,
        )
    )
    while check_job(JobInput(backend=backend, job=job)).state != JobState.DONE:
        time.sleep(0.001)
    fetched = fetch_result(FetchInput(experiment_id=experiment_id, backend=backend, job=job))
    mitigation = mitigate(
        MitigateInput(
            experiment_id=experiment_id,
            request=request,
            prepared=prepared,
            plan=execution_plan,
            counts_uri=fetched.counts_uri,
        )
    )
    return postprocess(
        PostprocessInput(
            experiment_id=experiment_id,
            request=request,
            prepared=prepared,
            prevalidation=prevalidation,
            plan=execution_plan,
            job=job,
            fetched=fetched,
            mitigation=mitigation,
            timings_seconds={},
        )
    )


def median_seconds(samples: list[float]) -> float:
    return statistics.median(samples)


async def main() -> None:
    os.environ.setdefault("QLOOP_HOME", tempfile.mkdtemp(prefix="qloop-bench-"))
    client = await connect()
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, FloorWorkflow],
        activities=[*all_activities(), noop],
    ):

        async def qloop_once() -> int:
            handle = await client.start_workflow(
                "ExperimentWorkflow",
                ExperimentInput(request=REQUEST),
                id=f"bench-qloop-{uuid.uuid4().hex}",
                task_queue=task_queue,
                result_type=ExperimentReport,
            )
            await handle.result()
            history = await handle.fetch_history()
            return sum(
                1 for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
            )

        async def floor_once(activities: int) -> None:
            await client.execute_workflow(
                FloorWorkflow.run,
                activities,
                id=f"bench-floor-{uuid.uuid4().hex}",
                task_queue=task_queue,
            )

        activities = await qloop_once()  # warm-up: imports, transpiler and simulator caches
        await floor_once(activities)
        run_directly(f"bench-direct-{uuid.uuid4().hex}")

        qloop_times, floor_times, direct_times = [], [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            await qloop_once()
            qloop_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            await floor_once(activities)
            floor_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            run_directly(f"bench-direct-{uuid.uuid4().hex}")
            direct_times.append(time.perf_counter() - started)

    qloop, floor, direct = (median_seconds(t) for t in (qloop_times, floor_times, direct_times))
    print(f"runs: {RUNS} each, {activities} activities per experiment (median seconds)")
    print(f"  qloop pipeline           {qloop:8.3f} s")
    print(f"  engine floor (no-ops)    {floor:8.3f} s")
    print(f"  same functions directly  {direct:8.3f} s")
    print(f"ratio qloop / engine floor : {qloop / floor:5.2f}  (target <= 1.50)")
    print(f"ratio qloop / direct calls : {qloop / direct:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
