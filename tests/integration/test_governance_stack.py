"""Governance on the whole local stack: a real dev server, a real worker process, the QPU
stand-in behind the unmodified Braket SDK, budget ledgers and circuit breakers as entity
workflows. Nothing here is simulated but AWS itself.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.governance.budget_calls import set_budget_limit, show_budget
from schemas.budget import SetLimit
from schemas.control import OpsCommand, RerouteCommand
from schemas.health import HealthView, health_workflow_id
from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from tests.harness import QPU, LocalStack, record_history, run_qloop, running_stack

pytestmark = pytest.mark.integration

POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
SHOTS = 100
# One circuit (GHZ population, no ZNE, no readout calibration) at the stand-in's Ankaa prices.
COST_PER_EXPERIMENT = 0.30 + SHOTS * 0.0009
QPU_NAME = f"braket/{QPU}"
IDEAL = BackendChoice(provider="aer", device="ideal")
NOISY = BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe")
POLICIES = {
    "accounts": {
        "default": {"budget": {"limit_usd": 1000}},
        "reviewed": {
            "budget": {"limit_usd": 1000},
            "approval": {"required_for_tiers": ["qpu"], "approvers": ["alice"]},
        },
        **{f"race-{run}": {"on_budget_exhausted": "refuse"} for run in range(3)},
        "patient": {"on_budget_exhausted": "wait"},
    }
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    breaker = {"QLOOP_BREAKER_FAILURES": "2", "QLOOP_BREAKER_OPEN_SECONDS": "4"}
    folder = tmp_path_factory.mktemp("governance")
    with running_stack(folder, "gov", policies=POLICIES, worker_env=breaker) as local:
        yield local


def ghz(account: str, backend: BackendChoice, **execution: object) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"gov-{account}",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {"shots": SHOTS, "seed": 3, "backend": backend.model_dump(), **execution},
            "mitigation": {"zne": None, "readout": False},
            "policy": {"account": account},
        }
    )


def on_qpu(account: str = "default", **execution: object) -> ExperimentRequest:
    return ghz(account, BackendChoice(provider="braket", device=QPU), **execution)


async def start(client: Client, stack: LocalStack, request: ExperimentRequest) -> WorkflowHandle:
    return await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )


async def qloop(stack: LocalStack, *args: str) -> tuple[int, str, str]:
    """The CLI as a user runs it, in its own process."""
    return await run_qloop(stack.worker_env(), *args, timeout=120)


async def temporal_cli(stack: LocalStack, *args: str) -> str:
    """Temporal's own CLI, as ops tooling would use it."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.prefix) / "bin" / "temporal"),
        *args,
        "--address",
        stack.address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def progress_when(
    handle: WorkflowHandle, condition: Callable[[Progress], bool], timeout: float = 120
) -> Progress:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        progress = await handle.query("progress", result_type=Progress)
        if condition(progress):
            return progress
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last progress {progress}")
        await asyncio.sleep(0.2)


def task_of(stack: LocalStack, job_id: str) -> dict:
    (task,) = [task for task in stack.tasks() if task["quantumTaskArn"] == job_id]
    return task


@pytest.mark.parametrize("run", range(3))
async def test_a_budget_race_lets_exactly_k_experiments_reach_the_hardware(
    stack: LocalStack, client: Client, run: int
) -> None:
    account, fits = f"race-{run}", 4 + 2 * run
    await set_budget_limit(
        client,
        stack.task_queue,
        account,
        SetLimit(limit_usd=fits * COST_PER_EXPERIMENT + 0.001, by="test"),
    )
    tokens_before = set(stack.tasks_per_token())
    handles = [await start(client, stack, on_qpu(account, seed=i)) for i in range(20)]
    reports = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 600)

    completed = [r for r in reports if r.status == "completed"]
    rejected = [r for r in reports if r.status == "rejected"]
    assert len(completed) == fits
    assert len(rejected) == 20 - fits
    if run == 0:
        await record_history(client, completed[0].experiment_id, "governed-budget-completed")
        await record_history(client, rejected[0].experiment_id, "governed-budget-rejected")
    assert all(r.status_reason.startswith("budget: ") for r in rejected)
    assert all(r.produced_by == "hardware" for r in completed)
    new_tokens = set(stack.tasks_per_token()) - tokens_before
    assert len(new_tokens) == fits
    view = await show_budget(client, account)
    assert view is not None
    assert view.reserved_usd == pytest.approx(0.0, abs=1e-9)
    assert view.available_usd >= 0
    assert view.committed_usd == pytest.approx(sum(r.cost.actual_usd for r in completed), abs=1e-6)
    assert view.committed_usd <= view.limit_usd


