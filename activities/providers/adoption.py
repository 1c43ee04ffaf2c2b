"""Adoption of Braket tasks that someone submitted outside qloop: what each one is before qloop
waits for it (`inspect_adopted_tasks`), and once it ended what happened, what Braket bills for
it and its counts (`settle_adopted_task`). Plain boto3 through BraketAwsAdapter, so these run in
the orchestration role; waiting is the `wait_for_job` activity on a one-task JobRef.
"""

from __future__ import annotations

from typing import Any

from activities.providers.provider_calls import call_provider
from activities.storage import artifact_store
from adapters.braket_aws import TERMINAL_TASK_STATES, BraketAwsAdapter
from adapters.errors import InvalidRequestError, TransientError
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.adoption import AdoptedTask, InspectTasksInput, SettleTaskInput, TaskInfo


def executables_of(task: dict[str, Any]) -> int:
    return int((task.get("actionMetadata") or {}).get("executableCount") or 1)


def inspect_tasks(
    input: InspectTasksInput, adapter: BraketAwsAdapter | None = None
) -> list[TaskInfo]:
    """Each task's status, circuits and shots; a task of another device (or none at all) is an
    InvalidRequest, before anything is waited for or recorded."""
    adapter = adapter or BraketAwsAdapter(input.device)
    found: list[TaskInfo] = []
    for arn in input.task_arns:
        task = adapter.describe_task(arn)
        if task.get("deviceArn") != input.device:
            raise InvalidRequestError(
                f"task {arn} ran on {task.get('deviceArn')}, not on {input.device}"
            )
        found.append(
            TaskInfo(
                arn=arn,
                status=str(task["status"]),
                executables=executables_of(task),
                shots=int(task["shots"]),
                created_at=task.get("createdAt"),
            )
        )
    return found


def settle_task(input: SettleTaskInput, adapter: BraketAwsAdapter | None = None) -> AdoptedTask:
    """What happened to an ended task, Braket's bill for it (completed: per task and per shot;
    failed or cancelled: nothing) and, when it completed, its counts in the artifact store."""
    adapter = adapter or BraketAwsAdapter(input.device)
    task = adapter.describe_task(input.arn)
    status = str(task["status"])
    if status not in TERMINAL_TASK_STATES:
        # wait_for_job saw it end; GetQuantumTask agreeing is only a matter of time.
        raise TransientError(f"task {input.arn} is {status}, not ended yet")
    billed = adapter.bill([task])
    assert billed is not None  # every task given has ended
    counts_uri = None
    if status == "COMPLETED":
        counts = adapter.task_counts(task)
        counts_uri = artifact_store.put_json(
            input.folder,
            f"task-{input.index:04d}.json",
            {"task_arn": input.arn, "shots": int(task["shots"]), "counts": counts},
        )
    outcome = (
        "COMPLETED" if status == "COMPLETED" else "FAILED" if status == "FAILED" else "CANCELLED"
    )
    return AdoptedTask(
        arn=input.arn,
        status=outcome,
        cost_usd=billed.usd,
        cost_detail=billed.detail,
        failure_reason=str(task.get("failureReason") or ""),
        shots=int(task["shots"]),
        executables=executables_of(task),
        counts_uri=counts_uri,
    )


@implements(activity_contracts.inspect_adopted_tasks)
async def inspect_adopted_tasks_activity(input: InspectTasksInput) -> list[TaskInfo]:
    return await call_provider(lambda: inspect_tasks(input))


@implements(activity_contracts.settle_adopted_task)
async def settle_adopted_task_activity(input: SettleTaskInput) -> AdoptedTask:
    return await call_provider(lambda: settle_task(input))
