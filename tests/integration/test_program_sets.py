"""Program sets end to end: examples/qpu_standin.yaml (GHZ with ZNE at three scale factors and
readout calibration: five circuits) on the whole local stack, a real dev server and worker
process, with the stand-in QPU offering program sets and with it offering none.

With program sets the experiment is one task at one per-task fee; without, five. Both answers
agree within shot noise, and each report's cost is what the stand-in billed, to the cent.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import yaml
from temporalio.client import Client

from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.harness import QPU, REPO_ROOT, LocalStack, running_stack

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "qpu_standin.yaml"
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
STANDIN_PROGRAM_SETS = {"max_executables": 100, "max_total_shots": 200_000}
CIRCUITS = 5
SHOTS = 1000
PER_TASK, PER_SHOT = Decimal("0.30"), Decimal("0.0009")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("program-sets"), "sets", quiet=True) as local:
        yield local


async def run_example(client: Client, stack: LocalStack) -> ExperimentReport:
    request = ExperimentRequest.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    handle = await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"sets-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )
    return await asyncio.wait_for(handle.result(), 300)


def tasks_of(stack: LocalStack, report: ExperimentReport) -> list[dict[str, object]]:
    return [t for t in stack.tasks() if t["tags"].get("qloop:workflow-id") == report.experiment_id]


async def test_the_example_is_one_task_with_program_sets_and_five_without(
    stack: LocalStack, client: Client
) -> None:
    stack.admin("config", {"devices": {QPU: {"program_sets": STANDIN_PROGRAM_SETS}}})
    in_one = await run_example(client, stack)
    stack.admin("config", {"devices": {QPU: {"program_sets": None}}})
    try:
        one_each = await run_example(client, stack)
    finally:
        stack.admin("config", {"devices": {QPU: {"program_sets": STANDIN_PROGRAM_SETS}}})

    for report, tasks in ((in_one, 1), (one_each, CIRCUITS)):
        assert report.status == "completed" and report.produced_by == "hardware"
        found = tasks_of(stack, report)
        assert len(found) == tasks and {t["status"] for t in found} == {"COMPLETED"}
        billed = stack.billed_usd(workflow_id=report.experiment_id)
        assert billed == PER_TASK * tasks + PER_SHOT * SHOTS * CIRCUITS
        assert Decimal(str(report.cost.actual_usd)) == billed
        assert Decimal(str(report.cost.estimated_usd)) == billed
    # $4.80 instead of $6.00: four per-task fees saved.
    assert (
        stack.billed_usd(workflow_id=one_each.experiment_id)
        - stack.billed_usd(workflow_id=in_one.experiment_id)
        == 4 * PER_TASK
    )

    # The same experiment: its answers differ by shot noise alone (the reports' 95% intervals
    # give each one's standard error).
    for estimate in ("raw", "value"):
        first, second = getattr(in_one, estimate), getattr(one_each, estimate)
        noise = math.hypot(*((e.ci_high - e.ci_low) / 2 / 1.96 for e in (first, second)))
        assert abs(first.value - second.value) < 5 * noise, (estimate, first, second)
