"""The money chaos mix, shared by tests/chaos/test_money_chaos.py and bench/money.py.

On a running local stack (a worker process, the QPU stand-in behind the Braket SDK): experiments,
loops and sweeps across several accounts pay for tasks while the stand-in fails some of them and
loses some replies, queue deadlines expire, operators reroute (while queued and while paused),
cancel (by signal, by Temporal's cancel, during submit) and reset workflows, and the worker is
SIGKILLed again and again. Afterwards every account's ledger is compared with what the stand-in
billed for the account's tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import yaml
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from activities.governance.budget_calls import set_budget_limit, show_budget
from schemas.budget import SetLimit
from schemas.control import OpsCommand, RerouteCommand
from schemas.loop import LoopInput
from schemas.paid_keys import ACCOUNT_TAG
from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.request import BackendChoice, ExperimentRequest
from schemas.variational import LoopRequest, SweepInput, SweepRequest
from tests.harness import QPU, REPO_ROOT, LocalStack, run_qloop
from tests.stuck_workflows import why_still_running

POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
QPU_CHOICE = {"provider": "braket", "device": QPU}
IDEAL = BackendChoice(provider="aer", device="ideal")
FAULTS = {
    "task_failure_rate": 0.1,
    "queue_delay_s": [0.5, 3.0],
    "run_time_s": 0.1,
    "throttle_rate": 0.02,
    "lost_response_rate": {"CreateQuantumTask": 0.05},
}
UNFINISHED = {"CREATED", "QUEUED", "RUNNING", "CANCELLING"}
# What an experiment goes through besides paying; the rest of the experiments just pay.
ROLES = (
    "deadline",
    "reroute_queued",
    "reroute_paused",
    "cancel_signal",
    "cancel_temporal",
    "cancel_submit",
    "reset",
)


@dataclass(frozen=True)
class MixPlan:
    experiments: int = 40
    loops: int = 2
    sweeps: int = 2
    accounts: int = 3
    kills: int = 10
    resets: int = 3
    seed: int = 0


@dataclass
class AccountBooks:
    account: str
    committed_usd: Decimal
    billed_usd: Decimal
    open_reservations: int
    unfinished_tasks: int
    reconcile_exit: int
    reconcile_report: str
    # "key (workflow id: its status)" of every reservation still open: where to look first.
    open_reservation_owners: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return (
            abs(self.committed_usd - self.billed_usd) < Decimal("0.000001")
            and self.open_reservations == 0
            and self.unfinished_tasks == 0
            and self.reconcile_exit == 0
        )


@dataclass
class MixOutcome:
    books: list[AccountBooks]
    workflows: int
    kills_with_tasks_in_flight: int
    kills: int
    seconds: float
    closed: dict[str, int] = field(default_factory=dict)


def experiment(index: int, account: str, role: str) -> ExperimentRequest:
    policy: dict[str, object] = {"account": account}
    if role == "deadline":
        policy["max_queue_wait"] = "PT1S"
    return ExperimentRequest.model_validate(
        {
            "name": f"mix-{role}-{index}",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {
                "shots": 100,
                "seed": index,
                "backend": QPU_CHOICE,
                "fallback": [IDEAL.model_dump()],
            },
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": False},
            "policy": policy,
        }
    )


def loop(index: int, account: str) -> LoopRequest:
    data = yaml.safe_load((REPO_ROOT / "examples" / "vqe_h2.yaml").read_text())
    data["name"] = f"mix-loop-{index}"
    data["limits"] = {"max_iterations": 3}
    data["optimizer"]["patience"] = 4
    data["evaluation"] = {**data.get("evaluation", {}), "backend": QPU_CHOICE, "shots": 100}
    data["policy"] = {"account": account}
    return LoopRequest.model_validate(data)


def sweep(index: int, account: str, seed: int) -> SweepRequest:
    return SweepRequest.model_validate(
        {
            "name": f"mix-sweep-{index}",
            "family": {
                "kind": "qaoa_maxcut",
                "graph": {"nodes": 3, "edges": [{"u": 0, "v": 1}, {"u": 1, "v": 2}]},
            },
            "points": {"grid": [{"start": 0.0, "stop": 1.0, "num": 3}, {"values": [0.3, 0.6]}]},
            "evaluation": {"shots": 100, "seed": seed * 1000 + index, "backend": QPU_CHOICE},
            "batch_size": 2,
            "canary": {"points": 2},
            "policy": {"account": account},
        }
    )


async def progress(handle: WorkflowHandle) -> Progress | None:
    """None while no worker answers (it is being killed)."""
    try:
        return await handle.query(
            "progress", result_type=Progress, rpc_timeout=timedelta(seconds=5)
        )
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return None


async def when_stage(handle: WorkflowHandle, stages: set[Stage], timeout: float = 120) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await closed(handle):
            return False
        seen = await progress(handle)
        if seen is not None and seen.stage in stages:
            return True
        await asyncio.sleep(0.1)
    return False


async def closed(handle: WorkflowHandle) -> bool:
    description = await handle.describe()
    return description.status is not None and description.status.name != "RUNNING"


# The stage at which each role acts.
ACTS_AT = {
    "reroute_queued": Stage.WAITING,
    "reroute_paused": Stage.WAITING,
    "cancel_signal": Stage.WAITING,
    "cancel_temporal": Stage.WAITING,
    "cancel_submit": Stage.SUBMITTING,
}


async def steer(client: Client, handle: WorkflowHandle, role: str) -> None:
    if role == "reset":
        await finished(handle)
        await client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=handle.id),
                reason="money mix: reset to before the submission",
                workflow_task_finish_event_id=await first_workflow_task(handle),
                request_id=str(uuid.uuid4()),
            )
        )
        return
    stage = ACTS_AT.get(role)
    if stage is None or not await when_stage(handle, {stage}):
        return
    ops = OpsCommand(by="mix", reason=role)
    reroute = RerouteCommand(backend=IDEAL, by="mix", reason=role)
    # An operator can be too late: the experiment may close between seeing it and acting.
    with contextlib.suppress(RPCError):
        if role == "reroute_queued":
            await handle.signal("reroute", reroute)
        elif role == "reroute_paused":
            await handle.signal("pause", ops)
            if await when_stage(handle, {Stage.PAUSED}, timeout=30):
                await handle.signal("reroute", reroute)
            await handle.signal("resume", ops)
        elif role == "cancel_signal":
            await handle.signal("cancel", ops)
        else:
            await handle.cancel()


async def first_workflow_task(handle: WorkflowHandle) -> int:
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return event.event_id
    raise AssertionError(f"{handle.id} has no completed workflow task")


async def finished(handle: WorkflowHandle, timeout: float = 900) -> str:
    """Waits until the workflow's latest run closed; its status."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        description = await client_describe(handle)
        if description != "RUNNING":
            return description
        await asyncio.sleep(0.5)
    raise AssertionError(f"still running after {timeout} s: {await why_still_running(handle)}")


