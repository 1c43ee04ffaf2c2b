"""The activities workflows call: each one's name, input and result, declared once.

Workflows call activities through these declarations (`workflow.execute_activity(
activity_contracts.prepare_batch, batch, ...)`), so the result's type comes from here and the
orchestration role imports nothing but contracts; activities/ registers each implementation with
`@implements(activity_contracts.prepare_batch)`, which takes the name from here and refuses, at
import and under the type checker, an implementation whose input or result differs. Renaming an
activity or changing its input is then one edit here that every caller and implementation must
follow, not a string that fails at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_type_hints

from temporalio import activity

from schemas.adoption import AdoptedTask, InspectTasksInput, SettleTaskInput, TaskInfo
from schemas.budget import (
    BudgetAdmins,
    BudgetAdminsInput,
    LedgerEntry,
    RecordSpendInput,
    ReleaseBudgetInput,
    ReservationOutcome,
    ReserveBudgetInput,
    SettleBudgetInput,
)
from schemas.execution import Cost, JobRef, JobStatus
from schemas.health import AcquireBackendInput, HealthView, Permit, ReportOutcomeInput
from schemas.loop import SaveTrajectoryChunkInput, WriteTrajectoryInput
from schemas.pipeline import (
    ClassicalReportInput,
    EndedReportInput,
    ExecutionPlan,
    FetchedResult,
    FetchInput,
    JobInput,
    MitigateInput,
    MitigationOutcome,
    PlanInput,
    PolicyDecision,
    PolicyInput,
    PostprocessInput,
    PreparedExperiment,
    PreprocessInput,
    PrevalidateInput,
    Prevalidation,
    Simulated,
    SimulateInput,
    SubmitInput,
)
from schemas.reconciler import ReconcilerRound
from schemas.report import ExperimentReport
from schemas.sweep import (
    BatchPoints,
    BatchPointsInput,
    CacheLookup,
    CacheLookupInput,
    CanaryCheckInput,
    ExpandSweepInput,
    StoreBatchInput,
    StoredBatch,
    SweepLayout,
    SweepPlan,
    SweepResults,
    SweepResultsInput,
)
from schemas.variational import (
    BatchInput,
    CanaryVerdict,
    PreparedBatch,
    Reference,
    ReferenceInput,
    ScoredBatch,
    ScoreInput,
)

ActivityT = TypeVar("ActivityT", bound=Callable[..., Awaitable[Any]])

_NAMES: dict[Callable[..., Any], str] = {}


def _declared(name: str) -> Callable[[ActivityT], ActivityT]:
    def declare(contract: ActivityT) -> ActivityT:
        _NAMES[contract] = name
        return activity.defn(name=name)(contract)

    return declare


def name_of(contract: Callable[..., Awaitable[Any]]) -> str:
    """The activity's name: what histories, the Web UI and summaries show."""
    return _NAMES[contract]


def implements(contract: ActivityT) -> Callable[[ActivityT], ActivityT]:
    """Registers the decorated function as the activity `contract` declares, under its name."""
    name = _NAMES[contract]
    declared = list(get_type_hints(contract).values())

    def register(implementation: ActivityT) -> ActivityT:
        given = list(get_type_hints(implementation).values())
        if given != declared:
            raise TypeError(
                f"{implementation.__qualname__} implements activity {name!r}, declared as "
                f"{declared} (inputs, then result), but takes and returns {given}"
            )
        return activity.defn(name=name)(implementation)

    return register


def _unimplemented(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"activity {name!r} is a declaration: a worker runs its implementation"
    )


# --- the experiment's stages ---------------------------------------------------------------------


@_declared("preprocess")
async def preprocess(input: PreprocessInput) -> PreparedExperiment:
    """Parses or builds the circuit, maps it to the backend and stores the batch's circuits.
    Implemented in activities/experiment/preprocess.py.
    """
    raise _unimplemented("preprocess")


@_declared("prevalidate")
async def prevalidate(input: PrevalidateInput) -> Prevalidation:
    """Runs the circuit on an ideal simulator before anything is paid for. Implemented in
    activities/experiment/prevalidate.py.
    """
    raise _unimplemented("prevalidate")


@_declared("plan")
async def plan(input: PlanInput) -> ExecutionPlan:
    """Folds the circuits for ZNE, adds readout calibration, prices the batch. Implemented in
    activities/experiment/plan.py.
    """
    raise _unimplemented("plan")


@_declared("mitigate")
async def mitigate(input: MitigateInput) -> MitigationOutcome:
    """Zero-noise extrapolation and readout mitigation of the fetched counts. Implemented in
    activities/experiment/mitigate.py.
    """
    raise _unimplemented("mitigate")


