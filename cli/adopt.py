"""`qloop adopt`: take over Braket tasks someone submitted outside qloop (a notebook, the plain
Braket SDK) with a durable AdoptWorkflow, which waits until each ended, commits what Braket billed
for it in an account's ledger, fetches its counts and, given the request that describes the
circuits, mitigates and reports as if qloop had submitted them.

Everything is checked before anything starts (exit 2): the device and task ARNs, the account
name, the request file; a policy file that cannot be read exits 1.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cli.connection import connect, task_queue
from cli.output import EXIT_INVALID, EXIT_NOT_ALLOWED
from cli.start import announce_and_follow, positive_seconds, start_search_attributes
from cli.workflow_kinds import kind_named
from schemas.adoption import (
    BRAKET_TASK_ARN_PATTERN,
    MAX_ADOPTED_TASKS,
    AdoptInput,
    AdoptReport,
)
from schemas.budget import ACCOUNT_PATTERN, ACCOUNT_RULE
from schemas.loading import RequestError, load_request
from schemas.pipeline import PollingPolicy
from schemas.request import BRAKET_DEVICE_ARN, BackendChoice, ExperimentRequest
from schemas.settings import current_settings

DEFAULT_ACCOUNT = "default"
DEFAULT_SINCE = timedelta(days=7)


class AdoptArgumentError(ValueError):
    """An argument of `qloop adopt` that is invalid; nothing was started."""


def task_arns_from_file(path: str) -> list[str]:
    """One ARN a line; blank lines and lines starting with '#' are skipped."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise AdoptArgumentError(f"--from-file {path}: {error.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_tags(pairs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AdoptArgumentError(f"--tag {pair!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def tagged_task_arns(device: str, tags: dict[str, str], since: datetime) -> list[str]:
    """The device's tasks created since `since` whose tags hold every `tags` pair, oldest first.
    SearchQuantumTasks has no tag filter: the tasks are listed by creation time and filtered on
    the tags each one carries."""
    from adapters.braket_aws import search_quantum_tasks

    region = device.split(":")[3] or None
    found = [
        task
        for task in search_quantum_tasks(since, region)
        if task.get("deviceArn") == device
        and all(task.get("tags", {}).get(key) == value for key, value in tags.items())
    ]
    found.sort(key=lambda task: task.get("createdAt") or since)
    return [str(task["quantumTaskArn"]) for task in found]


def adopted_arns(args: argparse.Namespace) -> list[str]:
    arns = list(args.task_arns)
    if args.from_file:
        arns += task_arns_from_file(args.from_file)
    if args.tag:
        arns += tagged_task_arns(args.device, parse_tags(args.tag), args.since)
    if not arns:
        raise AdoptArgumentError(
            "no task to adopt: give task ARNs, --from-file FILE or --tag KEY=VALUE"
        )
    bad = [arn for arn in arns if not re.fullmatch(BRAKET_TASK_ARN_PATTERN, arn)]
    if bad:
        raise AdoptArgumentError(
            f"not a Braket quantum task ARN: {bad[0]} (expected "
            "arn:aws:braket:<region>:<account id>:quantum-task/<id>)"
        )
    twice = [arn for arn, count in Counter(arns).items() if count > 1]
    if twice:
        raise AdoptArgumentError(f"task {twice[0]} is given twice")
    if len(arns) > MAX_ADOPTED_TASKS:
        raise AdoptArgumentError(
            f"{len(arns)} tasks: one adoption takes at most {MAX_ADOPTED_TASKS}; split them"
        )
    return arns


def adopt_input(args: argparse.Namespace) -> AdoptInput:
    """Everything `qloop adopt` checks before it starts: raises AdoptArgumentError (exit 2)."""
    if not BRAKET_DEVICE_ARN.fullmatch(args.device):
        raise AdoptArgumentError(
            f"--device {args.device!r} is not a Braket device ARN (expected "
            "arn:aws:braket:<region>:<account or empty>:device/<type>/<provider>/<name>)"
        )
    request: ExperimentRequest | None = None
    if args.request:
        try:
            request = load_request(args.request)
        except RequestError as error:
            raise AdoptArgumentError(str(error)) from None
    account = args.account or (request.policy.account if request else DEFAULT_ACCOUNT)
    if not re.fullmatch(ACCOUNT_PATTERN, account):
        raise AdoptArgumentError(f"--account {account!r}: {ACCOUNT_RULE}")
    arns = adopted_arns(args)
    try:
        return AdoptInput(
            device=args.device,
            task_arns=arns,
            account=account,
            request=request,
            poll_ceiling_seconds=args.poll_ceiling,
            compute_task_queue=current_settings().compute_task_queue,
        )
    except ValidationError as error:
        raise AdoptArgumentError(str(error)) from None


def check_policy(account: str) -> None:
    """A policy file that cannot be read refuses the adoption (exit 1), as it refuses a run."""
    from schemas.policy import PolicyError, load_policy_book

    try:
        load_policy_book().for_account(account)
    except PolicyError as error:
        print(f"not started: {error}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_ALLOWED) from None


async def cmd_adopt(args: argparse.Namespace) -> int:
    try:
        adoption = adopt_input(args)
    except AdoptArgumentError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_INVALID
    check_policy(adoption.account)
    client = await connect()
    workflow_id = args.id or f"adopt-{uuid.uuid4().hex[:8]}"
    backend = BackendChoice(provider="braket", device=adoption.device)
    handle = await client.start_workflow(
        "AdoptWorkflow",
        adoption,
        id=workflow_id,
        task_queue=task_queue(),
        result_type=AdoptReport,
        search_attributes=start_search_attributes("preparing", backend, adoption.account),
        static_summary=f"adopt {len(adoption.task_arns)} tasks on {adoption.device}",
    )
    return await announce_and_follow(client, handle, args, kind_named("adopt"))


def since_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_adopt_command(commands: Any) -> None:
    adopt = commands.add_parser(
        "adopt",
        help="wait for, bill, fetch and report Braket tasks submitted outside qloop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    adopt.add_argument("task_arns", nargs="*", metavar="TASK_ARN", help="quantum task ARNs")
    adopt.add_argument("--device", required=True, help="the Braket device ARN the tasks ran on")
    adopt.add_argument("--from-file", metavar="FILE", help="task ARNs, one a line")
    adopt.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "adopt the device's tasks carrying this tag (repeat: all of them); Braket's "
            "SearchQuantumTasks has no tag filter, so tasks created since --since are listed "
            "and filtered on their tags, oldest first"
        ),
    )
    adopt.add_argument(
        "--since",
        type=since_time,
        default=datetime.now(UTC) - DEFAULT_SINCE,
        metavar="TIME",
        help="with --tag: tasks created since this ISO 8601 time (default: 7 days ago)",
    )
    adopt.add_argument(
        "--account",
        help="the budget account whose ledger records the spend (default: the request's, "
        "else 'default')",
    )
    adopt.add_argument(
        "--request",
        metavar="FILE",
        help="the ExperimentRequest that describes the circuits: the tasks must hold, in order, "
        "the circuits qloop plans for it; then the report is mitigated",
    )
    adopt.add_argument("--id", help="workflow id (default: adopt-random)")
    adopt.add_argument("--wait", action="store_true", help="follow progress and print the report")
    adopt.add_argument(
        "--json",
        action="store_true",
        help="one JSON document on stdout (the report with --wait); the rest on stderr",
    )
    adopt.add_argument(
        "--poll-ceiling",
        type=positive_seconds,
        default=PollingPolicy().ceiling_seconds,
        metavar="SECONDS",
        help="longest wait between two polls of the provider (default: %(default)s)",
    )
    adopt.set_defaults(handler=cmd_adopt)
