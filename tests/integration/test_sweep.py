"""Sweeps on the whole local stack: a real dev server with its database on disk, worker processes
that get killed, the QPU stand-in behind the unmodified Braket SDK, budget ledgers, and the CLI
in its own process. Submissions are counted where they land: Aer jobs in the stack's QLOOP_HOME,
quantum tasks at the stand-in (`GET /_admin/tasks`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle

from activities.governance.budget_calls import set_budget_limit
from schemas.budget import SetLimit
from schemas.pipeline import PollingPolicy
from schemas.variational import SweepInput, SweepProgress, SweepReport, SweepRequest
from tests.harness import QPU, LocalStack, record_history, run_qloop, running_stack

pytestmark = pytest.mark.integration

TRIANGLE = {
    "kind": "qaoa_maxcut",
    "graph": {
        "nodes": 3,
        "edges": [{"u": 0, "v": 1, "weight": 1.0}, {"u": 1, "v": 2, "weight": 1.0}],
    },
}
QPU_SHOTS = 10
# One task per point (one measurement basis, no ZNE, no readout calibration), Ankaa prices.
# A batch of two points (one circuit each) is one program-set task on the stand-in.
COST_PER_BATCH = 0.30 + 2 * QPU_SHOTS * 0.0009


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("sweeps"), "sweep", quiet=True) as local:
        yield local


def grid_sweep(name: str, gammas: int, **fields: object) -> SweepRequest:
    return SweepRequest.model_validate(
        {
            "name": name,
            "family": TRIANGLE,
            "points": {
                "grid": [{"start": 0.0, "stop": 1.0, "num": gammas}, {"values": [0.3, 0.6]}]
            },
            "evaluation": {"shots": 200, "seed": 3},
            **fields,
        }
    )


async def with_budget(client: Client, stack: LocalStack, account: str, usd: float) -> str:
    await set_budget_limit(client, stack.task_queue, account, SetLimit(limit_usd=usd, by="test"))
    return account


def on_qpu(name: str, account: str, seed: int, max_cost_usd: float | None = None) -> SweepRequest:
    """Six points on the stand-in's QPU; `seed` keeps tests from finding each other's points in
    the stack's fingerprint cache."""
    return grid_sweep(
        name,
        3,
        evaluation={
            "shots": QPU_SHOTS,
            "seed": seed,
            "backend": {"provider": "braket", "device": QPU},
        },
        batch_size=2,
        canary={"points": 2},
        policy={"account": account, "max_cost_usd": max_cost_usd},
    )


async def start(
    client: Client, stack: LocalStack, request: SweepRequest, polling: PollingPolicy
) -> WorkflowHandle:
    return await client.start_workflow(
        "SweepWorkflow",
        SweepInput(request=request, polling=polling),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=SweepReport,
    )


QUICK = PollingPolicy(initial_seconds=0.2, ceiling_seconds=0.5)


def prepared_points(stack: LocalStack, sweep_id: str) -> tuple[int, Counter[tuple[float, ...]]]:
    """The batches a sweep prepared for the simulator (each runs as one `simulate` activity),
    and how often each point went into one."""
    points: Counter[tuple[float, ...]] = Counter()
    batch_files = list((stack.qloop_home / "artifacts").glob(f"{sweep_id}.*/batch.json"))
    for batch_file in batch_files:
        batch = json.loads(batch_file.read_text())["batch"]
        template = next(spec for spec in batch["circuits"] if spec.get("parameters"))
        points.update(tuple(binding) for binding in template["bindings"])
    return len(batch_files), points


