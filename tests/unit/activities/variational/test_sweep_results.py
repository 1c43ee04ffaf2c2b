"""The sweep's pure parts: points in grid order, index ranges and batches, the fingerprint cache,
canary checks, partial results, the results table and plot, and `qloop sweep` refusing bad
files before anything starts."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import cli.start
import starter
from activities.storage import artifact_store
from activities.storage.point_cache import cached_values, store_in_cache
from activities.variational.point_fingerprints import point_fingerprint
from activities.variational.sweep_results import (
    SweepRequestError,
    admit_sweep,
    check_canary,
    expand_points,
    expand_sweep,
    lookup_cache,
    observable_bounds,
    store_batch,
    write_results,
)
from cli.output import EXIT_INVALID
from schemas.index_ranges import (
    IndexRange,
    as_ranges,
    range_indices,
    split_ranges,
    subtract_ranges,
)
from schemas.loading import RequestError
from schemas.sweep import (
    CacheLookupInput,
    CanaryCheckInput,
    ExpandSweepInput,
    StoreBatchInput,
    SweepLayout,
    SweepResultsInput,
    batch_label,
)
from schemas.variational import CanarySpec, PointValue, SweepRequest
from workflows.sweep import plan_batches

TRIANGLE = {
    "kind": "qaoa_maxcut",
    "graph": {
        "nodes": 3,
        "edges": [
            {"u": 0, "v": 1, "weight": 1.0},
            {"u": 1, "v": 2, "weight": -0.5},
            {"u": 0, "v": 2, "weight": 2.0},
        ],
    },
}
H2_LIKE = {
    "kind": "vqe",
    "hamiltonian": {
        "kind": "pauli_sum",
        "terms": [
            {"pauli": "ZI", "coefficient": 0.4},
            {"pauli": "IZ", "coefficient": -0.4},
            {"pauli": "XX", "coefficient": 0.2},
        ],
    },
}


def sweep(
    points: dict[str, object], family: dict[str, object] = TRIANGLE, **fields: object
) -> SweepRequest:
    return SweepRequest.model_validate(
        {"name": "unit", "family": family, "points": points, **fields}
    )


def ranges(*pairs: tuple[int, int]) -> list[IndexRange]:
    return [IndexRange(start=start, stop=stop) for start, stop in pairs]


def spans(batches: list[list[IndexRange]]) -> list[list[tuple[int, int]]]:
    return [[(r.start, r.stop) for r in batch] for batch in batches]


# --- points ------------------------------------------------------------------------------------


def test_a_grid_expands_with_the_first_axis_slowest_and_both_ends_included() -> None:
    request = sweep({"grid": [{"values": [0.1, 0.2]}, {"start": 0.0, "stop": 1.0, "num": 3}]})
    points, shape = expand_points(request)
    assert shape == [2, 3]
    assert points.tolist() == [
        [0.1, 0.0], [0.1, 0.5], [0.1, 1.0],
        [0.2, 0.0], [0.2, 0.5], [0.2, 1.0],
    ]  # fmt: skip


def test_an_explicit_list_keeps_its_order() -> None:
    points, shape = expand_points(sweep({"points": [[0.3, 0.1], [0.0, 0.2]]}))
    assert shape is None
    assert points.tolist() == [[0.3, 0.1], [0.0, 0.2]]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        (
            {"grid": [{"values": [0.1]}]},
            "points.grid: 1 axes given; the qaoa_maxcut family takes 2",
        ),
        ({"grid": [{"values": []}, {"values": [1.0]}]}, "points.grid.0.values: empty"),
        ({"points": [[0.1, 0.2], [0.3]]}, "points.points.1: 1 values; the qaoa_maxcut family"),
        (
            {"grid": [{"start": 0, "stop": 1, "num": 1000}, {"start": 0, "stop": 1, "num": 101}]},
            "points: 101,000 points; a sweep takes at most 100,000",
        ),
        (
            {"points": [[0.123456789 * k, 0.987654321 * k] for k in range(8000)]},
            "points.points: the request is",
        ),
    ],
)
def test_points_that_do_not_fit_the_family_are_refused(
    points: dict[str, object], expected: str
) -> None:
    with pytest.raises(SweepRequestError) as refused:
        expand_points(sweep(points))
    assert any(problem.startswith(expected) for problem in refused.value.problems), (
        refused.value.problems
    )


def test_a_batch_size_above_what_one_job_takes_is_refused_with_the_largest_allowed() -> None:
    request = sweep({"points": [[0.1, 0.2]]}, batch_size=501)
    with pytest.raises(SweepRequestError) as refused:
        admit_sweep(request)
    assert refused.value.problems == [
        "batch_size: 501 points need more than the 500 circuits per job aer/ideal takes "
        "(1 per point, plus 0 for readout calibration); use at most 500"
    ]


def test_without_batch_size_a_batch_holds_what_one_job_takes() -> None:
    # The Hamiltonian needs two bases, readout calibration adds two circuits per job.
    request = sweep({"points": [[0.0] * 4]}, family=H2_LIKE, evaluation={"readout": True})
    _, batch_size = admit_sweep(request)
    assert batch_size == (500 - 2) // 2


# --- ranges and batches --------------------------------------------------------------------------


def test_ranges_round_trip_and_split() -> None:
    assert as_ranges([0, 1, 2, 5, 7, 8]) == ranges((0, 3), (5, 6), (7, 9))
    assert as_ranges([]) == []
    head, tail = split_ranges(ranges((0, 3), (5, 6), (7, 9)), 4)
    assert (head, tail) == (ranges((0, 3), (5, 6)), ranges((7, 9)))
    head, tail = split_ranges(ranges((0, 3), (5, 6), (7, 9)), 2)
    assert (head, tail) == (ranges((0, 2)), ranges((2, 3), (5, 6), (7, 9)))
    assert list(range_indices(ranges((2, 4), (8, 9)))) == [2, 3, 8]


def test_subtracting_ranges_keeps_what_no_removed_range_holds_as_the_fewest_ranges() -> None:
    pending = ranges((0, 5), (9, 12), (15, 20))
    assert subtract_ranges(pending, []) == pending
    # Removed ranges in any order, overlapping each other, spanning a gap, or holding nothing.
    removed = ranges((16, 18), (3, 10), (4, 6), (11, 11), (17, 19))
    assert subtract_ranges(pending, removed) == ranges((0, 3), (10, 12), (15, 16), (19, 20))
    assert subtract_ranges(pending, ranges((0, 20))) == []
    # Adjacent ranges left over are merged, as `as_ranges` would.
    assert subtract_ranges(ranges((0, 2), (2, 4)), ranges((5, 6))) == ranges((0, 4))


def test_the_canary_comes_first_then_full_batches_across_cached_gaps() -> None:
    pending = ranges((0, 5), (9, 12))
    assert spans(plan_batches(pending, 2, 3)) == [
        [(0, 2)],
        [(2, 5)],
        [(9, 12)],
    ]
    assert spans(plan_batches(pending, 0, 4)) == [[(0, 4)], [(4, 5), (9, 12)]]
    # The canary never holds more than one batch.
    assert spans(plan_batches(ranges((0, 10)), 8, 5)) == [[(0, 5)], [(5, 10)]]
    assert plan_batches([], 4, 5) == []


# --- cache and partial results -----------------------------------------------------------------


def layout_of(request: SweepRequest, sweep_id: str = "unit-sweep") -> SweepLayout:
    return expand_sweep(ExpandSweepInput(sweep_id=sweep_id, request=request))


def values_for(request: SweepRequest, layout: SweepLayout, indices: list[int]) -> list[PointValue]:
    points, _ = expand_points(request)
    return [
        PointValue(
            parameters=points[i].tolist(),
            value=float(i),
            std_error=0.01,
            raw=float(i) - 0.5,
            fingerprint=point_fingerprint(request.family, points[i].tolist(), request.evaluation),
        )
        for i in indices
    ]


def test_stored_points_are_found_by_fingerprint_and_the_rest_stay_pending() -> None:
    request = sweep({"grid": [{"values": [0.1, 0.2, 0.3]}, {"values": [0.5, 0.6]}]})
    layout = layout_of(request)
    assert layout.num_points == 6
    assert lookup_cache(CacheLookupInput(layout=layout)).pending == ranges((0, 6))
    stored = store_batch(
        StoreBatchInput(
            sweep_id="unit-sweep",
            label=batch_label(0),
            layout=layout,
            indices=ranges((1, 3)),
            values=values_for(request, layout, [1, 2]),
        )
    )
    assert stored.stored_in_cache == 2
    lookup = lookup_cache(CacheLookupInput(layout=layout))
    assert (lookup.cached, lookup.pending) == (2, ranges((0, 1), (3, 6)))
    # Another sweep of the same points on another backend shares nothing.
    elsewhere = sweep(
        {"grid": [{"values": [0.1, 0.2, 0.3]}, {"values": [0.5, 0.6]}]},
        evaluation={"shots": 1000},
    )
    assert lookup_cache(CacheLookupInput(layout=layout_of(elsewhere, "other"))).cached == 0


def test_the_first_value_stored_for_a_fingerprint_is_kept() -> None:
    request = sweep({"points": [[0.1, 0.2]]})
    layout = layout_of(request)
    (first,) = values_for(request, layout, [0])
    assert store_in_cache("a", "batch-00000", [first]) == 1
    again = first.model_copy(update={"value": 99.0})
    assert store_in_cache("b", "batch-00000", [again]) == 0
    assert cached_values([first.fingerprint]) == {first.fingerprint: (0.0, 0.01, -0.5)}


def test_values_of_other_points_than_planned_are_refused() -> None:
    request = sweep({"points": [[0.1, 0.2], [0.3, 0.4]]})
    layout = layout_of(request)
    swapped = list(reversed(values_for(request, layout, [0, 1])))
    with pytest.raises(ValueError, match="point 0 came back with fingerprint"):
        store_batch(
            StoreBatchInput(
                sweep_id="unit-sweep",
                label=batch_label(0),
                layout=layout,
                indices=ranges((0, 2)),
                values=swapped,
            )
        )
    assert cached_values([v.fingerprint for v in swapped]) == {}


def test_values_kept_out_of_the_cache_are_still_in_the_partial_results() -> None:
    request = sweep({"points": [[0.1, 0.2], [0.3, 0.4]]})
    layout = layout_of(request)
    values = values_for(request, layout, [0, 1])
    stored = store_batch(
        StoreBatchInput(
            sweep_id="unit-sweep",
            label=batch_label(0),
            layout=layout,
            indices=ranges((0, 2)),
            values=values,
            cache=False,
        )
    )
    assert stored.stored_in_cache == 0
    assert cached_values([v.fingerprint for v in values]) == {}
    assert artifact_store.path_of(stored.partial_uri).name == "partial-batch-00000.json"


# --- canary ------------------------------------------------------------------------------------


def canary_value(value: float, std_error: float = 0.01) -> PointValue:
    return PointValue(
        parameters=[0.1, 0.2], value=value, std_error=std_error, raw=value, fingerprint="f"
    )


def test_observable_bounds() -> None:
    assert observable_bounds(sweep({"points": [[0, 0]]}).family) == (-0.5, 3.0)
    vqe = sweep({"points": [[0.0] * 4]}, family=H2_LIKE).family
    assert observable_bounds(vqe) == pytest.approx((-1.0, 1.0))


def test_the_canary_passes_sane_values_and_names_every_bad_one() -> None:
    family = sweep({"points": [[0, 0]]}).family
    good = check_canary(
        CanaryCheckInput(
            family=family,
            spec=CanarySpec(points=2, max_deviation=0.1),
            values=[canary_value(1.0), canary_value(2.95)],
            exact_values=[1.05, 3.0],
        )
    )
    assert good.passed and good.problems == []
    bad = check_canary(
        CanaryCheckInput(
            family=family,
            spec=CanarySpec(points=4, max_deviation=0.1),
            values=[
                canary_value(math.nan),
                canary_value(3.5),
                canary_value(1.0),
                canary_value(3.02, std_error=0.01),  # over the top, but within its noise
            ],
            exact_values=[1.0, 3.45, 1.3, 3.0],
        )
    )
    assert not bad.passed
    assert len(bad.problems) == 3
    assert "canary point 0" in bad.problems[0] and "not finite" in bad.problems[0]
    assert "outside the observable's range [-0.5, 3]" in bad.problems[1]
    assert "canary point 2" in bad.problems[2] and "max_deviation allows 0.1" in bad.problems[2]


# --- results -----------------------------------------------------------------------------------


def test_the_table_has_one_row_per_point_with_cached_and_missing_marked() -> None:
    request = sweep({"grid": [{"values": [0.1, 0.2]}, {"values": [0.5, 0.6, 0.7]}]})
    layout = layout_of(request)
    # Point 4 comes from an earlier sweep's cache; points 0-2 from this sweep; 3 and 5 missing.
    store_in_cache("earlier", "batch-00007", values_for(request, layout, [4]))
    store_batch(
        StoreBatchInput(
            sweep_id="unit-sweep",
            label=batch_label(0),
            layout=layout,
            indices=ranges((0, 3)),
            values=values_for(request, layout, [0, 1, 2]),
        )
    )
    results = write_results(
        SweepResultsInput(
            sweep_id="unit-sweep", request=request, layout=layout, batches=ranges((0, 1))
        )
    )
    assert (results.evaluated, results.cached, results.missing) == (3, 1, 2)
    text = artifact_store.read_bytes(results.table_uri).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "index", "gamma_0", "beta_0", "value", "std_error", "raw", "fingerprint", "cached",
    ]  # fmt: skip
    assert [row["index"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [row["cached"] for row in rows] == ["no", "no", "no", "", "yes", ""]
    assert [row["value"] for row in rows] == ["0.0", "1.0", "2.0", "", "4.0", ""]
    assert [(row["gamma_0"], row["beta_0"]) for row in rows[:4]] == [
        ("0.1", "0.5"), ("0.1", "0.6"), ("0.1", "0.7"), ("0.2", "0.5"),
    ]  # fmt: skip
    # QAOA maximizes: the cached point 4 is the best.
    assert results.best is not None
    assert (results.best.index, results.best.value) == (4, 4.0)
    assert results.best.parameters == [0.2, 0.6]


@pytest.mark.parametrize(
    ("points", "family"),
    [
        ({"grid": [{"values": [0.1, 0.2, 0.3]}, {"values": [0.5]}]}, TRIANGLE),  # 1-D
        ({"grid": [{"values": [0.1, 0.2, 0.3]}, {"values": [0.5, 0.6]}]}, TRIANGLE),  # 2-D
        ({"points": [[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0]]}, H2_LIKE),  # a list
    ],
)
def test_the_plot_is_a_png_for_every_shape(
    points: dict[str, object], family: dict[str, object], tmp_path: Path
) -> None:
    request = sweep(points, family=family)
    layout = layout_of(request)
    count = layout.num_points
    store_batch(
        StoreBatchInput(
            sweep_id="unit-sweep",
            label=batch_label(0),
            layout=layout,
            indices=ranges((0, count)),
            values=values_for(request, layout, list(range(count))),
        )
    )
    results = write_results(
        SweepResultsInput(
            sweep_id="unit-sweep", request=request, layout=layout, batches=ranges((0, 1))
        )
    )
    assert results.plot_uri is not None
    image = imread(artifact_store.path_of(results.plot_uri))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image) > 0  # not a blank canvas


# --- the CLI refuses bad files -------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


GOOD = """
name: unit-sweep
family:
  kind: qaoa_maxcut
  graph: {nodes: 3, edges: [{u: 0, v: 1}, {u: 1, v: 2}]}
