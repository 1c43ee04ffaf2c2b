"""The qloop CLI: validate and start experiments, follow them, and read their results.

`qloop` and `python starter.py` are the same program.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from adapters.errors import TransientError
from schemas.loading import RequestError, load_request
from schemas.pipeline import ExperimentInput, PollingPolicy, Progress, Stage
from schemas.report import Estimate, ExperimentReport
from schemas.request import ExperimentRequest
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

    try:
        request = load_request(path)
        admit(request)
    except RequestError as error:
        print(f"refused: {error}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
    except AdmissionError as error:
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


def format_report(report: ExperimentReport) -> str:
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
    listing.set_defaults(handler=cmd_list)

    schema = commands.add_parser("schema", help="print the JSON Schema of ExperimentRequest")
    schema.set_defaults(handler=cmd_schema)
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


if __name__ == "__main__":
    sys.exit(main())