async def test_a_sweep_whose_worker_is_killed_resumes_without_rerunning_a_batch(
    stack: LocalStack, client: Client
) -> None:
    # 20 batches of 3 points, two at a time: the kill lands after the third batch, in whatever
    # the sweep does then (a poll or stage in progress costs its heartbeat timeout), with most
    # of the sweep still to run however loaded the machine is.
    request = grid_sweep("killed", 30, batch_size=3, canary=None)
    slow = PollingPolicy(initial_seconds=0.5, ceiling_seconds=0.5)
    handle = await start(client, stack, request, slow)
    deadline = asyncio.get_running_loop().time() + 120
    while (done := (await handle.query("progress", result_type=SweepProgress)).batches_done) < 3:
        assert asyncio.get_running_loop().time() < deadline, "the sweep did not get going"
        await asyncio.sleep(0.05)
    (worker,) = [w for w in stack.workers if w.poll() is None]
    stack.kill_worker(worker)
    assert done < 20, "the sweep ended before the worker was killed"
    stack.start_worker()
    report = await asyncio.wait_for(handle.result(), 300)

    assert report.status == "completed"
    assert (report.points_evaluated, report.points_cached, report.batches_done) == (60, 0, 20)
    batches, points = prepared_points(stack, handle.id)
    assert len(points) == 60
    # The batches in flight at the kill ran again under their own numbers: no point went into a
    # second batch (their simulations were redone, free and with the same seeds).
    assert set(points.values()) == {1}
    assert batches == 20


async def test_a_qpu_sweep_run_twice_pays_for_nothing_the_second_time(
    stack: LocalStack, client: Client
) -> None:
    request = on_qpu("qpu-twice", await with_budget(client, stack, "sweeps", 100.0), seed=1)
    tasks_before = len(stack.tasks())
    first_handle = await start(client, stack, request, QUICK)
    first = await asyncio.wait_for(first_handle.result(), 300)
    await record_history(client, first_handle.id, "sweep-qpu")
    assert first.status == "completed"
    assert first.canary is not None and first.canary.passed
    assert (first.points_evaluated, first.points_cached) == (6, 0)
    assert first.cost_usd == pytest.approx(3 * COST_PER_BATCH)
    tasks_after_first = len(stack.tasks())
    assert tasks_after_first - tasks_before == 3

    second = await asyncio.wait_for((await start(client, stack, request, QUICK)).result(), 300)
    assert second.status == "completed"
    assert (second.points_evaluated, second.points_cached, second.batches_done) == (0, 6, 0)
    assert second.cost_usd == 0.0
    assert len(stack.tasks()) == tasks_after_first
    assert second.best == first.best


async def test_a_scheduled_qpu_sweep_measures_again_after_a_recalibration_only(
    stack: LocalStack, client: Client, tmp_path: Path
) -> None:
    """Runs of one schedule (`qloop schedule trigger`): the second, in the same calibration
    epoch of the device, measures nothing; the third, after a recalibration, every point."""
    # Only the recalibration below moves the epoch, not the device's daily one at 00:00 UTC,
    # which a run near midnight would otherwise cross between two triggers.
    stack.admin("config", {"devices": {QPU: {"calibration_period_s": None}}})
    request = on_qpu("qpu-epochs", await with_budget(client, stack, "epochs", 100.0), seed=7)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(request.model_dump(mode="json", exclude_none=True)))
    name = f"epochs-{uuid.uuid4().hex[:6]}"
    env = stack.worker_env()
    # A yearly schedule: only the triggers below run it.
    code, _, stderr = await run_qloop(
        env, "schedule", "create", name, "--sweep", str(path), "--cron", "0 4 1 1 *"
    )
    assert code == 0, stderr

    async def run_and_count() -> tuple[SweepReport, int]:
        before = len(stack.tasks())
        code, out, stderr = await run_qloop(env, "schedule", "trigger", name)
        assert code == 0, stderr
        workflow_id = out.split("triggered ", 1)[1].split()[0]
        handle = client.get_workflow_handle(workflow_id, result_type=SweepReport)
        report = await asyncio.wait_for(handle.result(), 300)
        assert report.status == "completed"
        return report, len(stack.tasks()) - before

    # Counted, not assumed: with program sets a batch of points is one task.
    first, measured = await run_and_count()
    assert (first.points_evaluated, first.points_cached) == (6, 0) and measured > 0
    # Same calibration epoch: nothing is measured again.
    within, tasks = await run_and_count()
    assert (within.points_evaluated, within.points_cached, tasks) == (0, 6, 0)

    stack.admin("config", {"devices": {QPU: {"recalibrated_at": time.time()}}})
    after, tasks = await run_and_count()
    assert (after.points_evaluated, after.points_cached, tasks) == (6, 0, measured)
    assert after.cost_usd == pytest.approx(first.cost_usd) and first.cost_usd > 0
    code, _, stderr = await run_qloop(env, "schedule", "delete", name)
    assert code == 0, stderr

    # `qloop cache ls` sees this sweep's points under both epochs of the device.
    code, out, stderr = await run_qloop(stack.worker_env(), "cache", "ls", "--json")
    assert code == 0, stderr
    qpu_groups = [group for group in json.loads(out) if group["backend"] == f"braket/{QPU}"]
    assert len({group["calibration_epoch"] for group in qpu_groups}) >= 2
    assert qpu_groups[0]["entries"] == 6  # newest first: the new epoch holds this sweep's points