points:
  grid: [{start: 0, stop: 1, num: 3}, {values: [0.5]}]
"""


def test_the_shipped_example_is_admitted() -> None:
    example = Path(__file__).parents[4] / "examples" / "sweep_qaoa.yaml"
    request = cli.start.load_sweep(example)
    points, shape = expand_points(request)
    assert shape == [20, 20] and len(points) == 400
    assert request.canary is not None and request.canary.max_deviation is not None


def test_load_sweep_accepts_a_good_file(tmp_path: Path) -> None:
    request = cli.start.load_sweep(write(tmp_path, GOOD))
    assert request.name == "unit-sweep"
    assert cli.start.sweep_input(request).request == request


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (GOOD + "batch_size: 0\n", "batch_size: Input should be greater than or equal to 1"),
        (GOOD + "colour: blue\n", "colour: unknown field"),
        (GOOD.replace("{values: [0.5]}", ""), "points.grid: 1 axes given"),
        (GOOD + "evaluation: {backend: {device: noisy}}\n", "evaluation.backend: noisy needs"),
        (GOOD + "evaluation: {shots: 2000000}\n", "evaluation.shots: Input should be less"),
        ("name: [", "(file): not valid YAML"),
    ],
)
def test_qloop_sweep_refuses_a_bad_file_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RequestError):
        cli.start.load_sweep(path)
    # No server runs here: refusing must not need one.
    with pytest.raises(SystemExit) as exited:
        starter.main(["sweep", path, "--wait"])
    assert exited.value.code == EXIT_INVALID
    err = capsys.readouterr().err
    assert err.startswith(f"refused: {path}: invalid request")
    assert problem in err
