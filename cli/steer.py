"""Steering a running workflow: `qloop approve|reject` (signals, optionally signed),
`qloop pause|resume|reroute` of an experiment, and `qloop cancel` of an experiment, loop or sweep.

Experiments are steered by signals, which the server records even while every worker is down;
the command then waits up to `decision_wait_seconds` for a worker to record the decision or
command in the experiment's governance record, and says whether one did. Loops and sweeps are
cancelled through Temporal's own cancellation, which their batches finish through (a money step
in flight is booked first). With `--json` each command prints one `SteerOutcome`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from cli.connection import connect
from cli.inspect import current_view, described, not_a_qloop_workflow
from cli.keys import read_signing_key
from cli.output import EXIT_DONE, EXIT_INVALID, EXIT_NOT_ALLOWED, failure_message, print_json
from cli.workflow_kinds import WorkflowKind
from schemas.control import (
    ApprovalDecision,
    Governance,
    OpsCommand,
    RecordedDecision,
    RerouteCommand,
)
from schemas.pipeline import Progress
from schemas.report import ExperimentReport
from schemas.request import BackendChoice
from schemas.settings import current_settings
from schemas.signatures import SigningKeyError, sign_decision
from workflows.paid_execution import describe_backend

# Which workflow kinds each steering command applies to.
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "approve": ("experiment",),
    "reject": ("experiment",),
    "pause": ("experiment",),
    "resume": ("experiment",),
    "reroute": ("experiment",),
    "cancel": ("experiment", "loop", "sweep"),
}

Found = TypeVar("Found")


class SteerOutcome(BaseModel):
    """What a steering command did. `confirmed`: a worker recorded the signal in the
    experiment's governance record, or Temporal accepted the cancellation of a loop or sweep
    (False: sent, and it takes effect when a worker runs the experiment). `ended`: the
    workflow's final status, with `cancel --wait`."""

    workflow_id: str
    kind: str
    command: str
    confirmed: bool
    message: str
    decision: RecordedDecision | None = None
    ended: str | None = None


@dataclass(frozen=True)
class Target:
    """The running workflow to steer: its handle (typed by its kind's report), kind and run."""

    handle: WorkflowHandle
    kind: WorkflowKind
    run_id: str


