"""The sweep's own activities: its points, the fingerprint cache, canary checks, partial results,
and the results table and plot.

- Points: a grid (one axis per parameter, first axis slowest) or an explicit list, expanded once
  into `points.npy` and `fingerprints.txt` in the sweep's artifact folder; the workflow passes
  ranges of indices, never the points themselves, except one batch at a time.
- Fingerprint cache: activities/storage/point_cache.py, in the shared database. A point found there
  is neither run nor paid for again, by this sweep or any later one.
- Partial results: each finished batch is written to `partial-<label>.json` and stored in the
  cache before the next batch starts, so an interrupted sweep resumes where it stopped.
- Results: `results.csv` (one row per point, grid order) and `results.png`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from activities.experiment.admission import AdmissionError, invalid_request
from activities.governance.policy import backend_name
from activities.numerics.families import family_circuit
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from activities.storage.point_cache import cached_values, store_in_cache
from activities.variational.batch_sizes import (
    admit_family,
    calibration_circuits,
    circuits_per_point,
    max_points_per_batch,
)
from activities.variational.point_fingerprints import point_fingerprint, with_calibration
from adapters.calibration_epochs import current_epoch
from adapters.registry import get_adapter
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Capabilities
from schemas.index_ranges import (
    as_ranges,
    range_indices,
)
from schemas.limits import MAX_SWEEP_POINTS
from schemas.sweep import (
    BatchPoints,
    BatchPointsInput,
    CacheLookup,
    CacheLookupInput,
    CanaryCheckInput,
    ExpandSweepInput,
    PartialBatch,
    StoreBatchInput,
    StoredBatch,
    SweepLayout,
    SweepPlan,
    SweepResults,
    SweepResultsInput,
    batch_label,
    partial_artifact,
    sweep_goal,
)
from schemas.variational import (
    BestPoint,
    CanaryVerdict,
    CircuitFamily,
    QaoaFamily,
    SweepRequest,
)

# The request is the workflow's input: Temporal warns about payloads above 256 KB (and refuses
# them above 2 MB), and a grid is never that large, but a list of points can be.
MAX_REQUEST_BYTES = 256_000
POINTS_ARTIFACT = "points.npy"
FINGERPRINTS_ARTIFACT = "fingerprints.txt"
TABLE_ARTIFACT = "results.csv"
PLOT_ARTIFACT = "results.png"
# A mitigated value may overshoot the observable's range by its own uncertainty; a value further
# out than this many standard errors is wrong, not noisy.
BOUND_MARGIN_STD_ERRORS = 3.0


class SweepRequestError(ValueError):
    """A sweep request that cannot run; `problems` names each field and reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def __reduce__(self) -> tuple[type[SweepRequestError], tuple[list[str]]]:
        # Raised in a child of the compute pool: it must unpickle with its problems, not with
        # the joined message as the list.
        return type(self), (self.problems,)


# --- points ------------------------------------------------------------------------------------


def parameter_names(family: CircuitFamily) -> list[str]:
    """In point order, as the family's circuit names them (gamma_k, beta_k or theta_k)."""
    return family_circuit(family).parameter_names


def axis_values(request: SweepRequest) -> list[list[float]] | None:
    """One list of values per grid axis; None for an explicit list of points."""
    grid = request.points.grid
    if grid is None:
        return None
    axes: list[list[float]] = []
    for axis in grid:
        if axis.values is not None:
            axes.append(list(axis.values))
        else:
            assert axis.start is not None and axis.stop is not None and axis.num is not None
            axes.append([float(v) for v in np.linspace(axis.start, axis.stop, axis.num)])
    return axes


