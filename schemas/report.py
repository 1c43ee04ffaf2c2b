"""ExperimentReport v1: the answer, how good it is, and exactly how it was produced."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from schemas.control import Governance
from schemas.execution import JobRef, Tier


class ReportModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Estimate(ReportModel):
    value: float
    ci_low: float
    ci_high: float


class ScaledValue(ReportModel):
    scale_factor: float
    value: float
    std_error: float


class ZneOutcome(ReportModel):
    folding: str
    extrapolation: str
    points: list[ScaledValue]
    plot_uri: str | None = None


class ClassicalBaseline(ReportModel):
    """The best answer a classical method gives, in the units of the experiment's objective."""

    method: str
    value: float
    detail: str = ""


class Objective(ReportModel):
    """The problem's figure of merit, derived from the observable's value (for example the
    approximation ratio of QAOA MaxCut), for the raw, mitigated and ideal values."""

    name: str
    raw: float
    mitigated: float | None = None
    ideal: float
    baseline: float | None = None


class CostSummary(ReportModel):
    estimated_usd: float
    actual_usd: float


class BackendRecord(ReportModel):
    provider: str
    device: str
    tier: Tier
    noise_profile: str | None = None


class ReusedResult(ReportModel):
    """Counts an earlier experiment measured and paid for, taken instead of running again
    (`execution.reuse: within_calibration`): which experiment and job, in which calibration epoch
    of which backend (None: an ideal simulator, which has none), what it paid, and when they were
    stored under `fingerprint` (activities/experiment/result_reuse.py)."""

    fingerprint: str
    experiment_id: str
    job: JobRef
    counts_uri: str
    shots: int
    backend: str
    calibration_epoch: str | None = None
    paid_usd: float
    stored_at: str


class Provenance(ReportModel):
    backend: BackendRecord
    calibration: dict[str, str] | None = None
    logical_circuit_sha256: str
    executed_circuits_sha256: list[str]
    job_id: str | None
    client_token: str | None
    shots: int
    seeds: dict[str, int]
    sdk_versions: dict[str, str]
    schema_version: int
    artifacts: dict[str, str]


class ExperimentReport(ReportModel):
    """`status` completed: `value` is the answer and `produced_by` says how it was produced.
    rejected / cancelled: no answer; `status_reason` says who or what ended the experiment."""

    schema_version: Literal[1] = 1
    experiment_id: str
    name: str
    status: Literal["completed", "rejected", "cancelled"] = "completed"
    status_reason: str = ""
    produced_by: Literal["hardware", "simulator", "classical"] | None = None
    produced_by_reason: str = ""
    observable: str = ""
    value: Estimate | None = None
    raw: Estimate | None = None
    mitigated: Estimate | None = None
    ideal_value: float | None = None
    zne: ZneOutcome | None = None
    readout_mitigated: bool = False
    objective: Objective | None = None
    classical_baseline: ClassicalBaseline | None = None
    cost: CostSummary
    timings_seconds: dict[str, float]
    provenance: Provenance | None = None
    governance: Governance | None = None
    # The earlier experiment whose counts answered this one (cost 0); None when it ran.
    reused: ReusedResult | None = None

    @model_validator(mode="after")
    def _answer_when_completed(self) -> ExperimentReport:
        if self.status == "completed" and (
            self.value is None or self.produced_by is None or self.provenance is None
        ):
            raise ValueError("a completed report needs value, produced_by and provenance")
        return self
