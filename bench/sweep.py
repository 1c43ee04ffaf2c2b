"""What a durable sweep costs: 1,000 parameter points of a 4-qubit hardware-efficient ansatz (VQE
on a transverse-field Ising chain: two measurement bases, so two circuits per point) on ideal
Aer, measured three ways in one run:

(a) SweepWorkflow, cache empty: expand, cache lookup, canary, batches, results table and plot;
(b) the floor: the same circuits run directly — one template per basis, transpiled once, all
    points bound by Aer (`parameter_binds`) in one AerSimulator.run, values from the counts;
(c) one ExperimentWorkflow per point (the same bound circuit and Hamiltonian, ZNE and readout
    off): a sample of SAMPLE experiments started together, scaled to 1,000 points.

Starts its own Temporal dev server (the venv's `temporal` binary) and qloop's two-role deployment
as subprocesses (`worker.py --role orchestration` and `--role compute`), with an empty
QLOOP_HOME, so nothing is cached beforehand. (a) and (b) alternate RUNS times, each run with its
own evaluation seed (so the cache never answers), after an untimed warm-up; medians are
reported. (a) is measured in both configurations of shared state: the defaults (artifacts in a
folder, the cache in SQLite) and a fleet's (artifacts in S3, a moto server here; the cache in a
PostgreSQL server of its own, as tests/postgres_server.py starts it). Targets: (a) <= 1.3 x (b)
with the defaults, <= 1.5 x (b) with S3 and PostgreSQL; (a) >= 20 x faster than (c).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT)]
BENCH_HOME = tempfile.mkdtemp(prefix="qloop-bench-sweep-")
os.environ["QLOOP_HOME"] = BENCH_HOME

from qiskit import QuantumCircuit, qasm2, transpile  # noqa: E402
from qiskit_aer import AerSimulator  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from activities.experiment.preprocess import measurement_bases  # noqa: E402
from activities.numerics.families import family_circuit  # noqa: E402
from activities.numerics.observables import expectation  # noqa: E402
from activities.storage import artifact_store  # noqa: E402
from activities.storage.point_cache import cached_values, store_in_cache  # noqa: E402
from activities.variational.sweep_results import expand_points  # noqa: E402
from schemas.payload_encryption import data_converter  # noqa: E402
from schemas.pipeline import ExperimentInput  # noqa: E402
from schemas.report import ExperimentReport  # noqa: E402
from schemas.request import ExperimentRequest  # noqa: E402
from schemas.variational import PointValue, SweepInput, SweepReport, SweepRequest  # noqa: E402
from tests.conftest import qloop_search_attribute_keys, temporal_cli_path  # noqa: E402
from tests.postgres_server import running_postgres  # noqa: E402
from tests.s3_server import artifact_bucket_environment, running_moto_s3  # noqa: E402

RUNS = int(os.environ.get("QLOOP_BENCH_RUNS", "5"))
SAMPLE = int(os.environ.get("QLOOP_BENCH_SAMPLE", "30"))
SHOTS = int(os.environ.get("QLOOP_BENCH_SHOTS", "1000"))
POINTS = 1000
QUBITS = 4
# -sum Z_i Z_i+1 - 0.7 sum X_i: the ZZ terms are read in the Z basis, the X terms in the X basis.
HAMILTONIAN = {
    "kind": "pauli_sum",
    "terms": [
        *({"pauli": "I" * (2 - k) + "ZZ" + "I" * k, "coefficient": -1.0} for k in range(3)),
        *({"pauli": "I" * (3 - k) + "X" + "I" * k, "coefficient": -0.7} for k in range(4)),
    ],
}


def sweep_request(seed: int, points: int = POINTS) -> SweepRequest:
    """`points` of 1,000 or 8: a grid over the first three angles (10 x 10 x 10, or 2 x 2 x 2);
    the other five are held at 0.3."""
    side = round(points ** (1 / 3))
    swept = [{"start": 0.0, "stop": math.pi, "num": side} for _ in range(3)]
    fixed = [{"values": [0.3]} for _ in range(2 * QUBITS - 3)]
    return SweepRequest.model_validate(
        {
            "name": "bench-sweep",
            "family": {"kind": "vqe", "hamiltonian": HAMILTONIAN, "ansatz": {"reps": 1}},
            "points": {"grid": swept + fixed},
            "evaluation": {"shots": SHOTS, "seed": seed},
        }
    )


def compute_queue(task_queue: str) -> str:
    return f"{task_queue}.compute"


@contextlib.contextmanager
def environment(changes: dict[str, str]) -> Iterator[None]:
    """This process's environment with `changes`, restored after."""
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def workers(client: Client, task_queue: str) -> Iterator[None]:
    """The orchestration and compute workers, as `make worker` runs them with
    QLOOP_COMPUTE_TASK_QUEUE set, in this process's environment."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "QLOOP_TASK_QUEUE": task_queue,
        "QLOOP_COMPUTE_TASK_QUEUE": compute_queue(task_queue),
        "QLOOP_LOG_LEVEL": "WARNING",
    }
    processes = [
        subprocess.Popen([sys.executable, "worker.py", "--role", role], cwd=REPO_ROOT, env=env)
        for role in ("orchestration", "compute")
    ]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # A worker stuck in shutdown must not outlive the benchmark.
                process.kill()
                process.wait(timeout=30)


async def run_sweep(client: Client, task_queue: str, request: SweepRequest) -> SweepReport:
    handle = await client.start_workflow(
        "SweepWorkflow",
        SweepInput(request=request, compute_task_queue=compute_queue(task_queue)),
        id=f"bench-sweep-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=SweepReport,
    )
    return await handle.result()


def run_floor(request: SweepRequest) -> list[float]:
    """The same circuits with nothing but Qiskit and Aer: one template per measurement basis,
    transpiled once, every point bound by Aer itself (`parameter_binds`) in one run, and the
    value of every point from its counts."""
    built = family_circuit(request.family)
    points, _ = expand_points(request)
    bases = measurement_bases(built.observable)
    simulator = AerSimulator()
    templates: list[QuantumCircuit] = []
    for basis in bases:
        rotated = built.circuit.copy()
        for qubit, axis in enumerate(reversed(basis)):
            if axis == "X":
                rotated.h(qubit)
        rotated.measure_all()
        templates.append(transpile(rotated, simulator, optimization_level=1))
    binds = [
        {p: points[:, k].tolist() for k, p in enumerate(built.parameters) if p in t.parameters}
        for t in templates
    ]
    result = simulator.run(
        templates, shots=SHOTS, seed_simulator=request.evaluation.seed, parameter_binds=binds
    ).result()
    counts = result.get_counts()
    return [
        expectation(
            built.observable,
            {basis: counts[b * len(points) + p] for b, basis in enumerate(bases)},
        )
        for p in range(len(points))
    ]


def experiment_request(request: SweepRequest, point: list[float], seed: int) -> ExperimentRequest:
    built = family_circuit(request.family)
    return ExperimentRequest.model_validate(
        {
            "name": "bench-point",
            "problem": {
                "kind": "qasm",
                "qasm": qasm2.dumps(built.bind(point)),
                "observable": HAMILTONIAN,
            },
            "execution": {"shots": SHOTS, "seed": seed},
            "mitigation": {"zne": None, "readout": False},
        }
    )


async def run_experiments(
    client: Client, task_queue: str, requests: list[ExperimentRequest]
) -> list[ExperimentReport]:
    handles = [
        await client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=request, compute_task_queue=compute_queue(task_queue)),
            id=f"bench-point-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=ExperimentReport,
        )
        for request in requests
    ]
    return list(await asyncio.gather(*(handle.result() for handle in handles)))


async def history_length(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def timed(coroutine: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = await coroutine  # type: ignore[misc]
    return time.perf_counter() - started, result


def lookup_seconds() -> float:
    """Median time of looking up 1,000 stored points in the configured cache (target 0.5 s)."""
    values = [
        PointValue(
            parameters=[float(k)], fingerprint=uuid.uuid4().hex, value=0.0, std_error=0.0, raw=0.0
        )
        for k in range(POINTS)
    ]
    store_in_cache("bench-lookup", "batch-00000", values)
    fingerprints = [value.fingerprint for value in values]
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        found = cached_values(fingerprints)
        times.append(time.perf_counter() - started)
        assert len(found) == POINTS
    return statistics.median(times)


async def sweep_against_floor(
    client: Client, task_queue: str, first_seed: int
) -> tuple[float, float, SweepReport, list[float]]:
    """Medians of RUNS alternating sweeps and floors (after a warm-up), the last sweep's report
    and the last floor's values."""
    # Warm-up (and waiting for the workers to come up): imports, transpiler, simulator and the
    # first workflow tasks.
    await run_sweep(client, task_queue, sweep_request(seed=first_seed - 1, points=8))
    run_floor(sweep_request(seed=first_seed - 1, points=8))
    sweep_times, floor_times = [], []
    report: SweepReport | None = None
    floor_values: list[float] = []
    for run in range(RUNS):
        request = sweep_request(seed=first_seed + run)
        seconds, result = await timed(run_sweep(client, task_queue, request))
        assert isinstance(result, SweepReport)
        report = result
        sweep_times.append(seconds)
        started = time.perf_counter()
        floor_values = run_floor(request)
        floor_times.append(time.perf_counter() - started)
    assert report is not None
    return statistics.median(sweep_times), statistics.median(floor_times), report, floor_values


