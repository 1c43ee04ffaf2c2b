"""One table of the workflow kinds qloop starts: their type, the query that shows where they are
(and its model, described in one line), the report they return (and how to print it), and how
`qloop list` describes them. `status`, `result`, `list` and `watch` look a workflow's kind up
from its type, so every command works on every kind.

The budget ledger and the backend health breaker live for ever and return no report: their
current view (the `view` query) stands in for one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from temporalio.client import WorkflowExecution

from cli.adopt_report import adopt_fraction, describe_adopt_progress, format_adopt_report
from cli.budget import format_ledger
from cli.health import format_health, health_note
from cli.reports import (
    describe_loop_progress,
    describe_progress,
    describe_sweep_progress,
    format_loop_report,
    format_report,
    format_sweep_report,
)
from schemas.adoption import AdoptProgress, AdoptReport
from schemas.budget import LEDGER_WORKFLOW_PREFIX, LedgerView, format_usd
from schemas.health import HEALTH_WORKFLOW_PREFIX, HealthView
from schemas.loop import LoopProgress
from schemas.pipeline import Progress
from schemas.report import ExperimentReport
from schemas.variational import LoopReport, SweepProgress, SweepReport
from workflows import search_attributes as attrs


@dataclass(frozen=True)
class WorkflowKind:
    """`progress_query` answers with `progress_model`, which `describe` puts in one line.
    `report_model` is what the workflow returns (None: it never returns; `result` shows the
    query's answer instead), and `format_report(report, web_ui_link)` prints it for people.
    `list_detail` is the last column of `qloop list`; `fraction` how much of the work is done,
    for a progress bar (None: not known, a spinner only)."""

    name: str
    workflow_type: str
    progress_query: str
    progress_model: type[BaseModel]
    describe: Callable[[Any], str]
    report_model: type[BaseModel] | None
    format_report: Callable[[Any, str], str]
    list_detail: Callable[[WorkflowExecution], str]
    fraction: Callable[[Any], float | None] = lambda _progress: None

    @property
    def long_lived(self) -> bool:
        """Runs for ever: no result, only its current view."""
        return self.report_model is None


def backend_and_cost(execution: WorkflowExecution) -> str:
    found = execution.typed_search_attributes
    cost = found.get(attrs.ESTIMATED_COST_USD)
    backend = found.get(attrs.BACKEND) or "-"
    return backend if cost is None else f"{backend}  est. ${cost:.2f}"


def backend_of(execution: WorkflowExecution) -> str:
    return execution.typed_search_attributes.get(attrs.BACKEND) or "-"


def ledger_account(execution: WorkflowExecution) -> str:
    return f"account {execution.id.removeprefix(LEDGER_WORKFLOW_PREFIX)}"


def breaker_backend(execution: WorkflowExecution) -> str:
    return f"backend {execution.id.removeprefix(HEALTH_WORKFLOW_PREFIX)}"


def sweep_fraction(progress: SweepProgress) -> float | None:
    if not progress.batches_total:
        return None
    return progress.batches_done / progress.batches_total


def describe_ledger(view: LedgerView) -> str:
    per = "" if view.period == "none" else f" per {view.period}"
    return (
        f"limit {format_usd(view.limit_usd)}{per}  reserved {format_usd(view.reserved_usd)}  "
        f"committed {format_usd(view.committed_usd)}  available {format_usd(view.available_usd)}"
    )


def describe_health(view: HealthView) -> str:
    return f"{view.state}  {view.consecutive_failures} consecutive failures  {health_note(view)}"


KINDS: tuple[WorkflowKind, ...] = (
    WorkflowKind(
        name="experiment",
        workflow_type="ExperimentWorkflow",
        progress_query="progress",
        progress_model=Progress,
        describe=describe_progress,
        report_model=ExperimentReport,
        format_report=lambda report, _link: format_report(report),
        list_detail=backend_and_cost,
    ),
    WorkflowKind(
        name="loop",
        workflow_type="LoopWorkflow",
        progress_query="progress",
        progress_model=LoopProgress,
        describe=describe_loop_progress,
        report_model=LoopReport,
        format_report=lambda report, _link: format_loop_report(report),
        list_detail=backend_of,
    ),
    WorkflowKind(
        name="sweep",
        workflow_type="SweepWorkflow",
        progress_query="progress",
        progress_model=SweepProgress,
        describe=describe_sweep_progress,
        report_model=SweepReport,
        format_report=lambda report, _link: format_sweep_report(report),
        list_detail=backend_of,
        fraction=sweep_fraction,
    ),
    WorkflowKind(
        name="adopt",
        workflow_type="AdoptWorkflow",
        progress_query="progress",
        progress_model=AdoptProgress,
        describe=describe_adopt_progress,
        report_model=AdoptReport,
        format_report=format_adopt_report,
        list_detail=backend_of,
        fraction=adopt_fraction,
    ),
    WorkflowKind(
        name="ledger",
        workflow_type="BudgetLedgerWorkflow",
        progress_query="view",
        progress_model=LedgerView,
        describe=describe_ledger,
        report_model=None,
        format_report=format_ledger,
        list_detail=ledger_account,
    ),
    WorkflowKind(
        name="health",
        workflow_type="BackendHealthWorkflow",
        progress_query="view",
        progress_model=HealthView,
        describe=describe_health,
        report_model=None,
        format_report=format_health,
        list_detail=breaker_backend,
    ),
)

KIND_NAMES: tuple[str, ...] = tuple(kind.name for kind in KINDS)


def kind_named(name: str) -> WorkflowKind:
    return next(kind for kind in KINDS if kind.name == name)


def kind_of_type(workflow_type: str | None) -> WorkflowKind | None:
    """The kind of a workflow from its type (`handle.describe().workflow_type`); None when the
    workflow is not one of qloop's kinds."""
    return next((kind for kind in KINDS if kind.workflow_type == workflow_type), None)