async def test_pause_holds_polling_and_the_task_keeps_its_place(
    stack: LocalStack, client: Client
) -> None:
    stack.set_faults(queue_delay_s=30.0)
    try:
        handle = await start(client, stack, on_qpu(seed=41))
        progress = await progress_when(handle, lambda p: p.stage == Stage.WAITING and p.polls > 0)
        await handle.signal("pause", OpsCommand(by="ops", reason="maintenance window"))
        paused = await progress_when(handle, lambda p: p.stage == Stage.PAUSED)
        await asyncio.sleep(3)
        still = await handle.query("progress", result_type=Progress)
        assert still.stage == Stage.PAUSED
        assert still.polls == paused.polls
        assert progress.governance is not None
        job_id = await describe_job(handle)
        assert task_of(stack, job_id)["status"] == "QUEUED"
        stack.set_faults()
        await temporal_cli(
            stack,
            "workflow",
            "signal",
            "--workflow-id",
            handle.id,
            "--name",
            "resume",
            "--input",
            '{"by": "ops", "reason": "window over"}',
        )
        report = await asyncio.wait_for(handle.result(), 300)
    finally:
        stack.set_faults()
    assert report.status == "completed" and report.produced_by == "hardware"
    assert report.provenance is not None and report.provenance.job_id == job_id
    assert report.governance is not None
    assert [e.action for e in report.governance.ops] == ["pause", "resume"]


async def describe_job(handle: WorkflowHandle) -> str:
    """The provider job id of a waiting experiment, from its history's submit result."""
    async for event in handle.fetch_history_events():
        attributes = event.activity_task_completed_event_attributes
        if event.HasField("activity_task_completed_event_attributes"):
            payloads = attributes.result.payloads
            decoded = pydantic_data_converter.payload_converter.from_payloads(payloads)
            if decoded and isinstance(decoded[0], dict) and "job_id" in decoded[0]:
                return decoded[0]["job_id"]
    raise AssertionError("no submitted job in the history")


async def test_reroute_while_queued_cancels_the_task_and_moves_the_money(
    stack: LocalStack, client: Client
) -> None:
    stack.set_faults(queue_delay_s=60.0)
    try:
        handle = await start(client, stack, on_qpu(seed=42))
        await progress_when(handle, lambda p: p.stage == Stage.WAITING and p.polls > 0)
        job_id = await describe_job(handle)
        await handle.signal(
            "reroute", RerouteCommand(backend=NOISY, by="ops", reason="queue too long")
        )
        report = await asyncio.wait_for(handle.result(), 300)
    finally:
        stack.set_faults()
    assert report.status == "completed" and report.produced_by == "simulator"
    assert report.provenance is not None and report.provenance.backend.device == "noisy"
    assert "rerouted by ops: queue too long" in report.produced_by_reason
    assert report.governance is not None
    (change,) = report.governance.route
    assert (change.kind, change.from_backend, change.cancelled_job) == ("reroute", QPU_NAME, job_id)
    await record_history(client, handle.id, "governed-reroute")
    (budget,) = report.governance.budget
    assert budget.released and budget.committed_usd is None
    assert task_of(stack, job_id)["status"] == "CANCELLED"
    view = await show_budget(client, "default")
    assert view is not None
    (entry,) = [e for e in view.entries if e.experiment_id == handle.id]
    assert entry.state == "released"


async def test_cancel_cancels_the_task_and_releases_the_budget(
    stack: LocalStack, client: Client
) -> None:
    stack.set_faults(queue_delay_s=60.0)
    try:
        handle = await start(client, stack, on_qpu(seed=43))
        await progress_when(handle, lambda p: p.stage == Stage.WAITING and p.polls > 0)
        job_id = await describe_job(handle)
        code, _, stderr = await qloop(
            stack, "cancel", handle.id, "--by", "carol", "--reason", "wrong graph"
        )
        assert code == 0, stderr
        report = await asyncio.wait_for(handle.result(), 120)
    finally:
        stack.set_faults()
    await record_history(client, handle.id, "governed-cancel")
    assert report.status == "cancelled"
    assert report.status_reason == (
        f"cancelled by carol: wrong graph; provider job {job_id} cancelled"
    )
    assert task_of(stack, job_id)["status"] == "CANCELLED"
    view = await show_budget(client, "default")
    assert view is not None
    (entry,) = [e for e in view.entries if e.experiment_id == handle.id]
    assert entry.state == "released"


