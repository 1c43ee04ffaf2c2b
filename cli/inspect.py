"""Looking at workflows of every kind (cli/workflow_kinds.py): `qloop status`, `qloop result`,
`qloop list` and `qloop watch`."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.service import RPCError

from cli.connection import connect, workflow_link
from cli.follow import ProgressPrinter, follow_kind
from cli.output import (
    EXIT_DONE,
    EXIT_INVALID,
    EXIT_NOT_ALLOWED,
    notes_stream,
    print_json,
    print_table,
    report_failure,
)
from cli.workflow_kinds import KIND_NAMES, KINDS, WorkflowKind, kind_named, kind_of_type
from workflows import search_attributes as attrs

# A query answers through a worker; with none running the server would hold it much longer.
QUERY_TIMEOUT = timedelta(seconds=5)


async def described(
    client: Client, workflow_id: str
) -> tuple[WorkflowKind | None, WorkflowExecutionDescription]:
    """The workflow's kind (None: not one of qloop's) and its description; RPCError NOT_FOUND
    (exit 1 in main) for an unknown id."""
    description = await client.get_workflow_handle(workflow_id).describe()
    return kind_of_type(description.workflow_type), description


def not_a_qloop_workflow(workflow_id: str, workflow_type: str) -> int:
    print(f"{workflow_id} is a {workflow_type}, not one of qloop's workflow kinds", file=sys.stderr)
    return EXIT_INVALID


async def current_view(handle: WorkflowHandle, kind: WorkflowKind) -> BaseModel | None:
    """The kind's progress (or view) query, None when no worker answers."""
    try:
        answer: BaseModel = await handle.query(
            kind.progress_query, result_type=kind.progress_model, rpc_timeout=QUERY_TIMEOUT
        )
    except RPCError:
        return None
    return answer


async def cmd_status(args: argparse.Namespace) -> int:
    client = await connect()
    kind, description = await described(client, args.id)
    status_name = description.status.name if description.status else "UNKNOWN"
    found = description.typed_search_attributes
    stage, backend = found.get(attrs.STAGE), found.get(attrs.BACKEND)
    progress = None
    if kind is not None:
        # A closed workflow answers too (a worker replays it), unless no worker runs.
        progress = await current_view(client.get_workflow_handle(args.id), kind)
    link = workflow_link(client, args.id)
    if args.json:
        print_json(
            {
                "workflow_id": args.id,
                "kind": kind.name if kind else None,
                "workflow_type": description.workflow_type,
                "status": status_name,
                "stage": stage,
                "backend": backend,
                "progress": None if progress is None else progress.model_dump(mode="json"),
                "web_ui": link,
            }
        )
        return EXIT_DONE
    print(f"{args.id}: {status_name} ({kind.name if kind else description.workflow_type})")
    if kind is not None and progress is not None:
        print(f"  {'now':8} {kind.describe(progress)}")
    elif stage:
        print(f"  stage    {stage}")
    if backend:
        print(f"  backend  {backend}")
    print(f"  Web UI   {link}")
    return EXIT_DONE


async def cmd_result(args: argparse.Namespace) -> int:
    """Waits for the workflow's report; a ledger or breaker, which never ends, shows its view."""
    client = await connect()
    kind, description = await described(client, args.id)
    if kind is None:
        return not_a_qloop_workflow(args.id, description.workflow_type)
    link = workflow_link(client, args.id)
    handle = client.get_workflow_handle(args.id, result_type=kind.report_model)
    if kind.long_lived:
        view = await current_view(handle, kind)
        if view is None:
            print(f"{args.id}: no worker answered; is a qloop worker running?", file=sys.stderr)
            return EXIT_NOT_ALLOWED
        report: Any = view
    else:
        try:
            report = await handle.result()
        except WorkflowFailureError as error:
            return report_failure(args.id, error, args.json)
    if args.json:
        print_json(report)
    else:
        print(kind.format_report(report, link))
    return EXIT_DONE


