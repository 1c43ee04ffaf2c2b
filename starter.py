"""The qloop CLI: validate and start experiments, follow them, and read their results.

`qloop` and `python starter.py` are the same program.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecution,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from activities.budget_calls import set_budget_limit, show_budget
from adapters.errors import TransientError
from cli.artifacts import add_artifact_commands
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
from schemas.loop import LoopInput, LoopProgress, load_loop_request
from schemas.payload_encryption import CodecKeyError
from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.policy import ApproverName, PolicyError
from schemas.report import Estimate, ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from schemas.schedule import (
    DURATION_RULE,
    MEMO_KEY,
    NAME_RULE,
    OVERLAP_POLICIES,
    SCHEDULE_ID_PREFIX,
    ScheduleInputError,
    Timing,
    check_name,
    overlap_name,
    overlap_policy,
    parse_interval,
    parse_jitter,
    parse_moment,
    schedule_id,
    schedule_memo,
    spec_summary,
    sweep_workflow_id,
)
from schemas.settings import SettingsError, current_settings
from schemas.signatures import (
    SigningKeyError,
    load_private_key,
    new_private_key_pem,
    own_key_id,
    public_key_text,
    sign_decision,
    sign_limit_change,
)
from schemas.sweep import load_sweep_request
from schemas.variational import (
    LoopReport,
    LoopRequest,
    SweepInput,
    SweepProgress,
    SweepReport,
    SweepRequest,
    SweepStage,
)
from workflows import search_attributes as attrs
from workflows.paid_execution import describe_backend

EXIT_REFUSED = 2
T = TypeVar("T")


def workflow_link(client: Client, workflow_id: str) -> str:
    namespace, workflow = quote(client.namespace), quote(workflow_id, safe="")
    return f"{current_settings().ui_url}/namespaces/{namespace}/workflows/{workflow}"


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


def announce_policy() -> None:
    """One line on stderr when no policy file governs paid work (schemas/policy.py)."""
    from schemas.policy import governance_notice

    if notice := governance_notice():
        print(f"qloop: warning: {notice}", file=sys.stderr)


async def connect() -> Client:
    from activities.observability import configure_tracing
    from worker import connect as connect_client

    return await connect_client([configure_tracing("qloop-cli")])


def task_queue() -> str:
    return current_settings().task_queue


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
        compute_task_queue=current_settings().compute_task_queue,
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


ProgressT = TypeVar("ProgressT")
ReportModel = TypeVar("ReportModel", bound=BaseModel)


class ProgressPrinter:
    """Prints a timestamped line whenever the description of a workflow's progress changes."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = ""

    def show(self, line: str) -> None:
        if line != self.last:
            print(f"[{time.monotonic() - self.started:7.1f}s] {line}", flush=True)
            self.last = line


async def watch(
    handle: WorkflowHandle,
    progress_type: type[ProgressT],
    describe: Callable[[ProgressT], str],
    printer: ProgressPrinter,
    interval: float = 0.3,
) -> Any:
    """Polls the `progress` query until the workflow ends (following continue-as-new, as the
    handle does) and returns its result."""
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        try:
            progress = await handle.query("progress", result_type=progress_type)
        except RPCError:
            progress = None
        if progress is not None:
            printer.show(describe(progress))
        await asyncio.wait([result], timeout=interval)
    return result.result()


async def follow(handle: WorkflowHandle) -> ExperimentReport:
    """Prints each change of stage or job status until the experiment ends."""
    printer = ProgressPrinter()
    report: ExperimentReport = await watch(handle, Progress, describe_progress, printer)
    if not printer.last.startswith(Stage.COMPLETED.value):
        printer.show(Stage.COMPLETED.value)
    return report


def add_start_options(command: argparse.ArgumentParser, what: str) -> None:
    """The options shared by `run`, `loop` and `sweep`."""
    command.add_argument("file", help=f"{what} in YAML or JSON")
    command.add_argument("--id", help="workflow id (default: NAME-random)")
    command.add_argument("--wait", action="store_true", help="follow progress and print the report")
    command.add_argument("--json", action="store_true", help="print the report as JSON")
    command.add_argument(
        "--poll-ceiling",
        type=positive_seconds,
        default=PollingPolicy().ceiling_seconds,
        metavar="SECONDS",
        help="longest wait between two polls of the provider (default: %(default)s)",
    )


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
        key = f", signed with key {decision.key_id}" if decision and decision.key_id else ""
        who = f" by {decision.approver} ({reason}{key})" if decision else ""
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
    if report_uri:
        lines.append(f"  artifacts       {artifact_location(report_uri.rsplit('/', 1)[0])}")
    return "\n".join(lines)