async def test_an_approval_sent_while_the_worker_is_down_takes_effect(
    stack: LocalStack, client: Client
) -> None:
    handle = await start(client, stack, on_qpu("reviewed", seed=44))
    await progress_when(handle, lambda p: p.stage == Stage.AWAITING_APPROVAL)
    for _ in range(50):  # visibility is eventually consistent
        code, listing, stderr = await qloop(stack, "list", "--awaiting-approval")
        assert code == 0, stderr
        if handle.id in listing:
            break
        await asyncio.sleep(0.2)
    assert handle.id in listing
    for worker in list(stack.workers):
        if worker.poll() is None:
            stack.kill_worker(worker)
    try:
        code, stdout, stderr = await qloop(
            stack, "approve", handle.id, "--as", "alice", "--reason", "go"
        )
        assert code == 0, stderr
        assert "takes effect when a worker runs the experiment" in stdout
    finally:
        stack.start_worker(extra_env=worker_policy_env(stack))
    report = await asyncio.wait_for(handle.result(), 300)
    assert report.status == "completed" and report.produced_by == "hardware"
    assert report.governance is not None
    decision = report.governance.approvals[0].decision
    assert decision is not None and (decision.approver, decision.reason) == ("alice", "go")
    await record_history(client, handle.id, "governed-approval")


def worker_policy_env(stack: LocalStack) -> dict[str, str]:
    return {
        "QLOOP_POLICY_FILE": str(Path(stack.folder) / "policies.yaml"),
        "QLOOP_BREAKER_FAILURES": "2",
        "QLOOP_BREAKER_OPEN_SECONDS": "4",
    }


async def test_the_circuit_breaker_opens_falls_back_and_closes_after_a_probe(
    stack: LocalStack, client: Client
) -> None:
    chain = {"fallback": [NOISY.model_dump(), IDEAL.model_dump()]}
    breaker = client.get_workflow_handle(health_workflow_id(QPU_NAME))
    stack.set_faults(task_failure_rate=1.0)
    try:
        for seed in (50, 51):
            report = await (await start(client, stack, on_qpu(seed=seed, **chain))).result()
            assert report.produced_by == "simulator"
            assert report.provenance is not None and report.provenance.backend.device == "noisy"
            assert "failed" in report.produced_by_reason
        view = await breaker.query("view", result_type=HealthView)
        assert view.state == "open"
        tasks_before = len(stack.tasks())
        report = await (await start(client, stack, on_qpu(seed=52, **chain))).result()
        assert report.produced_by == "simulator"
        assert "circuit breaker" in report.produced_by_reason
        assert len(stack.tasks()) == tasks_before
        await record_history(client, report.experiment_id, "governed-breaker-fallback")
    finally:
        stack.set_faults()
    await asyncio.sleep(4.5)
    report = await (await start(client, stack, on_qpu(seed=53, **chain))).result()
    assert report.produced_by == "hardware"
    view = await breaker.query("view", result_type=HealthView)
    assert view.state == "closed"
    await record_history(client, breaker.id, "backend-health")
    assert [t.to_state for t in view.transitions][-3:] == ["open", "half_open", "closed"]


async def test_a_chain_ending_in_classical_is_labelled_classical(
    stack: LocalStack, client: Client
) -> None:
    stack.set_faults(task_failure_rate=1.0)
    try:
        request = on_qpu(seed=60, fallback=["classical"])
        report = await (await start(client, stack, request)).result()
    finally:
        stack.set_faults()
    assert report.status == "completed" and report.produced_by == "classical"
    assert report.value is not None and report.value.value == pytest.approx(1.0)
    assert "exact statevector" in report.produced_by_reason


async def test_an_account_out_of_money_waits_until_someone_adds_budget(
    stack: LocalStack, client: Client
) -> None:
    handle = await start(client, stack, on_qpu("patient", seed=70))
    waiting = await progress_when(handle, lambda p: p.stage == Stage.AWAITING_BUDGET)
    assert waiting.awaiting is not None and "qloop budget set" in waiting.awaiting
    assert waiting.job_state is None and waiting.polls == 0  # nothing submitted
    code, _, stderr = await qloop(stack, "budget", "set", "patient", "--limit-usd", "5")
    assert code == 0, stderr
    report = await asyncio.wait_for(handle.result(), 120)
    assert report.status == "completed" and report.produced_by == "hardware"
    view = await show_budget(client, "patient")
    assert view is not None and view.committed_usd == pytest.approx(report.cost.actual_usd)
