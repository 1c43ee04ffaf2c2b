"""Inputs and outputs of the experiment's activities: one model in, one model out.

They carry summaries and artifact URIs; bulky data (circuits, counts) stays in the artifact
store so that workflow history stays small.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.control import Governance
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    Cost,
    JobRef,
    JobState,
    ProviderProgram,
    Tier,
)
from schemas.policy import BudgetDefault
from schemas.report import ClassicalBaseline, Estimate, ReusedResult, ScaledValue
from schemas.request import BackendChoice, ExperimentRequest, Observable


class PipelineModel(BaseModel):
    # Ignoring unknown fields lets a worker that is one release behind accept inputs from a
    # newer workflow during a rolling deploy (user requests, by contrast, forbid them).
    model_config = ConfigDict(extra="ignore", frozen=True)


class Stage(StrEnum):
    PREPROCESSING = "preprocessing"
    PREVALIDATING = "prevalidating"
    PLANNING = "planning"
    SUBMITTING = "submitting"
    SIMULATING = "simulating"
    WAITING = "waiting"
    FETCHING = "fetching"
    MITIGATING = "mitigating"
    POSTPROCESSING = "postprocessing"
    CHECKING_POLICY = "checking_policy"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_BUDGET = "awaiting_budget"
    PAUSED = "paused"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"


class PollingPolicy(PipelineModel):
    """How often a waiting experiment asks the provider: the interval doubles up to `ceiling`."""

    initial_seconds: float = 0.25
    ceiling_seconds: float = 300.0


class ExperimentInput(PipelineModel):
    """`compute_task_queue`: where the CPU-heavy stages run (a separate pool of compute workers);
    None runs them on the workflow's own task queue."""

    request: ExperimentRequest
    polling: PollingPolicy = PollingPolicy()
    compute_task_queue: str | None = None


class PreprocessInput(PipelineModel):
    experiment_id: str
    request: ExperimentRequest


class PreparedExperiment(PipelineModel):
    """The built, transpiled circuits (in `artifact_uri`) and what the workflow needs to know."""

    artifact_uri: str
    capabilities: Capabilities
    num_qubits: int
    transpiled_depth: int
    two_qubit_gate_count: int
    measurement_bases: list[str]
    logical_circuit_sha256: str
    transpiled_circuits_sha256: list[str]
    observable_label: str
    classical_baseline: ClassicalBaseline | None = None


class PrevalidateInput(PipelineModel):
    experiment_id: str
    request: ExperimentRequest
    prepared: PreparedExperiment


class Prevalidation(PipelineModel):
    ideal_value: float
    estimated_fidelity: float
    artifact_uri: str


class PlanInput(PipelineModel):
    experiment_id: str
    request: ExperimentRequest
    prepared: PreparedExperiment


class ReuseLookup(PipelineModel):
    """What planning found for `execution.reuse: within_calibration`: the batch's fingerprint in
    the backend's calibration epoch read before anything ran, and the earlier result stored
    under it, if any. After a run its counts are stored under the same fingerprint."""

    fingerprint: str
    backend: str
    calibration_epoch: str | None = None
    found: ReusedResult | None = None


class ExecutionPlan(PipelineModel):
    """The batch to submit (in `batch_uri`): each basis x scale factor, plus readout calibration.
    `reuse`: the result-reuse lookup, when the request asked for one."""

    batch_uri: str
    num_circuits: int
    executed_circuits_sha256: list[str]
    cost_estimate: Cost
    reuse: ReuseLookup | None = None


class SubmitInput(PipelineModel):
    """`tags` go with every task the provider keeps (see adapters/base.py)."""

    backend: BackendChoice
    batch_uri: str
    shots: int
    seed: int | None
    client_token: str
    tags: dict[str, str] = {}


class JobInput(PipelineModel):
    backend: BackendChoice
    job: JobRef


class FetchInput(PipelineModel):
    experiment_id: str
    backend: BackendChoice
    job: JobRef


class FetchedResult(PipelineModel):
    counts_uri: str
    shots: int
    actual_cost: Cost


class SimulateInput(PipelineModel):
    """A batch for a local simulator, run as one compute activity. `client_token` names the
    run (and seeds it when `seed` is None), so a run redone on another host gives the same
    counts."""

    artifact_folder: str
    backend: BackendChoice
    batch_uri: str
    shots: int
    seed: int | None
    client_token: str


