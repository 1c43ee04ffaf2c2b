"""`qloop plan FILE`: the circuits qloop would submit for an experiment request on a Braket
device, written to a folder, so that they can be run outside qloop (a notebook, the plain Braket
SDK) and taken over afterwards with `qloop adopt --request FILE`, which plans the request the
same way and maps the adopted tasks' counts onto these circuits in this order.

The request is preprocessed and planned here, as the workflow's compute stages would (nothing
is started, reserved or submitted; the device is read with GetDevice). The folder holds one
OpenQASM 3 file per circuit (`circuit-000.qasm`, ...) and `plan.json`: what each circuit is for
(measurement basis and ZNE scale factor, or readout calibration), the estimate, and the tasks
exactly as qloop would create them (CreateQuantumTask's action, deviceParameters and shots:
program sets where the device runs them). The folder must be new or empty, so that no file of
an earlier plan is taken for one of this plan. The prepared circuits and the batch stay in the
artifact store under `plan-<name>-<id>`, as an experiment's do under its id.

Exit codes: 0 planned, 1 the device cannot be read or runs none of it, 2 invalid request or
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from cli.output import EXIT_DONE, EXIT_INVALID, EXIT_NOT_ALLOWED, print_json, print_table
from cli.start import admitted_or_exit
from schemas.loading import load_request
from schemas.pipeline import ExecutionPlan, PlannedBatch
from schemas.request import BRAKET_DEVICE_ARN, BackendChoice, ExperimentRequest

PLAN_FILE = "plan.json"


def add_plan_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = commands.add_parser(
        "plan",
        help="write the circuits qloop would submit for a request to a folder (to run them "
        "outside qloop and adopt them later); nothing is started or spent",
    )
    plan.add_argument("file", help="an experiment request in YAML or JSON")
    plan.add_argument(
        "--device", help="a Braket device ARN to plan for (default: the request's backend)"
    )
    plan.add_argument("--out", help="the folder to write (default: ./<request name>-plan)")
    plan.add_argument("--json", action="store_true", help="plan.json on stdout as well")
    plan.set_defaults(handler=cmd_plan)


async def cmd_plan(args: argparse.Namespace) -> int:
    if args.device is not None and not BRAKET_DEVICE_ARN.fullmatch(args.device):
        print(
            f"refused: --device {args.device!r} is not a Braket device ARN (expected "
            "arn:aws:braket:<region>:<account or empty>:device/<type>/<provider>/<name>)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    request = admitted_or_exit(args.file, lambda path: (_on_device(path, args.device), None))
    if request.execution.backend.provider != "braket":
        print(
            f"refused: {args.file}: qloop plan writes the programs of a Braket device; the "
            f"request's backend is {request.execution.backend.provider} (give --device ARN)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    folder = Path(args.out or f"{request.name}-plan")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        print(
            f"refused: {folder} exists and is not an empty folder; give a new --out",
            file=sys.stderr,
        )
        return EXIT_INVALID
    from adapters.errors import InvalidRequestError, ProviderError

    try:
        plan, batch = _planned(request)
    except (InvalidRequestError, ValueError) as error:  # the device cannot run a circuit of it
        print(f"refused: {args.file}: {error}", file=sys.stderr)
        return EXIT_INVALID
    except ProviderError as error:
        print(f"not planned: {error}", file=sys.stderr)
        return EXIT_NOT_ALLOWED
    document = write_plan(folder, request, plan, batch)
    if args.json:
        print_json(document)
        return EXIT_DONE
    print_table(
        ["#", "file", "kind", "basis", "scale factor"],
        [
            [
                str(index),
                circuit["file"],
                circuit["kind"],
                circuit["basis"] or circuit["prepared_bits"] or "",
                "" if circuit["scale_factor"] is None else f"{circuit['scale_factor']:g}",
            ]
            for index, circuit in enumerate(document["circuits"])
        ],
    )
    print(
        f"{len(document['circuits'])} circuits of {document['shots']} shots each in {folder}/ "
        f"(as {len(document['tasks'])} tasks, estimated ${document['estimated_cost_usd']:.2f}); "
        "run them in this order and adopt the tasks with "
        f"`qloop adopt --device {document['device']} --request {args.file} TASK_ARN...`"
    )
    return EXIT_DONE


def _on_device(path: str, device: str | None) -> ExperimentRequest:
    """The request (on `device` if given), admitted as `qloop run` admits it; no policy applies,
    since qloop spends nothing here."""
    from activities.experiment.admission import admit

    request = load_request(path)
    if device is not None:
        request = request.on_backend(BackendChoice(provider="braket", device=device))
    admit(request)
    return request


def _planned(request: ExperimentRequest) -> tuple[ExecutionPlan, PlannedBatch]:
    from activities.experiment.plan import plan
    from activities.experiment.preprocess import preprocess
    from activities.storage import artifact_store
    from schemas.pipeline import PlanInput, PreprocessInput

    experiment_id = f"plan-{request.name}-{uuid.uuid4().hex[:8]}"
    prepared = preprocess(PreprocessInput(experiment_id=experiment_id, request=request))
    planned = plan(PlanInput(experiment_id=experiment_id, request=request, prepared=prepared))
    return planned, artifact_store.read_model(planned.batch_uri, PlannedBatch)


def write_plan(
    folder: Path, request: ExperimentRequest, plan: ExecutionPlan, batch: PlannedBatch
) -> dict[str, Any]:
    """The circuit files and plan.json in `folder` (created); returns plan.json's document."""
    from adapters.braket_programs import program_sources

    assert batch.programs is not None  # planned for a Braket device
    sources = [source for program in batch.programs for source in program_sources(program)]
    folder.mkdir(parents=True, exist_ok=True)
    circuits = []
    for index, (source, role) in enumerate(zip(sources, batch.roles, strict=True)):
        name = f"circuit-{index:03d}.qasm"
        (folder / name).write_text(source)
        circuits.append({"file": name, **role.model_dump()})
    shots = request.execution.shots
    document = {
        "request": request.name,
        "device": request.execution.backend.device,
        "shots": shots,
        "estimated_cost_usd": plan.cost_estimate.usd,
        "circuits": circuits,
        "tasks": [
            {
                "action": json.loads(program.action),
                "deviceParameters": json.loads(program.device_parameters),
                "shots": shots * program.executables,
            }
            for program in batch.programs
        ],
    }
    (folder / PLAN_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return document
