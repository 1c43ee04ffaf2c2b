"""`qloop health [show|reset]`: one circuit breaker per backend (workflows/backend_health.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from cli.connection import connect, workflow_link
from cli.output import EXIT_NOT_ALLOWED, moment
from schemas.health import HEALTH_WORKFLOW_PREFIX, HealthView, ResetRequest, health_workflow_id


def non_blank(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


# A breaker answers through a worker; with every worker down the server would hold a query
# for half a minute before saying so.
HEALTH_ANSWER_TIMEOUT = timedelta(seconds=5)


def not_answering(backend: str, error: Exception) -> int:
    print(
        f"the circuit breaker of {backend!r} did not answer: {error}; is a qloop worker running?",
        file=sys.stderr,
    )
    return EXIT_NOT_ALLOWED


async def query_health(client: Client, backend: str) -> HealthView | None:
    """None when no experiment has used `backend` yet (its breaker does not exist); RPCError when
    it does not answer within HEALTH_ANSWER_TIMEOUT."""
    handle = client.get_workflow_handle(health_workflow_id(backend))
    try:
        return await handle.query("view", result_type=HealthView, rpc_timeout=HEALTH_ANSWER_TIMEOUT)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


def health_note(view: HealthView) -> str:
    if view.state == "open":
        return f"next probe after {moment(view.next_probe_at)}"
    if view.state == "half_open":
        return f"probe out: {view.probe_holder}"
    return view.last_failure or "-"


def format_health(view: HealthView, link: str) -> str:
    lines = [
        f"{view.backend}: {view.state}",
        f"  failures        {view.consecutive_failures} consecutive",
        f"  opened at       {moment(view.opened_at)}",
        f"  next probe      {moment(view.next_probe_at)}",
        f"  probe           {view.probe_holder or '-'}",
        f"  last failure    {view.last_failure or '-'}",
        "  transitions     (newest last)",
        *(
            f"    {moment(t.at)}  {t.from_state} -> {t.to_state}: {t.reason}"
            for t in view.transitions
        ),
        f"  Web UI          {link}",
    ]
    return "\n".join(lines)


def no_breaker(backend: str) -> int:
    print(
        f"no circuit breaker for {backend!r}: no experiment has used that backend yet "
        "(`qloop health` lists the known ones)",
        file=sys.stderr,
    )
    return EXIT_NOT_ALLOWED


async def cmd_health_list(args: argparse.Namespace) -> int:
    client = await connect()
    query = "WorkflowType = 'BackendHealthWorkflow' AND ExecutionStatus = 'Running'"
    backends = [
        execution.id.removeprefix(HEALTH_WORKFLOW_PREFIX)
        async for execution in client.list_workflows(query)
    ]
    # Asked all at once, so breakers that cannot answer cost one timeout, not one each.
    answers = await asyncio.gather(
        *(query_health(client, backend) for backend in backends), return_exceptions=True
    )
    rows: list[tuple[str, str, str, str]] = []
    for backend, answer in zip(backends, answers, strict=True):
        if isinstance(answer, RPCError):
            rows.append((backend, "?", "?", f"not answering: {answer.message}"))
        elif isinstance(answer, BaseException):
            raise answer
        elif answer is not None:
            rows.append(
                (backend, answer.state, str(answer.consecutive_failures), health_note(answer))
            )
    if not rows:
        print("no circuit breakers yet: each backend gets one when an experiment first uses it")
        return 0
    width = max(len("BACKEND"), *(len(row[0]) for row in rows))
    print(f"{'BACKEND':{width}} {'STATE':9} {'FAILURES':8} NOTE")
    for backend, state, failures, note in sorted(rows):
        print(f"{backend:{width}} {state:9} {failures:8} {note}")
    return 0


async def cmd_health_show(args: argparse.Namespace) -> int:
    client = await connect()
    try:
        view = await query_health(client, args.backend)
    except RPCError as error:
        return not_answering(args.backend, error)
    if view is None:
        return no_breaker(args.backend)
    if args.json:
        print(view.model_dump_json(indent=2))
    else:
        print(format_health(view, workflow_link(client, health_workflow_id(args.backend))))
    return 0


async def cmd_health_reset(args: argparse.Namespace) -> int:
    client = await connect()
    handle = client.get_workflow_handle(health_workflow_id(args.backend))
    try:
        view = await handle.execute_update(
            "reset",
            ResetRequest(by=args.by, reason=args.reason),
            result_type=HealthView,
            rpc_timeout=HEALTH_ANSWER_TIMEOUT,
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError as error:
        return not_answering(args.backend, error)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return no_breaker(args.backend)
        raise
    print(f"{view.backend}: {view.state} (reset by {args.by})")
    return 0


def add_health_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = commands.add_parser(
        "health", help="circuit breakers of the backends: list (default), show, reset"
    )
    health.set_defaults(handler=cmd_health_list)
    health_commands = health.add_subparsers(dest="health_command")
    health_show = health_commands.add_parser("show", help="one backend's breaker")
    health_show.add_argument("backend", help="backend key, e.g. aer/noisy:ibm_guadalupe")
    health_show.add_argument("--json", action="store_true")
    health_show.set_defaults(handler=cmd_health_show)
    health_reset = health_commands.add_parser("reset", help="close a backend's breaker by hand")
    health_reset.add_argument("backend", help="backend key, e.g. aer/noisy:ibm_guadalupe")
    health_reset.add_argument("--by", required=True, type=non_blank, help="who resets it")
    health_reset.add_argument("--reason", default="", help="why, for the record")
    health_reset.set_defaults(handler=cmd_health_reset)
