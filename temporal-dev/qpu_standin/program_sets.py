"""Program sets: many OpenQASM programs in one quantum task, as Braket runs them on a QPU.

A program-set action (`braket.ir.openqasm.program_set`) holds programs; each runs once per entry
of its `inputs` lists (an executable). The task's `shots` is the total over its executables,
split evenly. Creation checks the set against the device's limits and every executable against
the device, and refuses the whole task with one ValidationException (reason
ProgramSetValidationFailed) that lists each failing executable. An executable can also fail
while the task runs; the task still completes, billed for the shots of the executables that ran
(`successful_shots`). The results are the files Braket writes for a QPU's program set, read by
the SDK's ProgramSetQuantumTaskResult: results.json names metadata.json and one
programs/<i>/results.json per program, which names programs/<i>/program.json and one
programs/<i>/executables/<j>.json per executable (a result or a failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from braket.ir.openqasm import Program, ProgramSet
from braket.task_result import (
    ProgramResult,
    ProgramSetExecutableFailure,
    ProgramSetExecutableResult,
    ProgramSetTaskMetadata,
    ProgramSetTaskResult,
)

from qpu_standin.config import Device
from qpu_standin.errors import ApiError, validation
from qpu_standin.executor import Compiled, compile_action, iso_time

PROGRAM_SET_HEADER = "braket.ir.openqasm.program_set"
RESULTS_FILE = "results.json"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class Executable:
    program_index: int
    inputs_index: int
    compiled: Compiled


@dataclass(frozen=True)
class Outcome:
    """What one executable gave: per-shot measurements, or why it failed."""

    measurements: list[list[int]] | None = None
    failure: str | None = None


def is_program_set(action: dict[str, Any]) -> bool:
    return (action.get("braketSchemaHeader") or {}).get("name") == PROGRAM_SET_HEADER


def executable_count(action: dict[str, Any]) -> tuple[int, int]:
    """(programs, executables) of a program-set action that was accepted."""
    program_set = ProgramSet.parse_obj(action)
    return program_set.num_programs, program_set.num_executables


def compile_program_set(
    action: dict[str, Any], device_parameters: dict[str, Any], device: Device, shots: Any
) -> list[Executable]:
    """Every executable of the set, compiled for the device; ValidationException if the device
    runs no program sets, the set breaks its limits, or any executable cannot run."""
    limits = device.program_sets
    if limits is None:
        raise validation(
            f"{device.name} does not run program sets; its action is braket.ir.openqasm.program"
        )
    try:
        program_set = ProgramSet.parse_obj(action)
    except Exception as error:  # pydantic's and the schema's own ValueErrors alike
        raise validation(f"invalid program set: {error}") from error
    count = program_set.num_executables
    if count > limits.max_executables:
        raise validation(
            f"the program set has {count} executables; {device.name} runs at most "
            f"{limits.max_executables} in one task"
        )
    _check_total_shots(shots, count, device)
    executables: list[Executable] = []
    failures: list[dict[str, Any]] = []
    for program_index, program in enumerate(program_set.programs):
        for inputs_index, bound in enumerate(_executables_of(program)):
            try:
                compiled = compile_action(bound.dict(), device_parameters, device)
            except ApiError as error:
                failures.append(
                    {
                        "programIndex": program_index,
                        "inputsIndex": inputs_index,
                        "errors": [error.message],
                    }
                )
                continue
            executables.append(Executable(program_index, inputs_index, compiled))
    if failures:
        raise ApiError(
            "ValidationException",
            f"{len(failures)} of {count} executables of the program set cannot run on "
            f"{device.name}",
            reason="ProgramSetValidationFailed",
            programSetValidationFailures=failures,
        )
    return executables


def _check_total_shots(shots: Any, count: int, device: Device) -> None:
    limits = device.program_sets
    assert limits is not None
    low = limits.min_total_shots or 1
    if not isinstance(shots, int) or not low <= shots <= limits.max_total_shots:
        raise validation(
            f"shots of a program set are the total over its executables: between {low} and "
            f"{limits.max_total_shots} on {device.name}, got {shots}"
        )
    if shots % count:
        raise validation(
            f"shots ({shots}) must be a multiple of the program set's {count} executables"
        )
    per_executable = shots // count
    if not device.min_shots <= per_executable <= device.max_shots:
        raise validation(
            f"{per_executable} shots per executable; {device.name} runs between "
            f"{device.min_shots} and {device.max_shots}"
        )


def _executables_of(program: Program) -> list[Program]:
    """The program once per entry of its inputs' lists (once if it has none)."""
    if not program.inputs:
        return [program]
    length = len(next(iter(program.inputs.values())))
    return [
        Program(source=program.source, inputs={k: v[i] for k, v in program.inputs.items()})
        for i in range(length)
    ]