def print_report(report: ExperimentReport, as_json: bool) -> None:
    print(report.model_dump_json(indent=2) if as_json else format_report(report))


def report_failure(workflow_id: str, error: WorkflowFailureError) -> int:
    cause = error.cause
    message = getattr(cause, "message", None) or str(cause)
    print(f"failed: {workflow_id}: {message}", file=sys.stderr)
    return 1


async def announce_and_follow(
    client: Client,
    handle: WorkflowHandle,
    args: argparse.Namespace,
    follow_workflow: Callable[[WorkflowHandle], Awaitable[ReportModel]],
    render: Callable[[ReportModel], str],
) -> int:
    """What `run`, `loop` and `sweep` do once their workflow started: link, then with --wait
    live progress and the report."""
    print(f"started {handle.id}\n  Web UI: {workflow_link(client, handle.id)}", flush=True)
    if not args.wait:
        return 0
    try:
        report = await follow_workflow(handle)
    except WorkflowFailureError as error:
        return report_failure(handle.id, error)
    print(report.model_dump_json(indent=2) if args.json else render(report))
    return 0


async def cmd_run(args: argparse.Namespace) -> int:
    request = admit_or_exit(args.file)
    announce_policy()
    client = await connect()
    handle = await start(client, request, args.id, args.poll_ceiling)
    return await announce_and_follow(client, handle, args, follow, format_report)


# --- variational loops (workflows/loop.py) ------------------------------------------------------


def admit_loop_or_exit(path: str) -> LoopRequest:
    """Refuses an invalid loop file before anything starts: the schema, then what the family and
    backend allow (activities.batches.admit_family) and what the account's policy forbids."""
    from activities.admission import AdmissionError
    from activities.batches import admit_family
    from activities.policy import static_refusal
    from schemas.policy import load_policy_book

    try:
        request = load_loop_request(path)
        # Each SPSA iteration measures its two points in one batch, as does the final evaluation.
        capabilities = admit_family(request.family, request.evaluation, points=2)
        policy = load_policy_book().for_account(request.policy.account)
    except RequestError as error:
        print(f"refused: {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except AdmissionError as error:
        print(f"refused: {path}: invalid request\n  - {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except PolicyError as error:
        print(f"not started: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except TransientError as error:
        print(f"not started: the provider did not answer: {error.message}", file=sys.stderr)
        raise SystemExit(1) from None
    evaluation = request.evaluation
    refusal = static_refusal(
        policy, request.policy.account, evaluation.backend, capabilities.tier, evaluation.shots
    )
    if refusal is not None:
        print(f"not started: policy rule {refusal[0]}: {refusal[1]}", file=sys.stderr)
        raise SystemExit(1)
    return request


async def start_loop(
    client: Client, request: LoopRequest, workflow_id: str | None, poll_ceiling: float
) -> WorkflowHandle:
    backend = request.evaluation.backend
    return await client.start_workflow(
        "LoopWorkflow",
        LoopInput(
            request=request,
            polling=PollingPolicy(ceiling_seconds=poll_ceiling),
            compute_task_queue=current_settings().compute_task_queue,
        ),
        id=workflow_id or f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue(),
        result_type=LoopReport,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.STAGE, "iterating"),
                SearchAttributePair(attrs.BACKEND, describe_backend(backend)),
                SearchAttributePair(attrs.PROVIDER, backend.provider),
                SearchAttributePair(attrs.ACCOUNT, request.policy.account),
            ]
        ),
        static_summary=(
            f"{request.name}: {request.goal} {request.family.kind} with SPSA on "
            f"{describe_backend(backend)}"
        ),
    )


def describe_loop_progress(progress: LoopProgress) -> str:
    if progress.stage == "starting":
        return "starting  (classical baseline)"
    best = "-" if progress.best_value is None else f"{progress.best_value:.6f}"
    text = f"iteration {progress.iteration:4d}  best {best}  cost ${progress.cost_usd:.2f}"
    if progress.stage == "finishing":
        text += f"  {progress.stop_reason}: measuring the answer again, exact value"
    elif progress.stop_reason is not None:
        text += f"  stopped: {progress.stop_reason}"
    return text


async def follow_loop(handle: WorkflowHandle) -> LoopReport:
    """Prints a line per iteration (best value, cost so far) until the loop ends."""
    printer = ProgressPrinter()
    report: LoopReport = await watch(handle, LoopProgress, describe_loop_progress, printer)
    # The loop may have ended between two polls: its last state, with the stop reason.
    printer.show(describe_loop_progress(await handle.query("progress", result_type=LoopProgress)))
    return report