@_declared("postprocess")
async def postprocess(input: PostprocessInput) -> ExperimentReport:
    """The experiment's report from its mitigated value. Implemented in
    activities/experiment/postprocess.py.
    """
    raise _unimplemented("postprocess")


@_declared("classical_report")
async def classical_report(input: ClassicalReportInput) -> ExperimentReport:
    """The report of an experiment answered classically (no quantum backend left). Implemented in
    activities/experiment/postprocess.py.
    """
    raise _unimplemented("classical_report")


@_declared("ended_report")
async def ended_report(input: EndedReportInput) -> ExperimentReport:
    """The report of an experiment that ended without an answer (rejected, cancelled). Implemented
    in activities/experiment/postprocess.py.
    """
    raise _unimplemented("ended_report")


# --- policy --------------------------------------------------------------------------------------


@_declared("evaluate_policy")
async def evaluate_policy(input: PolicyInput) -> PolicyDecision:
    """The account's policy on a submission: allowed, refused, or awaiting approval. Implemented in
    activities/governance/policy.py.
    """
    raise _unimplemented("evaluate_policy")


@_declared("budget_admins")
async def budget_admins(input: BudgetAdminsInput) -> BudgetAdmins:
    """The keys that may sign changes of the account's budget limit, read from the policy file
    on a worker. Implemented in activities/governance/policy.py.
    """
    raise _unimplemented("budget_admins")


# --- budget ledger -------------------------------------------------------------------------------


@_declared("reserve_budget")
async def reserve_budget(input: ReserveBudgetInput) -> ReservationOutcome:
    """Reserves an estimate in the account's ledger before anything is submitted. Implemented in
    activities/governance/budget_calls.py.
    """
    raise _unimplemented("reserve_budget")


@_declared("settle_budget")
async def settle_budget(input: SettleBudgetInput) -> LedgerEntry:
    """Commits a reservation at what the provider billed. Implemented in
    activities/governance/budget_calls.py.
    """
    raise _unimplemented("settle_budget")


@_declared("release_budget")
async def release_budget(input: ReleaseBudgetInput) -> LedgerEntry | None:
    """Releases a reservation nothing was billed for. Implemented in
    activities/governance/budget_calls.py.
    """
    raise _unimplemented("release_budget")


@_declared("settle_orphaned_reservations")
async def settle_orphaned_reservations() -> ReconcilerRound:
    """One reconciler round: settles the open reservations of closed workflows. Implemented in
    activities/governance/open_reservations.py.
    """
    raise _unimplemented("settle_orphaned_reservations")


# --- backend health ------------------------------------------------------------------------------


@_declared("acquire_backend")
async def acquire_backend(input: AcquireBackendInput) -> Permit:
    """Asks the backend's circuit breaker for a permit to submit. Implemented in
    activities/governance/health_calls.py.
    """
    raise _unimplemented("acquire_backend")


@_declared("report_backend_outcome")
async def report_backend_outcome(input: ReportOutcomeInput) -> HealthView:
    """Tells the backend's circuit breaker how a job ended. Implemented in
    activities/governance/health_calls.py.
    """
    raise _unimplemented("report_backend_outcome")


# --- provider jobs -------------------------------------------------------------------------------


@_declared("submit")
async def submit(input: SubmitInput) -> JobRef:
    """Submits a stored batch to the provider under its client token. Implemented in
    activities/providers/provider_calls.py.
    """
    raise _unimplemented("submit")


@_declared("check_job")
async def check_job(input: JobInput) -> JobStatus:
    """One poll of the provider for the job's status. Implemented in
    activities/providers/provider_calls.py.
    """
    raise _unimplemented("check_job")


@_declared("wait_for_job")
async def wait_for_job(input: JobInput) -> JobStatus:
    """The job's final status; fails (and is retried at the poll ceiling) while it runs.
    Implemented in activities/providers/provider_calls.py.
    """
    raise _unimplemented("wait_for_job")


@_declared("fetch_result")
async def fetch_result(input: FetchInput) -> FetchedResult:
    """Downloads a finished job's counts into the artifact store, with what it cost. Implemented in
    activities/providers/provider_calls.py.
    """
    raise _unimplemented("fetch_result")


@_declared("cancel_job")
async def cancel_job(input: JobInput) -> Cost:
    """Cancels what of the job still queues or runs; returns what the provider billed. Implemented
    in activities/providers/provider_calls.py.
    """
    raise _unimplemented("cancel_job")