async def main() -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(),
        search_attributes=qloop_search_attribute_keys(),
        ui=False,
        dev_server_existing_path=temporal_cli_path(),
        dev_server_log_level="error",
    )
    client = env.client
    task_queue = f"bench-sweep-{uuid.uuid4().hex[:8]}"
    try:
        with workers(client, task_queue):
            sweep, floor, report, floor_values = await sweep_against_floor(
                client, task_queue, first_seed=100
            )
            table = artifact_values(report)
            lookup = lookup_seconds()
            events = await history_length(client, report.sweep_id)
            warm = sweep_request(seed=1, points=8)
            await run_experiments(client, task_queue, [experiment_request(warm, [0.1] * 8, 1)])
            request = sweep_request(seed=100 + RUNS - 1)
            points, _ = expand_points(request)
            sample = [
                experiment_request(request, [float(v) for v in points[k]], 200 + k)
                for k in range(SAMPLE)
            ]
            experiments_seconds, _ = await timed(run_experiments(client, task_queue, sample))
        with contextlib.ExitStack() as shared:
            s3 = shared.enter_context(running_moto_s3(Path(BENCH_HOME)))
            database = shared.enter_context(running_postgres())
            shared.enter_context(
                environment({**artifact_bucket_environment(s3), "QLOOP_DATABASE_URL": database})
            )
            shared_queue = f"{task_queue}-shared"
            with workers(client, shared_queue):
                (
                    shared_sweep,
                    shared_floor,
                    shared_report,
                    shared_floor_values,
                ) = await sweep_against_floor(client, shared_queue, first_seed=300)
                shared_table = artifact_values(shared_report)
                shared_lookup = lookup_seconds()
    finally:
        await env.shutdown()
        shutil.rmtree(BENCH_HOME)

    per_point = experiments_seconds / SAMPLE * POINTS
    print(
        f"{POINTS} points of a {QUBITS}-qubit ansatz ({request.family.num_parameters} parameters), "
        f"2 circuits per point, {SHOTS} shots, ideal Aer; medians of {RUNS} runs"
    )
    print(
        f"  (a) SweepWorkflow, defaults        {sweep:8.3f} s  ({report.batches_done} batches, "
        f"{events} history events)"
    )
    print(f"  (b) floor: one batched Aer run     {floor:8.3f} s")
    print(f"  (a) SweepWorkflow, S3 + PostgreSQL {shared_sweep:8.3f} s")
    print(f"  (b) floor, alternating with it     {shared_floor:8.3f} s")
    print(
        f"  (c) one experiment per point       {per_point:8.3f} s  (measured {SAMPLE} "
        f"concurrent experiments in {experiments_seconds:.3f} s, scaled x {POINTS / SAMPLE:.1f})"
    )
    print(f"ratio (a) / (b), defaults:         {sweep / floor:6.2f}  (target <= 1.30)")
    shared_ratio = shared_sweep / shared_floor
    print(f"ratio (a) / (b), S3 + PostgreSQL:  {shared_ratio:6.2f}  (target <= 1.50)")
    print(f"ratio (c) / (a):                   {per_point / sweep:6.1f}  (target >= 20)")
    print(
        f"1,000-point cache lookup: SQLite {lookup:.3f} s, PostgreSQL {shared_lookup:.3f} s "
        "(target <= 0.5)"
    )
    for name, values, floors in (
        ("defaults", table, floor_values),
        ("S3 + PostgreSQL", shared_table, shared_floor_values),
    ):
        differences = [abs(a - b) for a, b in zip(values, floors, strict=True)]
        print(
            f"same answers, {name}: median |sweep - floor| "
            f"{statistics.median(differences):.4f} (both sampled: shot noise only)"
        )


def artifact_values(report: SweepReport) -> list[float]:
    table = artifact_store.read_bytes(report.table_uri).decode()
    return [float(row["value"]) for row in csv.DictReader(io.StringIO(table))]


if __name__ == "__main__":
    asyncio.run(main())
