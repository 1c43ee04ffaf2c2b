"""Counts from the result files a Braket task writes to S3, read as the Braket SDK reads them.

A one-program task writes results.json (a GateModelTaskResult). A program-set task writes
results.json (a ProgramSetTaskResult) whose programs' results, and their executables' results,
are inline or in files under the task's folder: programs/<i>/results.json names
executables/<j>.json relative to its own folder. An executable holds measurements, or a failure
with its reason. Braket counts put the first measured qubit on the LEFT; qloop's canonical order
has clbit 0 on the right: circuits measure clbit j as the j-th measurement, so a result
bitstring reversed is canonical.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.errors import InvalidRequestError

PROGRAM_SET_RESULT = "braket.task_result.program_set_task_result"
EXECUTABLE_FAILURE = "braket.task_result.program_set_executable_failure"

# Reads a JSON file of the task by its key relative to the task's result folder.
ReadFile = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class ExecutableResult:
    """One executed circuit of a task: its canonical counts, or why it failed."""

    counts: dict[str, int] | None
    failure: str | None = None


def canonical_counts(result: dict[str, Any], shots: int, arn: str) -> dict[str, int]:
    """From the per-shot `measurements`, else from `measurementProbabilities` times the shots."""
    if result.get("measurements"):
        measured = Counter("".join(str(bit) for bit in shot) for shot in result["measurements"])
    elif result.get("measurementProbabilities"):
        drawn = {bits: round(p * shots) for bits, p in result["measurementProbabilities"].items()}
        measured = Counter({bits: count for bits, count in drawn.items() if count})
    else:
        raise InvalidRequestError(f"the result of Braket task {arn} holds no measurements")
    counts: dict[str, int] = {}
    for bits, count in measured.items():
        canonical = bits[::-1]
        counts[canonical] = counts.get(canonical, 0) + int(count)
    return counts


def is_program_set_result(document: dict[str, Any]) -> bool:
    return (document.get("braketSchemaHeader") or {}).get("name") == PROGRAM_SET_RESULT


def program_set_results(
    document: dict[str, Any], read: ReadFile, shots_per_executable: int, arn: str
) -> list[ExecutableResult]:
    """Every executable of a program-set task, program by program, in the order sent."""
    found: list[ExecutableResult] = []
    for entry in document.get("programResults") or []:
        if isinstance(entry, str):
            program, folder = read(entry), posixpath.dirname(entry)
        else:
            program, folder = entry, ""
        for executable in program.get("executableResults") or []:
            if isinstance(executable, str):
                executable = read(posixpath.join(folder, executable))
            found.append(_executable(executable, shots_per_executable, arn))
    return found


def _executable(document: dict[str, Any], shots: int, arn: str) -> ExecutableResult:
    header = (document.get("braketSchemaHeader") or {}).get("name")
    if header == EXECUTABLE_FAILURE or "failureMetadata" in document:
        reason = (document.get("failureMetadata") or {}).get("failureReason", "no reason given")
        return ExecutableResult(counts=None, failure=str(reason))
    return ExecutableResult(counts=canonical_counts(document, shots, arn))
