"""Following a running workflow live until it ends: on a terminal a live line with a spinner
(and a progress bar when the kind knows how far it is), elsewhere a timestamped line whenever
the progress changes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, TextIO, TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from cli.workflow_kinds import WorkflowKind

ProgressT = TypeVar("ProgressT")

# How long the last look at a finished workflow's progress may take (a worker answers it).
LAST_LOOK_TIMEOUT = timedelta(seconds=5)


class ProgressPrinter:
    """Shows a workflow's progress on `stream` (stdout by default; stderr when stdout carries a
    JSON document): live on a terminal, a timestamped line per change when piped or logged."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.started = time.monotonic()
        self.last = ""
        self.stream = stream or sys.stdout
        self._live: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressPrinter:
        if self.stream.isatty():
            self._live = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._live.start()
            self._task = self._live.add_task("starting", total=None)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def show(self, line: str, fraction: float | None = None) -> None:
        """The progress now, in one line; `fraction` of the work done when known."""
        if self._live is not None and self._task is not None:
            total, completed = (None, 0.0) if fraction is None else (1.0, fraction)
            self._live.update(self._task, description=line, total=total, completed=completed)
            self.last = line
            return
        if line != self.last:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:7.1f}s] {line}", file=self.stream, flush=True)
            self.last = line


async def watch(
    handle: WorkflowHandle,
    progress_type: type[ProgressT],
    describe: Callable[[ProgressT], str],
    printer: ProgressPrinter,
    interval: float = 0.3,
    fraction: Callable[[ProgressT], float | None] = lambda _progress: None,
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
            printer.show(describe(progress), fraction(progress))
        await asyncio.wait([result], timeout=interval)
    return result.result()


async def follow_kind(handle: WorkflowHandle, kind: WorkflowKind, printer: ProgressPrinter) -> Any:
    """Shows each change of `kind`'s progress until the workflow ends, then its last state (it
    may have ended between two polls), and returns its report. `handle` must carry the kind's
    result type."""
    with printer:
        report = await watch(
            handle, kind.progress_model, kind.describe, printer, fraction=kind.fraction
        )
        try:
            last = await handle.query(
                kind.progress_query, result_type=kind.progress_model, rpc_timeout=LAST_LOOK_TIMEOUT
            )
        except RPCError:
            return report
        printer.show(kind.describe(last), kind.fraction(last))
    return report
