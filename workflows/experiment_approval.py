"""Waiting for a person: an experiment that a policy rule sends for approval waits durably (a
timer, no thread) for a listed approver's decision, a reroute or cancel, or the rule's timeout.

Deterministic workflow code.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas.control import ApprovalRecord
    from schemas.pipeline import ApprovalRequirement, Stage
    from workflows import search_attributes as attrs
    from workflows.experiment_progress import ExperimentProgress
    from workflows.experiment_steering import ExperimentSteering


async def await_approval(
    steering: ExperimentSteering,
    progress: ExperimentProgress,
    requirement: ApprovalRequirement,
    backend: str,
) -> ApprovalRecord:
    """The record of the wait: its outcome is "approved" or "rejected" with the decision,
    "timed_out", or "pending" when a reroute or cancel ended it first."""
    timeout = timedelta(seconds=requirement.timeout_seconds)
    record = ApprovalRecord(
        backend=backend,
        why_required=requirement.why,
        approvers=requirement.approvers,
        timeout=timeout,
        on_timeout=requirement.on_timeout,
        requested_at=workflow.now(),
        signed=requirement.signed,
    )
    steering.await_decision(requirement)
    progress.set(
        stage=Stage.AWAITING_APPROVAL,
        awaiting=(
            f"{'signed ' if requirement.signed else ''}approval by one of "
            f"{', '.join(requirement.approvers)}: {requirement.why}"
        ),
    )
    workflow.upsert_search_attributes([attrs.AWAITING_APPROVAL.value_set(True)])
    timed_out = False
    try:
        await workflow.wait_condition(
            lambda: steering.decision is not None or steering.interrupt_pending(),
            timeout=timeout,
            timeout_summary="approval timeout",
        )
    except TimeoutError:
        timed_out = True
    finally:
        steering.pending_approval = None
        workflow.upsert_search_attributes([attrs.AWAITING_APPROVAL.value_set(False)])
        progress.set(awaiting=None)
    decision = steering.decision
    outcome = "timed_out" if timed_out else (decision.verdict if decision else "pending")
    return record.model_copy(update={"outcome": outcome, "decision": decision})
