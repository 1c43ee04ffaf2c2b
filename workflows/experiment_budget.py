"""Room in the account's budget before anything is submitted: the experiment reserves its
estimated cost, and when the ledger refuses, ends or waits for money to free up as the
account's policy says (asking again as often as it would poll a provider, up to every ten
minutes, and no longer than the request's max_queue_wait).

Deterministic workflow code.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas.pipeline import PolicyDecision, PollingPolicy, Stage
    from workflows.experiment_progress import ExperimentProgress
    from workflows.experiment_steering import ExperimentSteering
    from workflows.paid_execution import PaidExecution

BUDGET_RETRY_CEILING = timedelta(minutes=10)


async def reserve_when_room(
    execution: PaidExecution,
    decision: PolicyDecision,
    max_wait: timedelta,
    polling: PollingPolicy,
    progress: ExperimentProgress,
    steering: ExperimentSteering,
) -> str | None:
    """None once the estimate is reserved, else why the experiment ends without running."""
    started = workflow.now()
    interval = timedelta(seconds=min(30.0, polling.ceiling_seconds))
    while True:
        outcome = await execution.reserve(decision)
        if outcome.accepted:
            progress.set(awaiting=None)
            return None
        if decision.on_budget_exhausted == "refuse":
            return f"budget: {outcome.message}"
        if workflow.now() - started >= max_wait:
            return f"budget: still no room after max_queue_wait {max_wait}: {outcome.message}"
        progress.set(stage=Stage.AWAITING_BUDGET, awaiting=f"budget: {outcome.message}")
        await steering.sleep(interval, "wait for budget")
        interval = min(interval * 2, BUDGET_RETRY_CEILING)
