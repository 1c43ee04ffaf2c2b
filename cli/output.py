"""What the CLI prints and how it exits: the exit codes, JSON output, where announcements go.

Exit codes (README, "Exit codes"): 0 done, 1 refused by policy or not found, 2 invalid input,
3 the workflow failed. With `--json` a command prints exactly one JSON document on stdout and
everything else (announcements, progress lines) on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlparse

from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowFailureError

EXIT_DONE = 0
EXIT_NOT_ALLOWED = 1  # refused by policy, or no such workflow, account or backend
EXIT_INVALID = 2  # invalid input: a request file, an argument, a key
EXIT_FAILED = 3  # the workflow failed


def notes_stream(as_json: bool) -> TextIO:
    """Where announcements and progress lines go: stderr when stdout carries a JSON document."""
    return sys.stderr if as_json else sys.stdout


def print_json(document: BaseModel | Any) -> None:
    """The one JSON document of a `--json` command, on stdout."""
    if isinstance(document, BaseModel):
        print(document.model_dump_json(indent=2))
    else:
        print(json.dumps(document, indent=2, default=str))


def print_table(headers: list[str], rows: list[list[str]], stream: TextIO | None = None) -> None:
    """A table for people: drawn with rich on a terminal, plain aligned columns when piped (one
    row per line, for grep and cut)."""
    out = stream or sys.stdout
    if out.isatty():
        table = Table(*headers, box=box.SIMPLE_HEAD)
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
        return
    widths = [
        max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)
    ]
    for line in [headers, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(),
            file=out,
        )


def failure_message(error: WorkflowFailureError) -> str:
    cause = error.cause
    return getattr(cause, "message", None) or str(cause)


def report_failure(workflow_id: str, error: WorkflowFailureError, as_json: bool = False) -> int:
    """A failed workflow: the reason on stderr (and as the JSON document with --json)."""
    message = failure_message(error)
    print(f"failed: {workflow_id}: {message}", file=sys.stderr)
    if as_json:
        print_json({"workflow_id": workflow_id, "status": "FAILED", "error": message})
    return EXIT_FAILED


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


def moment(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")
