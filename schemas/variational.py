"""Contracts of variational loops and parameter sweeps: circuit families with free parameters,
how points are evaluated, and the request files of `qloop loop` and `qloop sweep`.

A *family* is a parameterized circuit and its observable (QAOA MaxCut on a weighted graph, or a
VQE ansatz with a Hamiltonian given as a Pauli sum); a *point* is one list of parameter values.
All points of one batch go to the backend as one submission: one circuit template and many
parameter bindings.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from schemas.execution import Cost
from schemas.pipeline import PipelineModel
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

# --- families ----------------------------------------------------------------------------------


class QaoaFamily(StrictModel):
    """QAOA for weighted MaxCut with `layers` p: parameters [gamma_1..gamma_p, beta_1..beta_p].
    The observable is the expected cut weight; the classical baseline the brute-force maximum."""

    kind: Literal["qaoa_maxcut"] = "qaoa_maxcut"
    graph: Graph
    layers: Annotated[int, Field(ge=1, le=8)] = 1

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
    initial_bits: Annotated[str, Field(pattern=r"^[01]*$")] = ""


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


class PreparedBatch(PipelineModel):
    """The submission (in `batch_uri`: a PlannedBatch-like artifact with the template and its
    bindings), its cost, and one fingerprint per point (see `point_fingerprint`)."""

    batch_uri: str
    num_circuits: int
    cost_estimate: Cost
    fingerprints: list[str]


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
    initial_point: Point | None = None
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


# --- the sweep ---------------------------------------------------------------------------------


class Axis(StrictModel):
    """`num` evenly spaced values from `start` to `stop` (both included), or explicit `values`."""

    start: float | None = None
    stop: float | None = None
    num: Annotated[int, Field(ge=1, le=100_000)] | None = None
    values: list[float] | None = None

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

    grid: list[Axis] | None = None
    points: list[Point] | None = None

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
