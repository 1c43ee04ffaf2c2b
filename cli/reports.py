"""Experiments, loops and sweeps in words: one line of progress, and the report as a table."""

from __future__ import annotations

from cli.output import artifact_location
from schemas.loop import LoopProgress
from schemas.pipeline import Progress, Stage
from schemas.report import Estimate, ExperimentReport
from schemas.variational import (
    LoopReport,
    SweepProgress,
    SweepReport,
)


def describe_progress(progress: Progress) -> str:
    text = progress.stage.value
    if progress.stage == Stage.WAITING and progress.job_state is not None:
        text += f"  job {progress.job_state.value}"
        if progress.queue_position is not None:
            text += f", queue position {progress.queue_position}"
        text += f", {progress.polls} poll{'s' if progress.polls != 1 else ''}"
    if progress.awaiting:
        text += f"  waiting for {progress.awaiting}"
    if progress.paused and progress.stage != Stage.PAUSED:
        text += "  (paused)"
    if progress.estimated_cost_usd is not None and progress.stage != Stage.WAITING:
        text += f"  (estimated cost ${progress.estimated_cost_usd:.2f})"
    return text


def format_estimate(estimate: Estimate | None) -> str:
    if estimate is None:
        return "-"
    return f"{estimate.value:.4f}  [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"


def format_governance(report: ExperimentReport) -> list[str]:
    governance = report.governance
    if governance is None:
        return []
    lines = [f"  account         {governance.account}"]
    for approval in governance.approvals:
        decision = approval.decision
        reason = decision.reason if decision and decision.reason else "no reason given"
        key = f", signed with key {decision.key_id}" if decision and decision.key_id else ""
        who = f" by {decision.approver} ({reason}{key})" if decision else ""
        lines.append(f"  approval        {approval.outcome}{who} for {approval.backend}")
    lines.extend(
        f"  refused         {refused.note} (from {refused.approver})"
        for refused in governance.refused_decisions
    )
    lines.extend(
        f"  {change.kind:15} {change.from_backend} -> {change.to_backend}: {change.why}"
        for change in governance.route
    )
    for record in governance.budget:
        if record.committed_usd is not None:
            state = f"committed ${record.committed_usd:.2f}"
        else:
            state = "released" if record.released else "reserved"
        lines.append(f"  budget          ${record.reserved_usd:.2f} reserved, {state}")
    return lines


def format_report(report: ExperimentReport) -> str:
    if report.status != "completed":
        return "\n".join(
            [
                f"{report.experiment_id} ({report.name}) {report.status}",
                f"  reason          {report.status_reason}",
                *format_governance(report),
                f"  cost            estimated ${report.cost.estimated_usd:.2f}, "
                f"actual ${report.cost.actual_usd:.2f}",
            ]
        )
    assert report.provenance is not None and report.ideal_value is not None
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
    lines.extend(format_governance(report))
    timings = ", ".join(
        f"{stage} {seconds:.2f}s" for stage, seconds in report.timings_seconds.items()
    )
    lines.append(f"  timings         {timings}")
    report_uri = report.provenance.artifacts.get("report", "")
    if report_uri:
        lines.append(f"  artifacts       {artifact_location(report_uri.rsplit('/', 1)[0])}")
    return "\n".join(lines)


def print_report(report: ExperimentReport, as_json: bool) -> None:
    print(report.model_dump_json(indent=2) if as_json else format_report(report))


def describe_loop_progress(progress: LoopProgress) -> str:
    if progress.stage == "starting":
        return "starting  (classical baseline)"
    best = "-" if progress.best_value is None else f"{progress.best_value:.6f}"
    text = f"iteration {progress.iteration:4d}  best {best}  cost ${progress.cost_usd:.2f}"
    if progress.stage == "finishing":
        text += f"  {progress.stop_reason}: measuring the answer again, exact value"
    elif progress.stop_reason is not None:
        text += f"  stopped: {progress.stop_reason}"
    return text


def format_loop_report(report: LoopReport) -> str:
    final = report.best_measured
    objective = report.objective

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.6f}"

    lines = [
        f"Loop {report.loop_id} ({report.name}): {report.goal} {report.family}",
        f"  stopped         {report.stop_reason}: {report.stop_detail}",
        f"  iterations      {report.iterations} ({report.evaluations} evaluations, "
        f"{report.runs} run{'s' if report.runs != 1 else ''}, {report.elapsed_seconds:.1f}s)",
        f"  best point      [{', '.join(f'{x:.4f}' for x in report.best_point)}]",
    ]
    if final is not None:
        lines.append(
            f"  best value      {final.value:.6f} ± {final.std_error:.6f} (raw {final.raw:.6f}),"
            f" measured again after the loop"
        )
    else:
        lines.append(f"  best value      {number(report.best_value)} (SPSA's estimate)")
    lines += [
        f"  exact value     {report.exact_value:.6f} at the best point",
        f"  classical       {report.baseline_value:.6f} ({report.baseline_method})",
        f"  {objective.name}: exact {number(objective.exact)}   measured "
        f"{number(objective.measured)}   raw {number(objective.raw)}",
        f"  cost            ${report.cost_usd:.2f}",
        f"  backend         {report.backend}, {report.shots} shots, ZNE "
        f"{'on' if report.zne else 'off'}, readout mitigation {'on' if report.readout else 'off'}",
        f"  seeds           optimizer {report.optimizer.seed}, evaluation {report.evaluation_seed}",
        f"  trajectory      {artifact_location(report.trajectory_uri)}",
    ]
    return "\n".join(lines)


def describe_sweep_progress(progress: SweepProgress) -> str:
    text = f"{progress.stage.value:16}"
    if progress.points_total:
        text += (
            f"  batches {progress.batches_done}/{progress.batches_total} done  points "
            f"{progress.points_done:,} evaluated, {progress.points_cached:,} cached of "
            f"{progress.points_total:,}  cost ${progress.cost_usd:.2f}"
        )
    return text.rstrip()


def format_sweep_report(report: SweepReport) -> str:
    lines = [
        f"Sweep {report.sweep_id} ({report.name}): {report.status}",
        f"  family          {report.family} on {report.backend} ({report.goal})",
        f"  points          {report.points_total:,}: {report.points_evaluated:,} evaluated, "
        f"{report.points_cached:,} from the cache, {report.points_pending:,} not evaluated",
        f"  batches         {report.batches_done} of {report.batches_total} run",
    ]
    if report.status_reason:
        lines.append(f"  stopped         {report.status_reason}")
    if report.canary is not None:
        verdict = "passed" if report.canary.passed else "failed"
        lines.append(f"  canary          {verdict} ({report.canary.points} points)")
    if report.best is not None:
        best = report.best
        point = ", ".join(f"{x:.4g}" for x in best.parameters)
        lines.append(
            f"  best            {best.value:.6f} ± {best.std_error:.6f} at point {best.index} "
            f"[{point}]"
        )
    lines += [
        f"  cost            ${report.cost_usd:.2f} (estimated ${report.estimated_cost_usd:.2f})",
        f"  elapsed         {report.elapsed_seconds:.1f}s"
        + (f" ({report.runs} workflow runs: continued as new)" if report.runs > 1 else ""),
        f"  table           {artifact_location(report.table_uri)}",
    ]
    if report.plot_uri is not None:
        lines.append(f"  plot            {artifact_location(report.plot_uri)}")
    return "\n".join(lines)
