"""How `qloop` shows an adoption (schemas/adoption.py): its progress in one line and its report,
a line per task (what happened, what Braket billed, where its counts are) and, when a request
described the circuits, the mitigated experiment report."""

from __future__ import annotations

from cli.reports import format_report
from schemas.adoption import AdoptProgress, AdoptReport
from schemas.budget import format_usd


def describe_adopt_progress(progress: AdoptProgress) -> str:
    line = (
        f"{progress.stage}  {progress.tasks_ended}/{progress.tasks_total} tasks ended  "
        f"billed {format_usd(progress.cost_usd)}"
    )
    if progress.current_task:
        line += f"  waiting for {progress.current_task.rsplit('/', 1)[-1]}"
    if progress.error:
        line += f"  error: {progress.error}"
    return line


def adopt_fraction(progress: AdoptProgress) -> float | None:
    return progress.tasks_ended / progress.tasks_total if progress.tasks_total else None


def format_adopt_report(report: AdoptReport, web_ui_link: str = "") -> str:
    lines = [
        f"Adoption {report.adoption_id}: {len(report.tasks)} tasks on {report.device}",
        f"  account {report.account}: {format_usd(report.total_cost_usd)} recorded as committed",
    ]
    for task in report.tasks:
        what = task.counts_uri or task.failure_reason or "-"
        lines.append(f"  {task.arn}  {task.status:<9}  {format_usd(task.cost_usd):>10}  {what}")
    if report.experiment is not None:
        lines.append("")
        lines.append(format_report(report.experiment))
    elif report.experiment_skipped:
        lines.append(f"  not mitigated: {report.experiment_skipped}")
    if web_ui_link:
        lines.append(f"  Web UI: {web_ui_link}")
    return "\n".join(lines)