def format_loop_report(report: LoopReport) -> str:
    final = report.best_measured
    objective = report.objective

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.6f}"

    lines = [
        f"Loop {report.loop_id} ({report.name}): {report.goal} {report.family}",
        f"  stopped         {report.stop_reason}: {report.stop_detail}",
        f"  iterations      {report.iterations} ({report.evaluations} evaluations, "
        f"{report.runs} run{'s' if report.runs != 1 else ''}, {report.elapsed_seconds:.1f}s)",
        f"  best point      [{', '.join(f'{x:.4f}' for x in report.best_point)}]",
    ]
    if final is not None:
        lines.append(
            f"  best value      {final.value:.6f} ± {final.std_error:.6f} (raw {final.raw:.6f}),"
            f" measured again after the loop"
        )
    else:
        lines.append(f"  best value      {number(report.best_value)} (SPSA's estimate)")
    lines += [
        f"  exact value     {report.exact_value:.6f} at the best point",
        f"  classical       {report.baseline_value:.6f} ({report.baseline_method})",
        f"  {objective.name}: exact {number(objective.exact)}   measured "
        f"{number(objective.measured)}   raw {number(objective.raw)}",
        f"  cost            ${report.cost_usd:.2f}",
        f"  backend         {report.backend}, {report.shots} shots, ZNE "
        f"{'on' if report.zne else 'off'}, readout mitigation {'on' if report.readout else 'off'}",
        f"  seeds           optimizer {report.optimizer.seed}, evaluation {report.evaluation_seed}",
        f"  trajectory      {artifact_location(report.trajectory_uri)}",
    ]
    return "\n".join(lines)


async def cmd_loop(args: argparse.Namespace) -> int:
    request = admit_loop_or_exit(args.file)
    announce_policy()
    client = await connect()
    handle = await start_loop(client, request, args.id, args.poll_ceiling)
    return await announce_and_follow(client, handle, args, follow_loop, format_loop_report)


def add_loop_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loop = commands.add_parser(
        "loop", help="validate a loop file and start a variational optimisation (LoopWorkflow)"
    )
    add_start_options(loop, "loop request (see examples/vqe_h2.yaml)")
    loop.set_defaults(handler=cmd_loop)


# --- sweeps (workflows/sweep.py) -----------------------------------------------------------------


def load_sweep(path: str | Path) -> SweepRequest:
    """A `qloop sweep` file, or RequestError naming every problem: the schema, then what the
    points, the family and the backend allow (a known, online device with enough qubits and
    shots; a batch_size one job takes). TransientError when the provider does not answer."""
    from activities.sweep_results import SweepRequestError, admit_sweep

    request = load_sweep_request(path)
    try:
        admit_sweep(request)
    except SweepRequestError as error:
        raise RequestError(str(path), error.problems) from None
    return request


def sweep_policy_refusal(request: SweepRequest) -> str | None:
    """What the account's policy forbids whatever the cost (backend, tier, shots), or None.
    Raises PolicyError for a broken policy file."""
    from activities.policy import static_refusal
    from adapters.registry import get_adapter
    from schemas.policy import load_policy_book

    account, evaluation = request.policy.account, request.evaluation
    tier = get_adapter(evaluation.backend).capabilities().tier
    policy = load_policy_book().for_account(account)
    refusal = static_refusal(policy, account, evaluation.backend, tier, evaluation.shots)
    return None if refusal is None else f"policy rule {refusal[0]}: {refusal[1]}"


def admit_sweep_or_exit(path: str) -> SweepRequest:
    """Refuses an invalid sweep file (exit 2) or one the account's policy forbids (exit 1)
    before anything starts."""
    try:
        request = load_sweep(path)
        refusal = sweep_policy_refusal(request)
    except RequestError as error:
        print(f"refused: {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except PolicyError as error:
        print(f"not started: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except TransientError as error:
        print(f"not started: the provider did not answer: {error.message}", file=sys.stderr)
        raise SystemExit(1) from None
    if refusal is not None:
        print(f"not started: {refusal}", file=sys.stderr)
        raise SystemExit(1)
    return request


def sweep_input(
    request: SweepRequest, poll_ceiling: float = PollingPolicy().ceiling_seconds
) -> SweepInput:
    return SweepInput(
        request=request,
        polling=PollingPolicy(ceiling_seconds=poll_ceiling),
        compute_task_queue=current_settings().compute_task_queue,
    )


def sweep_summary(request: SweepRequest) -> str:
    backend = describe_backend(request.evaluation.backend)
    return f"{request.name}: sweep of {request.family.kind} on {backend}"


async def start_sweep(
    client: Client, request: SweepRequest, workflow_id: str | None, poll_ceiling: float
) -> WorkflowHandle:
    backend = request.evaluation.backend
    return await client.start_workflow(
        "SweepWorkflow",
        sweep_input(request, poll_ceiling),
        id=workflow_id or f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue(),
        result_type=SweepReport,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.STAGE, SweepStage.EXPANDING.value),
                SearchAttributePair(attrs.BACKEND, describe_backend(backend)),
                SearchAttributePair(attrs.PROVIDER, backend.provider),
                SearchAttributePair(attrs.ACCOUNT, request.policy.account),
            ]
        ),
        static_summary=sweep_summary(request),
    )


