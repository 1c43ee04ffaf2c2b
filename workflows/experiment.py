"""ExperimentWorkflow: one pass of the hybrid loop for one request.

preprocess → prevalidate → plan → breaker → policy → approval → budget → submit → wait (poll
with timers) → fetch → mitigate → postprocess. Each stage is an activity; waiting on a provider
or on a person holds no activity or thread. People and ops tooling steer a running experiment
with approve / reject (signal or update), pause / resume / reroute / cancel (signals) and
Temporal's own cancellation; a backend that fails or is refused hands the work to the next one
of the request's fallback chain, and the report says which one answered and why.

The workflow reads as that process; each step lives in a module of its own: preparation
(`experiment_preparation`), approval and budget waits (`experiment_approval`,
`experiment_budget`), the paid path (`paid_execution`), reports (`experiment_reports`), what
people see (`experiment_progress`), what they send (`experiment_steering`) and the record of
what governed the experiment (`experiment_governance`).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts, error_types
    from schemas.control import (
        APPROVE,
        CANCEL,
        PAUSE,
        REJECT,
        REROUTE,
        RESUME,
        ApprovalDecision,
        BudgetRecord,
        OpsCommand,
        OpsEvent,
        RecordedDecision,
        RerouteCommand,
        RouteChange,
    )
    from schemas.execution import Cost, JobRef, JobStatus
    from schemas.health import AcquireBackendInput, Permit, ReportOutcomeInput
    from schemas.pipeline import (
        ApprovalRequirement,
        ExecutionPlan,
        ExperimentInput,
        FetchedResult,
        PolicyDecision,
        PolicyInput,
        PollingPolicy,
        Progress,
        Stage,
    )
    from schemas.report import ExperimentReport, ReusedResult
    from schemas.request import BackendChoice, ExperimentRequest
    from workflows import search_attributes as attrs
    from workflows.activity_options import ENTITY_RETRY, QUICK_TIMEOUT
    from workflows.cancellation import cancelled_by_request
    from workflows.experiment_approval import await_approval
    from workflows.experiment_budget import reserve_when_room
    from workflows.experiment_governance import GovernanceRecord
    from workflows.experiment_preparation import PreparedRun, prepare, with_resolved_seed
    from workflows.experiment_progress import ExperimentProgress
    from workflows.experiment_reports import (
        CLASSICAL,
        answered_report,
        classical_report,
        ended_report,
    )
    from workflows.experiment_steering import (
        CancelRequested,
        ExperimentSteering,
        LeaveBackend,
        Verdict,
        counted_or_raise,
    )
    from workflows.paid_execution import (
        Executed,
        PaidExecution,
        PaidWork,
        describe_backend,
        is_remote,
    )

GOVERNANCE_PATCH = "governance"
POLICY_AS_ACTIVITY_PATCH = "experiment-policy-as-activity"
# An experiment with `execution.reuse: within_calibration` whose plan found an earlier result
# answers from it, with no breaker, policy, approval, budget or submission (cost 0).
REUSE_PATCH = "experiment-reuse-within-calibration"

# Errors after which a backend is given up for the next one of the fallback chain.
BACKEND_FAILURES = (
    error_types.REJECTED,
    error_types.JOB_FAILED,
    error_types.TRANSIENT,
    error_types.QUEUE_DEADLINE_EXCEEDED,
)

# The name of an experiment's one submission: its backends and attempts are told apart by the
# reservation key's backend and number (workflows/paid_execution.py).
SUBMISSION = "run"


def backend_failure(error: ActivityError | ApplicationError) -> str | None:
    """Why the backend failed, when the error is one to fall back from (None otherwise)."""
    cause = error.cause if isinstance(error, ActivityError) else error
    if isinstance(cause, ApplicationError) and cause.type in BACKEND_FAILURES:
        return cause.message
    return None


@workflow.defn(name="ExperimentWorkflow")
class ExperimentWorkflow:
    def __init__(self) -> None:
        self._steering = ExperimentSteering()
        self._progress = ExperimentProgress(lambda: self._steering.pending_approval)
        self._compute_queue: str | None = None
        self._governance: GovernanceRecord | None = None
        # The paid execution on the current backend, until it is settled.
        self._execution: PaidExecution | None = None
        self._fallbacks: list[BackendChoice | str] = []
        self._last_prepared: PreparedRun | None = None

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        return self._progress.current

    # --- messages from people and ops tooling ----------------------------------------------

    @workflow.signal(name=APPROVE)
    def approve_signal(self, decision: ApprovalDecision) -> None:
        self._decide("approved", decision)

    @workflow.update(name=APPROVE)
    def approve_update(self, decision: ApprovalDecision) -> RecordedDecision:
        return counted_or_raise(self._decide("approved", decision))

    @workflow.signal(name=REJECT)
    def reject_signal(self, decision: ApprovalDecision) -> None:
        self._decide("rejected", decision)

    @workflow.update(name=REJECT)
    def reject_update(self, decision: ApprovalDecision) -> RecordedDecision:
        return counted_or_raise(self._decide("rejected", decision))

    @workflow.signal(name=PAUSE)
    def pause(self, command: OpsCommand | None = None) -> None:
        self._record_ops(self._steering.pause(command or OpsCommand()))

    @workflow.signal(name=RESUME)
    def resume(self, command: OpsCommand | None = None) -> None:
        self._record_ops(self._steering.resume(command or OpsCommand()))

    @workflow.signal(name=REROUTE)
    def reroute(self, command: RerouteCommand) -> None:
        self._record_ops(self._steering.reroute(command))

    @workflow.signal(name=CANCEL)
    def cancel(self, command: OpsCommand | None = None) -> None:
        self._record_ops(self._steering.cancel(command or OpsCommand()))

    def _decide(self, verdict: Verdict, decision: ApprovalDecision) -> RecordedDecision:
        recorded = self._steering.decide(verdict, decision, self._progress.current.stage)
        if recorded.verdict == "refused" and self._governance is not None:
            self._governance.refused_decision(recorded)
        return recorded

    def _record_ops(self, event: OpsEvent) -> None:
        if self._governance is None:
            return
        self._governance.ops_event(event)
        if self._progress.current.stage not in (Stage.COMPLETED, Stage.FAILED):
            self._progress.set(paused=self._steering.paused)

    # --- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: ExperimentInput) -> ExperimentReport:
        request = with_resolved_seed(input.request)
        self._compute_queue = input.compute_task_queue
        backend = request.execution.backend
        self._progress.set(stage=Stage.PREPROCESSING, backend=describe_backend(backend))
        workflow.upsert_search_attributes(
            [
                attrs.BACKEND.value_set(describe_backend(backend)),
                attrs.PROVIDER.value_set(backend.provider),
                attrs.ACCOUNT.value_set(request.policy.account),
            ]
        )
        try:
            # Experiments started before governance have all closed: the old path is gone and
            # the patch deprecated (Temporal's patching, step 2); its call goes once no open
            # run carries the marker.
            workflow.deprecate_patch(GOVERNANCE_PATCH)
            return await self._run_governed(request, input)
        except ActivityError as error:
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            failed_stage = self._progress.current.stage
            await self._settle_execution(f"experiment failed in {failed_stage.value}")
            self._progress.set(stage=Stage.FAILED, error=f"{failed_stage.value}: {message}")
            raise ApplicationError(
                f"{failed_stage.value} failed: {message}", type=error_type, non_retryable=True
            ) from error

    async def _run_governed(
        self, request: ExperimentRequest, input: ExperimentInput
    ) -> ExperimentReport:
        requested = request.execution.backend
        self._governance = GovernanceRecord(
            self._progress, request.policy.account, describe_backend(requested)
        )
        self._fallbacks = list(request.execution.fallback)
        backend: BackendChoice | str = requested
        try:
            while True:
                if not isinstance(backend, BackendChoice):
                    return await self._classical_report(request)
                try:
                    return await self._attempt(request.on_backend(backend), input)
                except LeaveBackend as leave:
                    backend = self._next_backend(backend, leave)
        except (asyncio.CancelledError, CancelRequested) as stop:
            command = stop.command if isinstance(stop, CancelRequested) else OpsCommand()
            return await self._cancelled(request, command)
        except ActivityError as error:
            # Temporal's cancel while a stage's activity ran: a cancelled report, as in a wait.
            if cancelled_by_request(error):
                return await self._cancelled(request, OpsCommand())
            raise

    async def _attempt(
        self, request: ExperimentRequest, input: ExperimentInput
    ) -> ExperimentReport:
        """One backend: everything from its circuits to its report, or LeaveBackend."""
        backend = request.execution.backend
        self._progress.switch_backend(backend)
        run = await prepare(self._progress, self._compute_queue, request)
        self._last_prepared = run
        self._steering.check_interrupts()
        reused = self._reused(run)
        if reused is not None:
            return await self._reused_report(run, reused)
        if is_remote(backend):
            await self._acquire_breaker_permit(backend)
        decision = await self._evaluate_policy(run)
        if not decision.allowed:
            why = f"policy rule {decision.rule}: {decision.message}"
            return await self._ended("rejected", why, request, run.plan)
        if decision.approval is not None:
            rejected = await self._await_approval(run, decision.approval)
            if rejected is not None:
                return rejected
        execution = self._paid_execution(run, input.polling)
        if run.plan.cost_estimate.usd > 0:
            refusal = await reserve_when_room(
                execution,
                decision,
                request.policy.max_queue_wait,
                input.polling,
                self._progress,
                self._steering,
            )
            if refusal is not None:
                return await self._ended("rejected", refusal, request, run.plan)
            self._governed().reservation(
                BudgetRecord(
                    account=request.policy.account,
                    reservation_key=execution.key,
                    reserved_usd=run.plan.cost_estimate.usd,
                )
            )
        try:
            executed = await execution.run()
        except LeaveBackend as leave:
            leave.cancelled_job = execution.cancelled_job
            raise
        except (ActivityError, ApplicationError) as error:
            failure = backend_failure(error)
            if failure is None:
                raise
            # The paid execution already cancelled the job and settled what it was billed.
            await self._report_outcome(backend, success=False, detail=failure)
            raise LeaveBackend(
                "fallback", f"{describe_backend(backend)} failed: {failure}"
            ) from error
        finally:
            self._record_settlement(execution)
        governance = self._governed().current
        return await answered_report(self._progress, self._compute_queue, run, executed, governance)

    def _reused(self, run: PreparedRun) -> ReusedResult | None:
        """The earlier result planning found for a request that asked for reuse. The patch is
        only asked once there is one, so histories without reuse replay untouched."""
        lookup = run.plan.reuse
        if lookup is None or lookup.found is None or not workflow.patched(REUSE_PATCH):
            return None
        return lookup.found

    async def _reused_report(self, run: PreparedRun, reused: ReusedResult) -> ExperimentReport:
        """Mitigates and reports the earlier experiment's counts; nothing is reserved,
        submitted or paid."""
        self._progress.set(estimated_cost_usd=0.0)
        executed = Executed(
            reused.job,
            FetchedResult(
                counts_uri=reused.counts_uri,
                shots=reused.shots,
                actual_cost=Cost(usd=0.0, detail=f"reused from {reused.experiment_id}"),
            ),
        )
        governance = self._governed().current
        return await answered_report(
            self._progress, self._compute_queue, run, executed, governance, reused=reused
        )

    def _next_backend(self, current: BackendChoice, leave: LeaveBackend) -> BackendChoice | str:
        following: BackendChoice | str | None = leave.to
        if following is None:
            if not self._fallbacks:
                self._progress.set(stage=Stage.FAILED, error=leave.why)
                raise ApplicationError(
                    f"{leave.why}; no fallback left (execution.fallback)",
                    type=error_types.NO_BACKEND_LEFT,
                    non_retryable=True,
                )
            following = self._fallbacks.pop(0)
        to_name = describe_backend(following) if isinstance(following, BackendChoice) else CLASSICAL
        change = RouteChange(
            at=workflow.now(),
            from_backend=describe_backend(current),
            to_backend=to_name,
            kind=leave.kind,
            why=leave.why,
            cancelled_job=leave.cancelled_job,
        )
        self._governed().route_change(change)
        workflow.logger.info("leaving %s for %s: %s", change.from_backend, to_name, leave.why)
        return following

    def _simulator_fallback(self, current: BackendChoice) -> BackendChoice | None:
        """The first local simulator of the fallback chain, else the ideal Aer simulator; None
        when the experiment already waited on a simulator and the chain offers no other."""
        for choice in self._fallbacks:
            if isinstance(choice, BackendChoice) and not is_remote(choice):
                self._fallbacks.remove(choice)
                return choice
        if not is_remote(current):
            return None
        return BackendChoice(provider="aer", device="ideal")

    # --- rules and people -------------------------------------------------------------------------

    async def _acquire_breaker_permit(self, backend: BackendChoice) -> None:
        name = describe_backend(backend)
        permit: Permit = await workflow.execute_activity(
            activity_contracts.acquire_backend,
            AcquireBackendInput(backend=name, experiment_id=workflow.info().workflow_id),
            start_to_close_timeout=QUICK_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary="acquire_backend",
        )
        if not permit.allowed:
            raise LeaveBackend("fallback", f"circuit breaker of {name}: {permit.reason}")

    async def _report_outcome(self, backend: BackendChoice, *, success: bool, detail: str) -> None:
        await workflow.execute_activity(
            activity_contracts.report_backend_outcome,
            ReportOutcomeInput(
                backend=describe_backend(backend),
                experiment_id=workflow.info().workflow_id,
                success=success,
                detail=detail,
            ),
            start_to_close_timeout=QUICK_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary="report_backend_outcome",
        )

    async def _evaluate_policy(self, run: PreparedRun) -> PolicyDecision:
        self._progress.set(stage=Stage.CHECKING_POLICY)
        # A local activity whose result is recorded in a later workflow task than the one it
        # resolved in on replay (a slow policy file under load) failed replay with "patch marker
        # ... no corresponding change command", as sweeps did (README, temporalio/sdk-python#1578).
        execute = (
            workflow.execute_activity
            if workflow.patched(POLICY_AS_ACTIVITY_PATCH)
            else workflow.execute_local_activity
        )
        decision: PolicyDecision = await execute(
            activity_contracts.evaluate_policy,
            PolicyInput(
                account=run.request.policy.account,
                backend=run.request.execution.backend,
                tier=run.prepared.capabilities.tier,
                shots=run.request.execution.shots,
                estimated_cost_usd=run.plan.cost_estimate.usd,
                request_max_cost_usd=run.request.policy.max_cost_usd,
            ),
            start_to_close_timeout=QUICK_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary="policy",
        )
        return decision

    async def _await_approval(
        self, run: PreparedRun, requirement: ApprovalRequirement
    ) -> ExperimentReport | None:
        """None when approved; a rejected report when rejected or timed out, unless the rule
        sends the work to a simulator after a timeout (LeaveBackend)."""
        backend = run.request.execution.backend
        record = await await_approval(
            self._steering, self._progress, requirement, describe_backend(backend)
        )
        self._governed().approval(record)
        if record.outcome == "timed_out":
            why = f"no decision within {record.timeout} from {', '.join(record.approvers)}"
            simulator = (
                self._simulator_fallback(backend) if requirement.on_timeout == "fallback" else None
            )
            if simulator is None:
                return await self._ended(
                    "rejected", f"approval timed out: {why}", run.request, run.plan
                )
            raise LeaveBackend("fallback", f"approval timed out: {why}", to=simulator)
        if record.outcome == "pending":
            self._steering.check_interrupts()
        decision = record.decision
        assert decision is not None
        if decision.verdict == "rejected":
            reason = f": {decision.reason}" if decision.reason else ""
            why = f"rejected by {decision.approver}{reason}"
            return await self._ended("rejected", why, run.request, run.plan)
        return None

    # --- money ------------------------------------------------------------------------------------

    def _paid_execution(self, run: PreparedRun, polling: PollingPolicy) -> PaidExecution:
        request = run.request
        execution = PaidExecution(
            PaidWork(
                account=request.policy.account,
                backend=request.execution.backend,
                batch_uri=run.plan.batch_uri,
                shots=request.execution.shots,
                seed=request.execution.seed,
                estimated_usd=run.plan.cost_estimate.usd,
                submission=SUBMISSION,
                purpose="",
                artifact_folder=workflow.info().workflow_id,
                polling=polling,
                max_queue_wait=request.policy.max_queue_wait,
                name=request.name,
                simulated_in_activity=run.prepared.capabilities.simulated_in_activity,
                compute_task_queue=self._compute_queue,
            ),
            self,
        )
        self._execution = execution
        return execution

    async def _settle_execution(self, reason: str) -> None:
        """Cancels the current backend's job, if any, and settles its money (see
        PaidExecution.abandon)."""
        execution = self._execution
        if execution is None:
            return
        await execution.abandon(reason)
        self._record_settlement(execution)

    def _record_settlement(self, execution: PaidExecution) -> None:
        if self._governance is not None:
            self._governance.settlement(
                execution.key, committed_usd=execution.committed_usd, released=execution.released
            )

    # --- steering of the paid execution (workflows/paid_execution.Steering) ---------------------

    def interrupted(self) -> bool:
        return self._steering.paused or self._steering.interrupt_pending()

    async def checkpoint(self) -> None:
        """Acts on a pending reroute or cancel, and holds here while the experiment is paused."""
        steering = self._steering
        steering.check_interrupts()
        if not steering.paused:
            return
        previous = self._progress.current.stage
        self._progress.set(stage=Stage.PAUSED, awaiting="resume (the experiment is paused)")
        await workflow.wait_condition(lambda: not steering.paused or steering.interrupt_pending())
        self._progress.set(stage=previous, awaiting=None)
        steering.check_interrupts()

    def on_stage(self, stage: Stage) -> None:
        self._progress.enter_paid_stage(stage)

    def on_status(self, status: JobStatus) -> None:
        self._progress.job_status(status)

    async def job_done(self, job: JobRef) -> None:
        backend = self._execution.work.backend if self._execution else None
        if backend is not None and is_remote(backend):
            await self._report_outcome(backend, success=True, detail="job completed")

    # --- endings without a quantum answer ---------------------------------------------------------

    async def _cancelled(self, request: ExperimentRequest, command: OpsCommand) -> ExperimentReport:
        execution = self._execution
        await self._settle_execution("experiment cancelled")
        job_id = execution.cancelled_job if execution is not None else None
        by = f" by {command.by}" if command.by else ""
        reason = f": {command.reason}" if command.reason else ""
        job = f"; provider job {job_id} cancelled" if job_id else ""
        return await self._ended("cancelled", f"cancelled{by}{reason}{job}", request, None)

    async def _ended(
        self,
        status: Literal["rejected", "cancelled"],
        reason: str,
        request: ExperimentRequest,
        plan: ExecutionPlan | None,
    ) -> ExperimentReport:
        governance = self._governed().current
        return await ended_report(
            self._progress, self._compute_queue, request, status, reason, plan, governance
        )

    async def _classical_report(self, request: ExperimentRequest) -> ExperimentReport:
        run = self._last_prepared or await prepare(self._progress, self._compute_queue, request)
        self._last_prepared = run
        governance = self._governed().current
        return await classical_report(self._progress, self._compute_queue, run, governance)

    def _governed(self) -> GovernanceRecord:
        assert self._governance is not None, "governance is recorded from the start of the run"
        return self._governance