async def client_describe(handle: WorkflowHandle) -> str:
    description = await handle.describe()
    return description.status.name if description.status else "UNKNOWN"


async def kill_repeatedly(stack: LocalStack, plan: MixPlan, rng: random.Random) -> int:
    """SIGKILLs the worker `plan.kills` times, each time once a task is in flight at the stand-in
    (or after 30 s without one), and starts a new one at once; returns how many kills found
    tasks in flight."""
    in_flight = 0
    for _ in range(plan.kills):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        if await tasks_in_flight(stack, timeout=30.0):
            in_flight += 1
        for worker in [w for w in stack.workers if w.poll() is None]:
            stack.kill_worker(worker)
        stack.start_worker()
    return in_flight


async def tasks_in_flight(stack: LocalStack, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        tasks = await asyncio.to_thread(stack.tasks)
        if any(task["status"] in UNFINISHED for task in tasks):
            return True
        await asyncio.sleep(0.2)
    return False


async def books_of(client: Client, stack: LocalStack, account: str) -> AccountBooks:
    view = await show_budget(client, account)
    assert view is not None, f"account {account} has no ledger"
    tasks = [t for t in stack.tasks() if t["tags"].get(ACCOUNT_TAG) == account]
    code, report, stderr = await run_qloop(
        stack.worker_env(), "budget", "reconcile", account, timeout=300
    )
    owners = []
    for entry in view.entries:
        if entry.state == "reserved":
            description = await client.get_workflow_handle(entry.experiment_id).describe()
            status = description.status.name if description.status else "unknown"
            owners.append(f"{entry.key} ({entry.experiment_id}: {status})")
    return AccountBooks(
        account=account,
        committed_usd=Decimal(str(view.committed_usd)),
        billed_usd=sum((Decimal(t["billedUsd"]) for t in tasks), Decimal(0)),
        open_reservations=sum(1 for e in view.entries if e.state == "reserved"),
        unfinished_tasks=sum(1 for t in tasks if t["status"] in UNFINISHED),
        reconcile_exit=code,
        reconcile_report=report + stderr,
        open_reservation_owners=owners,
    )


async def run_money_mix(client: Client, stack: LocalStack, plan: MixPlan) -> MixOutcome:
    rng = random.Random(plan.seed)
    started = asyncio.get_running_loop().time()
    tag = uuid.uuid4().hex[:6]
    accounts = [f"mix-{tag}-{n}" for n in range(plan.accounts)]
    for account in accounts:
        await set_budget_limit(client, stack.task_queue, account, SetLimit(limit_usd=100_000))
    stack.set_faults(**FAULTS)

    handles: list[WorkflowHandle] = []
    steering: list[Awaitable[None]] = []
    roles = [*ROLES[:-1]] * max(1, plan.experiments // 10) + ["reset"] * plan.resets
    for index in range(plan.experiments):
        role = roles[index] if index < len(roles) else "pay"
        request = experiment(index, accounts[index % len(accounts)], role)
        handle = await client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=request, polling=POLLING),
            id=f"{request.name}-{tag}",
            task_queue=stack.task_queue,
        )
        handles.append(handle)
        steering.append(steer(client, handle, role))
    for index in range(plan.loops):
        request = loop(index, accounts[index % len(accounts)])
        handles.append(
            await client.start_workflow(
                "LoopWorkflow",
                LoopInput(request=request, polling=POLLING),
                id=f"{request.name}-{tag}",
                task_queue=stack.task_queue,
            )
        )
    for index in range(plan.sweeps):
        request = sweep(index, accounts[(index + 1) % len(accounts)], rng.randrange(10**6))
        handles.append(
            await client.start_workflow(
                "SweepWorkflow",
                SweepInput(request=request, polling=POLLING),
                id=f"{request.name}-{tag}",
                task_queue=stack.task_queue,
            )
        )

    killing = asyncio.ensure_future(kill_repeatedly(stack, plan, rng))
    await asyncio.gather(*steering)
    kills_in_flight = await killing
    statuses = [await finished(handle) for handle in handles]
    stack.set_faults()
    closed_counts: dict[str, int] = {}
    for status in statuses:
        closed_counts[status] = closed_counts.get(status, 0) + 1
    books = [await books_of(client, stack, account) for account in accounts]
    return MixOutcome(
        books=books,
        workflows=len(handles),
        kills_with_tasks_in_flight=kills_in_flight,
        kills=plan.kills,
        seconds=round(asyncio.get_running_loop().time() - started, 1),
        closed=closed_counts,
    )


def write_policy(folder: Path) -> Path:
    """Accounts follow `default`: no approval, a large budget, any backend."""
    path = folder / "money-policies.yaml"
    path.write_text(yaml.safe_dump({"accounts": {"default": {"budget": {"limit_usd": 100000}}}}))
    return path