def describe_sweep_progress(progress: SweepProgress) -> str:
    text = f"{progress.stage.value:16}"
    if progress.points_total:
        text += (
            f"  batches {progress.batches_done}/{progress.batches_total} done  points "
            f"{progress.points_done:,} evaluated, {progress.points_cached:,} cached of "
            f"{progress.points_total:,}  cost ${progress.cost_usd:.2f}"
        )
    return text.rstrip()


async def follow_sweep(handle: WorkflowHandle) -> SweepReport:
    """Prints each change of stage, batch or cost until the sweep ends."""
    return await watch(handle, SweepProgress, describe_sweep_progress, ProgressPrinter())


def artifact_location(url: str) -> str:
    """A local artifact as its path (relative to here when below), any other as its URL:
    `qloop artifacts get` downloads it."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return url
    path = Path(unquote(parsed.path))
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def format_sweep_report(report: SweepReport) -> str:
    lines = [
        f"Sweep {report.sweep_id} ({report.name}): {report.status}",
        f"  family          {report.family} on {report.backend} ({report.goal})",
        f"  points          {report.points_total:,}: {report.points_evaluated:,} evaluated, "
        f"{report.points_cached:,} from the cache, {report.points_pending:,} not evaluated",
        f"  batches         {report.batches_done} of {report.batches_total} run",
    ]
    if report.status_reason:
        lines.append(f"  stopped         {report.status_reason}")
    if report.canary is not None:
        verdict = "passed" if report.canary.passed else "failed"
        lines.append(f"  canary          {verdict} ({report.canary.points} points)")
    if report.best is not None:
        best = report.best
        point = ", ".join(f"{x:.4g}" for x in best.parameters)
        lines.append(
            f"  best            {best.value:.6f} ± {best.std_error:.6f} at point {best.index} "
            f"[{point}]"
        )
    lines += [
        f"  cost            ${report.cost_usd:.2f} (estimated ${report.estimated_cost_usd:.2f})",
        f"  elapsed         {report.elapsed_seconds:.1f}s"
        + (f" ({report.runs} workflow runs: continued as new)" if report.runs > 1 else ""),
        f"  table           {artifact_location(report.table_uri)}",
    ]
    if report.plot_uri is not None:
        lines.append(f"  plot            {artifact_location(report.plot_uri)}")
    return "\n".join(lines)


async def cmd_sweep(args: argparse.Namespace) -> int:
    request = admit_sweep_or_exit(args.file)
    announce_policy()
    client = await connect()
    handle = await start_sweep(client, request, args.id, args.poll_ceiling)
    return await announce_and_follow(client, handle, args, follow_sweep, format_sweep_report)


def add_sweep_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser(
        "sweep", help="validate a sweep file and evaluate its points in batches (SweepWorkflow)"
    )
    add_start_options(sweep, "sweep request (see examples/sweep_qaoa.yaml)")
    sweep.set_defaults(handler=cmd_sweep)


async def cmd_status(args: argparse.Namespace) -> int:
    client = await connect()
    handle = client.get_workflow_handle(args.id)
    description = await handle.describe()
    status = description.status.name if description.status else "UNKNOWN"
    print(f"{args.id}: {status}")
    if description.workflow_type == "LoopWorkflow":
        loop = await handle.query("progress", result_type=LoopProgress)
        print(f"  loop     {describe_loop_progress(loop)}")
        print(f"  backend  {description.typed_search_attributes.get(attrs.BACKEND)}")
    elif description.status == WorkflowExecutionStatus.RUNNING:
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


def read_signing_key(path: str) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SigningKeyError(f"{path}: cannot read it: {error.strerror}") from None
    return load_private_key(data, path)


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
        return EXIT_REFUSED
    except SigningKeyError as error:
        print(f"refused: --key {error}", file=sys.stderr)
        return EXIT_REFUSED
    if args.print_json and key is None:
        print("refused: --print-json prints a signed decision; give --key FILE", file=sys.stderr)
        return EXIT_REFUSED
    client = await connect()
    handle = client.get_workflow_handle(args.id)
    if key is not None:
        run_id = (await handle.describe()).run_id
        verdict = "approved" if args.command == "approve" else "rejected"
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
            return EXIT_REFUSED
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


# --- signing keys of approvers and budget admins (schemas/signatures.py) ---------------------


def approver_name(text: str) -> str:
    try:
        return TypeAdapter(ApproverName).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a name: 1 to 100 letters, digits, '_', '.', '@' and '-', "
            "starting with a letter or a digit"
        ) from None


def policy_key_line(name: str, public_key: str) -> str:
    return f'  {name}: "{public_key}"'


async def cmd_keys_new(args: argparse.Namespace) -> int:
    path = Path(args.dir) / f"{args.name}.key"
    pem, public_key = new_private_key_pem()
    try:
        # Created readable by its owner only, and never over an existing key.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"refused: {path} exists; qloop never overwrites a key", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as error:
        print(f"refused: cannot create {path}: {error.strerror}", file=sys.stderr)
        return EXIT_REFUSED
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    print(f"wrote {path}: the private key of {args.name}, readable by you only; keep it secret")
    print(
        "the operator adds this line to the account's approval.public_keys (and sets "
        "`signed: true`) or to its budget_admins in the policy file:"
    )
    print(policy_key_line(args.name, public_key))
    return 0


async def cmd_keys_public(args: argparse.Namespace) -> int:
    try:
        key = read_signing_key(args.file)
    except SigningKeyError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    public_key = public_key_text(key.public_key())
    print(policy_key_line(args.name or Path(args.file).stem, public_key))
    print(f"  # key id {own_key_id(key)}")
    return 0


def add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="signing keys of approvers and budget admins (Ed25519)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    new = actions.add_parser(
        "new", help="write NAME.key (0600) and print the public key line for the policy file"
    )
    new.add_argument("name", type=approver_name, help="approver or budget admin name")
    new.add_argument("--dir", default=".", help="folder for NAME.key (default: here)")
    new.set_defaults(handler=cmd_keys_new)
    public = actions.add_parser("public", help="print the policy line of a private key file")
    public.add_argument("file")
    public.add_argument("--name", type=approver_name, help="name for the line (default: file stem)")
    public.set_defaults(handler=cmd_keys_public)


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
    return 1


async def cmd_budget_set(args: argparse.Namespace) -> int:
    try:
        key = read_signing_key(args.key) if args.key else None
    except SigningKeyError as error:
        print(f"refused: --key {error}", file=sys.stderr)
        return EXIT_REFUSED
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
        print(f"refused: {getattr(cause, 'message', cause)}", file=sys.stderr)
        return EXIT_REFUSED
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


# The reservation and reconciliation commands read the provider's task list through the Braket
# SDK, imported when they run: every other command starts in a fraction of the time.


async def cmd_budget_reservations(args: argparse.Namespace) -> int:
    from activities.open_reservations import open_reservations

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
    from activities.open_reservations import release_by_hand

    client = await connect()
    try:
        released = await release_by_hand(client, args.key, args.by, args.reason, args.account)
    except LookupError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    entry = released.entry
    print(
        f"released {format_usd(entry.amount_usd)} of {entry.key} on account "
        f"{released.account} (workflow {entry.experiment_id} is {released.workflow_status}): "
        f"{entry.reason}"
    )
    return 0


async def cmd_budget_reconcile(args: argparse.Namespace) -> int:
    from activities.provider_reconciliation import reconcile

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
    return 1 if result.differences else 0


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


# --- schedules: sweeps on a calendar (Temporal Schedules; schemas/schedule.py) ---------------

# How long `qloop schedule trigger` waits to name the run it started.
TRIGGER_WAIT_SECONDS = 5.0


def schedule_argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` that shows our message (argparse hides a plain ValueError's)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ScheduleInputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def time_zone_name(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time zone: use an IANA name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None
    return text


def schedule_link(client: Client, name: str) -> str:
    return (
        f"{current_settings().ui_url}/namespaces/{quote(client.namespace)}/schedules/"
        f"{quote(schedule_id(name), safe='')}"
    )


def sweep_schedule(
    name: str,
    request: SweepRequest,
    timing: Timing,
    overlap: ScheduleOverlapPolicy,
    note: str | None,
) -> Schedule:
    """Starts `SweepWorkflow(sweep_input(request))` on `timing`; each run carries the same
    search attributes as one started by `qloop sweep`."""
    backend = request.evaluation.backend
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "SweepWorkflow",
            sweep_input(request),
            id=sweep_workflow_id(name),
            task_queue=task_queue(),
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(attrs.STAGE, SweepStage.EXPANDING.value),
                    SearchAttributePair(attrs.BACKEND, describe_backend(backend)),
                    SearchAttributePair(attrs.PROVIDER, backend.provider),
                    SearchAttributePair(attrs.ACCOUNT, request.policy.account),
                ]
            ),
            static_summary=f"{sweep_summary(request)}, scheduled by {schedule_id(name)}",
            static_details="\n\n".join(
                [
                    f"**Schedule:** {schedule_id(name)}, {timing.summary()}",
                    f"**Family:** {request.family.kind}",
                    f"**Backend:** {describe_backend(backend)}, {request.evaluation.shots} shots",
                    f"**Account:** {request.policy.account}",
                ]
            ),
        ),
        spec=timing.spec(),
        policy=SchedulePolicy(overlap=overlap),
        state=ScheduleState(note=note),
    )


def no_schedule(name: str) -> int:
    print(
        f"no schedule named {name!r} (schedule id {schedule_id(name)}): "
        "`qloop schedule list` shows the existing ones",
        file=sys.stderr,
    )
    return 1


def on_existing_schedule(
    handler: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """Commands on a schedule that may not exist say so by name instead of a server error."""

    async def run(args: argparse.Namespace) -> int:
        try:
            return await handler(args)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return no_schedule(args.name)

    return run


async def cmd_schedule_create(args: argparse.Namespace) -> int:
    try:
        timing = Timing(
            cron=args.cron, every=args.every, jitter=args.jitter, time_zone=args.time_zone
        )
    except ScheduleInputError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    request = admit_sweep_or_exit(args.sweep)
    announce_policy()
    client = await connect()
    try:
        handle = await client.create_schedule(
            schedule_id(args.name),
            sweep_schedule(args.name, request, timing, args.overlap, args.note),
            memo=schedule_memo(args.name, request, str(Path(args.sweep).resolve()), timing),
        )
    except ScheduleAlreadyRunningError:
        print(
            f"schedule {args.name!r} already exists ({schedule_id(args.name)}): "
            f"`qloop schedule describe {args.name}` shows it, "
            f"`qloop schedule delete {args.name}` removes it",
            file=sys.stderr,
        )
        return 1
    except RPCError as error:
        if error.status != RPCStatusCode.INVALID_ARGUMENT:
            raise
        print(f"refused: {error.message}", file=sys.stderr)
        return EXIT_REFUSED
    description = await handle.describe()
    print(
        f"created schedule {handle.id}: sweep {request.name} {timing.summary()}, "
        f"overlap {overlap_name(args.overlap)}\n"
        f"  next run        {moment(next(iter(description.info.next_action_times), None))}\n"
        f"  Web UI          {schedule_link(client, args.name)}"
    )
    return 0


async def cmd_schedule_list(args: argparse.Namespace) -> int:
    client = await connect()
    rows: list[tuple[str, str, str, str, str]] = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith(SCHEDULE_ID_PREFIX) or entry.schedule is None:
            continue
        memo = await entry.memo()
        sweep = memo.get(MEMO_KEY, {}).get("sweep", "-")
        next_runs = entry.info.next_action_times if entry.info else []
        rows.append(
            (
                entry.id,
                spec_summary(entry.schedule.spec, memo),
                "yes" if entry.schedule.state.paused else "no",
                moment(next(iter(next_runs), None)),
                sweep,
            )
        )
    if not rows:
        print("no schedules: `qloop schedule create NAME --sweep FILE --every 1d` makes one")
        return 0
    id_width = max(len("SCHEDULE ID"), *(len(row[0]) for row in rows))
    spec_width = max(len("SPEC"), *(len(row[1]) for row in rows))
    print(f"{'SCHEDULE ID':{id_width}} {'SPEC':{spec_width}} {'PAUSED':6} {'NEXT RUN':25} SWEEP")
    for schedule, spec, paused, next_run, sweep in sorted(rows):
        print(f"{schedule:{id_width}} {spec:{spec_width}} {paused:6} {next_run:25} {sweep}")
    return 0


async def run_status(client: Client, action: ScheduleActionExecution) -> str:
    """A started run's status; '-' once the server no longer keeps it (retention)."""
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return "-"
    handle = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return "-"
    return description.status.name if description.status else "?"


