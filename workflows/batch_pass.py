"""One batch of parameter points through the execution plane, from inside any workflow.

prepare_batch (compute queue) → policy → the paid execution path of workflows/paid_execution.py
(reserve, submit, wait, fetch, settle) → score_batch (compute queue). LoopWorkflow runs one batch
per iteration, SweepWorkflow one per group of points.

The submission is named by `token_label` within the workflow, so a loop that continued as new,
a run that was reset, or a worker that died after submitting finds the job it already paid for
instead of submitting a second one. Deterministic workflow code: it calls activities by name and
imports no numerical library.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts, error_types
    from schemas.pipeline import PolicyDecision, PolicyInput, PollingPolicy
    from schemas.variational import BatchInput, PreparedBatch, ScoredBatch, ScoreInput
    from workflows.activity_options import (
        COMPUTE_RETRY,
        COMPUTE_TIMEOUT,
        ENTITY_RETRY,
        HEARTBEAT_TIMEOUT,
        QUICK_TIMEOUT,
    )
    from workflows.paid_execution import PaidExecution, PaidWork, StatusListener, Unsteered

POLICY_AS_ACTIVITY_PATCH = "batch-policy-as-activity"


class BudgetExhausted(Exception):
    """The batch was not submitted: its estimated cost does not fit the account's budget (or the
    caller's cost limit). Nothing was spent on it."""

    def __init__(self, message: str, estimated_cost_usd: float) -> None:
        super().__init__(message)
        self.message = message
        self.estimated_cost_usd = estimated_cost_usd


async def run_batch(
    batch: BatchInput,
    *,
    account: str,
    polling: PollingPolicy,
    compute_queue: str | None,
    token_label: str,
    max_queue_wait: timedelta,
    name: str,
    max_cost_usd: float | None = None,
    on_job_status: StatusListener | None = None,
) -> tuple[PreparedBatch, ScoredBatch]:
    """Evaluates every point of `batch` as one submission. `token_label` names the submission
    within the workflow (e.g. "iter-0007"): reusing a label reuses its job. A batch whose
    estimate exceeds `max_cost_usd`, or that the account's ledger refuses, raises
    BudgetExhausted before anything is submitted; a job the provider fails raises
    ApplicationError of type JobFailed, one still queued after `max_queue_wait` one of type
    QueueDeadlineExceeded, both after the job was cancelled and what it was billed committed.
    `name` (the loop's or sweep's) tags its provider tasks; `on_job_status` sees every poll's
    answer (for progress queries and search attributes)."""
    prepared: PreparedBatch = await workflow.execute_activity(
        activity_contracts.prepare_batch,
        batch,
        task_queue=compute_queue,
        start_to_close_timeout=COMPUTE_TIMEOUT,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=COMPUTE_RETRY,
        summary=f"{token_label}: prepare",
    )
    estimate = prepared.cost_estimate.usd
    if max_cost_usd is not None and estimate > max_cost_usd:
        raise BudgetExhausted(
            f"batch {token_label} would cost ${estimate:.2f}, more than the "
            f"${max_cost_usd:.2f} left under the cost limit",
            estimate,
        )
    decision = await _evaluate_policy(batch, prepared, account)
    execution = PaidExecution(
        PaidWork(
            account=account,
            backend=batch.evaluation.backend,
            batch_uri=prepared.batch_uri,
            shots=batch.evaluation.shots,
            seed=batch.evaluation.seed,
            estimated_usd=estimate,
            submission=token_label,
            purpose=token_label,
            artifact_folder=batch.artifact_folder,
            polling=polling,
            max_queue_wait=max_queue_wait,
            name=name,
            simulated_in_activity=prepared.simulated_in_activity,
            compute_task_queue=compute_queue,
        ),
        Unsteered(on_job_status),
    )
    outcome = await execution.reserve(decision)
    if not outcome.accepted:
        raise BudgetExhausted(f"batch {token_label}: {outcome.message}", estimate)
    _, fetched = await execution.run()
    scored: ScoredBatch = await workflow.execute_activity(
        activity_contracts.score_batch,
        ScoreInput(batch=batch, prepared=prepared, counts_uri=fetched.counts_uri),
        task_queue=compute_queue,
        start_to_close_timeout=COMPUTE_TIMEOUT,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=COMPUTE_RETRY,
        summary=f"{token_label}: score",
    )
    return prepared, scored


async def _evaluate_policy(
    batch: BatchInput, prepared: PreparedBatch, account: str
) -> PolicyDecision:
    """The account's policy applies to every batch. Loops and sweeps have no one to wait for, so
    a batch that would need a person's approval is refused like one the policy forbids."""
    policy = PolicyInput(
        account=account,
        backend=batch.evaluation.backend,
        tier=prepared.tier,
        shots=batch.evaluation.shots,
        estimated_cost_usd=prepared.cost_estimate.usd,
    )
    # Batches run concurrently (a sweep's window), and concurrent local activities do not replay:
    # their results reach the workflow in completion order, on replay in scheduling order, so
    # the commands after them come out in another order (temporalio/sdk-python#1578).
    execute = (
        workflow.execute_activity
        if workflow.patched(POLICY_AS_ACTIVITY_PATCH)
        else workflow.execute_local_activity
    )
    decision: PolicyDecision = await execute(
        activity_contracts.evaluate_policy,
        policy,
        start_to_close_timeout=QUICK_TIMEOUT,
        retry_policy=ENTITY_RETRY,
        summary="policy",
    )
    if not decision.allowed:
        raise ApplicationError(
            f"policy rule {decision.rule}: {decision.message}",
            type=error_types.POLICY_REFUSED,
            non_retryable=True,
        )
    if decision.approval is not None:
        raise ApplicationError(
            f"policy: {decision.approval.why}; loops and sweeps cannot wait for approval by "
            f"{', '.join(decision.approval.approvers)} — run this backend as single experiments "
            "or ask for a policy that allows it",
            type=error_types.POLICY_REFUSED,
            non_retryable=True,
        )
    return decision
