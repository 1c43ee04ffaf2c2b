"""State and views of a variational loop (LoopWorkflow): the optimiser's state, the trajectory,
what the loop carries across continue-as-new, and what its queries answer.

Everything here is plain data, so a loop's state survives continue-as-new, a worker's death and
a JSON round trip unchanged; the request and the report live in schemas/variational.py.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.loading import load_model
from schemas.pipeline import PipelineModel, PollingPolicy
from schemas.variational import (
    LoopRequest,
    LoopStopReason,
    Point,
    QaoaFamily,
    SpsaSettings,
    VqeFamily,
)

Goal = Literal["minimize", "maximize"]
LoopStage = Literal["starting", "iterating", "finishing", "completed", "failed"]


class SpsaState(PipelineModel):
    """SPSA between two iterations. `point` is the current iterate x_k; `best_point` is the iterate
    whose estimated value (the mean of its two perturbed evaluations) was best so far;
    `recent_best` holds the best value after each of the last `patience + 1` iterations, which is
    all convergence needs. The perturbations are a function of (seed, iteration), so no random
    generator has to be carried."""

    settings: SpsaSettings
    goal: Goal
    iteration: int = 0
    point: Point
    best_point: Point | None = None
    best_value: float | None = None
    recent_best: list[float] = Field(default_factory=list)


class TrajectoryEntry(PipelineModel):
    """One iteration: the iterate `point`, the values measured at its perturbed points (mitigated
    when mitigation is on), the best value after it and the loop's cost so far."""

    iteration: int
    point: Point
    values: list[float]
    best_value: float
    cost_usd: float


class TrajectoryChunk(PipelineModel):
    """Entries written to an artifact before a continue-as-new, so the carried state stays small."""

    entries: list[TrajectoryEntry]


class TrajectoryView(PipelineModel):
    """The whole trajectory: the entries in `chunks` (artifact URIs, oldest first) followed by
    `entries`, those still held by the running workflow."""

    chunks: list[str] = Field(default_factory=list)
    entries: list[TrajectoryEntry] = Field(default_factory=list)


class SaveTrajectoryChunkInput(PipelineModel):
    """`index` numbers the loop's chunks from 0, so a retried save rewrites the same file."""

    owner_id: str
    index: int
    chunk: TrajectoryChunk


class WriteTrajectoryInput(PipelineModel):
    owner_id: str
    trajectory: TrajectoryView


class LoopState(PipelineModel):
    """What a loop carries into its next run (continue-as-new)."""

    optimizer: SpsaState
    started_at: datetime
    evaluations: int = 0
    cost_usd: float = 0.0
    baseline_method: str
    baseline_value: float
    trajectory: TrajectoryView = TrajectoryView()
    runs: int = 1


class LoopInput(PipelineModel):
    """`state` None starts a loop; a continued run gets the previous run's state. The loop
    continues as new when the server suggests it, and at least every `iterations_per_run`
    iterations."""

    request: LoopRequest
    polling: PollingPolicy = PollingPolicy()
    compute_task_queue: str | None = None
    state: LoopState | None = None
    iterations_per_run: int = Field(default=200, ge=1)


class LoopProgress(PipelineModel):
    """The `progress` query."""

    stage: LoopStage
    iteration: int = 0
    best_value: float | None = None
    best_point: Point | None = None
    cost_usd: float = 0.0
    evaluations: int = 0
    baseline_value: float | None = None
    runs: int = 1
    stop_reason: LoopStopReason | None = None


def default_initial_point(request: LoopRequest) -> Point:
    """Without `initial_point`: for QAOA a linear ramp as in annealing (|gamma| rising, |beta|
    falling over the layers; gamma scaled by the mean edge weight, beta negative since qloop's
    cost layer exp(-i gamma w ZZ) turns the phase the other way than exp(-i gamma cut)), since
    all zeros is a stationary point of the QAOA landscape; for VQE the angles at which the
    ansatz prepares its reference state `initial_bits` (e.g. Hartree-Fock), see
    `reference_angles`."""
    family = request.family
    if request.initial_point is not None:
        return list(request.initial_point)
    if isinstance(family, QaoaFamily):
        layers = family.layers
        weight = sum(abs(edge.weight) for edge in family.graph.edges) / len(family.graph.edges)
        step = 0.75
        fractions = [(layer + 0.5) / layers for layer in range(layers)]
        gammas = [step * fraction / (weight or 1.0) for fraction in fractions]
        betas = [-step * (1.0 - fraction) for fraction in fractions]
        return gammas + betas
    return reference_angles(family)


def reference_angles(family: VqeFamily) -> Point:
    """All zeros, except pi on the first RY layer where a qubit must be flipped so that the CNOT
    ladders (each maps bit i to the parity of bits 0..i) end in `initial_bits`: with all angles
    zero the ansatz would otherwise prepare the ladders' image of the reference state, not the
    reference itself."""
    width = family.num_qubits
    reference = [int(bit) for bit in reversed(family.ansatz.initial_bits)] or [0] * width
    before_ladders = reference
    for _ in range(family.ansatz.reps):
        before_ladders = [
            bit ^ (before_ladders[qubit - 1] if qubit else 0)
            for qubit, bit in enumerate(before_ladders)
        ]
    point = [0.0] * family.num_parameters
    for qubit, (wanted, prepared) in enumerate(zip(before_ladders, reference, strict=True)):
        if wanted != prepared:
            point[qubit] = math.pi
    return point


def load_loop_request(path: str | Path) -> LoopRequest:
    """A `qloop loop` file (YAML, or JSON by its suffix); RequestError names each bad field."""
    return load_model(path, LoopRequest)
