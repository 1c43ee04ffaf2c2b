"""The qloop CLI: validate and start experiments, follow them, and read their results.

`qloop` and `python starter.py` are the same program.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities.budget_calls import set_budget_limit, show_budget
from adapters.errors import TransientError
from schemas.budget import (
    ACCOUNT_PATTERN,
    ACCOUNT_RULE,
    BUDGET_PERIODS,
    LedgerView,
    SetLimit,
    format_usd,
    ledger_workflow_id,
)
from schemas.control import ApprovalDecision, OpsCommand, RerouteCommand
from schemas.health import HEALTH_WORKFLOW_PREFIX, HealthView, ResetRequest, health_workflow_id
from schemas.loading import RequestError, load_request
from schemas.payload_encryption import CodecKeyError
from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.policy import PolicyError
from schemas.report import Estimate, ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from workflows import search_attributes as attrs
from workflows.experiment import describe_backend

UI_URL = os.environ.get("QLOOP_UI_URL", "http://localhost:8233")
EXIT_REFUSED = 2


def workflow_link(client: Client, workflow_id: str) -> str:
    return f"{UI_URL}/namespaces/{quote(client.namespace)}/workflows/{quote(workflow_id, safe='')}"


def admit_or_exit(path: str) -> ExperimentRequest:
    """Refuses an invalid request before anything starts: schema first, then everything the
    circuit and backend allow us to check locally."""
    from activities.admission import AdmissionError, admit
    from activities.policy import check_at_the_door

    try:
        request = load_request(path)
        admitted = admit(request)
        check_at_the_door(request, admitted.capabilities.tier)
    except PolicyError as error:
        print(f"not started: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except RequestError as error:
        print(f"refused: {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except (AdmissionError, ValueError) as error:
        print(f"refused: {path}: invalid request\n  - {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except TransientError as error:
        print(
            f"not started: the provider did not answer: {error.message}; try again", file=sys.stderr
        )
        raise SystemExit(1) from None
    return request


async def connect() -> Client:
    from activities.observability import configure_tracing
    from worker import connect as connect_client

    return await connect_client([configure_tracing("qloop-cli")])


def task_queue() -> str:
    return os.environ.get("QLOOP_TASK_QUEUE", "qloop")


def static_details(request: ExperimentRequest) -> str:
    execution = request.execution
    zne = request.mitigation.zne
    mitigation = (
        f"ZNE {zne.folding} folding at {zne.scale_factors}, {zne.extrapolation}" if zne else "none"
    )
    readout = "on" if request.mitigation.readout else "off"
    return "\n\n".join(
        [
            f"**Problem:** {request.problem.kind}",
            f"**Backend:** {describe_backend(execution.backend)}, {execution.shots} shots",
            f"**Mitigation:** {mitigation}; readout {readout}",
            f"**Account:** {request.policy.account}",
        ]
    )


def experiment_input(request: ExperimentRequest, poll_ceiling_seconds: float) -> ExperimentInput:
    return ExperimentInput(
        request=request,
        polling=PollingPolicy(ceiling_seconds=poll_ceiling_seconds),
        compute_task_queue=os.environ.get("QLOOP_COMPUTE_TASK_QUEUE") or None,
    )


async def start(
    client: Client, request: ExperimentRequest, workflow_id: str | None, poll_ceiling: float
) -> WorkflowHandle:
    workflow_id = workflow_id or f"{request.name}-{uuid.uuid4().hex[:8]}"
    backend = request.execution.backend
    return await client.start_workflow(
        "ExperimentWorkflow",
        experiment_input(request, poll_ceiling),
        id=workflow_id,
        task_queue=task_queue(),
        result_type=ExperimentReport,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.STAGE, Stage.PREPROCESSING.value),
                SearchAttributePair(attrs.BACKEND, describe_backend(backend)),
                SearchAttributePair(attrs.PROVIDER, backend.provider),
                SearchAttributePair(attrs.ACCOUNT, request.policy.account),
            ]
        ),
        static_summary=f"{request.name}: {request.problem.kind} on {describe_backend(backend)}",
        static_details=static_details(request),
    )


def describe_progress(progress: Progress) -> str:
    text = progress.stage.value
    if progress.stage == Stage.WAITING and progress.job_state is not None:
        text += f"  job {progress.job_state.value}"
        if progress.queue_position is not None:
            text += f", queue position {progress.queue_position}"
        text += f", {progress.polls} poll{'s' if progress.polls != 1 else ''}"
    if progress.awaiting:
        text += f"  waiting for {progress.awaiting}"
    if progress.paused and progress.stage != Stage.PAUSED:
        text += "  (paused)"
    if progress.estimated_cost_usd is not None and progress.stage != Stage.WAITING:
        text += f"  (estimated cost ${progress.estimated_cost_usd:.2f})"
    return text


async def follow(handle: WorkflowHandle, interval: float = 0.3) -> ExperimentReport:
    """Prints each change of stage or job status until the experiment ends."""
    started = time.monotonic()
    result = asyncio.ensure_future(handle.result())
    last = ""
    while not result.done():
        try:
            progress = await handle.query("progress", result_type=Progress)
        except RPCError:
            progress = None
        if progress is not None:
            line = describe_progress(progress)
            if line != last:
                print(f"[{time.monotonic() - started:7.1f}s] {line}", flush=True)
                last = line
        await asyncio.wait([result], timeout=interval)
    report = result.result()
    if not last.startswith(Stage.COMPLETED.value):
        print(f"[{time.monotonic() - started:7.1f}s] {Stage.COMPLETED.value}", flush=True)
    return report


def format_estimate(estimate: Estimate | None) -> str:
    if estimate is None:
        return "-"
    return f"{estimate.value:.4f}  [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"


def format_governance(report: ExperimentReport) -> list[str]:
    governance = report.governance
    if governance is None:
        return []
    lines = [f"  account         {governance.account}"]
    for approval in governance.approvals:
        decision = approval.decision
        reason = decision.reason if decision and decision.reason else "no reason given"
        who = f" by {decision.approver} ({reason})" if decision else ""
        lines.append(f"  approval        {approval.outcome}{who} for {approval.backend}")
    lines.extend(
        f"  refused         {refused.note} (from {refused.approver})"
        for refused in governance.refused_decisions
    )
    lines.extend(
        f"  {change.kind:15} {change.from_backend} -> {change.to_backend}: {change.why}"
        for change in governance.route
    )
    for record in governance.budget:
        if record.committed_usd is not None:
            state = f"committed ${record.committed_usd:.2f}"
        else:
            state = "released" if record.released else "reserved"
        lines.append(f"  budget          ${record.reserved_usd:.2f} reserved, {state}")
    return lines


def format_report(report: ExperimentReport) -> str:
    if report.status != "completed":
        return "\n".join(
            [
                f"{report.experiment_id} ({report.name}) {report.status}",
                f"  reason          {report.status_reason}",
                *format_governance(report),
                f"  cost            estimated ${report.cost.estimated_usd:.2f}, "
                f"actual ${report.cost.actual_usd:.2f}",
            ]
        )
    assert report.provenance is not None and report.ideal_value is not None
    lines = [
        f"Result of {report.experiment_id} ({report.name})",
        f"  produced by     {report.produced_by}: {report.produced_by_reason}",
        f"  observable      {report.observable}",
        f"  raw             {format_estimate(report.raw)}",
        f"  mitigated       {format_estimate(report.mitigated)}",
        f"  ideal           {report.ideal_value:.4f}",
    ]
    if report.classical_baseline is not None:
        baseline = report.classical_baseline
        lines.append(f"  classical       {baseline.value:.4f} ({baseline.method})")
    if report.objective is not None:
        objective = report.objective
        mitigated = "-" if objective.mitigated is None else f"{objective.mitigated:.3f}"
        baseline_text = (
            "" if objective.baseline is None else f"   classical optimum {objective.baseline:.3f}"
        )
        lines.append(
            f"  {objective.name}: raw {objective.raw:.3f}   mitigated {mitigated}   "
            f"ideal {objective.ideal:.3f}{baseline_text}"
        )
    lines.append(
        f"  cost            estimated ${report.cost.estimated_usd:.2f}, "
        f"actual ${report.cost.actual_usd:.2f}"
    )
    lines.extend(format_governance(report))
    timings = ", ".join(
        f"{stage} {seconds:.2f}s" for stage, seconds in report.timings_seconds.items()
    )
    lines.append(f"  timings         {timings}")
    report_uri = report.provenance.artifacts.get("report", "")
    if report_uri.startswith("file://"):
        lines.append(f"  artifacts       {Path(report_uri.removeprefix('file://')).parent}")
    return "\n".join(lines)


def print_report(report: ExperimentReport, as_json: bool) -> None:
    print(report.model_dump_json(indent=2) if as_json else format_report(report))


def report_failure(workflow_id: str, error: WorkflowFailureError) -> int:
    cause = error.cause
    message = getattr(cause, "message", None) or str(cause)
    print(f"failed: {workflow_id}: {message}", file=sys.stderr)
    return 1


async def cmd_run(args: argparse.Namespace) -> int:
    request = admit_or_exit(args.file)
    client = await connect()
    handle = await start(client, request, args.id, args.poll_ceiling)
    print(f"started {handle.id}\n  Web UI: {workflow_link(client, handle.id)}", flush=True)
    if not args.wait:
        return 0
    try:
        report = await follow(handle)
    except WorkflowFailureError as error:
        return report_failure(handle.id, error)
    print_report(report, args.json)
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    client = await connect()
    handle = client.get_workflow_handle(args.id)
    description = await handle.describe()
    status = description.status.name if description.status else "UNKNOWN"
    print(f"{args.id}: {status}")
    if description.status == WorkflowExecutionStatus.RUNNING:
        progress = await handle.query("progress", result_type=Progress)
        print(f"  stage    {describe_progress(progress)}")
        print(f"  backend  {progress.backend}")
    else:
        stage = description.typed_search_attributes.get(attrs.STAGE)
        print(f"  stage    {stage}")
    print(f"  Web UI   {workflow_link(client, args.id)}")
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    client = await connect()
    handle = client.get_workflow_handle(args.id, result_type=ExperimentReport)
    try:
        report = await handle.result()
    except WorkflowFailureError as error:
        return report_failure(args.id, error)
    print_report(report, args.json)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    client = await connect()
    query = "WorkflowType = 'ExperimentWorkflow'"
    if args.awaiting_approval:
        query += f" AND {attrs.AWAITING_APPROVAL.name} = true"
    print(f"{'WORKFLOW ID':40} {'STATUS':11} {'STAGE':15} {'BACKEND':28} EST. COST")
    async for execution in client.list_workflows(query, limit=args.limit):
        found = execution.typed_search_attributes
        cost = found.get(attrs.ESTIMATED_COST_USD)
        status = execution.status.name if execution.status else "?"
        print(
            f"{execution.id:40} {status:11} {found.get(attrs.STAGE) or '-':15} "
            f"{found.get(attrs.BACKEND) or '-':28} {'-' if cost is None else f'${cost:.2f}'}"
        )
    return 0


# --- backend health: one circuit breaker per backend (workflows/backend_health.py) ------------


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
    return 1


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


def moment(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


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
    return 1


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


# --- steering a running experiment: approve, reject, pause, resume, reroute, cancel -----------

DECISION_WAIT_SECONDS = float(os.environ.get("QLOOP_DECISION_WAIT_SECONDS", "10"))


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
    experiment acts on it when one comes back."""
    try:
        decision = ApprovalDecision(approver=args.approver, reason=args.reason)
    except ValidationError as error:
        problems = "; ".join(issue["msg"] for issue in error.errors())
        print(f"refused: --as {args.approver!r}: {problems}", file=sys.stderr)
        return EXIT_REFUSED
    client = await connect()
    handle = client.get_workflow_handle(args.id)
    before = refused_count(await current_progress(handle))
    await handle.signal(args.command, decision)
    deadline = time.monotonic() + DECISION_WAIT_SECONDS
    while time.monotonic() < deadline:
        progress = await current_progress(handle)
        governance = progress.governance if progress else None
        if governance and len(governance.refused_decisions) > before:
            print(f"refused: {governance.refused_decisions[-1].note}", file=sys.stderr)
            return EXIT_REFUSED
        decided = [a.decision for a in governance.approvals if a.decision] if governance else []
        if any(d.approver == args.approver for d in decided):
            print(f"{args.id}: {decided[-1].verdict} by {args.approver}")
            return 0
        await asyncio.sleep(0.3)
    print(
        f"{args.id}: {args.command} by {args.approver} sent; no worker confirmed it within "
        f"{DECISION_WAIT_SECONDS:.0f} s — it takes effect when a worker runs the experiment"
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
        return EXIT_REFUSED
    client = await connect()
    await client.get_workflow_handle(args.id).signal("reroute", command)
    print(f"{args.id}: reroute to {describe_backend(backend)} sent")
    return 0


# --- budgets: one ledger per account (workflows/budget_ledger.py) -----------------------------

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
    set_by = f" (set by {view.limit_set_by})" if view.limit_set_by else ""
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
    return 1


async def cmd_budget_set(args: argparse.Namespace) -> int:
    client = await connect()
    command = SetLimit(limit_usd=args.limit_usd, period=args.period, by=args.by)
    try:
        view = await set_budget_limit(
            client, task_queue(), args.account, command, BUDGET_ANSWER_TIMEOUT
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError as error:
        return ledger_not_answering(args.account, error)
    print(format_ledger(view, workflow_link(client, ledger_workflow_id(args.account))))
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
        return 1
    if args.json:
        print(view.model_dump_json(indent=2))
    else:
        print(format_ledger(view, workflow_link(client, ledger_workflow_id(args.account))))
    return 0


def add_budget_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    budget = commands.add_parser("budget", help="set and show the budget of an account")
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
    setter.add_argument("--by", default=os.environ.get("USER", ""), help="who sets it")
    setter.set_defaults(handler=cmd_budget_set)
    show = actions.add_parser("show", help="an account's limit, balance and recent entries")
    show.add_argument("account", type=account_name)
    show.add_argument("--entries", type=int, default=20, help="newest entries to list")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_budget_show)


async def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(ExperimentRequest.model_json_schema(), indent=2))
    return 0


