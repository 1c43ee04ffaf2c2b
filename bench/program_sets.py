"""What program sets save: tasks created, per-task fees and wall time on the QPU stand-in, with
the device offering program sets (its default: up to 100 executables and 200,000 shots a task)
and offering none (one task per circuit), measured in the same run:

- examples/qpu_standin.yaml: GHZ on 3 qubits, ZNE at 1, 3, 5 and readout calibration, 5 circuits
  of 1,000 shots;
- QAOA with several measurement bases: a p = 1 QAOA state of a 4-node ring whose observable
  has ZZ and X terms (two bases), ZNE at 1, 3, 5 and readout calibration: 8 circuits;
- a sweep of 1,000 points of VQE H2 (hardware-efficient ansatz, ZZ/Z and XX terms: two bases, so
  2,000 circuits of 100 shots), 50 points a batch.

Runs its own local stack (dev server, stand-in, one worker process) on free ports in a temporary
folder. The stand-in has no injected queue delay and keeps each task on the device 0.1 s beyond
running its circuits (`run_time_s`, its per-task overhead; 0.5 s in temporal-dev/qpu-standin.yaml,
and seconds to minutes on a real QPU), so the wall time is qloop's, the stand-in's simulation and
that overhead; the example runs once untimed first. Target: one task per program set the
device's limits allow (5 -> 1 for the example; 2,000 circuits -> 20 for the sweep).

`python bench/program_sets.py`
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from schemas.pipeline import ExperimentInput, PollingPolicy  # noqa: E402
from schemas.report import ExperimentReport  # noqa: E402
from schemas.request import ExperimentRequest  # noqa: E402
from schemas.variational import SweepInput, SweepReport, SweepRequest  # noqa: E402
from tests.harness import QPU, LocalStack  # noqa: E402

PROGRAM_SETS = {"max_executables": 100, "max_total_shots": 200_000}
PER_TASK = Decimal("0.30")
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
POLICY = {"accounts": {"default": {"budget": {"limit_usd": 10_000, "period": "month"}}}}
RING = [(0, 1), (1, 2), (2, 3), (3, 0)]
RUN_TIME_S = 0.1


@dataclass(frozen=True)
class Measured:
    tasks: int
    billed: Decimal
    seconds: float

    @property
    def fees(self) -> Decimal:
        return PER_TASK * self.tasks


def qaoa_with_two_bases() -> ExperimentRequest:
    gamma, beta = 0.7, 0.35
    lines = ['OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[4];\ncreg c[4];']
    lines += [f"h q[{i}];" for i in range(4)]
    for u, v in RING:
        lines += [f"cx q[{u}],q[{v}];", f"rz({2 * gamma}) q[{v}];", f"cx q[{u}],q[{v}];"]
    lines += [f"rx({2 * beta}) q[{i}];" for i in range(4)]
    zz = ["".join("Z" if q in edge else "I" for q in reversed(range(4))) for edge in RING]
    x = ["".join("X" if q == i else "I" for q in reversed(range(4))) for i in range(4)]
    terms = [{"pauli": p, "coefficient": 0.5} for p in zz] + [{"pauli": p} for p in x]
    return ExperimentRequest.model_validate(
        {
            "name": "qaoa-two-bases",
            "problem": {
                "kind": "qasm",
                "qasm": "\n".join(lines) + "\n",
                "observable": {"kind": "pauli_sum", "terms": terms},
            },
            "execution": {
                "shots": 1000,
                "backend": {"provider": "braket", "device": QPU},
            },
            "mitigation": {"zne": {"scale_factors": [1, 3, 5]}, "readout": True},
        }
    )


def vqe_sweep(seed: int) -> SweepRequest:
    family = yaml.safe_load((REPO_ROOT / "examples" / "vqe_h2.yaml").read_text())["family"]
    axis = {"start": -1.5, "stop": 1.5, "num": 10}
    return SweepRequest.model_validate(
        {
            "name": "vqe-h2-1000",
            "family": family,
            "points": {"grid": [axis, axis, axis, {"values": [0.0]}]},
            "evaluation": {
                "backend": {"provider": "braket", "device": QPU},
                "shots": 100,
                "seed": seed,
            },
            "batch_size": 50,
            "canary": {"points": 4, "max_deviation": 2.0},
        }
    )


async def measured(stack: LocalStack, run: Callable[[], Awaitable[None]]) -> Measured:
    before = {task["quantumTaskArn"] for task in stack.tasks()}
    started = time.perf_counter()
    await run()
    seconds = time.perf_counter() - started
    mine = [task for task in stack.tasks() if task["quantumTaskArn"] not in before]
    billed = sum((Decimal(task["billedUsd"]) for task in mine), Decimal(0))
    return Measured(tasks=len(mine), billed=billed, seconds=seconds)


async def experiment(client: Client, stack: LocalStack, request: ExperimentRequest) -> None:
    report: ExperimentReport = await client.execute_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )
    if report.produced_by != "hardware":
        raise RuntimeError(f"{request.name} did not run on the QPU: {report.produced_by_reason}")


async def sweep(client: Client, stack: LocalStack, request: SweepRequest) -> None:
    report: SweepReport = await client.execute_workflow(
        "SweepWorkflow",
        SweepInput(request=request, polling=POLLING),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=SweepReport,
    )
    if report.status != "completed" or report.points_evaluated != 1000:
        raise RuntimeError(f"sweep {report.status}: {report.status_reason}")


def row(name: str, circuits: int, with_sets: Measured, without: Measured) -> str:
    return (
        f"| {name} | {circuits} | {without.tasks} -> {with_sets.tasks} | "
        f"${without.fees:.2f} -> ${with_sets.fees:.2f} | ${without.billed:.2f} -> "
        f"${with_sets.billed:.2f} | {without.seconds:.1f} -> {with_sets.seconds:.1f} "
        f"({without.seconds / with_sets.seconds:.1f}x) |"
    )


async def main() -> None:
    example = ExperimentRequest.model_validate(
        yaml.safe_load((REPO_ROOT / "examples" / "qpu_standin.yaml").read_text())
    )
    with tempfile.TemporaryDirectory(prefix="qloop-bench-program-sets-") as folder:
        policy = Path(folder) / "policies.yaml"
        policy.write_text(yaml.safe_dump(POLICY))
        stack = LocalStack(
            Path(folder), task_queue=f"sets-{uuid.uuid4().hex[:8]}", policy_file=policy
        )
        stack.start()
        stack.start_worker()
        try:
            stack.set_faults(queue_delay_s=0.0, run_time_s=RUN_TIME_S)
            client = await Client.connect(stack.address, data_converter=pydantic_data_converter)
            runs: dict[str, tuple[int, Callable[[int], Callable[[], Awaitable[None]]]]] = {
                "examples/qpu_standin.yaml": (
                    5,
                    lambda _: lambda: experiment(client, stack, example),
                ),
                "QAOA, two measurement bases": (
                    8,
                    lambda _: lambda: experiment(client, stack, qaoa_with_two_bases()),
                ),
                "sweep, 1,000 points (VQE H2)": (
                    2000,
                    lambda seed: lambda: sweep(client, stack, vqe_sweep(seed)),
                ),
            }
            # Untimed: the worker's child processes and the stand-in load their libraries.
            await experiment(client, stack, example)
            print("| workload | circuits | tasks | per-task fees | billed | wall time, s |")
            print("| --- | --- | --- | --- | --- | --- |")
            for seed, (name, (circuits, workload)) in enumerate(runs.items()):
                stack.admin("config", {"devices": {QPU: {"program_sets": PROGRAM_SETS}}})
                with_sets = await measured(stack, workload(2 * seed))
                stack.admin("config", {"devices": {QPU: {"program_sets": None}}})
                without = await measured(stack, workload(2 * seed + 1))
                print(row(name, circuits, with_sets, without), flush=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