def format_schedule(
    description: ScheduleDescription, memo: Mapping[str, Any], statuses: Sequence[str], link: str
) -> str:
    schedule, info = description.schedule, description.info
    stored = memo.get(MEMO_KEY, {})
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    state = "paused" if schedule.state.paused else "active"
    if schedule.state.note:
        state += f" ({schedule.state.note})"
    lines = [
        f"schedule {description.id}",
        f"  sweep           {stored.get('sweep', '-')} ({stored.get('family', '-')}), "
        f"account {stored.get('account', '-')}",
        f"  sweep file      {stored.get('sweep_file', '-')} (as read at creation)",
        f"  starts          {action.workflow} on task queue {action.task_queue} "
        f"as {action.id}-<scheduled time>",
        f"  spec            {spec_summary(schedule.spec, memo)}",
        f"  overlap         {overlap_name(schedule.policy.overlap)}",
        f"  state           {state}",
        f"  actions         {info.num_actions} taken, {info.num_actions_skipped_overlap} skipped "
        f"(overlap), {info.num_actions_missed_catchup_window} missed (catch-up window)",
        f"  created         {moment(info.created_at)}",
        f"  updated         {moment(info.last_updated_at)}",
        "  next runs       " + (", ".join(moment(at) for at in info.next_action_times[:5]) or "-"),
        "  running         "
        + (
            ", ".join(
                run.workflow_id
                for run in info.running_actions
                if isinstance(run, ScheduleActionExecutionStartWorkflow)
            )
            or "-"
        ),
        "  recent runs     (newest last)",
    ]
    for result, status in zip(info.recent_actions, statuses, strict=True):
        started = result.action
        is_workflow = isinstance(started, ScheduleActionExecutionStartWorkflow)
        workflow_id = started.workflow_id if is_workflow else "-"
        lines.append(
            f"    scheduled {moment(result.scheduled_at)}  started {moment(result.started_at)}  "
            f"{status:10} {workflow_id}"
        )
    if not info.recent_actions:
        lines.append("    none yet")
    lines.append(f"  Web UI          {link}")
    return "\n".join(lines)


