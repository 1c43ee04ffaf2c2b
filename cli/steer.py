"""Steering a running experiment: `qloop approve|reject` (signals, optionally signed),
`qloop pause|resume|cancel` and `qloop reroute`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import ValidationError
from temporalio.client import (
    WorkflowHandle,
)
from temporalio.service import RPCError

from cli.connection import connect
from cli.keys import read_signing_key
from cli.output import EXIT_INVALID
from schemas.control import ApprovalDecision, OpsCommand, RerouteCommand
from schemas.pipeline import Progress
from schemas.request import BackendChoice
from schemas.settings import current_settings
from schemas.signatures import (
    SigningKeyError,
    sign_decision,
)
from workflows.paid_execution import describe_backend


async def current_progress(handle: WorkflowHandle) -> Progress | None:
    """None when no worker answers (down, or the experiment has ended)."""
    try:
        return await handle.query(
            "progress", result_type=Progress, rpc_timeout=timedelta(seconds=5)
        )
    except RPCError:
        return None


def refused_count(progress: Progress | None) -> int:
    if progress is None or progress.governance is None:
        return 0
    return len(progress.governance.refused_decisions)


async def cmd_decide(args: argparse.Namespace) -> int:
    """Signals, not updates: a signal is recorded even while every worker is down, and the
    experiment acts on it when one comes back. With --key the decision is signed over the
    experiment's current run (schemas/signatures.py), which the server names without a worker."""
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
    handle = client.get_workflow_handle(args.id)
    if key is not None:
        run_id = (await handle.describe()).run_id
        verdict: Literal["approved", "rejected"] = (
            "approved" if args.command == "approve" else "rejected"
        )
        signature = sign_decision(
            key, args.id, run_id, verdict, args.approver, args.reason, datetime.now(UTC)
        )
        decision = decision.model_copy(update={"signature": signature})
    if args.print_json:
        print(decision.model_dump_json(exclude_none=True))
        return 0
    before = refused_count(await current_progress(handle))
    await handle.signal(args.command, decision)
    wait_seconds = current_settings().decision_wait_seconds
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        progress = await current_progress(handle)
        governance = progress.governance if progress else None
        if governance and len(governance.refused_decisions) > before:
            print(f"refused: {governance.refused_decisions[-1].note}", file=sys.stderr)
            return EXIT_INVALID
        decided = [a.decision for a in governance.approvals if a.decision] if governance else []
        if any(d.approver == args.approver for d in decided):
            signed = f", signed with key {decided[-1].key_id}" if decided[-1].key_id else ""
            print(f"{args.id}: {decided[-1].verdict} by {args.approver}{signed}")
            return 0
        await asyncio.sleep(0.3)
    print(
        f"{args.id}: {args.command} by {args.approver} sent; no worker confirmed it within "
        f"{wait_seconds:.0f} s — it takes effect when a worker runs the experiment"
    )
    return 0


async def cmd_steer(args: argparse.Namespace) -> int:
    command = OpsCommand(by=args.by, reason=args.reason)
    client = await connect()
    handle = client.get_workflow_handle(args.id)
    await handle.signal(args.command, command)
    print(f"{args.id}: {args.command} sent")
    return 0


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
    client = await connect()
    await client.get_workflow_handle(args.id).signal("reroute", command)
    print(f"{args.id}: reroute to {describe_backend(backend)} sent")
    return 0


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
        decide.set_defaults(handler=cmd_decide)
    for action, help_text in (
        ("pause", "hold an experiment: nothing is submitted and polling stops"),
        ("resume", "let a paused experiment go on"),
        ("cancel", "cancel: the provider job is cancelled and the budget released"),
    ):
        steer = commands.add_parser(action, help=help_text)
        steer.add_argument("id")
        steer.add_argument("--by", default=os.environ.get("USER", ""))
        steer.add_argument("--reason", default="")
        steer.set_defaults(handler=cmd_steer)
    reroute = commands.add_parser("reroute", help="move an experiment to another backend")
    reroute.add_argument("id")
    reroute.add_argument("--provider", choices=["aer", "braket"], required=True)
    reroute.add_argument("--device", help="e.g. ideal, noisy, braket_sv, or a device ARN")
    reroute.add_argument("--noise-profile")
    reroute.add_argument("--by", default=os.environ.get("USER", ""))
    reroute.add_argument("--reason", default="")
    reroute.set_defaults(handler=cmd_reroute)
