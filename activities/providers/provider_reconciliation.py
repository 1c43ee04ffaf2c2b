"""`qloop budget reconcile`: an account's ledger against the provider's own task list.

The provider lists every task (SearchQuantumTasks) with the tags qloop gave it at submission
(schemas/paid_keys.py: account, workflow id, reservation token); what it bills for each follows
its published rule (adapters/braket_aws.py `bill`: completed tasks per task and per shot). For every
workflow of the account, the ledger's committed total must equal what the provider billed for
its tasks; a workflow still running with an open reservation is in flight and not compared yet.
Reported as differences: money that disagrees, tasks that still queue or run for a workflow that
no longer waits for them, and open reservations of closed workflows.

The window starts at `since` (default: the oldest entry the ledger still holds; older closed
entries are folded into a total and can no longer be compared task by task).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import Client

from activities.governance.budget_calls import show_budget
from activities.governance.open_reservations import RUNNING, workflow_status
from adapters.braket_aws import BraketAwsAdapter, search_quantum_tasks
from schemas.budget import LedgerEntry
from schemas.paid_keys import ACCOUNT_TAG, WORKFLOW_TAG
from schemas.pipeline import PipelineModel

TOLERANCE_USD = 1e-6


class Difference(PipelineModel):
    workflow_id: str
    ledger_usd: float
    provider_usd: float
    detail: str


class Reconciliation(PipelineModel):
    account: str
    since: datetime
    ledger_committed_usd: float
    provider_billed_usd: float
    tasks: int
    in_flight: list[str]
    differences: list[Difference]


def tasks_of_account(account: str, since: datetime) -> list[dict[str, Any]]:
    return [
        task
        for task in search_quantum_tasks(since)
        if (task.get("tags") or {}).get(ACCOUNT_TAG) == account
    ]


def task_bills(tasks: list[dict[str, Any]]) -> list[float | None]:
    """What the provider bills for each task; None for one that has not ended."""
    adapters: dict[str, BraketAwsAdapter] = {}
    bills: list[float | None] = []
    for task in tasks:
        adapter = adapters.setdefault(task["deviceArn"], BraketAwsAdapter(task["deviceArn"]))
        bill = adapter.bill([task])
        bills.append(None if bill is None else bill.usd)
    return bills


async def reconcile(
    client: Client, account: str, since: datetime | None, now: datetime
) -> Reconciliation:
    view = await show_budget(client, account)
    entries = view.entries if view is not None else []
    start = since or min((e.created_at for e in entries), default=now - timedelta(days=1))
    entries = [e for e in entries if e.created_at >= start]
    tasks = await asyncio.to_thread(tasks_of_account, account, start)
    bills = await asyncio.to_thread(task_bills, tasks)

    ledger: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        ledger[entry.experiment_id].append(entry)
    billed: dict[str, float] = defaultdict(float)
    unfinished: dict[str, list[str]] = defaultdict(list)
    for task, bill in zip(tasks, bills, strict=True):
        workflow_id = task["tags"].get(WORKFLOW_TAG, "?")
        if bill is None:
            unfinished[workflow_id].append(f"{task['quantumTaskArn']} {task['status']}")
        else:
            billed[workflow_id] += bill

    in_flight: list[str] = []
    differences: list[Difference] = []
    for workflow_id in sorted(set(ledger) | set(billed) | set(unfinished)):
        held = ledger.get(workflow_id, [])
        committed = sum(e.actual_usd or 0.0 for e in held if e.state == "committed")
        provider = billed.get(workflow_id, 0.0)
        open_keys = [e.key for e in held if e.state == "reserved"]
        status = await workflow_status(client, workflow_id)
        if status == RUNNING and (open_keys or unfinished.get(workflow_id)):
            in_flight.append(workflow_id)
            continue
        problems = []
        if abs(committed - provider) > TOLERANCE_USD:
            problems.append(f"ledger committed ${committed:.6f}, provider billed ${provider:.6f}")
        if unfinished.get(workflow_id):
            problems.append(
                f"workflow is {status} but tasks have not ended: "
                + ", ".join(unfinished[workflow_id][:3])
            )
        if open_keys:
            problems.append(f"workflow is {status} but reservations are open: {open_keys}")
        if problems:
            differences.append(
                Difference(
                    workflow_id=workflow_id,
                    ledger_usd=committed,
                    provider_usd=provider,
                    detail="; ".join(problems),
                )
            )
    return Reconciliation(
        account=account,
        since=start,
        ledger_committed_usd=round(
            sum(e.actual_usd or 0.0 for e in entries if e.state == "committed"), 6
        ),
        provider_billed_usd=round(sum(b for b in bills if b is not None), 6),
        tasks=len(tasks),
        in_flight=in_flight,
        differences=differences,
    )