@on_existing_schedule
async def cmd_schedule_describe(args: argparse.Namespace) -> int:
    client = await connect()
    description = await client.get_schedule_handle(schedule_id(args.name)).describe()
    statuses = await asyncio.gather(
        *(run_status(client, result.action) for result in description.info.recent_actions)
    )
    memo = await description.memo()
    print(format_schedule(description, memo, statuses, schedule_link(client, args.name)))
    return 0


@on_existing_schedule
async def cmd_schedule_pause(args: argparse.Namespace) -> int:
    client = await connect()
    note = args.note or f"paused with qloop by {os.environ.get('USER', 'unknown')}"
    await client.get_schedule_handle(schedule_id(args.name)).pause(note=note)
    print(f"{schedule_id(args.name)}: paused ({note})")
    return 0


@on_existing_schedule
async def cmd_schedule_unpause(args: argparse.Namespace) -> int:
    client = await connect()
    note = args.note or f"unpaused with qloop by {os.environ.get('USER', 'unknown')}"
    await client.get_schedule_handle(schedule_id(args.name)).unpause(note=note)
    print(f"{schedule_id(args.name)}: active ({note})")
    return 0


@on_existing_schedule
async def cmd_schedule_trigger(args: argparse.Namespace) -> int:
    """The server starts the run asynchronously; the command waits briefly to name it."""
    client = await connect()
    handle = client.get_schedule_handle(schedule_id(args.name))
    before = (await handle.describe()).info.num_actions
    await handle.trigger(overlap=args.overlap)
    deadline = time.monotonic() + TRIGGER_WAIT_SECONDS
    while time.monotonic() < deadline:
        info = (await handle.describe()).info
        if info.num_actions > before and info.recent_actions:
            started = info.recent_actions[-1].action
            if isinstance(started, ScheduleActionExecutionStartWorkflow):
                print(
                    f"{handle.id}: triggered {started.workflow_id}\n"
                    f"  Web UI          {workflow_link(client, started.workflow_id)}"
                )
                return 0
        await asyncio.sleep(0.2)
    print(
        f"{handle.id}: trigger sent; no run started within {TRIGGER_WAIT_SECONDS:.0f} s "
        "(with overlap skip or buffer_* a run still going holds it back; "
        f"`qloop schedule describe {args.name}` shows what happened)"
    )
    return 0


