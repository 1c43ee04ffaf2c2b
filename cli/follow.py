"""Following a running workflow live: a line whenever its progress changes, until it ends."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TextIO, TypeVar

from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from cli.workflow_kinds import WorkflowKind

ProgressT = TypeVar("ProgressT")

# How long the last look at a finished workflow's progress may take (a worker answers it).
LAST_LOOK_TIMEOUT = timedelta(seconds=5)


class ProgressPrinter:
    """Prints a timestamped line whenever the description of a workflow's progress changes, on
    `stream` (stdout by default; stderr when stdout carries a JSON document)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.started = time.monotonic()
        self.last = ""
        self.stream = stream

    def show(self, line: str) -> None:
        if line != self.last:
            stream = self.stream or sys.stdout
            print(f"[{time.monotonic() - self.started:7.1f}s] {line}", file=stream, flush=True)
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


async def follow_kind(handle: WorkflowHandle, kind: WorkflowKind, printer: ProgressPrinter) -> Any:
    """Prints each change of `kind`'s progress until the workflow ends, then its last state (it
    may have ended between two polls), and returns its report. `handle` must carry the kind's
    result type."""
    report = await watch(handle, kind.progress_model, kind.describe, printer)
    try:
        last = await handle.query(
            kind.progress_query, result_type=kind.progress_model, rpc_timeout=LAST_LOOK_TIMEOUT
        )
    except RPCError:
        return report
    printer.show(kind.describe(last))
    return report