def result_files(
    *,
    task_arn: str,
    device_arn: str,
    bucket: str,
    directory: str,
    action: dict[str, Any],
    device_parameters: dict[str, Any],
    shots: int,
    executables: list[Executable],
    outcomes: list[Outcome],
    created_at: float,
    ended_at: float,
) -> tuple[dict[str, str], int]:
    """The task's result files by key under its directory, and its successful shots."""
    per_executable = shots // len(executables)
    program_set = ProgramSet.parse_obj(action)
    files: dict[str, str] = {}
    program_paths = []
    executables_by_program: dict[int, list[dict[str, Any]]] = {}
    for executable, outcome in zip(executables, outcomes, strict=True):
        program_dir = f"programs/{executable.program_index}"
        path = f"executables/{executable.inputs_index}.json"
        files[f"{program_dir}/{path}"] = _executable_document(executable, outcome)
        executables_by_program.setdefault(executable.program_index, []).append(
            {"failureReason": outcome.failure, "retryable": True, "category": "DEVICE"}
            if outcome.failure is not None
            else {}
        )
    for index, program in enumerate(program_set.programs):
        program_dir = f"programs/{index}"
        files[f"{program_dir}/program.json"] = program.json(exclude_none=True)
        count = len(executables_by_program.get(index, []))
        files[f"{program_dir}/{RESULTS_FILE}"] = ProgramResult.parse_obj(
            {
                "executableResults": [f"executables/{j}.json" for j in range(count)],
                "source": "program.json",
                "additionalMetadata": {},
            }
        ).json(exclude_none=True)
        program_paths.append(f"{program_dir}/{RESULTS_FILE}")
    failed = sum(outcome.failure is not None for outcome in outcomes)
    successful_shots = per_executable * (len(outcomes) - failed)
    files[METADATA_FILE] = ProgramSetTaskMetadata.parse_obj(
        {
            "id": task_arn,
            "deviceId": device_arn,
            "requestedShots": shots,
            "successfulShots": successful_shots,
            "programMetadata": [
                {"executables": executables_by_program.get(i, [])}
                for i in range(len(program_set.programs))
            ],
            "deviceParameters": device_parameters or None,
            "createdAt": iso_time(created_at),
            "endedAt": iso_time(ended_at),
            "status": "COMPLETED",
            "totalFailedExecutables": failed,
        }
    ).json(exclude_none=True)
    files[RESULTS_FILE] = ProgramSetTaskResult.parse_obj(
        {
            "programResults": program_paths,
            "taskMetadata": METADATA_FILE,
            "s3Location": [bucket, directory],
        }
    ).json(exclude_none=True)
    return files, successful_shots


def _executable_document(executable: Executable, outcome: Outcome) -> str:
    if outcome.failure is not None:
        return ProgramSetExecutableFailure.parse_obj(
            {
                "inputsIndex": executable.inputs_index,
                "failureMetadata": {
                    "failureReason": outcome.failure,
                    "retryable": True,
                    "category": "DEVICE",
                },
            }
        ).json(exclude_none=True)
    return ProgramSetExecutableResult.parse_obj(
        {
            "inputsIndex": executable.inputs_index,
            "measurements": outcome.measurements,
            "measuredQubits": executable.compiled.measured_qubits,
        }
    ).json(exclude_none=True)
