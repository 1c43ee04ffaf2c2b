"""Contracts of variational loops and parameter sweeps: circuit families with free parameters,
how points are evaluated, and the request files of `qloop loop` and `qloop sweep`.

A *family* is a parameterized circuit and its observable (QAOA MaxCut on a weighted graph, or a
VQE ansatz with a Hamiltonian given as a Pauli sum); a *point* is one list of parameter values.
All points of one batch go to the backend as one submission: one circuit template and many
parameter bindings.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from schemas.execution import Cost, Tier
from schemas.index_ranges import IndexRange
from schemas.limits import MAX_PARAMETERS, MAX_QAOA_LAYERS, MAX_SWEEP_POINTS
from schemas.pipeline import PipelineModel, PollingPolicy
from schemas.request import (
    MAX_SHOTS,
    BackendChoice,
    Graph,
    PauliSumObservable,
    PolicySpec,
    StrictModel,
    ZneSpec,
)

Point = list[float]
# A point as a request file gives it: one value per parameter of the family.
RequestedPoint = Annotated[Point, Field(max_length=MAX_PARAMETERS)]

# --- families ----------------------------------------------------------------------------------


class QaoaFamily(StrictModel):
    """QAOA for weighted MaxCut with `layers` p: parameters [gamma_1..gamma_p, beta_1..beta_p].
    The observable is the expected cut weight; the classical baseline the brute-force maximum."""

    kind: Literal["qaoa_maxcut"] = "qaoa_maxcut"
    graph: Graph
    layers: Annotated[int, Field(ge=1, le=MAX_QAOA_LAYERS)] = 1

    @property
    def num_qubits(self) -> int:
        return self.graph.nodes

    @property
    def num_parameters(self) -> int:
        return 2 * self.layers


class HardwareEfficientAnsatz(StrictModel):
    """`reps` layers of RY on every qubit followed by a CNOT ladder, then a final RY layer:
    (reps + 1) * qubits parameters. `initial_bits` (qubit 0 rightmost) prepares a reference state
    (for H2 in the parity mapping, Hartree-Fock is "01")."""

    kind: Literal["hardware_efficient"] = "hardware_efficient"
    reps: Annotated[int, Field(ge=1, le=10)] = 1
    initial_bits: Annotated[str, Field(pattern=r"^[01]*$", max_length=64)] = ""


class VqeFamily(StrictModel):
    """VQE: minimise <H> for a Hamiltonian given as a Pauli sum (qubit 0 rightmost); the classical
    baseline is exact diagonalisation."""

    kind: Literal["vqe"] = "vqe"
    hamiltonian: PauliSumObservable
    ansatz: HardwareEfficientAnsatz = HardwareEfficientAnsatz()

    @model_validator(mode="after")
    def _reference_fits(self) -> VqeFamily:
        bits = self.ansatz.initial_bits
        if bits and len(bits) != self.hamiltonian.num_qubits:
            raise ValueError(
                f"ansatz.initial_bits has {len(bits)} bits but the Hamiltonian acts on "
                f"{self.hamiltonian.num_qubits} qubits"
            )
        return self

    @property
    def num_qubits(self) -> int:
        return self.hamiltonian.num_qubits

    @property
    def num_parameters(self) -> int:
        return (self.ansatz.reps + 1) * self.num_qubits


CircuitFamily = Annotated[QaoaFamily | VqeFamily, Field(discriminator="kind")]


class EvaluationSpec(StrictModel):
    """How every point is evaluated: backend, shots, seed, and optional mitigation."""

    backend: BackendChoice = BackendChoice()
    shots: Annotated[int, Field(ge=1, le=MAX_SHOTS)] = 4000
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    zne: ZneSpec | None = None
    readout: bool = False


# --- evaluating a batch of points (activities) -------------------------------------------------


class BatchInput(PipelineModel):
    """`owner_id`/`label` name the artifacts (e.g. the loop's workflow id and "iter-0007")."""

    owner_id: str
    label: str
    family: CircuitFamily
    points: list[Point]
    evaluation: EvaluationSpec

    @property
    def artifact_folder(self) -> str:
        """The artifact store's folder of this batch (submission, counts, scores)."""
        return f"{self.owner_id}.{self.label}"


class PreparedBatch(PipelineModel):
    """The submission (in `batch_uri`: a PlannedBatch-like artifact with the template and its
    bindings), its cost, and one fingerprint per point (see `point_fingerprint`)."""

    batch_uri: str
    num_circuits: int
    cost_estimate: Cost
    fingerprints: list[str]
    tier: Tier = Tier.SIMULATOR
    simulated_in_activity: bool = False


class PointValue(PipelineModel):
    """`value` is mitigated when mitigation is on, else equal to `raw`."""

    parameters: Point
    value: float
    std_error: float
    raw: float
    fingerprint: str


class ScoreInput(PipelineModel):
    batch: BatchInput
    prepared: PreparedBatch
    counts_uri: str


class ScoredBatch(PipelineModel):
    values: list[PointValue]
    actual_cost: Cost
    artifact_uri: str


class ReferenceInput(PipelineModel):
    family: CircuitFamily
    points: list[Point] = Field(default_factory=list)


class Reference(PipelineModel):
    """The classical baseline of the family (maximum cut / ground energy) and the exact
    (statevector) value of the observable at each requested point."""

    baseline_method: str
    baseline_value: float
    exact_values: list[float]


# --- the loop ----------------------------------------------------------------------------------


class SpsaSettings(StrictModel):
    """SPSA (Spall): gains a_k = a / (k + 1 + stability)^alpha, c_k = c / (k + 1)^gamma; each
    iteration evaluates the two perturbed points as one batch. Converged when the best value has
    improved by less than `tolerance` over the last `patience` iterations."""

    kind: Literal["spsa"] = "spsa"
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    a: Annotated[float, Field(gt=0)] = 0.2
    c: Annotated[float, Field(gt=0)] = 0.1
    alpha: Annotated[float, Field(gt=0)] = 0.602
    gamma: Annotated[float, Field(gt=0)] = 0.101
    stability: Annotated[float, Field(ge=0)] = 10.0
    tolerance: Annotated[float, Field(ge=0)] = 1e-4
    patience: Annotated[int, Field(ge=1)] = 20


class LoopLimits(StrictModel):
    max_iterations: Annotated[int, Field(ge=1, le=100_000)] = 100
    deadline: timedelta | None = None
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None


class LoopRequest(StrictModel):
    """`qloop loop FILE`. `goal` minimize for VQE energies, maximize for QAOA cut weight."""

    schema_version: Literal[1] = 1
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    family: CircuitFamily
    goal: Literal["minimize", "maximize"] = "minimize"
    initial_point: RequestedPoint | None = None
    evaluation: EvaluationSpec = EvaluationSpec()
    optimizer: SpsaSettings = SpsaSettings()
    limits: LoopLimits = LoopLimits()
    policy: PolicySpec = PolicySpec()

    @model_validator(mode="after")
    def _point_fits(self) -> LoopRequest:
        wanted = self.family.num_parameters
        if self.initial_point is not None and len(self.initial_point) != wanted:
            raise ValueError(
                f"initial_point has {len(self.initial_point)} values; the family takes {wanted}"
            )
        return self


LoopStopReason = Literal["converged", "max_iterations", "budget_exhausted", "deadline", "max_cost"]


class LoopObjective(PipelineModel):
    """The answer against the classical baseline. QAOA: `approximation_ratio` (cut / maximum
    cut). VQE: `energy_error_ha` (energy − exact ground energy, in Hartree). `exact` is that of
    the exact (statevector) value at the best point; `measured` and `raw` of the final
    evaluation's mitigated and raw values (None when the loop stopped without one, and every
    ratio None for a graph whose maximum cut is not positive)."""

    name: Literal["approximation_ratio", "energy_error_ha"]
    exact: float | None
    measured: float | None = None
    raw: float | None = None


class LoopReport(PipelineModel):
    """What `LoopWorkflow` answers. After the loop stops, the last iterate and the iterate SPSA
    estimated best are measured again as one batch (`final_evaluation`) and the better one is
    `best_point`, with its measurement `best_measured` and its value `best_value`. SPSA's
    estimates carry a bias of order c_k² from the perturbations, which a direct measurement does
    not. When money or time ran out there is no final evaluation: `best_point` is SPSA's best
    iterate and `best_value` its estimate (None when no iteration completed). `exact_value` is
    the exact value at `best_point`. The whole trajectory is in `trajectory_uri`."""

    loop_id: str
    name: str
    family: str
    goal: Literal["minimize", "maximize"]
    stop_reason: LoopStopReason
    stop_detail: str
    iterations: int
    evaluations: int
    runs: int
    best_point: Point
    best_value: float | None
    best_measured: PointValue | None = None
    final_evaluation: list[PointValue] = Field(default_factory=list)
    exact_value: float
    baseline_method: str
    baseline_value: float
    objective: LoopObjective
    cost_usd: float
    trajectory_uri: str
    backend: str
    shots: int
    zne: ZneSpec | None = None
    readout: bool = False
    optimizer: SpsaSettings
    evaluation_seed: int
    elapsed_seconds: float


# --- the sweep ---------------------------------------------------------------------------------


class Axis(StrictModel):
    """`num` evenly spaced values from `start` to `stop` (both included), or explicit `values`."""

    start: float | None = None
    stop: float | None = None
    num: Annotated[int, Field(ge=1, le=MAX_SWEEP_POINTS)] | None = None
    values: Annotated[list[float], Field(max_length=MAX_SWEEP_POINTS)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Axis:
        ranged = (self.start, self.stop, self.num)
        if self.values is None and None in ranged:
            raise ValueError("give start, stop and num, or values")
        if self.values is not None and any(v is not None for v in ranged):
            raise ValueError("give either start/stop/num or values, not both")
        return self


class SweepPoints(StrictModel):
    """A grid (the product of one axis per parameter, first axis slowest) or an explicit list."""

    grid: Annotated[list[Axis], Field(max_length=MAX_PARAMETERS)] | None = None
    points: Annotated[list[RequestedPoint], Field(max_length=MAX_SWEEP_POINTS)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SweepPoints:
        if (self.grid is None) == (self.points is None):
            raise ValueError("give either grid or points")
        return self


class CanarySpec(StrictModel):
    """The first `points` points run alone first; the rest only if every canary value is finite,
    within the observable's bounds and within `max_deviation` of its exact value."""

    points: Annotated[int, Field(ge=1)] = 4
    max_deviation: Annotated[float, Field(gt=0)] | None = None


class SweepRequest(StrictModel):
    """`qloop sweep FILE` and schedules. `batch_size` None: as many points per submission as
    the backend takes (its max circuits per job)."""

    schema_version: Literal[1] = 1
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    family: CircuitFamily
    points: SweepPoints
    evaluation: EvaluationSpec = EvaluationSpec()
    batch_size: Annotated[int, Field(ge=1)] | None = None
    canary: CanarySpec | None = CanarySpec()
    policy: PolicySpec = PolicySpec()

    @field_validator("points")
    def _not_empty(cls, points: SweepPoints) -> SweepPoints:
        if points.points is not None and not points.points:
            raise ValueError("points is empty")
        return points


# --- running a sweep (SweepWorkflow) -----------------------------------------------------------


class SweepStage(StrEnum):
    EXPANDING = "expanding"
    LOOKING_UP_CACHE = "looking_up_cache"
    CANARY = "canary"
    RUNNING = "running"
    WRITING_RESULTS = "writing_results"
    COMPLETED = "completed"
    CANARY_FAILED = "canary_failed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    FAILED = "failed"


SweepStatus = Literal["completed", "canary_failed", "budget_exhausted"]


class BestPoint(PipelineModel):
    """The best evaluated point: the largest cut for QAOA, the lowest energy for VQE."""

    index: int
    parameters: Point
    value: float
    std_error: float


class CanaryVerdict(PipelineModel):
    """`problems` names every canary point that failed a check, and why."""

    passed: bool
    points: int
    problems: list[str] = Field(default_factory=list)


class SweepProgress(PipelineModel):
    """The `progress` query of SweepWorkflow. `points_done` counts points this sweep evaluated
    (and paid for); `points_cached` those it found in the fingerprint cache. `cost_usd` and
    `estimated_cost_usd` are the actual and estimated cost of the batches run so far;
    `estimated_total_usd` extrapolates the whole sweep at the last batch's price per point."""

    stage: SweepStage
    backend: str
    points_total: int = 0
    points_done: int = 0
    points_cached: int = 0
    batches_done: int = 0
    batches_total: int = 0
    cost_usd: float = 0.0
    estimated_cost_usd: float = 0.0
    estimated_total_usd: float | None = None
    canary: CanaryVerdict | None = None
    error: str | None = None


class SweepBatch(PipelineModel):
    """Points of a sweep submitted together. `number` is None until the batch starts (batches
    are numbered as they start). The batches in flight when a sweep continues as new are carried
    with their numbers: the next run runs them again under those numbers, so their reservations
    and submissions find what the last run already made and paid for."""

    number: int | None = Field(default=None, ge=0)
    indices: list[IndexRange]


class SweepCarry(PipelineModel):
    """What a sweep carries into its next run (continue-as-new). The next run finds every point
    finished so far in the fingerprint cache; these counters keep the report about the whole
    sweep. `finished_batches` and `next_batch` are None in carries written before batches could
    be in flight at continue-as-new: then batches 0 to `batches_done` - 1 were finished."""

    started_at: datetime
    runs: int
    batches_done: int
    points_done: int
    points_cached: int
    cost_usd: float
    estimated_cost_usd: float
    canary: CanaryVerdict | None = None
    finished_batches: list[IndexRange] | None = None
    next_batch: int | None = None
    in_flight: list[SweepBatch] = Field(default_factory=list)


class SweepInput(PipelineModel):
    """The input of SweepWorkflow. `compute_task_queue`: where the CPU-heavy activities run
    (None: the workflow's own task queue). After the canary, up to `batches_in_flight` batches
    run at once (one under a cost limit). The sweep continues as new when the server suggests
    it and at least every `batches_per_run` batches; `carry` is None on the first run."""

    request: SweepRequest
    polling: PollingPolicy = PollingPolicy()
    compute_task_queue: str | None = None
    batches_in_flight: int = Field(default=2, ge=1)
    batches_per_run: int = Field(default=200, ge=1)
    carry: SweepCarry | None = None


class SweepReport(PipelineModel):
    """What a sweep answers. `points_evaluated` were run (and paid for) by this sweep,
    `points_cached` came from the fingerprint cache, `points_pending` were not evaluated because
    the sweep stopped early (`status` says why). `table_uri`: one CSV row per point in grid
    order; `plot_uri`: the values as a picture."""

    sweep_id: str
    name: str
    status: SweepStatus
    status_reason: str = ""
    family: str
    backend: str
    goal: Literal["minimize", "maximize"]
    points_total: int
    points_evaluated: int
    points_cached: int
    points_pending: int
    batches_total: int
    batches_done: int
    best: BestPoint | None = None
    canary: CanaryVerdict | None = None
    estimated_cost_usd: float
    cost_usd: float
    table_uri: str
    plot_uri: str | None = None
    points_uri: str
    elapsed_seconds: float
    runs: int = 1
