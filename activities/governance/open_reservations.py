"""Open budget reservations and the workflows that hold them.

A reservation stays open while its workflow runs. One whose workflow closed without settling it
(terminated, timed out, reset away, over its history limit) would hold money for ever, and its
provider tasks might still run and bill. The reconciler (workflows/reservation_reconciler.py, on
a Temporal Schedule) settles each such reservation as the paid execution path would have: it
cancels the reservation's provider tasks that have not ended (found in the provider's own task
list by the client-token tag), then commits what the provider billed for them or releases the
reservation when nothing was billed, saying why. People see the open ones with `qloop budget
reservations ACCOUNT` and release one by hand with `qloop budget release KEY`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.governance.budget_calls import release_budget, settle_budget, show_budget
from adapters.braket_aws import TERMINAL_TASK_STATES, BraketAwsAdapter, search_quantum_tasks
from adapters.braket_device import ARN_PREFIX
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.budget import (
    LedgerEntry,
    Release,
    ReleaseBudgetInput,
    SettleBudgetInput,
    Settlement,
    ledger_workflow_id,
)
from schemas.paid_keys import TOKEN_TAG, client_token
from schemas.reconciler import OpenReservation, ReconcilerRound, SettledReservation

LEDGER_PREFIX = ledger_workflow_id("")
RUNNING = "RUNNING"
NOT_FOUND = "NOT_FOUND"
# Tasks are created after their reservation; this covers clocks that disagree a little.
CLOCK_SLACK = timedelta(minutes=5)


async def ledger_accounts(client: Client) -> list[str]:
    """The accounts whose ledger runs."""
    query = "WorkflowType = 'BudgetLedgerWorkflow' AND ExecutionStatus = 'Running'"
    return sorted(
        [
            execution.id.removeprefix(LEDGER_PREFIX)
            async for execution in client.list_workflows(query)
        ]
    )


async def workflow_status(client: Client, workflow_id: str) -> str:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return NOT_FOUND
        raise
    return description.status.name if description.status else NOT_FOUND


async def open_reservations(client: Client, account: str) -> list[OpenReservation]:
    view = await show_budget(client, account)
    if view is None:
        return []
    return [
        OpenReservation(
            account=account,
            entry=entry,
            workflow_status=await workflow_status(client, entry.experiment_id),
        )
        for entry in view.entries
        if entry.state == "reserved"
    ]


async def release_by_hand(
    client: Client, key: str, by: str, reason: str, account: str | None = None
) -> OpenReservation:
    """Releases the open reservation `key` (on `account`, or on whichever ledger holds it)."""
    accounts = [account] if account else await ledger_accounts(client)
    for candidate in accounts:
        for held in await open_reservations(client, candidate):
            if held.entry.key != key:
                continue
            released = await release_budget(
                client,
                ReleaseBudgetInput(
                    account=candidate,
                    release=Release(key=key, reason=f"released by {by}: {reason}"),
                ),
            )
            assert released is not None
            return held.model_copy(update={"entry": released})
    where = f"account {account!r}" if account else f"any of {len(accounts)} ledgers"
    raise LookupError(f"no open reservation {key!r} on {where}")


def provider_tasks(entry: LedgerEntry) -> tuple[BraketAwsAdapter, list[dict]] | None:
    """The reservation's tasks in the provider's own list; None for a backend without any
    (local simulators)."""
    provider, _, device = entry.backend.partition("/")
    if provider != "braket" or not device.startswith(ARN_PREFIX):
        return None
    token = client_token(entry.key)
    region = device.split(":")[3] or None
    tasks = [
        task
        for task in search_quantum_tasks(entry.created_at - CLOCK_SLACK, region)
        if (task.get("tags") or {}).get(TOKEN_TAG) == token
    ]
    return BraketAwsAdapter(device), tasks


def cancelled_and_billed(entry: LedgerEntry) -> tuple[float | None, str]:
    """Cancels the reservation's provider tasks that have not ended; returns what the provider
    bills for them (None while a cancelled one has not ended yet) and what was done."""
    found = provider_tasks(entry)
    if found is None:
        return 0.0, "no provider tasks"
    adapter, tasks = found
    unfinished = [t["quantumTaskArn"] for t in tasks if t["status"] not in TERMINAL_TASK_STATES]
    if unfinished:
        adapter.cancel_tasks(unfinished)
        found = provider_tasks(entry)
        assert found is not None
        _, tasks = found
    bill = adapter.bill(tasks)
    done = f"{len(tasks)} provider tasks, {len(unfinished)} of them cancelled"
    if bill is None:
        return None, f"{done}; not all ended yet"
    return bill.usd, f"{done}; {bill.detail}"


async def settle_orphan(client: Client, held: OpenReservation) -> SettledReservation:
    entry = held.entry
    billed_usd, detail = await asyncio.to_thread(cancelled_and_billed, entry)
    why = f"reconciler: workflow {entry.experiment_id} is {held.workflow_status}; {detail}"
    if billed_usd is None:
        outcome = "pending"
    elif billed_usd > 0:
        await settle_budget(
            client,
            SettleBudgetInput(
                account=held.account, settlement=Settlement(key=entry.key, actual_usd=billed_usd)
            ),
        )
        outcome = "committed"
    else:
        await release_budget(
            client,
            ReleaseBudgetInput(account=held.account, release=Release(key=entry.key, reason=why)),
        )
        outcome = "released"
    return SettledReservation(
        account=held.account,
        key=entry.key,
        workflow_id=entry.experiment_id,
        outcome=outcome,
        detail=why,
    )


async def settle_orphans(client: Client) -> ReconcilerRound:
    """One round of the reconciler over every ledger."""
    settled: list[SettledReservation] = []
    for account in await ledger_accounts(client):
        for held in await open_reservations(client, account):
            if held.workflow_status != RUNNING:
                settled.append(await settle_orphan(client, held))
                if activity.in_activity():
                    activity.heartbeat(len(settled))
    return ReconcilerRound(settled=settled)


@implements(activity_contracts.settle_orphaned_reservations)
async def settle_orphaned_reservations_activity() -> ReconcilerRound:
    return await settle_orphans(activity.client())
