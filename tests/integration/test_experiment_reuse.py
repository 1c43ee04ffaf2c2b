"""`execution.reuse: within_calibration` on the whole local stack: a real dev server, a worker
process, the QPU stand-in behind the unmodified Braket SDK and the budget ledger. Tasks are
counted where they land (`GET /_admin/tasks`) and money where it is billed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from temporalio.client import Client

from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.harness import QPU, LocalStack, record_history, run_qloop, running_stack

pytestmark = pytest.mark.integration

POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
ACCOUNT = "reuse"
POLICIES = {"accounts": {ACCOUNT: {"budget": {"limit_usd": 100}}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(
        tmp_path_factory.mktemp("reuse"), "reuse", policies=POLICIES, quiet=True
    ) as local:
        yield local


def ghz_on_qpu(reuse: str) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "reuse-ghz",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {
                "shots": 10,
                "seed": 11,
                "backend": {"provider": "braket", "device": QPU},
                "reuse": reuse,
            },
            "mitigation": {"zne": None, "readout": False},
            "policy": {"account": ACCOUNT},
        }
    )


async def run(
    client: Client, stack: LocalStack, request: ExperimentRequest, record: str | None = None
) -> tuple[ExperimentReport, int, Decimal]:
    """The report, the stand-in tasks the experiment created and what the stand-in billed."""
    before = len(stack.tasks())
    handle = await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )
    report = await asyncio.wait_for(handle.result(), 300)
    if record is not None:
        await record_history(client, handle.id, record)
    assert report.status == "completed", report.status_reason
    return report, len(stack.tasks()) - before, stack.billed_usd(workflow_id=handle.id)


async def test_an_experiment_reuses_its_result_within_a_calibration_and_not_after(
    stack: LocalStack, client: Client
) -> None:
    # Only the recalibration below moves the epoch, not the device's daily one at 00:00 UTC,
    # which a run near midnight would otherwise cross between two steps.
    stack.admin("config", {"devices": {QPU: {"calibration_period_s": None}}})
    request = ghz_on_qpu("within_calibration")
    first, tasks, billed = await run(client, stack, request, "experiment-reuse-paid")
    assert first.reused is None and tasks >= 1 and billed > 0
    assert first.cost.actual_usd == pytest.approx(float(billed)) and first.value is not None

    # Same calibration epoch: nothing is submitted or paid, and the answer is the first one's.
    second, tasks, billed = await run(client, stack, request, "experiment-reuse-reused")
    assert (tasks, billed) == (0, 0)
    assert (second.cost.actual_usd, second.cost.estimated_usd) == (0.0, 0.0)
    assert second.reused is not None and second.reused.experiment_id == first.experiment_id
    assert first.provenance is not None and second.provenance is not None
    assert second.reused.job.job_id == first.provenance.job_id == second.provenance.job_id
    assert second.reused.paid_usd == pytest.approx(first.cost.actual_usd)
    epoch = second.reused.calibration_epoch
    assert epoch is not None and epoch in second.produced_by_reason
    assert f"reused the counts of experiment {first.experiment_id}" in second.produced_by_reason
    assert second.value == first.value and second.raw == first.raw

    # Without reuse the same request runs and pays.
    _, tasks, billed = await run(client, stack, ghz_on_qpu("never"))
    assert tasks >= 1 and billed > 0

    # The device recalibrates: the next run is measured and paid anew, and stored for the next.
    stack.admin("config", {"devices": {QPU: {"recalibrated_at": time.time()}}})
    third, tasks, billed = await run(client, stack, request)
    assert third.reused is None and tasks >= 1 and billed > 0
    assert third.cost.actual_usd == pytest.approx(first.cost.actual_usd)
    fourth, tasks, billed = await run(client, stack, request)
    assert (tasks, billed) == (0, 0)
    assert fourth.reused is not None and fourth.reused.experiment_id == third.experiment_id
    assert fourth.reused.calibration_epoch not in (None, epoch)

    # `qloop cache ls` lists both epochs' results; `purge` forgets them.
    env = stack.worker_env()
    code, out, stderr = await run_qloop(env, "cache", "ls", "--json")
    assert code == 0, stderr
    results = [g for g in json.loads(out) if g["kind"] == "experiment results"]
    assert {g["backend"] for g in results} == {f"braket/{QPU}"}
    assert {g["calibration_epoch"] for g in results} == {epoch, fourth.reused.calibration_epoch}
    code, out, stderr = await run_qloop(
        env, "cache", "purge", "--backend", f"braket/{QPU}", "--yes", "--json"
    )
    assert (code, json.loads(out)) == (0, {"forgotten": 2}), stderr
    fifth, tasks, billed = await run(client, stack, request)
    assert fifth.reused is None and tasks >= 1 and billed > 0