def positive_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"{text}: give seconds between 0 and 86400")
    return seconds


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="qloop", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="validate a request file and start the experiment")
    run.add_argument("file", help="request in YAML or JSON")
    run.add_argument("--id", help="workflow id (default: NAME-random)")
    run.add_argument("--wait", action="store_true", help="follow progress and print the report")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.add_argument(
        "--poll-ceiling",
        type=positive_seconds,
        default=PollingPolicy().ceiling_seconds,
        metavar="SECONDS",
        help="longest wait between two polls of the provider (default: %(default)s)",
    )
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", help="stage and state of an experiment")
    status.add_argument("id")
    status.set_defaults(handler=cmd_status)

    result = commands.add_parser("result", help="wait for and print an experiment's report")
    result.add_argument("id")
    result.add_argument("--json", action="store_true")
    result.set_defaults(handler=cmd_result)

    listing = commands.add_parser("list", help="recent experiments")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument(
        "--awaiting-approval", action="store_true", help="only experiments waiting for a person"
    )
    listing.set_defaults(handler=cmd_list)

    for verdict, help_text in (("approve", "approve an experiment awaiting approval"),
                               ("reject", "reject an experiment awaiting approval")):
        decide = commands.add_parser(verdict, help=help_text)
        decide.add_argument("id")
        decide.add_argument("--as", dest="approver", required=True, help="approver name")
        decide.add_argument("--reason", default="")
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

    schema = commands.add_parser("schema", help="print the JSON Schema of ExperimentRequest")
    schema.set_defaults(handler=cmd_schema)

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

    add_budget_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(args.handler(args))
    except RuntimeError as error:
        if "connect" in str(error).lower():
            print(
                f"cannot reach Temporal: {error}\n  start the local stack with `make dev`",
                file=sys.stderr,
            )
            return 1
        raise
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        print(f"not found: {error.message}", file=sys.stderr)
        return 1
    except CodecKeyError as error:
        print(f"payload encryption is misconfigured: {error}", file=sys.stderr)
        return EXIT_REFUSED


def entry_point() -> None:
    """The console script. It leaves without interpreter finalization: the Temporal SDK's
    native runtime threads may call into Python while it finalizes and abort the process
    ("PyGILState_Release ... finalizing", one run in twenty) after the command did its work."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
