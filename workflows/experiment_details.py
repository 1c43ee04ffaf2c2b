"""What the Temporal Web UI shows of a running experiment: its current details (markdown) and,
once another backend than the requested one answered, why.

Pure functions of the experiment's progress, imported by ExperimentWorkflow.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas.control import Governance
    from schemas.pipeline import ApprovalRequirement, Progress, Stage


def details_markdown(
    progress: Progress, pending_approval: ApprovalRequirement | None, experiment_id: str
) -> str:
    lines = [f"**Stage:** {progress.stage.value}", f"**Backend:** {progress.backend}"]
    if progress.estimated_cost_usd is not None:
        lines.append(f"**Estimated cost:** ${progress.estimated_cost_usd:.2f}")
    if progress.stage == Stage.WAITING:
        state = progress.job_state.value if progress.job_state else "submitted"
        queue = f", queue position {progress.queue_position}" if progress.queue_position else ""
        lines.append(
            f"Waiting for the provider: job {state}{queue}, {progress.polls} polls so far."
        )
    if progress.paused:
        lines.append("**Paused.** Resume: `qloop resume ID` or signal `resume`.")
    if progress.stage == Stage.AWAITING_APPROVAL and pending_approval is not None:
        lines.extend(approval_instructions(pending_approval, experiment_id))
    elif progress.awaiting:
        lines.append(f"**Waiting for:** {progress.awaiting}")
    if progress.error:
        lines.append(f"**Error:** {progress.error}")
    return "\n\n".join(lines)


def approval_instructions(requirement: ApprovalRequirement, experiment_id: str) -> list[str]:
    example = '{"approver": "NAME", "reason": "why"}'
    timeout = timedelta(seconds=requirement.timeout_seconds)
    how = (
        f"Approve: `qloop approve {experiment_id} --as NAME --key FILE --reason ...` (or "
        "`qloop reject`). Only decisions signed with a listed approver's key count: from this "
        "page or `temporal workflow signal`, send `approve` / `reject` with the JSON that "
        f"`qloop approve {experiment_id} --as NAME --key FILE --print-json` prints."
        if requirement.signed
        else f"Approve: `qloop approve {experiment_id} --as NAME --reason ...` (or `qloop "
        f"reject`), or send the signal `approve` / `reject` with `{example}` from this page "
        "or with `temporal workflow signal`."
    )
    return [
        f"**Waiting for approval** by one of: {', '.join(requirement.approvers)}. "
        f"Why: {requirement.why}.",
        how,
        f"Without a decision within {timeout} the experiment is "
        f"{'rejected' if requirement.on_timeout == 'reject' else 'run on a simulator'}.",
    ]


def route_summary(governance: Governance | None) -> str | None:
    """Why another backend than the requested one answered (None when none did)."""
    if governance is None or not governance.route:
        return None
    last = governance.route[-1]
    return (
        f"requested {governance.requested_backend}; ran on {last.to_backend} after "
        f"{last.kind} from {last.from_backend}: {last.why}"
    )
