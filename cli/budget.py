"""`qloop budget set|show|reservations|release|reconcile`: one ledger per account
(workflows/budget_ledger.py); `set --provider-backstop` also mirrors the remaining budget into
the provider's spending limits (cli/provider_backstop.py)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError

from activities.governance.budget_calls import set_budget_limit, show_budget
from adapters.errors import ProviderError
from cli.connection import connect, task_queue, workflow_link
from cli.keys import read_signing_key
from cli.output import EXIT_DONE, EXIT_INVALID, EXIT_NOT_ALLOWED, moment
from schemas.budget import (
    ACCOUNT_PATTERN,
    ACCOUNT_RULE,
    BUDGET_PERIODS,
    LedgerView,
    SetLimit,
    format_usd,
    ledger_workflow_id,
)
from schemas.policy import PolicyError, load_policy_book
from schemas.signatures import (
    SigningKeyError,
    sign_limit_change,
)

# A ledger answers through a worker; with every worker down the server would hold the call for
# much longer before saying so.
BUDGET_ANSWER_TIMEOUT = timedelta(seconds=10)


def account_name(text: str) -> str:
    if re.fullmatch(ACCOUNT_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an account name: use {ACCOUNT_RULE}")
    return text


def usd_amount(text: str) -> float:
    try:
        amount = float(text)
    except ValueError:
        amount = math.nan
    if not (math.isfinite(amount) and amount >= 0):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an amount in US dollars, 0 or more, such as 250 or 12.50"
        )
    return amount


def format_ledger(view: LedgerView, link: str) -> str:
    per = "" if view.period == "none" else f" per {view.period}"
    signed = f", signed with key {view.limit_key_id}" if view.limit_key_id else ""
    set_by = f" (set by {view.limit_set_by}{signed})" if view.limit_set_by else ""
    since = "all time" if view.period_start is None else f"since {moment(view.period_start)}"
    lines = [
        f"budget of account {view.account}",
        f"  limit           {format_usd(view.limit_usd)}{per}{set_by}",
        f"  period          {since}",
        f"  reserved        {format_usd(view.reserved_usd)}",
        f"  committed       {format_usd(view.committed_usd)}",
        f"  available       {format_usd(view.available_usd)}",
        f"  Web UI          {link}",
    ]
    lines.extend(
        f"  refused change  {format_usd(change.limit_usd)} per {change.period} by "
        f"{change.by or '?'} at {moment(change.at)}: {change.why}"
        for change in view.refused_limit_changes
    )
    if not view.entries:
        return "\n".join([*lines, "  no entries"])
    lines.append("")
    lines.append(
        f"  {'CREATED':25} {'STATE':9} {'RESERVED':>10} {'ACTUAL':>10}  {'BACKEND':24} KEY"
    )
    for entry in view.entries:
        actual = "-" if entry.actual_usd is None else format_usd(entry.actual_usd)
        reason = f"  ({entry.reason})" if entry.reason else ""
        lines.append(
            f"  {moment(entry.created_at):25} {entry.state:9} {format_usd(entry.amount_usd):>10} "
            f"{actual:>10}  {entry.backend or '-':24} {entry.key}{reason}"
        )
    return "\n".join(lines)


def ledger_not_answering(account: str, error: Exception) -> int:
    print(
        f"the budget ledger of account {account!r} did not answer: {error}; "
        "is a qloop worker running?",
        file=sys.stderr,
    )
    return EXIT_NOT_ALLOWED


async def cmd_budget_set(args: argparse.Namespace) -> int:
    try:
        key = read_signing_key(args.key) if args.key else None
    except SigningKeyError as error:
        print(f"refused: --key {error}", file=sys.stderr)
        return EXIT_INVALID
    signature = (
        sign_limit_change(
            key, args.account, args.limit_usd, args.period, args.by, datetime.now(UTC)
        )
        if key is not None
        else None
    )
    command = SetLimit(
        limit_usd=args.limit_usd, period=args.period, by=args.by, signature=signature
    )
    client = await connect()
    try:
        view = await set_budget_limit(
            client, task_queue(), args.account, command, BUDGET_ANSWER_TIMEOUT
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError as error:
        return ledger_not_answering(args.account, error)
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        # The ledger refuses a change only by the account's policy (its budget admins).
        print(f"refused: {getattr(cause, 'message', cause)}", file=sys.stderr)
        return EXIT_NOT_ALLOWED
    if not args.json:
        print(format_ledger(view, workflow_link(client, ledger_workflow_id(args.account))))
    backstop: list[dict[str, Any]] | None = None
    if args.provider_backstop:
        # Imported here: boto3 is loaded only by the commands that talk to the provider.
        from cli.provider_backstop import format_backstop, remaining_budget, set_provider_backstop

        # What the ledger shows as available after the change: limit - committed - reserved.
        remaining = remaining_budget(view.available_usd)
        try:
            policy = load_policy_book().for_account(args.account)
            limits = set_provider_backstop(policy, args.account, remaining)
        except (PolicyError, ProviderError) as error:
            print(
                f"the ledger's limit is set, but not the provider backstop: {error}",
                file=sys.stderr,
            )
            return EXIT_NOT_ALLOWED
        backstop = [limit.as_json() for limit in limits]
        if not args.json:
            print(format_backstop(args.account, remaining, limits))
    if args.json:
        ledger = view.model_dump(mode="json")
        print(json.dumps({"ledger": ledger, "provider_backstop": backstop}, indent=2))
    return 0


async def cmd_budget_show(args: argparse.Namespace) -> int:
    client = await connect()
    try:
        view = await show_budget(client, args.account, args.entries, BUDGET_ANSWER_TIMEOUT)
    except RPCError as error:
        return ledger_not_answering(args.account, error)
    if view is None:
        print(
            f"account {args.account!r} has no budget ledger yet: "
            f"`qloop budget set {args.account} --limit-usd AMOUNT` creates one",
            file=sys.stderr,
        )
        return EXIT_NOT_ALLOWED
    if args.json:
        print(view.model_dump_json(indent=2))
    else:
        print(format_ledger(view, workflow_link(client, ledger_workflow_id(args.account))))
    return 0


async def cmd_budget_reservations(args: argparse.Namespace) -> int:
    from activities.governance.open_reservations import open_reservations

    client = await connect()
    held = await open_reservations(client, args.account)
    if args.json:
        print(json.dumps([h.model_dump(mode="json") for h in held], indent=2))
        return 0
    if not held:
        print(f"account {args.account!r} has no open reservation")
        return 0
    print(f"{'CREATED':25} {'RESERVED':>10}  {'WORKFLOW':12} KEY")
    for reservation in held:
        entry = reservation.entry
        print(
            f"{moment(entry.created_at):25} {format_usd(entry.amount_usd):>10}  "
            f"{reservation.workflow_status:12} {entry.key}"
        )
    return 0


async def cmd_budget_release(args: argparse.Namespace) -> int:
    from activities.governance.open_reservations import release_by_hand

    client = await connect()
    try:
        released = await release_by_hand(client, args.key, args.by, args.reason, args.account)
    except LookupError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_INVALID
    entry = released.entry
    print(
        f"released {format_usd(entry.amount_usd)} of {entry.key} on account "
        f"{released.account} (workflow {entry.experiment_id} is {released.workflow_status}): "
        f"{entry.reason}"
    )
    return 0


async def cmd_budget_reconcile(args: argparse.Namespace) -> int:
    from activities.providers.provider_reconciliation import reconcile

    client = await connect()
    result = await reconcile(client, args.account, args.since, datetime.now(UTC))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(
            f"account {result.account} since {moment(result.since)}: ledger committed "
            f"{format_usd(result.ledger_committed_usd)}, provider billed "
            f"{format_usd(result.provider_billed_usd)} for {result.tasks} tasks; "
            f"{len(result.in_flight)} workflows in flight"
        )
        for difference in result.differences:
            print(f"  DIFFERENCE {difference.workflow_id}: {difference.detail}")
        if not result.differences:
            print("  no difference")
    return EXIT_NOT_ALLOWED if result.differences else EXIT_DONE


def moment_argument(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an ISO 8601 time such as 2026-12-01 or 2026-12-01T08:00Z"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def add_budget_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    budget = commands.add_parser(
        "budget", help="an account's budget: limit, balance, reservations, reconciliation"
    )
    actions = budget.add_subparsers(dest="budget_command", required=True)
    setter = actions.add_parser(
        "set", help="set an account's limit (the ledger is created on first use)"
    )
    setter.add_argument("account", type=account_name)
    setter.add_argument("--limit-usd", type=usd_amount, required=True, metavar="USD")
    setter.add_argument(
        "--period",
        choices=BUDGET_PERIODS,
        default="none",
        help="UTC calendar period the limit applies to (default: none, one limit for all time)",
    )
    setter.add_argument(
        "--by",
        "--as",
        dest="by",
        default=os.environ.get("USER", ""),
        help="who sets it: a budget admin's name when the account's policy names budget_admins",
    )
    setter.add_argument(
        "--key",
        metavar="FILE",
        help="the budget admin's private key: signs the change (required by budget_admins)",
    )
    setter.add_argument(
        "--provider-backstop",
        action="store_true",
        help="also set a Braket spending limit on every QPU the account's policy allows, "
        "leaving on each the account's remaining budget (Braket then refuses, itself, any task "
        "that costs more, even one submitted around qloop)",
    )
    setter.add_argument(
        "--json",
        action="store_true",
        help='print {"ledger": ..., "provider_backstop": [...] or null} as JSON',
    )
    setter.set_defaults(handler=cmd_budget_set)
    show = actions.add_parser("show", help="an account's limit, balance and recent entries")
    show.add_argument("account", type=account_name)
    show.add_argument("--entries", type=int, default=20, help="newest entries to list")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_budget_show)
    reservations = actions.add_parser(
        "reservations", help="an account's open reservations and the state of their workflows"
    )
    reservations.add_argument("account", type=account_name)
    reservations.add_argument("--json", action="store_true")
    reservations.set_defaults(handler=cmd_budget_reservations)
    release = actions.add_parser(
        "release", help="release an open reservation by hand (it is recorded who and why)"
    )
    release.add_argument("key", help="the reservation key, as `qloop budget reservations` lists it")
    release.add_argument("--by", "--as", dest="by", required=True, help="who releases it")
    release.add_argument("--reason", required=True, help="why, for the ledger's record")
    release.add_argument(
        "--account", type=account_name, help="the account (default: whichever ledger holds it)"
    )
    release.set_defaults(handler=cmd_budget_release)
    reconcile_parser = actions.add_parser(
        "reconcile",
        help="compare an account's ledger with the provider's own task list (exit 1 on a "
        "difference)",
    )
    reconcile_parser.add_argument("account", type=account_name)
    reconcile_parser.add_argument(
        "--since",
        type=moment_argument,
        help="start of the window (default: the oldest entry the ledger holds)",
    )
    reconcile_parser.add_argument("--json", action="store_true")
    reconcile_parser.set_defaults(handler=cmd_budget_reconcile)
