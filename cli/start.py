"""Starting work: `qloop run` (an experiment), `qloop loop` (a variational loop) and `qloop sweep`
(a parameter sweep), each admitted locally first (schema, backend, policy), and `qloop schema`."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from adapters.errors import TransientError
from cli.connection import connect, task_queue, workflow_link
from cli.follow import ProgressPrinter, follow_kind
from cli.output import (
    EXIT_DONE,
    EXIT_INVALID,
    EXIT_NOT_ALLOWED,
    notes_stream,
    print_json,
    report_failure,
)
from cli.workflow_kinds import WorkflowKind, kind_named
from schemas.execution import Tier
from schemas.loading import RequestError, load_request
from schemas.loop import LoopInput, load_loop_request
from schemas.pipeline import ExperimentInput, PollingPolicy, Stage
from schemas.policy import PolicyError
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from schemas.settings import current_settings
from schemas.sweep import load_sweep_request
from schemas.variational import (
    LoopReport,
    LoopRequest,
    SweepInput,
    SweepReport,
    SweepRequest,
    SweepStage,
)
from workflows import search_attributes as attrs
from workflows.paid_execution import describe_backend

RequestT = TypeVar("RequestT")


def start_search_attributes(
    stage: str, backend: BackendChoice, account: str
) -> TypedSearchAttributes:
    """What `qloop list` filters on, set when a workflow starts (its workflow updates them)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(attrs.STAGE, stage),
            SearchAttributePair(attrs.BACKEND, describe_backend(backend)),
            SearchAttributePair(attrs.PROVIDER, backend.provider),
            SearchAttributePair(attrs.ACCOUNT, account),
        ]
    )


def policy_refusal(account: str, backend: BackendChoice, tier: Tier, shots: int) -> str | None:
    """What the account's policy forbids whatever the cost (backend, tier, shots), or None.
    Raises PolicyError for a broken policy file."""
    from activities.governance.policy import static_refusal
    from schemas.policy import load_policy_book

    policy = load_policy_book().for_account(account)
    refusal = static_refusal(policy, account, backend, tier, shots)
    return None if refusal is None else f"policy rule {refusal[0]}: {refusal[1]}"