class Simulated(PipelineModel):
    job: JobRef
    fetched: FetchedResult


class MitigateInput(PipelineModel):
    experiment_id: str
    request: ExperimentRequest
    prepared: PreparedExperiment
    plan: ExecutionPlan
    counts_uri: str
    ideal_value: float | None = None


class MitigationOutcome(PipelineModel):
    raw: Estimate
    mitigated: Estimate | None
    points: list[ScaledValue]
    readout_mitigated: bool
    plot_uri: str | None
    artifact_uri: str


class PostprocessInput(PipelineModel):
    experiment_id: str
    request: ExperimentRequest
    prepared: PreparedExperiment
    prevalidation: Prevalidation
    plan: ExecutionPlan
    job: JobRef
    fetched: FetchedResult
    mitigation: MitigationOutcome
    timings_seconds: dict[str, float]
    governance: Governance | None = None
    produced_by_reason: str | None = None
    # The earlier result that answers instead of `job` running (plan.reuse.found).
    reused: ReusedResult | None = None


class ClassicalReportInput(PipelineModel):
    """The last resort of a fallback chain: the answer computed classically (the exact
    statevector value of the observable), labelled as such."""

    experiment_id: str
    request: ExperimentRequest
    prepared: PreparedExperiment
    prevalidation: Prevalidation
    timings_seconds: dict[str, float]
    governance: Governance
    reason: str


class EndedReportInput(PipelineModel):
    """A report for an experiment that ends without an answer: rejected or cancelled."""

    experiment_id: str
    request: ExperimentRequest
    status: Literal["rejected", "cancelled"]
    reason: str
    estimated_cost_usd: float
    actual_cost_usd: float
    timings_seconds: dict[str, float]
    governance: Governance


# --- policy -----------------------------------------------------------------------------------


class PolicyInput(PipelineModel):
    account: str
    backend: BackendChoice
    tier: Tier
    shots: int
    estimated_cost_usd: float
    request_max_cost_usd: float | None = None


class ApprovalRequirement(PipelineModel):
    """`signed`: a decision counts only with a signature that verifies with the approver's key
    in `public_keys` (from the policy file, read by the policy activity on a trusted worker)."""

    why: str
    approvers: list[str]
    timeout_seconds: float
    on_timeout: Literal["reject", "fallback"]
    signed: bool = False
    public_keys: dict[str, str] = {}


class PolicyDecision(PipelineModel):
    """`rule` names the rule that refused (empty when allowed)."""

    allowed: bool
    rule: str = ""
    message: str = ""
    approval: ApprovalRequirement | None = None
    on_budget_exhausted: Literal["refuse", "wait"] = "refuse"
    budget_default: BudgetDefault = BudgetDefault()


class Progress(PipelineModel):
    """What the workflow's `progress` query answers."""

    stage: Stage
    backend: str
    job_state: JobState | None = None
    queue_position: int | None = None
    polls: int = 0
    estimated_cost_usd: float | None = None
    error: str | None = None
    paused: bool = False
    awaiting: str | None = None
    governance: Governance | None = None


# --- artifact contents ---------------------------------------------------------------------


class MeasurementBasis(PipelineModel):
    """One measurement setting: `basis` is a label like "XZI" (qubit 0 rightmost, I read as Z);
    `qasm` is the transpiled circuit on physical qubits, basis rotation included, without
    measurements."""

    basis: str
    qasm: str


class PreparedCircuits(PipelineModel):
    """Artifact written by preprocess (`PreparedExperiment.artifact_uri`)."""

    logical_qasm: str
    observable: Observable
    bases: list[MeasurementBasis]
    measured_physical_qubits: list[int]


class CircuitRole(PipelineModel):
    kind: Literal["observable", "readout_calibration"]
    basis: str | None = None
    scale_factor: float | None = None
    prepared_bits: str | None = None


class PlannedBatch(PipelineModel):
    """Artifact written by plan (`ExecutionPlan.batch_uri`): circuits and what each one is for.
    Every circuit measures logical qubit i into classical bit i."""

    batch: CircuitBatch
    roles: list[CircuitRole]
    # The batch compiled for a remote device (adapters.base ProgramCompiler): what `submit`
    # sends. None for local simulators, and in batches planned before programs were compiled.
    programs: list[ProviderProgram] | None = None