def sweep_problems(request: SweepRequest) -> list[str]:
    """What makes a schema-valid request impossible to sweep, each with its field."""
    wanted = request.family.num_parameters
    names = ", ".join(parameter_names(request.family))
    problems: list[str] = []
    if request.points.grid is not None:
        grid = request.points.grid
        if len(grid) != wanted:
            problems.append(
                f"points.grid: {len(grid)} axes given; the {request.family.kind} family takes "
                f"{wanted} parameters ({names}), one axis each"
            )
        sizes = [len(a.values) if a.values is not None else (a.num or 0) for a in grid]
        problems.extend(
            f"points.grid.{k}.values: empty; give at least one value"
            for k, size in enumerate(sizes)
            if size == 0
        )
        total = math.prod(sizes)
    else:
        points = request.points.points or []
        problems.extend(
            f"points.points.{k}: {len(point)} values; the {request.family.kind} family takes "
            f"{wanted} ({names})"
            for k, point in enumerate(points)
            if len(point) != wanted
        )
        total = len(points)
    if total > MAX_SWEEP_POINTS:
        problems.append(
            f"points: {total:,} points; a sweep takes at most {MAX_SWEEP_POINTS:,} "
            "(split the study into several sweeps)"
        )
    size = len(request.model_dump_json())
    if request.points.points is not None and size > MAX_REQUEST_BYTES:
        problems.append(
            f"points.points: the request is {size:,} bytes as JSON; it travels as the workflow's "
            f"input, which should stay under {MAX_REQUEST_BYTES:,}: describe the points as a grid "
            "or split the list into several sweeps"
        )
    return problems


def expand_points(request: SweepRequest) -> tuple[np.ndarray, list[int] | None]:
    """All points in grid order (first axis slowest) as an array (points x parameters), and the
    grid's shape."""
    problems = sweep_problems(request)
    if problems:
        raise SweepRequestError(problems)
    axes = axis_values(request)
    if axes is None:
        return np.array(request.points.points, dtype=np.float64), None
    mesh = np.meshgrid(*[np.array(a, dtype=np.float64) for a in axes], indexing="ij")
    points = np.stack([m.reshape(-1) for m in mesh], axis=1)
    return points, [len(a) for a in axes]


def admit_sweep(request: SweepRequest) -> tuple[Capabilities, int]:
    """Everything the CLI checks before a sweep starts, and the workflow checks again: the
    points, then the family on the backend (`batch_sizes.admit_family`: known, online, wide enough,
    enough shots, a classical reference qloop can compute) and the batch size. Returns the
    backend's capabilities and the points per batch: the request's batch_size, else as many as
    one job takes. Raises SweepRequestError naming every problem (TransientError when the
    provider does not answer)."""
    problems = sweep_problems(request)
    family, evaluation = request.family, request.evaluation
    try:
        capabilities = admit_family(family, evaluation)
    except AdmissionError as error:
        raise SweepRequestError([*problems, str(error)]) from None
    most = max_points_per_batch(family, evaluation, capabilities.max_circuits_per_job)
    if request.batch_size is not None and request.batch_size > most:
        problems.append(
            f"batch_size: {request.batch_size} points need more than the "
            f"{capabilities.max_circuits_per_job} circuits per job "
            f"{capabilities.provider}/{capabilities.device} takes "
            f"({circuits_per_point(family, evaluation)} per point, plus "
            f"{calibration_circuits(evaluation)} for readout calibration); use at most {most}"
        )
    if problems:
        raise SweepRequestError(problems)
    return capabilities, request.batch_size or most


def expand_sweep(input: ExpandSweepInput) -> SweepLayout:
    request = input.request
    capabilities, batch_size = admit_sweep(request)
    points, grid_shape = expand_points(request)
    evaluation = request.evaluation
    # One reading for the whole sweep: its points are measured in the epoch it was planned in
    # (a recalibration during the sweep makes the next run measure everything again).
    epoch = current_epoch(get_adapter(evaluation.backend))
    fingerprints = [
        with_calibration(point_fingerprint(request.family, list(p), evaluation), epoch)
        for p in points
    ]
    buffer = io.BytesIO()
    np.save(buffer, points, allow_pickle=False)
    artifact_store.put_model(input.sweep_id, "request.json", request)
    points_uri = artifact_store.put_bytes(input.sweep_id, POINTS_ARTIFACT, buffer.getvalue())
    fingerprints_uri = artifact_store.put_bytes(
        input.sweep_id, FINGERPRINTS_ARTIFACT, "\n".join(fingerprints).encode()
    )
    return SweepLayout(
        points_uri=points_uri,
        fingerprints_uri=fingerprints_uri,
        num_points=len(points),
        parameter_names=parameter_names(request.family),
        grid_shape=grid_shape,
        circuits_per_point=circuits_per_point(request.family, evaluation),
        max_circuits_per_job=capabilities.max_circuits_per_job,
        points_per_batch=batch_size,
        backend=backend_name(evaluation.backend),
        calibration_epoch=epoch,
    )


