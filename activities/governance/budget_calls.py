"""How experiments and the CLI talk to an account's BudgetLedgerWorkflow.

A workflow cannot send updates to another workflow, so an experiment reserves, settles and
releases through these activities. Each is a function of a `Client` (used by the CLI and the
tests as it is) under a thin `@activity.defn` wrapper that uses the worker's client and the
activity's own task queue, where the orchestration worker also runs the ledgers.

What the ledger refuses is final and never retried: a reservation that does not fit, or whose
key was already closed, comes back as `ReservationOutcome(accepted=False)`, other refusals as
non-retryable ApplicationErrors of the ledger's type. Everything else propagates, so Temporal
retries the activity: the server unavailable, RPC timeouts, a ledger over its limit of in-flight
updates, an update the server rejected because no worker processed it. The reservation key makes
every retry safe.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.budget import (
    BUDGET_EXCEEDED,
    RESERVATION_CLOSED,
    UNKNOWN_RESERVATION,
    BudgetPeriod,
    LedgerEntry,
    LedgerInput,
    LedgerView,
    RecordSpendInput,
    ReleaseBudgetInput,
    ReservationOutcome,
    ReservationReceipt,
    ReserveBudgetInput,
    SetLimit,
    SettleBudgetInput,
    format_usd,
    ledger_workflow_id,
)

LEDGER_WORKFLOW = "BudgetLedgerWorkflow"
LEDGER_REFUSALS = frozenset({BUDGET_EXCEEDED, UNKNOWN_RESERVATION, RESERVATION_CLOSED})


def start_ledger(
    account: str, task_queue: str, limit_usd: float = 0.0, period: BudgetPeriod = "none"
) -> WithStartWorkflowOperation:
    """Starts the account's ledger when it does not run yet, with the limit its policy gives
    (default $0: nothing that costs money fits until someone sets a budget)."""
    return WithStartWorkflowOperation(
        LEDGER_WORKFLOW,
        LedgerInput(account=account, limit_usd=limit_usd, period=period),
        id=ledger_workflow_id(account),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"budget ledger of account {account}",
    )


def ledger_refusal(error: WorkflowUpdateFailedError) -> ApplicationError | None:
    """The ledger's own refusal as a non-retryable error: the same request would be refused
    again. None when the update failed for another reason (for instance the server rejecting an
    update no worker processed), which a retry of the activity may fix."""
    cause = error.cause
    if not isinstance(cause, ApplicationError) or cause.type not in LEDGER_REFUSALS:
        return None
    return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)


async def reserve_budget(
    client: Client, task_queue: str, input: ReserveBudgetInput
) -> ReservationOutcome:
    try:
        receipt: ReservationReceipt = await client.execute_update_with_start_workflow(
            "reserve",
            input.reservation,
            start_workflow_operation=start_ledger(
                input.account, task_queue, input.initial_limit_usd, input.initial_period
            ),
            result_type=ReservationReceipt,
        )
    except WorkflowUpdateFailedError as error:
        refusal = ledger_refusal(error)
        if refusal is None:
            raise
        if refusal.type == RESERVATION_CLOSED and refusal.details:
            return ReservationOutcome(
                accepted=False,
                message=refusal.message,
                available_usd=0.0,
                closed_as=refusal.details[0],
            )
        if refusal.type != BUDGET_EXCEEDED:
            raise refusal from error
        available = float(refusal.details[0]) if refusal.details else 0.0
        return ReservationOutcome(accepted=False, message=refusal.message, available_usd=available)
    entry = receipt.entry
    if receipt.created:
        message = (
            f"reserved {format_usd(entry.amount_usd)} on account '{input.account}' for "
            f"{entry.experiment_id}; {format_usd(receipt.available_usd)} available"
        )
    else:
        message = (
            f"reservation '{entry.key}' already exists on account '{input.account}' "
            f"({entry.state}, {format_usd(entry.amount_usd)} for {entry.experiment_id}); "
            f"{format_usd(receipt.available_usd)} available"
        )
    return ReservationOutcome(accepted=True, message=message, available_usd=receipt.available_usd)


async def settle_budget(client: Client, input: SettleBudgetInput) -> LedgerEntry:
    handle = client.get_workflow_handle(ledger_workflow_id(input.account))
    try:
        return await handle.execute_update("commit", input.settlement, result_type=LedgerEntry)
    except WorkflowUpdateFailedError as error:
        refusal = ledger_refusal(error)
        if refusal is None:
            raise
        raise refusal from error
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        raise ApplicationError(
            f"account '{input.account}' has no budget ledger, so reservation "
            f"'{input.settlement.key}' cannot be committed",
            type=UNKNOWN_RESERVATION,
            non_retryable=True,
        ) from error


async def release_budget(client: Client, input: ReleaseBudgetInput) -> LedgerEntry | None:
    """None when the ledger does not know the key (or does not exist), so cleanup code may
    release whatever it might have reserved."""
    handle = client.get_workflow_handle(ledger_workflow_id(input.account))
    try:
        return await handle.execute_update("release", input.release, result_type=LedgerEntry)
    except WorkflowUpdateFailedError as error:
        refusal = ledger_refusal(error)
        if refusal is None:
            raise
        if refusal.type == UNKNOWN_RESERVATION:
            return None
        raise refusal from error
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def record_spend(client: Client, task_queue: str, input: RecordSpendInput) -> LedgerEntry:
    """Commits money spent outside qloop on the account's ledger (started if it does not run
    yet); the same key with the same amount is found again, not counted twice."""
    try:
        entry: LedgerEntry = await client.execute_update_with_start_workflow(
            "record_spend",
            input.spend,
            start_workflow_operation=start_ledger(
                input.account, task_queue, input.initial_limit_usd, input.initial_period
            ),
            result_type=LedgerEntry,
        )
    except WorkflowUpdateFailedError as error:
        refusal = ledger_refusal(error)
        if refusal is None:
            raise
        raise refusal from error
    return entry


async def set_budget_limit(
    client: Client,
    task_queue: str,
    account: str,
    command: SetLimit,
    rpc_timeout: timedelta | None = None,
) -> LedgerView:
    return await client.execute_update_with_start_workflow(
        "set_limit",
        command,
        start_workflow_operation=start_ledger(account, task_queue),
        result_type=LedgerView,
        rpc_timeout=rpc_timeout,
    )


async def show_budget(
    client: Client,
    account: str,
    recent: int | None = None,
    rpc_timeout: timedelta | None = None,
) -> LedgerView | None:
    """The balance and the `recent` newest entries (all when None); None when the account has no
    ledger yet."""
    handle = client.get_workflow_handle(ledger_workflow_id(account))
    try:
        return await handle.query("view", recent, result_type=LedgerView, rpc_timeout=rpc_timeout)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


@implements(activity_contracts.reserve_budget)
async def reserve_budget_activity(input: ReserveBudgetInput) -> ReservationOutcome:
    return await reserve_budget(activity.client(), activity.info().task_queue, input)


@implements(activity_contracts.settle_budget)
async def settle_budget_activity(input: SettleBudgetInput) -> LedgerEntry:
    return await settle_budget(activity.client(), input)


@implements(activity_contracts.release_budget)
async def release_budget_activity(input: ReleaseBudgetInput) -> LedgerEntry | None:
    return await release_budget(activity.client(), input)


@implements(activity_contracts.record_spend)
async def record_spend_activity(input: RecordSpendInput) -> LedgerEntry:
    # A ledger this record starts gets the limit the account's policy gives, as a first
    # reservation would.
    from activities.governance.policy import account_policy

    budget = account_policy(input.account).budget
    started_as = input.model_copy(
        update={"initial_limit_usd": budget.limit_usd, "initial_period": budget.period}
    )
    return await record_spend(activity.client(), activity.info().task_queue, started_as)