@_declared("simulate")
async def simulate(input: SimulateInput) -> Simulated:
    """Runs a batch on a local simulator in one compute activity and stores its counts. Implemented
    in activities/providers/local_simulation.py.
    """
    raise _unimplemented("simulate")


# --- batches of parameter points -----------------------------------------------------------------


@_declared("prepare_batch")
async def prepare_batch(input: BatchInput) -> PreparedBatch:
    """Binds a batch of parameter points into circuits and prices them. Implemented in
    activities/variational/batch_preparation.py.
    """
    raise _unimplemented("prepare_batch")


@_declared("score_batch")
async def score_batch(input: ScoreInput) -> ScoredBatch:
    """Each point's value from the batch's counts. Implemented in
    activities/variational/batch_scoring.py.
    """
    raise _unimplemented("score_batch")


@_declared("classical_reference")
async def classical_reference(input: ReferenceInput) -> Reference:
    """Exact values of the points, for the report's comparison. Implemented in
    activities/variational/classical_reference.py.
    """
    raise _unimplemented("classical_reference")


# --- loops ---------------------------------------------------------------------------------------


@_declared("save_trajectory_chunk")
async def save_trajectory_chunk(input: SaveTrajectoryChunkInput) -> str:
    """Stores a chunk of a loop's trajectory; returns its URL. Implemented in
    activities/variational/loop_trajectory.py.
    """
    raise _unimplemented("save_trajectory_chunk")


@_declared("write_trajectory")
async def write_trajectory(input: WriteTrajectoryInput) -> str:
    """Joins a loop's trajectory chunks into one file; returns its URL. Implemented in
    activities/variational/loop_trajectory.py.
    """
    raise _unimplemented("write_trajectory")


# --- sweeps --------------------------------------------------------------------------------------


@_declared("expand_sweep")
async def expand_sweep(input: ExpandSweepInput) -> SweepLayout:
    """Expands a sweep's points and stores them with the sweep's layout. Implemented in
    activities/variational/sweep_results.py.
    """
    raise _unimplemented("expand_sweep")


@_declared("lookup_sweep_cache")
async def lookup_sweep_cache(input: CacheLookupInput) -> CacheLookup:
    """Which points of the sweep have a cached value. Implemented in
    activities/variational/sweep_results.py.
    """
    raise _unimplemented("lookup_sweep_cache")


@_declared("plan_sweep")
async def plan_sweep(input: ExpandSweepInput) -> SweepPlan:
    """expand_sweep then lookup_sweep_cache in one activity: one dispatch instead of two before
    the first batch. Implemented in activities/variational/sweep_results.py.
    """
    raise _unimplemented("plan_sweep")


@_declared("sweep_batch_points")
async def sweep_batch_points(input: BatchPointsInput) -> BatchPoints:
    """The points of one batch of the sweep. Implemented in
    activities/variational/sweep_results.py.
    """
    raise _unimplemented("sweep_batch_points")


@_declared("check_sweep_canary")
async def check_sweep_canary(input: CanaryCheckInput) -> CanaryVerdict:
    """Compares the canary points' measured values with their exact values. Implemented in
    activities/variational/sweep_results.py.
    """
    raise _unimplemented("check_sweep_canary")


@_declared("store_sweep_batch")
async def store_sweep_batch(input: StoreBatchInput) -> StoredBatch:
    """Stores a batch's scored points and caches their values. Implemented in
    activities/variational/sweep_results.py.
    """
    raise _unimplemented("store_sweep_batch")


@_declared("write_sweep_results")
async def write_sweep_results(input: SweepResultsInput) -> SweepResults:
    """Writes the sweep's table and plot. Implemented in activities/variational/sweep_results.py."""
    raise _unimplemented("write_sweep_results")


# --- adoption of provider tasks submitted elsewhere ----------------------------------------------


@_declared("record_spend")
async def record_spend(input: RecordSpendInput) -> LedgerEntry:
    """Commits money spent outside qloop (an adopted task) at what the provider billed.
    Implemented in activities/governance/budget_calls.py.
    """
    raise _unimplemented("record_spend")


@_declared("inspect_adopted_tasks")
async def inspect_adopted_tasks(input: InspectTasksInput) -> list[TaskInfo]:
    """Each task as the provider describes it; refuses a task of another device. Implemented in
    activities/providers/adoption.py.
    """
    raise _unimplemented("inspect_adopted_tasks")


@_declared("settle_adopted_task")
async def settle_adopted_task(input: SettleTaskInput) -> AdoptedTask:
    """An ended task's outcome, bill and stored counts. Implemented in
    activities/providers/adoption.py.
    """
    raise _unimplemented("settle_adopted_task")
