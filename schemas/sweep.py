"""Inputs and outputs of SweepWorkflow's own activities, and index ranges.

A sweep's points live in artifacts (a NumPy array of parameters and a list of fingerprints, in
grid order); workflow history carries only their URIs and ranges of point indices, so a grid of
many thousands of points keeps a small history. The request, progress and report are in
schemas/variational.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from schemas.index_ranges import IndexRange
from schemas.loading import load_model
from schemas.pipeline import PipelineModel
from schemas.variational import (
    BestPoint,
    CanarySpec,
    CircuitFamily,
    Point,
    PointValue,
    SweepRequest,
)


def load_sweep_request(path: str | Path) -> SweepRequest:
    """A `qloop sweep` file (YAML, or JSON by its suffix) checked against the schema;
    RequestError names each bad field."""
    return load_model(path, SweepRequest)


def batch_label(number: int) -> str:
    """Batches are numbered across the runs of a sweep; the label names their artifacts."""
    return f"batch-{number:05d}"


def partial_artifact(label: str) -> str:
    return f"partial-{label}.json"


def sweep_goal(family: CircuitFamily) -> Literal["minimize", "maximize"]:
    """Which value is best: the largest expected cut (QAOA), the lowest energy (VQE)."""
    return "maximize" if family.kind == "qaoa_maxcut" else "minimize"


# --- activities ---------------------------------------------------------------------------------


class ExpandSweepInput(PipelineModel):
    sweep_id: str
    request: SweepRequest


class SweepLayout(PipelineModel):
    """The sweep's points, written by `expand_sweep`. `points_uri`: a .npy float64 array of shape
    (num_points, num_parameters); `fingerprints_uri`: one fingerprint per line, same order.
    `grid_shape` has one length per axis (None for an explicit list of points).
    `points_per_batch` is the request's batch_size, else as many points as one job of the
    backend takes (its max circuits per job divided by the circuits one point needs).
    `calibration_epoch`: the backend's calibration epoch when the sweep was planned, which every
    fingerprint includes (None: a backend without calibration, or a sweep planned before
    epochs); `backend` names it in the cache (provider/device[:noise profile])."""

    points_uri: str
    fingerprints_uri: str
    num_points: int
    parameter_names: list[str]
    grid_shape: list[int] | None = None
    circuits_per_point: int
    max_circuits_per_job: int
    points_per_batch: int
    backend: str = ""
    calibration_epoch: str | None = None


class CacheLookupInput(PipelineModel):
    layout: SweepLayout


class CacheLookup(PipelineModel):
    """`pending`: the points the cache does not hold, in grid order."""

    cached: int
    pending: list[IndexRange]


class SweepPlan(PipelineModel):
    """What `plan_sweep` answers: the expanded points and which of them the cache holds."""

    layout: SweepLayout
    lookup: CacheLookup


class BatchPointsInput(PipelineModel):
    layout: SweepLayout
    indices: list[IndexRange]


class BatchPoints(PipelineModel):
    points: list[Point]


class CanaryCheckInput(PipelineModel):
    """`exact_values`: the statevector value at each canary point, when max_deviation is set."""

    family: CircuitFamily
    spec: CanarySpec
    values: list[PointValue]
    exact_values: list[float] | None = None


class StoreBatchInput(PipelineModel):
    """One finished batch: `values` in the order of `indices`. `cache` False keeps the values out
    of the fingerprint cache (a failed canary's values must not be reused)."""

    sweep_id: str
    label: str
    layout: SweepLayout
    indices: list[IndexRange]
    values: list[PointValue]
    cache: bool = True
    cost_usd: float = 0.0


class PartialBatch(PipelineModel):
    """Artifact `partial-<label>.json` (`partial_artifact`): one finished batch of a sweep,
    written before the next batch starts. `cached` says whether its values went into the
    fingerprint cache."""

    label: str
    indices: list[IndexRange]
    values: list[PointValue]
    cost_usd: float
    cached: bool


class StoredBatch(PipelineModel):
    """`partial_uri`: the batch's results in the sweep's artifact folder."""

    partial_uri: str
    stored_in_cache: int


class SweepResultsInput(PipelineModel):
    """`batches`: the numbers of the batches this sweep finished (their values are in their
    partial artifacts, see `batch_label`); every other point's value comes from the cache."""

    sweep_id: str
    request: SweepRequest
    layout: SweepLayout
    batches: list[IndexRange]


class SweepResults(PipelineModel):
    table_uri: str
    plot_uri: str | None
    evaluated: int
    cached: int
    missing: int
    best: BestPoint | None = None