@on_existing_schedule
async def cmd_schedule_backfill(args: argparse.Namespace) -> int:
    if args.end < args.start:
        print(
            f"refused: --end {moment(args.end)} is before --start {moment(args.start)}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    client = await connect()
    handle = client.get_schedule_handle(schedule_id(args.name))
    if (await handle.describe()).schedule.state.paused:
        print(
            f"{handle.id} is paused, and the server drops a paused schedule's backfills: "
            f"`qloop schedule unpause {args.name}` first",
            file=sys.stderr,
        )
        return 1
    await handle.backfill(
        ScheduleBackfill(start_at=args.start, end_at=args.end, overlap=args.overlap)
    )
    overlap = "the schedule's" if args.overlap is None else overlap_name(args.overlap)
    print(
        f"{handle.id}: backfill of every run due from {moment(args.start)} to {moment(args.end)} "
        f"(both included) requested, overlap {overlap}; "
        f"`qloop schedule describe {args.name}` lists the runs"
    )
    return 0


@on_existing_schedule
async def cmd_schedule_delete(args: argparse.Namespace) -> int:
    client = await connect()
    await client.get_schedule_handle(schedule_id(args.name)).delete()
    print(f"deleted schedule {schedule_id(args.name)}; runs it already started keep running")
    return 0


def add_schedule_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedule = commands.add_parser(
        "schedule", help="run a sweep on a calendar (Temporal Schedules, id qloop-NAME)"
    )
    actions = schedule.add_subparsers(dest="schedule_command", required=True)
    name_argument = {"type": schedule_argument(check_name), "help": f"schedule name: {NAME_RULE}"}
    overlap_choice = {
        "type": schedule_argument(overlap_policy),
        "metavar": "|".join(OVERLAP_POLICIES),
    }

    create = actions.add_parser(
        "create", help="validate a sweep file and start it on a cron spec or an interval"
    )
    create.add_argument("name", **name_argument)
    create.add_argument("--sweep", required=True, metavar="FILE", help="sweep request (YAML/JSON)")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", metavar="EXPR", help="cron expression, e.g. '0 3 * * *' (UTC unless --time-zone)"
    )
    when.add_argument(
        "--every", type=schedule_argument(parse_interval), metavar="DURATION", help=DURATION_RULE
    )
    create.add_argument(
        "--overlap",
        default=OVERLAP_POLICIES["skip"],
        help="when a run is due while the last one still runs (default: skip)",
        **overlap_choice,
    )
    create.add_argument(
        "--jitter",
        type=schedule_argument(parse_jitter),
        metavar="DURATION",
        help="start each run up to this much later, at random",
    )
    create.add_argument(
        "--time-zone", type=time_zone_name, metavar="ZONE", help="IANA time zone of --cron"
    )
    create.add_argument("--note", help="a note shown with the schedule's state")
    create.set_defaults(handler=cmd_schedule_create)

    listing = actions.add_parser("list", help="qloop's schedules: spec, paused, next run")
    listing.set_defaults(handler=cmd_schedule_list)

    describe = actions.add_parser(
        "describe", help="spec, state, next runs, recent runs and the Web UI link"
    )
    describe.add_argument("name", **name_argument)
    describe.set_defaults(handler=cmd_schedule_describe)

    for verb, handler, help_text in (
        ("pause", cmd_schedule_pause, "stop starting runs (runs already going keep going)"),
        ("unpause", cmd_schedule_unpause, "start runs again from the next due time"),
    ):
        toggle = actions.add_parser(verb, help=help_text)
        toggle.add_argument("name", **name_argument)
        toggle.add_argument("--note", help="why, shown with the schedule's state")
        toggle.set_defaults(handler=handler)

    trigger = actions.add_parser("trigger", help="start one run now")
    trigger.add_argument("name", **name_argument)
    trigger.add_argument(
        "--overlap", help="for this run only (default: the schedule's)", **overlap_choice
    )
    trigger.set_defaults(handler=cmd_schedule_trigger)

    backfill = actions.add_parser(
        "backfill", help="start the runs that were due in a past time range"
    )
    backfill.add_argument("name", **name_argument)
    moment_help = "ISO 8601, e.g. 2026-01-31T06:00 (UTC without an offset)"
    backfill.add_argument(
        "--start", required=True, type=schedule_argument(parse_moment), help=moment_help
    )
    backfill.add_argument(
        "--end", required=True, type=schedule_argument(parse_moment), help=moment_help
    )
    backfill.add_argument(
        "--overlap",
        help="default: the schedule's; the runs are due at once, so skip starts only the first: "
        "use allow_all or buffer_all to get every one",
        **overlap_choice,
    )
    backfill.set_defaults(handler=cmd_schedule_backfill)

    delete = actions.add_parser(
        "delete", help="delete a schedule (runs it already started keep running)"
    )
    delete.add_argument("name", **name_argument)
    delete.set_defaults(handler=cmd_schedule_delete)


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
    add_start_options(run, "request")
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
    add_keys_commands(commands)
    add_sweep_command(commands)
    add_loop_command(commands)
    add_schedule_commands(commands)
    add_artifact_commands(commands)
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
    except SettingsError as error:
        print(error, file=sys.stderr)
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