async def steering_target(client: Client, workflow_id: str, command: str) -> Target | int:
    """The running workflow `command` steers, or the exit code of why it cannot: unknown id
    (RPCError NOT_FOUND, exit 1 in main), not a kind the command applies to (2), ended (1)."""
    kind, description = await described(client, workflow_id)
    if kind is None:
        return not_a_qloop_workflow(workflow_id, description.workflow_type)
    kinds = APPLIES_TO[command]
    if kind.name not in kinds:
        applies = " and ".join(f"{name}s" for name in kinds)
        print(
            f"refused: {command} applies to {applies} only; {workflow_id} is a {kind.name}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if description.status != WorkflowExecutionStatus.RUNNING:
        status = description.status.name.lower() if description.status else "unknown"
        print(
            f"refused: {workflow_id} has ended ({status}); there is nothing to {command}",
            file=sys.stderr,
        )
        return EXIT_NOT_ALLOWED
    handle = client.get_workflow_handle(workflow_id, result_type=kind.report_model)
    return Target(handle, kind, description.run_id)


async def current_governance(target: Target) -> Governance | None:
    """None when no worker answers (all down) or the experiment is not governed yet."""
    progress = await current_view(target.handle, target.kind)
    return progress.governance if isinstance(progress, Progress) else None


async def recorded(target: Target, found: Callable[[Governance], Found | None]) -> Found | None:
    """What `found` sees in the governance record once a worker recorded the signal; None when
    no worker did within `decision_wait_seconds`."""
    deadline = time.monotonic() + current_settings().decision_wait_seconds
    while time.monotonic() < deadline:
        governance = await current_governance(target)
        if governance is not None and (seen := found(governance)) is not None:
            return seen
        await asyncio.sleep(0.3)
    return None


def not_confirmed(workflow_id: str, command: str) -> str:
    wait_seconds = current_settings().decision_wait_seconds
    return (
        f"{workflow_id}: {command} sent; no worker confirmed it within {wait_seconds:.0f} s — it "
        "takes effect when a worker runs the experiment"
    )


def decisions_by(governance: Governance | None, approver: str) -> list[RecordedDecision]:
    if governance is None:
        return []
    counted = [a.decision for a in governance.approvals if a.decision is not None]
    return [d for d in counted if d.approver == approver]


def finish(outcome: SteerOutcome, as_json: bool, code: int = EXIT_DONE) -> int:
    if as_json:
        print_json(outcome)
    elif code == EXIT_DONE:
        print(outcome.message)
    else:
        print(f"refused: {outcome.message}", file=sys.stderr)
    return code


async def cmd_decide(args: argparse.Namespace) -> int:
    """With --key the decision is signed over the experiment's current run
    (schemas/signatures.py), which the server names without a worker. A decision the
    experiment refuses (not an approver, nothing pending, a bad signature) exits 1."""
    try:
        decision = ApprovalDecision(approver=args.approver, reason=args.reason)
        key = read_signing_key(args.key) if args.key else None
    except ValidationError as error:
        problems = "; ".join(issue["msg"] for issue in error.errors())
        print(f"refused: --as {args.approver!r}: {problems}", file=sys.stderr)
        return EXIT_INVALID
    except SigningKeyError as error:
        print(f"refused: --key {error}", file=sys.stderr)
        return EXIT_INVALID
    if args.print_json and key is None:
        print("refused: --print-json prints a signed decision; give --key FILE", file=sys.stderr)
        return EXIT_INVALID
    client = await connect()
    target = await steering_target(client, args.id, args.command)
    if isinstance(target, int):
        return target
    if key is not None:
        verdict: Literal["approved", "rejected"] = (
            "approved" if args.command == "approve" else "rejected"
        )
        signature = sign_decision(
            key, args.id, target.run_id, verdict, args.approver, args.reason, datetime.now(UTC)
        )
        decision = decision.model_copy(update={"signature": signature})
    if args.print_json:
        print(decision.model_dump_json(exclude_none=True))
        return EXIT_DONE
    before = await current_governance(target)
    refused_before = len(before.refused_decisions) if before else 0
    decided_before = len(decisions_by(before, args.approver))

    def settled(governance: Governance) -> RecordedDecision | None:
        if len(governance.refused_decisions) > refused_before:
            return governance.refused_decisions[-1]
        decided = decisions_by(governance, args.approver)
        return decided[-1] if len(decided) > decided_before else None

    await target.handle.signal(args.command, decision)
    answer = await recorded(target, settled)
    outcome = SteerOutcome(
        workflow_id=args.id,
        kind=target.kind.name,
        command=args.command,
        confirmed=answer is not None,
        decision=answer,
        message=not_confirmed(args.id, f"{args.command} by {args.approver}"),
    )
    if answer is None:
        return finish(outcome, args.json)
    if answer.verdict == "refused":
        outcome.message = f"{args.id}: {answer.note}"
        return finish(outcome, args.json, EXIT_NOT_ALLOWED)
    signed = f", signed with key {answer.key_id}" if answer.key_id else ""
    outcome.message = f"{args.id}: {answer.verdict} by {args.approver}{signed}"
    return finish(outcome, args.json)


async def signal_ops(
    target: Target, workflow_id: str, command: str, signal: OpsCommand, done: str
) -> SteerOutcome:
    """Sends an ops signal to an experiment and waits for a worker to record it."""
    before = await current_governance(target)
    ops_before = len(before.ops) if before else 0
    await target.handle.signal(command, signal)
    event = await recorded(target, lambda g: g.ops[-1] if len(g.ops) > ops_before else None)
    return SteerOutcome(
        workflow_id=workflow_id,
        kind=target.kind.name,
        command=command,
        confirmed=event is not None,
        message=done if event is not None else not_confirmed(workflow_id, command),
    )


async def cmd_pause_or_resume(args: argparse.Namespace) -> int:
    client = await connect()
    target = await steering_target(client, args.id, args.command)
    if isinstance(target, int):
        return target
    done = {"pause": "paused: nothing is submitted and polling stops", "resume": "resumed"}
    command = OpsCommand(by=args.by, reason=args.reason)
    outcome = await signal_ops(
        target, args.id, args.command, command, f"{args.id}: {done[args.command]}"
    )
    return finish(outcome, args.json)


async def cmd_reroute(args: argparse.Namespace) -> int:
    try:
        backend = BackendChoice(
            provider=args.provider,
            **({"device": args.device} if args.device else {}),
            noise_profile=args.noise_profile,
        )
        command = RerouteCommand(backend=backend, by=args.by, reason=args.reason)
    except ValidationError as error:
        problems = "; ".join(issue["msg"] for issue in error.errors())
        print(f"refused: reroute target: {problems}", file=sys.stderr)
        return EXIT_INVALID
    # Deferred: the adapters import the simulators, which the other commands do not need.
    from adapters.errors import InvalidRequestError
    from adapters.registry import get_adapter

    try:
        get_adapter(backend)
    except InvalidRequestError as error:
        print(f"refused: reroute target: {error}", file=sys.stderr)
        return EXIT_INVALID
    client = await connect()
    target = await steering_target(client, args.id, "reroute")
    if isinstance(target, int):
        return target
    outcome = await signal_ops(
        target, args.id, "reroute", command, f"{args.id}: rerouted to {describe_backend(backend)}"
    )
    return finish(outcome, args.json)


async def final_status(target: Target) -> str:
    """How the workflow ended: an experiment's report status (completed, rejected,
    cancelled), or cancelled / failed / completed for a loop or sweep."""
    try:
        report = await target.handle.result()
    except WorkflowFailureError as error:
        if isinstance(error.cause, CancelledError):
            return "cancelled"
        return f"failed: {failure_message(error)}"
    if isinstance(report, ExperimentReport):
        experiment = report
        reason = f" ({experiment.status_reason})" if experiment.status_reason else ""
        return f"{experiment.status}{reason}"
    return "completed"


async def cmd_cancel(args: argparse.Namespace) -> int:
    """An experiment gets the `cancel` signal (who and why go into its record; the provider
    job is cancelled and the budget released); a loop or sweep is cancelled through Temporal."""
    client = await connect()
    target = await steering_target(client, args.id, "cancel")
    if isinstance(target, int):
        return target
    command = OpsCommand(by=args.by, reason=args.reason)
    if target.kind.name == "experiment":
        outcome = await signal_ops(target, args.id, "cancel", command, f"{args.id}: cancelling")
    else:
        by = f" by {args.by}" if args.by else ""
        await target.handle.cancel(reason=f"cancelled{by}: {args.reason}".rstrip(": "))
        outcome = SteerOutcome(
            workflow_id=args.id,
            kind=target.kind.name,
            command="cancel",
            confirmed=True,
            message=f"{args.id}: cancelling (its batches settle their money first)",
        )
    if args.wait:
        outcome.ended = await final_status(target)
        outcome.message = f"{args.id}: ended {outcome.ended}"
    return finish(outcome, args.json)


def add_steer_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verdict, help_text in (
        ("approve", "approve an experiment awaiting approval"),
        ("reject", "reject an experiment awaiting approval"),
    ):
        decide = commands.add_parser(verdict, help=help_text)
        decide.add_argument("id")
        decide.add_argument("--as", dest="approver", required=True, help="approver name")
        decide.add_argument("--reason", default="")
        decide.add_argument(
            "--key",
            metavar="FILE",
            help="the approver's private key: signs the decision (accounts with signed approval)",
        )
        decide.add_argument(
            "--print-json",
            action="store_true",
            help="print the signed decision for the Web UI or `temporal workflow signal` "
            "instead of sending it",
        )
        decide.add_argument("--json", action="store_true", help="print the outcome as JSON")
        decide.set_defaults(handler=cmd_decide)
    for action, help_text, handler in (
        (
            "pause",
            "hold an experiment: nothing is submitted and polling stops",
            cmd_pause_or_resume,
        ),
        ("resume", "let a paused experiment go on", cmd_pause_or_resume),
        (
            "cancel",
            "cancel an experiment, loop or sweep: provider jobs are cancelled and budgets released",
            cmd_cancel,
        ),
    ):
        steer = commands.add_parser(action, help=help_text)
        steer.add_argument("id")
        steer.add_argument("--by", default=os.environ.get("USER", ""))
        steer.add_argument("--reason", default="")
        steer.add_argument("--json", action="store_true", help="print the outcome as JSON")
        if action == "cancel":
            steer.add_argument(
                "--wait", action="store_true", help="wait until the workflow has ended"
            )
        steer.set_defaults(handler=handler)
    reroute = commands.add_parser("reroute", help="move an experiment to another backend")
    reroute.add_argument("id")
    reroute.add_argument("--provider", choices=["aer", "braket"], required=True)
    reroute.add_argument("--device", help="e.g. ideal, noisy, braket_sv, or a device ARN")
    reroute.add_argument("--noise-profile")
    reroute.add_argument("--by", default=os.environ.get("USER", ""))
    reroute.add_argument("--reason", default="")
    reroute.add_argument("--json", action="store_true", help="print the outcome as JSON")
    reroute.set_defaults(handler=cmd_reroute)