@pytest.mark.parametrize(
    ("limit", "refusal"),
    [
        # Both batches after the canary start together; either may be the one refused first.
        ("ledger", r"budget: batch batch-0000[12]/[0-9a-f]{12}: "),
        # Under a cost limit batches run one at a time, each checked against what is left.
        ("max_cost_usd", r"budget: batch batch-00001/[0-9a-f]{12} would cost \$0\.32, more "),
    ],
)
async def test_an_exhausted_budget_stops_the_sweep_with_its_partial_results(
    stack: LocalStack, client: Client, limit: str, refusal: str
) -> None:
    # Room for the 2-point canary, not for the batch after it.
    room = 1.5 * COST_PER_BATCH
    if limit == "ledger":
        request = on_qpu("ledger", await with_budget(client, stack, "tight", room), seed=2)
    else:
        account = await with_budget(client, stack, "capped", 100.0)
        request = on_qpu("capped", account, seed=3, max_cost_usd=room)
    tasks_before = len(stack.tasks())
    report = await asyncio.wait_for((await start(client, stack, request, QUICK)).result(), 300)
    assert report.status == "budget_exhausted"
    assert re.match(refusal, report.status_reason), report.status_reason
    assert (report.points_evaluated, report.points_pending, report.batches_done) == (2, 4, 1)
    assert report.cost_usd == pytest.approx(COST_PER_BATCH)
    assert len(stack.tasks()) - tasks_before == 1
    # The stack's artifact store, not this test's QLOOP_HOME: read the file the URI names.
    rows = Path(report.table_uri.removeprefix("file://")).read_text().splitlines()
    assert len(rows) == 1 + 6
    assert [row.split(",")[-1] for row in rows[1:]] == ["no", "no", "", "", "", ""]


async def test_qloop_sweep_wait_shows_progress_and_the_artifacts(
    stack: LocalStack, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.yaml"
    request = grid_sweep(
        "cli-sweep",
        3,
        canary={"points": 2, "max_deviation": 0.5},
        # A seed of its own: the stack's cache holds the other tests' points.
        evaluation={"shots": 200, "seed": 4},
    )
    path.write_text(yaml.safe_dump(request.model_dump(mode="json")))
    code, out, stderr = await run_qloop(
        stack.worker_env(), "sweep", str(path), "--wait", timeout=180
    )
    assert code == 0, stderr
    assert out.startswith("started cli-sweep-")
    assert re.search(r"^\[\s*\d+\.\ds\] (expanding|looking_up_cache|canary|running)", out, re.M)
    summary = out[out.index("Sweep cli-sweep-") :]
    assert ": completed" in summary.splitlines()[0]
    assert "6 evaluated, 0 from the cache" in summary
    assert "canary          passed (2 points)" in summary
    table = next(line for line in summary.splitlines() if line.lstrip().startswith("table"))
    plot = next(line for line in summary.splitlines() if line.lstrip().startswith("plot"))
    assert Path(table.split()[-1]).is_file() and table.endswith("results.csv")
    assert Path(plot.split()[-1]).is_file() and plot.endswith("results.png")