def load_points(layout: SweepLayout, *, mmap: bool = False) -> np.ndarray:
    """The sweep's points; memory-mapped when asked and the store is a local folder (a batch
    reads a few rows of a large grid)."""
    if artifact_store.store_is_local():
        path = artifact_store.path_of(layout.points_uri)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return np.load(io.BytesIO(artifact_store.read_bytes(layout.points_uri)), allow_pickle=False)


def load_fingerprints(layout: SweepLayout) -> list[str]:
    return artifact_store.read_bytes(layout.fingerprints_uri).decode().split("\n")


def batch_points(input: BatchPointsInput) -> BatchPoints:
    points = load_points(input.layout, mmap=True)
    chosen = points[list(range_indices(input.indices))]
    return BatchPoints(points=[[float(v) for v in row] for row in chosen])


# --- the fingerprint cache -------------------------------------------------------------------


def lookup_cache(input: CacheLookupInput) -> CacheLookup:
    fingerprints = load_fingerprints(input.layout)
    found = cached_values(fingerprints)
    pending = [i for i, fingerprint in enumerate(fingerprints) if fingerprint not in found]
    return CacheLookup(cached=len(fingerprints) - len(pending), pending=as_ranges(pending))


def plan_sweep(input: ExpandSweepInput) -> SweepPlan:
    layout = expand_sweep(input)
    return SweepPlan(layout=layout, lookup=lookup_cache(CacheLookupInput(layout=layout)))


# --- canary -----------------------------------------------------------------------------------


def observable_bounds(family: CircuitFamily) -> tuple[float, float]:
    """The range of the family's observable: a cut lies between the sums of the negative and of
    the positive edge weights; an energy within +- the sum of |coefficients|."""
    if isinstance(family, QaoaFamily):
        weights = [edge.weight for edge in family.graph.edges]
        return sum(min(w, 0.0) for w in weights), sum(max(w, 0.0) for w in weights)
    extent = sum(abs(term.coefficient) for term in family.hamiltonian.terms)
    return -extent, extent


def check_canary(input: CanaryCheckInput) -> CanaryVerdict:
    low, high = observable_bounds(input.family)
    limit = input.spec.max_deviation
    problems: list[str] = []
    for k, point in enumerate(input.values):
        where = f"canary point {k} {point.parameters}"
        if not (math.isfinite(point.value) and math.isfinite(point.std_error)):
            problems.append(f"{where}: value {point.value} ± {point.std_error} is not finite")
            continue
        margin = BOUND_MARGIN_STD_ERRORS * point.std_error
        if not low - margin <= point.value <= high + margin:
            problems.append(
                f"{where}: value {point.value:.6g} lies outside the observable's range "
                f"[{low:.6g}, {high:.6g}]"
            )
        if limit is not None and input.exact_values is not None:
            exact = input.exact_values[k]
            if abs(point.value - exact) > limit:
                problems.append(
                    f"{where}: value {point.value:.6g} is {abs(point.value - exact):.3g} from the "
                    f"exact {exact:.6g}; canary.max_deviation allows {limit:g}"
                )
    return CanaryVerdict(passed=not problems, points=len(input.values), problems=problems)


# --- partial results ------------------------------------------------------------------------------


def store_batch(input: StoreBatchInput) -> StoredBatch:
    """Writes the batch's results, then (unless told not to) puts them in the cache. Both are
    idempotent, so a retried activity leaves the same state."""
    indices = list(range_indices(input.indices))
    if len(indices) != len(input.values):
        raise ValueError(
            f"batch {input.label}: {len(input.values)} values for {len(indices)} points"
        )
    layout = input.layout
    expected = load_fingerprints(layout)
    for index, value in zip(indices, input.values, strict=True):
        # A batch fingerprints its points without the epoch, which only the plan knows.
        planned = with_calibration(value.fingerprint, layout.calibration_epoch)
        if planned != expected[index]:
            raise ValueError(
                f"batch {input.label}: point {index} came back with fingerprint "
                f"{planned}, expected {expected[index]}: the batch evaluated other "
                "circuits than the sweep planned"
            )
    values = [
        value.model_copy(update={"fingerprint": expected[index]})
        for index, value in zip(indices, input.values, strict=True)
    ]
    partial = PartialBatch(
        label=input.label,
        indices=input.indices,
        values=values,
        cost_usd=input.cost_usd,
        cached=input.cache,
    )
    uri = artifact_store.put_model(input.sweep_id, partial_artifact(input.label), partial)
    stored = (
        store_in_cache(
            input.sweep_id,
            input.label,
            values,
            backend=layout.backend,
            calibration_epoch=layout.calibration_epoch,
        )
        if input.cache
        else 0
    )
    return StoredBatch(partial_uri=uri, stored_in_cache=stored)


