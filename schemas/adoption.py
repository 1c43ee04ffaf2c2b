"""Contracts of adoption: `qloop adopt` hands provider tasks that someone submitted outside
qloop (a notebook, the plain Braket SDK) to an `AdoptWorkflow`, which waits until each ended,
records what the provider billed in the account's ledger, fetches the counts and, given the
request that describes the circuits, mitigates and reports as if qloop had submitted them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.budget import AccountName
from schemas.pipeline import PipelineModel
from schemas.report import ExperimentReport
from schemas.request import BRAKET_DEVICE_ARN, ExperimentRequest

# History stays bounded: about 20 events per task.
MAX_ADOPTED_TASKS = 200
BRAKET_TASK_ARN_PATTERN = r"arn:aws:braket:[a-z0-9-]+:[0-9]{12}:quantum-task/[A-Za-z0-9_.-]+"

TaskArn = Annotated[str, Field(pattern=BRAKET_TASK_ARN_PATTERN, max_length=256)]
TaskOutcome = Literal["COMPLETED", "FAILED", "CANCELLED"]
AdoptStage = Literal["preparing", "waiting", "mitigating", "completed", "failed"]


def ledger_key(task_arn: str) -> str:
    """One ledger key per provider task, whoever adopts it: adopting a task twice records it
    once."""
    return f"adopt:{task_arn}"


class AdoptInput(PipelineModel):
    """`task_arns` in the order of the circuits `request` plans (when given: task i holds the
    next `executables` circuits of the plan's batch, in batch order)."""

    device: str
    task_arns: Annotated[list[TaskArn], Field(min_length=1, max_length=MAX_ADOPTED_TASKS)]
    account: AccountName
    request: ExperimentRequest | None = None
    poll_ceiling_seconds: Annotated[float, Field(gt=0)] = 300.0
    compute_task_queue: str | None = None

    @field_validator("device")
    @classmethod
    def _device_arn(cls, device: str) -> str:
        if not BRAKET_DEVICE_ARN.fullmatch(device):
            raise ValueError(f"{device!r} is not a Braket device ARN")
        return device

    @field_validator("task_arns")
    @classmethod
    def _distinct(cls, arns: list[str]) -> list[str]:
        if len(set(arns)) != len(arns):
            raise ValueError("a task ARN is given twice")
        return arns


class InspectTasksInput(PipelineModel):
    device: str
    task_arns: list[str]


class TaskInfo(PipelineModel):
    """A task as GetQuantumTask describes it before qloop waits for it."""

    arn: str
    status: str
    executables: int
    shots: int
    created_at: datetime | None = None


class SettleTaskInput(PipelineModel):
    """An ended task: its bill and counts (stored under `folder` as task-<index>.json)."""

    device: str
    arn: str
    index: int
    folder: str


class AdoptedTask(PipelineModel):
    arn: str
    status: TaskOutcome
    cost_usd: float
    cost_detail: str = ""
    failure_reason: str = ""
    shots: int
    executables: int
    counts_uri: str | None = None
    ledger_key: str = ""
    ledger_state: str = ""


class AdoptProgress(PipelineModel):
    stage: AdoptStage = "preparing"
    tasks_total: int = 0
    tasks_ended: int = 0
    cost_usd: float = 0.0
    current_task: str = ""
    error: str | None = None


class AdoptReport(PipelineModel):
    """Per task what happened and what it cost; `experiment` the mitigated report when a request
    described the circuits and every task completed, else `experiment_skipped` says why not."""

    adoption_id: str
    device: str
    account: str
    tasks: list[AdoptedTask]
    total_cost_usd: float
    experiment: ExperimentReport | None = None
    experiment_skipped: str | None = None
