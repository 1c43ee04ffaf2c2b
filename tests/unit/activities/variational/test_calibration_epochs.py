"""A sweep's fingerprints include its backend's calibration epoch: a noisy simulator's profile
date, a QPU's GetDevice updatedAt; an ideal simulator has none and keeps the fingerprints it
always had. A batch fingerprints its points without the epoch; the plan's epoch is added back
when the batch is stored, under the origin `qloop cache ls` groups by."""

from __future__ import annotations

import pytest

from activities.storage.point_cache_inventory import cache_groups
from activities.variational import sweep_results
from activities.variational.point_fingerprints import point_fingerprint, with_calibration
from activities.variational.sweep_results import (
    expand_points,
    expand_sweep,
    load_fingerprints,
    lookup_cache,
    store_batch,
)
from adapters.calibration_epochs import epoch_of
from adapters.profiles import load_profile
from schemas.index_ranges import as_ranges
from schemas.sweep import CacheLookupInput, ExpandSweepInput, StoreBatchInput, batch_label
from schemas.variational import PointValue, SweepRequest

NOISY = {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"}


def sweep(backend: dict[str, str] | None = None) -> SweepRequest:
    evaluation: dict[str, object] = {"shots": 100, "seed": 5}
    if backend is not None:
        evaluation["backend"] = backend
    return SweepRequest.model_validate(
        {
            "name": "epochs",
            "family": {
                "kind": "qaoa_maxcut",
                "graph": {"nodes": 2, "edges": [{"u": 0, "v": 1, "weight": 1.0}]},
            },
            "points": {"points": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]},
            "evaluation": evaluation,
        }
    )


def batch_values(request: SweepRequest) -> list[PointValue]:
    """What a batch of every point reports: fingerprints without the epoch."""
    points, _ = expand_points(request)
    return [
        PointValue(
            parameters=point.tolist(),
            fingerprint=point_fingerprint(request.family, point.tolist(), request.evaluation),
            value=0.5,
            std_error=0.1,
            raw=0.4,
        )
        for point in points
    ]


def store_all(request: SweepRequest, sweep_id: str) -> int:
    layout = expand_sweep(ExpandSweepInput(sweep_id=sweep_id, request=request))
    stored = store_batch(
        StoreBatchInput(
            sweep_id=sweep_id,
            label=batch_label(0),
            layout=layout,
            indices=as_ranges(range(layout.num_points)),
            values=batch_values(request),
        )
    )
    return stored.stored_in_cache


def test_an_epoch_makes_a_new_fingerprint_and_none_keeps_the_old_one() -> None:
    assert with_calibration("abc", None) == "abc"
    in_one = with_calibration("abc", "2026-12-05 00:00:00+00:00")
    assert in_one != "abc" and len(in_one) == 64
    assert with_calibration("abc", "2026-12-06 00:00:00+00:00") != in_one
    assert with_calibration("abc", "2026-12-05 00:00:00+00:00") == in_one


def test_the_epoch_is_the_timestamp_the_snapshot_names() -> None:
    assert epoch_of(None) is None
    assert epoch_of({"updated_at": "2026-12-05 00:00:00+00:00", "source": "x"}) == (
        "2026-12-05 00:00:00+00:00"
    )
    assert epoch_of({"calibrated_at": "2021-04-20T07:26:31+02:00"}) == "2021-04-20T07:26:31+02:00"


def test_an_ideal_sweep_keeps_its_fingerprints_and_has_no_epoch() -> None:
    request = sweep()
    layout = expand_sweep(ExpandSweepInput(sweep_id="ideal", request=request))
    assert layout.calibration_epoch is None
    assert layout.backend == "aer/ideal"
    assert load_fingerprints(layout) == [v.fingerprint for v in batch_values(request)]


def test_a_noisy_sweep_is_planned_in_its_profiles_epoch_and_stored_under_it() -> None:
    request = sweep(NOISY)
    layout = expand_sweep(ExpandSweepInput(sweep_id="noisy-1", request=request))
    epoch = load_profile("ibm_guadalupe").calibrated_at
    assert layout.calibration_epoch == epoch
    base = [v.fingerprint for v in batch_values(request)]
    assert load_fingerprints(layout) == [with_calibration(f, epoch) for f in base]

    assert store_all(request, "noisy-1") == 3
    assert lookup_cache(CacheLookupInput(layout=layout)).cached == 3
    (group,) = cache_groups()
    assert (group.backend, group.calibration_epoch, group.entries, group.sweeps) == (
        "aer/noisy:ibm_guadalupe",
        epoch,
        3,
        1,
    )


def test_a_recalibration_makes_every_point_pending_again(monkeypatch: pytest.MonkeyPatch) -> None:
    request = sweep(NOISY)
    assert store_all(request, "before") == 3
    monkeypatch.setattr(sweep_results, "current_epoch", lambda adapter: "recalibrated")
    layout = expand_sweep(ExpandSweepInput(sweep_id="after", request=request))
    lookup = lookup_cache(CacheLookupInput(layout=layout))
    assert (lookup.cached, lookup.pending) == (0, as_ranges(range(3)))
    assert store_all(request, "after") == 3
    assert {group.calibration_epoch for group in cache_groups()} == {
        "recalibrated",
        load_profile("ibm_guadalupe").calibrated_at,
    }