# --- results table and plot ---------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One point of the table; `cached` None: not evaluated (the sweep stopped early)."""

    index: int
    parameters: list[float]
    fingerprint: str
    value: float | None = None
    std_error: float | None = None
    raw: float | None = None
    cached: bool | None = None


def collect_rows(input: SweepResultsInput) -> list[Row]:
    """Every point with its value: from this sweep's own batches, else from the cache."""
    points = load_points(input.layout)
    fingerprints = load_fingerprints(input.layout)
    rows = [
        Row(i, [float(v) for v in point], fingerprint)
        for i, (point, fingerprint) in enumerate(zip(points, fingerprints, strict=True))
    ]
    for number in range_indices(input.batches):
        partial_url = artifact_store.url_of(input.sweep_id, partial_artifact(batch_label(number)))
        partial = artifact_store.read_model(partial_url, PartialBatch)
        for index, value in zip(range_indices(partial.indices), partial.values, strict=True):
            row = rows[index]
            row.value, row.std_error, row.raw = value.value, value.std_error, value.raw
            row.cached = False
    missing = [row.fingerprint for row in rows if row.cached is None]
    found = cached_values(missing) if missing else {}
    for row in rows:
        if row.cached is None and row.fingerprint in found:
            row.value, row.std_error, row.raw = found[row.fingerprint]
            row.cached = True
    return rows


def table_csv(parameter_names: Sequence[str], rows: Sequence[Row]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["index", *parameter_names, "value", "std_error", "raw", "fingerprint", "cached"]
    )
    for row in rows:
        evaluated = row.cached is not None
        writer.writerow(
            [
                row.index,
                *(repr(v) for v in row.parameters),
                repr(row.value) if evaluated else "",
                repr(row.std_error) if evaluated else "",
                repr(row.raw) if evaluated else "",
                row.fingerprint,
                ("yes" if row.cached else "no") if evaluated else "",
            ]
        )
    return text.getvalue().encode()


def best_row(rows: Sequence[Row], goal: str) -> Row | None:
    evaluated = [row for row in rows if row.value is not None]
    if not evaluated:
        return None
    sign = 1.0 if goal == "maximize" else -1.0
    return max(evaluated, key=lambda row: (sign * (row.value or 0.0), -row.index))