def admitted_or_exit(path: str, admit: Callable[[str], tuple[RequestT, str | None]]) -> RequestT:
    """The one ladder of refusals before anything starts. `admit(path)` loads and checks a file
    and names what the account's policy forbids (or None). An invalid file exits 2 naming every
    problem; a policy refusal, a broken policy file or a provider that does not answer exits 1."""
    from activities.experiment.admission import AdmissionError

    try:
        request, refusal = admit(path)
    except PolicyError as error:
        print(f"not started: {error}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_ALLOWED) from None
    except RequestError as error:
        print(f"refused: {error}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID) from None
    except (AdmissionError, ValueError) as error:
        print(f"refused: {path}: invalid request\n  - {error}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID) from None
    except TransientError as error:
        print(
            f"not started: the provider did not answer: {error.message}; try again", file=sys.stderr
        )
        raise SystemExit(EXIT_NOT_ALLOWED) from None
    if refusal is not None:
        print(f"not started: {refusal}", file=sys.stderr)
        raise SystemExit(EXIT_NOT_ALLOWED)
    return request


def admit_experiment(path: str) -> tuple[ExperimentRequest, str | None]:
    """The schema, then everything the circuit and backend allow us to check locally, then the
    account's policy."""
    from activities.experiment.admission import admit

    request = load_request(path)
    execution = request.execution
    tier = admit(request).capabilities.tier
    return request, policy_refusal(request.policy.account, execution.backend, tier, execution.shots)


def admit_or_exit(path: str) -> ExperimentRequest:
    """Refuses an invalid request (exit 2) or one the account's policy forbids (exit 1) before
    anything starts."""
    return admitted_or_exit(path, admit_experiment)


def announce_policy() -> None:
    """One line on stderr when no policy file governs paid work (schemas/policy.py)."""
    from schemas.policy import governance_notice

    if notice := governance_notice():
        print(f"qloop: warning: {notice}", file=sys.stderr)


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
        search_attributes=start_search_attributes(
            Stage.PREPROCESSING.value, backend, request.policy.account
        ),
        static_summary=f"{request.name}: {request.problem.kind} on {describe_backend(backend)}",
        static_details=static_details(request),
    )


def add_start_options(command: argparse.ArgumentParser, what: str) -> None:
    """The options shared by `run`, `loop` and `sweep`."""
    command.add_argument("file", help=f"{what} in YAML or JSON")
    command.add_argument("--id", help="workflow id (default: NAME-random)")
    command.add_argument("--wait", action="store_true", help="follow progress and print the report")
    command.add_argument(
        "--json",
        action="store_true",
        help="one JSON document on stdout (the report with --wait); the rest on stderr",
    )
    command.add_argument(
        "--poll-ceiling",
        type=positive_seconds,
        default=PollingPolicy().ceiling_seconds,
        metavar="SECONDS",
        help="longest wait between two polls of the provider (default: %(default)s)",
    )


async def announce_and_follow(
    client: Client, handle: WorkflowHandle, args: argparse.Namespace, kind: WorkflowKind
) -> int:
    """What `run`, `loop` and `sweep` do once their workflow started: name it and link it, then
    with --wait follow its progress and print its report. With --json the announcement and the
    progress lines go to stderr and stdout holds one JSON document: the report with --wait, the
    started workflow's id and link without."""
    link = workflow_link(client, handle.id)
    notes = notes_stream(args.json)
    print(f"started {handle.id}\n  Web UI: {link}", file=notes, flush=True)
    if not args.wait:
        if args.json:
            print_json({"workflow_id": handle.id, "run_id": handle.result_run_id, "web_ui": link})
        return EXIT_DONE
    try:
        report = await follow_kind(handle, kind, ProgressPrinter(notes))
    except WorkflowFailureError as error:
        return report_failure(handle.id, error, args.json)
    if args.json:
        print_json(report)
    else:
        print(kind.format_report(report, link))
    return EXIT_DONE


async def cmd_run(args: argparse.Namespace) -> int:
    request = admit_or_exit(args.file)
    announce_policy()
    client = await connect()
    handle = await start(client, request, args.id, args.poll_ceiling)
    return await announce_and_follow(client, handle, args, kind_named("experiment"))


def admit_loop(path: str) -> tuple[LoopRequest, str | None]:
    """The schema, then what the family and backend allow
    (activities.variational.batch_sizes.admit_family), then the account's policy."""
    from activities.variational.batch_sizes import admit_family

    request = load_loop_request(path)
    evaluation = request.evaluation
    # Each SPSA iteration measures its two points in one batch, as does the final evaluation.
    tier = admit_family(request.family, evaluation, points=2).tier
    return request, policy_refusal(
        request.policy.account, evaluation.backend, tier, evaluation.shots
    )


def admit_loop_or_exit(path: str) -> LoopRequest:
    """Refuses an invalid loop file (exit 2) or one the account's policy forbids (exit 1) before
    anything starts."""
    return admitted_or_exit(path, admit_loop)


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
        search_attributes=start_search_attributes("iterating", backend, request.policy.account),
        static_summary=(
            f"{request.name}: {request.goal} {request.family.kind} with SPSA on "
            f"{describe_backend(backend)}"
        ),
    )


async def cmd_loop(args: argparse.Namespace) -> int:
    request = admit_loop_or_exit(args.file)
    announce_policy()
    client = await connect()
    handle = await start_loop(client, request, args.id, args.poll_ceiling)
    return await announce_and_follow(client, handle, args, kind_named("loop"))


def add_loop_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loop = commands.add_parser(
        "loop", help="validate a loop file and start a variational optimisation (LoopWorkflow)"
    )
    add_start_options(loop, "loop request (see examples/vqe_h2.yaml)")
    loop.set_defaults(handler=cmd_loop)


def load_sweep(path: str | Path) -> SweepRequest:
    """A `qloop sweep` file, or RequestError naming every problem: the schema, then what the
    points, the family and the backend allow (a known, online device with enough qubits and
    shots; a batch_size one job takes). TransientError when the provider does not answer."""
    from activities.variational.sweep_results import SweepRequestError, admit_sweep

    request = load_sweep_request(path)
    try:
        admit_sweep(request)
    except SweepRequestError as error:
        raise RequestError(str(path), error.problems) from None
    return request


def admit_sweep(path: str) -> tuple[SweepRequest, str | None]:
    """The sweep file (load_sweep), then the account's policy."""
    from adapters.registry import get_adapter

    request = load_sweep(path)
    evaluation = request.evaluation
    tier = get_adapter(evaluation.backend).capabilities().tier
    return request, policy_refusal(
        request.policy.account, evaluation.backend, tier, evaluation.shots
    )


def admit_sweep_or_exit(path: str) -> SweepRequest:
    """Refuses an invalid sweep file (exit 2) or one the account's policy forbids (exit 1)
    before anything starts."""
    return admitted_or_exit(path, admit_sweep)


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
        search_attributes=start_search_attributes(
            SweepStage.EXPANDING.value, backend, request.policy.account
        ),
        static_summary=sweep_summary(request),
    )


async def cmd_sweep(args: argparse.Namespace) -> int:
    request = admit_sweep_or_exit(args.file)
    announce_policy()
    client = await connect()
    handle = await start_sweep(client, request, args.id, args.poll_ceiling)
    return await announce_and_follow(client, handle, args, kind_named("sweep"))


def add_sweep_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser(
        "sweep", help="validate a sweep file and evaluate its points in batches (SweepWorkflow)"
    )
    add_start_options(sweep, "sweep request (see examples/sweep_qaoa.yaml)")
    sweep.set_defaults(handler=cmd_sweep)


async def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(ExperimentRequest.model_json_schema(), indent=2))
    return 0


def positive_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"{text}: give seconds between 0 and 86400")
    return seconds


def add_start_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="validate a request file and start the experiment")
    add_start_options(run, "request")
    run.set_defaults(handler=cmd_run)
    add_loop_command(commands)
    add_sweep_command(commands)
    schema = commands.add_parser("schema", help="print the JSON Schema of ExperimentRequest")
    schema.set_defaults(handler=cmd_schema)