async def cmd_watch(args: argparse.Namespace) -> int:
    """Follows a workflow live until it ends, then prints its report (as `run --wait` does)."""
    client = await connect()
    kind, description = await described(client, args.id)
    if kind is None:
        return not_a_qloop_workflow(args.id, description.workflow_type)
    if kind.long_lived:
        print(
            f"{args.id} is a {kind.name}: it runs for ever; `qloop status {args.id}` shows it now",
            file=sys.stderr,
        )
        return EXIT_INVALID
    handle = client.get_workflow_handle(args.id, result_type=kind.report_model)
    try:
        report = await follow_kind(handle, kind, ProgressPrinter(notes_stream(args.json)))
    except WorkflowFailureError as error:
        return report_failure(args.id, error, args.json)
    if args.json:
        print_json(report)
    else:
        print(kind.format_report(report, workflow_link(client, args.id)))
    return EXIT_DONE


def list_query(kind_name: str | None, stage: str | None, awaiting_approval: bool) -> str:
    kinds = [kind_named(kind_name)] if kind_name else list(KINDS)
    query = "(" + " OR ".join(f"WorkflowType = '{kind.workflow_type}'" for kind in kinds) + ")"
    if stage:
        query += f" AND {attrs.STAGE.name} = '{stage}'"
    if awaiting_approval:
        query += f" AND {attrs.AWAITING_APPROVAL.name} = true"
    return query


async def cmd_list(args: argparse.Namespace) -> int:
    client = await connect()
    query = list_query(args.kind, args.stage, args.awaiting_approval)
    rows: list[dict[str, str]] = []
    async for execution in client.list_workflows(query, limit=args.limit):
        kind = kind_of_type(execution.workflow_type)
        assert kind is not None  # the query names qloop's kinds only
        rows.append(
            {
                "workflow_id": execution.id,
                "kind": kind.name,
                "status": execution.status.name if execution.status else "?",
                "stage": execution.typed_search_attributes.get(attrs.STAGE) or "-",
                "detail": kind.list_detail(execution),
                "started": execution.start_time.isoformat(timespec="seconds"),
            }
        )
    if args.json:
        print_json(rows)
        return EXIT_DONE
    print_table(
        ["WORKFLOW ID", "KIND", "STATUS", "STAGE", "DETAIL"],
        [
            [row["workflow_id"], row["kind"], row["status"], row["stage"], row["detail"]]
            for row in rows
        ],
    )
    return EXIT_DONE


def stage_name(text: str) -> str:
    """A stage as search attributes hold it (`waiting`, `awaiting_approval`): it goes into a
    visibility query, so nothing else is allowed in."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a stage name such as waiting or awaiting_approval (lowercase letters, "
            "digits, _ and -)"
        )
    return text


def positive_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return count


def add_inspect_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kinds = ", ".join(KIND_NAMES)
    status = commands.add_parser("status", help=f"state and progress of a workflow ({kinds})")
    status.add_argument("id")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(handler=cmd_status)

    result = commands.add_parser(
        "result", help="wait for and print a workflow's report (a ledger's or breaker's view)"
    )
    result.add_argument("id")
    result.add_argument("--json", action="store_true", help="one JSON document on stdout")
    result.set_defaults(handler=cmd_result)

    listing = commands.add_parser("list", help=f"recent workflows of every kind ({kinds})")
    listing.add_argument("--kind", choices=KIND_NAMES, help="only this kind (default: all)")
    listing.add_argument(
        "--stage", type=stage_name, help="only workflows in this stage (QloopStage)"
    )
    listing.add_argument(
        "--awaiting-approval", action="store_true", help="only experiments waiting for a person"
    )
    listing.add_argument("--limit", type=positive_count, default=20)
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=cmd_list)

    watch = commands.add_parser(
        "watch", help="follow a running experiment, loop or sweep live, then print its report"
    )
    watch.add_argument("id")
    watch.add_argument(
        "--json", action="store_true", help="the report as JSON on stdout; progress on stderr"
    )
    watch.set_defaults(handler=cmd_watch)