def plot_results(
    request: SweepRequest, layout: SweepLayout, rows: Sequence[Row], best: Row | None
) -> bytes:
    """1-D grid: value against the swept parameter; 2-D grid: a heatmap; otherwise value against
    point index. Axes of a single value do not count as dimensions."""
    figure = Figure(figsize=(7.0, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = np.array([np.nan if row.value is None else row.value for row in rows])
    errors = np.array([np.nan if row.std_error is None else row.std_error for row in rows])
    shape = layout.grid_shape
    swept = [k for k, size in enumerate(shape or []) if size > 1]
    names = layout.parameter_names
    if shape is not None and len(swept) == 1:
        k = swept[0]
        x = np.array([row.parameters[k] for row in rows])
        axes.errorbar(x, values, yerr=errors, fmt="o-", markersize=3, capsize=2)
        axes.set_xlabel(names[k])
        axes.set_ylabel("value")
        if best is not None:
            axes.plot(
                [best.parameters[k]],
                np.array([best.value], dtype=float),
                "r*",
                markersize=12,
                label="best",
            )
            axes.legend()
    elif shape is not None and len(swept) == 2:
        first, second = swept
        grid = values.reshape([shape[first], shape[second]])
        image = axes.imshow(grid.T, origin="lower", aspect="auto", cmap="viridis")
        figure.colorbar(image, ax=axes, label="value")
        axis_values_ = axis_values(request)
        assert axis_values_ is not None
        for setter, labels, k in (
            (axes.set_xticks, axis_values_[first], first),
            (axes.set_yticks, axis_values_[second], second),
        ):
            ticks = np.unique(np.linspace(0, len(labels) - 1, min(len(labels), 7)).round())
            setter(ticks, [f"{labels[int(t)]:.3g}" for t in ticks])
            (axes.set_xlabel if k == first else axes.set_ylabel)(names[k])
        if best is not None:
            position = np.unravel_index(best.index, shape)
            axes.plot([position[first]], [position[second]], "r*", markersize=14)
    else:
        axes.errorbar(np.arange(len(rows)), values, yerr=errors, fmt="o", markersize=2)
        axes.set_xlabel("point index")
        axes.set_ylabel("value")
        if best is not None:
            axes.plot(
                [best.index], np.array([best.value], dtype=float), "r*", markersize=12, label="best"
            )
            axes.legend()
    backend = request.evaluation.backend
    axes.set_title(
        f"{request.name}: {request.family.kind} on {backend.provider}/{backend.device}, "
        f"{request.evaluation.shots} shots",
        fontsize=10,
    )
    # Fixed margins: fitting them to the labels (tight_layout) would draw the figure twice.
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.92)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return png.getvalue()


def write_results(input: SweepResultsInput) -> SweepResults:
    rows = collect_rows(input)
    best = best_row(rows, sweep_goal(input.request.family))
    table_uri = artifact_store.put_bytes(
        input.sweep_id, TABLE_ARTIFACT, table_csv(input.layout.parameter_names, rows)
    )
    plot_uri = artifact_store.put_bytes(
        input.sweep_id, PLOT_ARTIFACT, plot_results(input.request, input.layout, rows, best)
    )
    evaluated = sum(1 for row in rows if row.cached is False)
    cached = sum(1 for row in rows if row.cached)
    return SweepResults(
        table_uri=table_uri,
        plot_uri=plot_uri,
        evaluated=evaluated,
        cached=cached,
        missing=len(rows) - evaluated - cached,
        best=None
        if best is None or best.value is None
        else BestPoint(
            index=best.index,
            parameters=best.parameters,
            value=best.value,
            std_error=best.std_error or 0.0,
        ),
    )


# --- activities ------------------------------------------------------------------------------


@implements(activity_contracts.expand_sweep)
async def expand_sweep_activity(input: ExpandSweepInput) -> SweepLayout:
    try:
        return await in_child_with_heartbeats(expand_sweep, input)
    except SweepRequestError as error:
        raise invalid_request(error) from error


@implements(activity_contracts.plan_sweep)
async def plan_sweep_activity(input: ExpandSweepInput) -> SweepPlan:
    try:
        return await in_child_with_heartbeats(plan_sweep, input)
    except SweepRequestError as error:
        raise invalid_request(error) from error


@implements(activity_contracts.lookup_sweep_cache)
async def lookup_sweep_cache_activity(input: CacheLookupInput) -> CacheLookup:
    return await in_child_with_heartbeats(lookup_cache, input)


@implements(activity_contracts.sweep_batch_points)
async def sweep_batch_points_activity(input: BatchPointsInput) -> BatchPoints:
    return await in_child_with_heartbeats(batch_points, input)


@implements(activity_contracts.check_sweep_canary)
async def check_sweep_canary_activity(input: CanaryCheckInput) -> CanaryVerdict:
    return check_canary(input)


@implements(activity_contracts.store_sweep_batch)
async def store_sweep_batch_activity(input: StoreBatchInput) -> StoredBatch:
    try:
        return await in_child_with_heartbeats(store_batch, input)
    except ValueError as error:
        raise invalid_request(error) from error


@implements(activity_contracts.write_sweep_results)
async def write_sweep_results_activity(input: SweepResultsInput) -> SweepResults:
    return await in_child_with_heartbeats(write_results, input)


SWEEP_ACTIVITIES: list[Callable[..., Any]] = [
    plan_sweep_activity,
    expand_sweep_activity,
    lookup_sweep_cache_activity,
    sweep_batch_points_activity,
    check_sweep_canary_activity,
    store_sweep_batch_activity,
    write_sweep_results_activity,
]
