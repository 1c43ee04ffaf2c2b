"""ExperimentWorkflow: one pass of the hybrid loop for one request.

preprocess → prevalidate → plan → breaker → policy → approval → budget → submit → wait (poll
with timers) → fetch → mitigate → postprocess. Each stage is an activity; waiting on a provider
or on a person holds no activity or thread. People and ops tooling steer a running experiment
with approve / reject (signal or update), pause / resume / reroute / cancel (signals) and
Temporal's own cancellation; a backend that fails or is refused hands the work to the next one
of the request's fallback chain, and the report says which one answered and why.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Literal, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import error_types
    from schemas.control import (
        APPROVE,
        CANCEL,
        PAUSE,
        REJECT,
        REROUTE,
        RESUME,
        ApprovalDecision,
        ApprovalRecord,
        BudgetRecord,
        Governance,
        OpsCommand,
        OpsEvent,
        RecordedDecision,
        RerouteCommand,
        RouteChange,
    )
    from schemas.execution import JobRef, JobStatus
    from schemas.health import AcquireBackendInput, Permit, ReportOutcomeInput
    from schemas.pipeline import (
        ApprovalRequirement,
        ClassicalReportInput,
        EndedReportInput,
        ExecutionPlan,
        ExperimentInput,
        FetchedResult,
        MitigateInput,
        MitigationOutcome,
        PlanInput,
        PolicyDecision,
        PolicyInput,
        PollingPolicy,
        PostprocessInput,
        PreparedExperiment,
        PreprocessInput,
        PrevalidateInput,
        Prevalidation,
        Progress,
        Stage,
    )
    from schemas.report import ExperimentReport
    from schemas.request import BackendChoice, ExperimentRequest
    from workflows import search_attributes as attrs
    from workflows.activity_options import (
        ENTITY_RETRY,
        QUICK_TIMEOUT,
    )
    from workflows.experiment_details import route_summary
    from workflows.experiment_progress import ExperimentProgress
    from workflows.experiment_steering import (
        CancelRequested,
        ExperimentSteering,
        LeaveBackend,
        Verdict,
        counted_or_raise,
    )
    from workflows.paid_execution import PaidExecution, PaidWork, describe_backend

CLASSICAL = "classical"

ResultT = TypeVar("ResultT")
GOVERNANCE_PATCH = "governance"

# Errors after which a backend is given up for the next one of the fallback chain.
BACKEND_FAILURES = (
    error_types.REJECTED,
    error_types.JOB_FAILED,
    error_types.TRANSIENT,
    error_types.QUEUE_DEADLINE_EXCEEDED,
)
BUDGET_RETRY_CEILING = timedelta(minutes=10)


# The name of an experiment's one submission: its backends and attempts are told apart by the
# reservation key's backend and number (workflows/paid_execution.py).
SUBMISSION = "run"


def is_remote(choice: BackendChoice) -> bool:
    """Remote backends (a device ARN) can fail, queue and cost money; local simulators cannot."""
    return choice.device.startswith("arn:")


def on_backend(request: ExperimentRequest, backend: BackendChoice) -> ExperimentRequest:
    return request.model_copy(
        update={"execution": request.execution.model_copy(update={"backend": backend})}
    )


@workflow.defn(name="ExperimentWorkflow")
class ExperimentWorkflow:
    def __init__(self) -> None:
        self._steering = ExperimentSteering()
        self._progress = ExperimentProgress(lambda: self._steering.pending_approval)
        self._compute_queue: str | None = None
        self._governance: Governance | None = None
        # The paid execution on the current backend, until it is settled.
        self._execution: PaidExecution | None = None
        self._fallbacks: list[BackendChoice | str] = []
        self._last_prepared: tuple[ExperimentRequest, PreparedExperiment, Prevalidation] | None = (
            None
        )

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
            self._govern(refused_decisions=[*self._governance.refused_decisions, recorded])
        return recorded

    def _record_ops(self, event: OpsEvent) -> None:
        if self._governance is None:
            return
        self._govern(ops=[*self._governance.ops, event])
        if self._progress.current.stage not in (Stage.COMPLETED, Stage.FAILED):
            self._progress.set(paused=self._steering.paused)

    # --- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: ExperimentInput) -> ExperimentReport:
        request = self._with_resolved_seed(input.request)
        self._compute_queue = input.compute_task_queue
        experiment_id = workflow.info().workflow_id
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
            if not workflow.patched(GOVERNANCE_PATCH):
                return await self._run_ungoverned(experiment_id, request, input)
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
        self._governance = Governance(
            account=request.policy.account, requested_backend=describe_backend(requested)
        )
        self._fallbacks = list(request.execution.fallback)
        backend: BackendChoice | str = requested
        try:
            while True:
                if not isinstance(backend, BackendChoice):
                    return await self._classical_report(request)
                try:
                    return await self._attempt(on_backend(request, backend), input)
                except LeaveBackend as leave:
                    backend = self._next_backend(backend, leave)
        except (asyncio.CancelledError, CancelRequested) as stop:
            command = stop.command if isinstance(stop, CancelRequested) else OpsCommand()
            return await self._cancelled(request, command)

    def _next_backend(self, current: BackendChoice, leave: LeaveBackend) -> BackendChoice | str:
        following = leave.to
        if following is None:
            if not self._fallbacks:
                self._progress.set(stage=Stage.FAILED, error=leave.why)
                raise ApplicationError(
                    f"{leave.why}; no fallback left (execution.fallback)",
                    type="NoBackendLeft",
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
        assert self._governance is not None
        self._govern(route=[*self._governance.route, change])
        workflow.logger.info("leaving %s for %s: %s", change.from_backend, to_name, leave.why)
        return following

    async def _attempt(
        self, request: ExperimentRequest, input: ExperimentInput
    ) -> ExperimentReport:
        """One backend: everything from its circuits to its report, or LeaveBackend."""
        backend = request.execution.backend
        name = describe_backend(backend)
        self._progress.switch_backend(backend)
        experiment_id = workflow.info().workflow_id
        prepared, prevalidation, plan = await self._prepare(experiment_id, request)
        self._steering.check_interrupts()
        if is_remote(backend):
            permit = await self._entity_call(
                "acquire_backend",
                AcquireBackendInput(backend=name, experiment_id=experiment_id),
                Permit,
            )
            if not permit.allowed:
                raise LeaveBackend("fallback", f"circuit breaker of {name}: {permit.reason}")
        decision = await self._evaluate_policy(request, prepared, plan)
        if not decision.allowed:
            return await self._ended(
                request, "rejected", f"policy rule {decision.rule}: {decision.message}", plan
            )
        if decision.approval is not None:
            rejected = await self._await_approval(request, decision.approval, plan)
            if rejected is not None:
                return rejected
        execution = self._paid_execution(request, plan, input)
        if plan.cost_estimate.usd > 0:
            refused = await self._reserve_budget(request, plan, decision, input.polling)
            if refused is not None:
                return refused
        try:
            job, fetched = await execution.run()
        except LeaveBackend as leave:
            leave.cancelled_job = execution.cancelled_job
            raise
        except ActivityError as error:
            why = self._backend_failure(error)
            if why is None:
                raise
            await self._backend_failed(backend, why)
        except ApplicationError as error:
            if error.type not in BACKEND_FAILURES:
                raise
            await self._backend_failed(backend, error.message)
        finally:
            self._record_settlement(execution)
        return await self._finish(
            experiment_id, request, prepared, prevalidation, plan, job, fetched
        )

    def _paid_execution(
        self, request: ExperimentRequest, plan: ExecutionPlan, input: ExperimentInput
    ) -> PaidExecution:
        execution = PaidExecution(
            PaidWork(
                account=request.policy.account,
                backend=request.execution.backend,
                batch_uri=plan.batch_uri,
                shots=request.execution.shots,
                seed=request.execution.seed,
                estimated_usd=plan.cost_estimate.usd,
                submission=SUBMISSION,
                purpose="",
                artifact_folder=workflow.info().workflow_id,
                polling=input.polling,
                max_queue_wait=request.policy.max_queue_wait,
                name=request.name,
            ),
            self,
        )
        self._execution = execution
        return execution

    async def _backend_failed(self, backend: BackendChoice, why: str) -> None:
        """Tell the breaker and hand the work to the next backend (the paid execution already
        cancelled the job and settled what it was billed)."""
        name = describe_backend(backend)
        if is_remote(backend):
            await self._entity_call(
                "report_backend_outcome",
                ReportOutcomeInput(
                    backend=name,
                    experiment_id=workflow.info().workflow_id,
                    success=False,
                    detail=why,
                ),
                None,
            )
        raise LeaveBackend("fallback", f"{name} failed: {why}")

    @staticmethod
    def _backend_failure(error: ActivityError) -> str | None:
        cause = error.cause
        if isinstance(cause, ApplicationError) and cause.type in BACKEND_FAILURES:
            return cause.message
        return None

    async def _prepare(
        self, experiment_id: str, request: ExperimentRequest
    ) -> tuple[PreparedExperiment, Prevalidation, ExecutionPlan]:
        prepared = await self._progress.run_stage(
            Stage.PREPROCESSING,
            "preprocess",
            PreprocessInput(experiment_id=experiment_id, request=request),
            PreparedExperiment,
            task_queue=self._compute_queue,
        )
        prevalidation = await self._progress.run_stage(
            Stage.PREVALIDATING,
            "prevalidate",
            PrevalidateInput(experiment_id=experiment_id, request=request, prepared=prepared),
            Prevalidation,
            task_queue=self._compute_queue,
        )
        self._last_prepared = (request, prepared, prevalidation)
        plan = await self._progress.run_stage(
            Stage.PLANNING,
            "plan",
            PlanInput(experiment_id=experiment_id, request=request, prepared=prepared),
            ExecutionPlan,
            task_queue=self._compute_queue,
        )
        self._progress.set(estimated_cost_usd=plan.cost_estimate.usd)
        workflow.upsert_search_attributes(
            [attrs.ESTIMATED_COST_USD.value_set(plan.cost_estimate.usd)]
        )
        return prepared, prevalidation, plan

    async def _finish(
        self,
        experiment_id: str,
        request: ExperimentRequest,
        prepared: PreparedExperiment,
        prevalidation: Prevalidation,
        plan: ExecutionPlan,
        job: JobRef,
        fetched: FetchedResult,
    ) -> ExperimentReport:
        mitigation = await self._progress.run_stage(
            Stage.MITIGATING,
            "mitigate",
            MitigateInput(
                experiment_id=experiment_id,
                request=request,
                prepared=prepared,
                plan=plan,
                counts_uri=fetched.counts_uri,
                ideal_value=prevalidation.ideal_value,
            ),
            MitigationOutcome,
            task_queue=self._compute_queue,
        )
        report = await self._progress.run_stage(
            Stage.POSTPROCESSING,
            "postprocess",
            PostprocessInput(
                experiment_id=experiment_id,
                request=request,
                prepared=prepared,
                prevalidation=prevalidation,
                plan=plan,
                job=job,
                fetched=fetched,
                mitigation=mitigation,
                timings_seconds=self._progress.timings,
                governance=self._governance,
                produced_by_reason=route_summary(self._governance),
            ),
            ExperimentReport,
            task_queue=self._compute_queue,
        )
        self._progress.set(stage=Stage.COMPLETED)
        return report

    # --- policy, approval, budget -------------------------------------------------------------

    async def _evaluate_policy(
        self, request: ExperimentRequest, prepared: PreparedExperiment, plan: ExecutionPlan
    ) -> PolicyDecision:
        self._progress.set(stage=Stage.CHECKING_POLICY)
        return await workflow.execute_local_activity(
            "evaluate_policy",
            PolicyInput(
                account=request.policy.account,
                backend=request.execution.backend,
                tier=prepared.capabilities.tier,
                shots=request.execution.shots,
                estimated_cost_usd=plan.cost_estimate.usd,
                request_max_cost_usd=request.policy.max_cost_usd,
            ),
            result_type=PolicyDecision,
            start_to_close_timeout=QUICK_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary="policy",
        )

    async def _await_approval(
        self, request: ExperimentRequest, requirement: ApprovalRequirement, plan: ExecutionPlan
    ) -> ExperimentReport | None:
        """Waits durably for a listed approver; returns a rejected report, None when approved,
        or leaves for a simulator when the rule says so after a timeout."""
        name = describe_backend(request.execution.backend)
        timeout = timedelta(seconds=requirement.timeout_seconds)
        record = ApprovalRecord(
            backend=name,
            why_required=requirement.why,
            approvers=requirement.approvers,
            timeout=timeout,
            on_timeout=requirement.on_timeout,
            requested_at=workflow.now(),
            signed=requirement.signed,
        )
        self._steering.await_decision(requirement)
        self._progress.set(
            stage=Stage.AWAITING_APPROVAL,
            awaiting=(
                f"{'signed ' if requirement.signed else ''}approval by one of "
                f"{', '.join(requirement.approvers)}: {requirement.why}"
            ),
        )
        workflow.upsert_search_attributes([attrs.AWAITING_APPROVAL.value_set(True)])
        timed_out = False
        try:
            await workflow.wait_condition(
                lambda: self._steering.decision is not None or self._steering.interrupt_pending(),
                timeout=timeout,
                timeout_summary="approval timeout",
            )
        except TimeoutError:
            timed_out = True
        finally:
            self._steering.pending_approval = None
            workflow.upsert_search_attributes([attrs.AWAITING_APPROVAL.value_set(False)])
            self._progress.set(awaiting=None)
        decision = self._steering.decision
        outcome = "timed_out" if timed_out else (decision.verdict if decision else "pending")
        assert self._governance is not None
        self._govern(
            approvals=[
                *self._governance.approvals,
                record.model_copy(update={"outcome": outcome, "decision": decision}),
            ]
        )
        if timed_out:
            why = f"no decision within {timeout} from {', '.join(requirement.approvers)}"
            simulator = (
                self._simulator_fallback(request.execution.backend)
                if requirement.on_timeout == "fallback"
                else None
            )
            if simulator is None:
                return await self._ended(request, "rejected", f"approval timed out: {why}", plan)
            raise LeaveBackend("fallback", f"approval timed out: {why}", to=simulator)
        if decision is None:
            self._steering.check_interrupts()
        assert decision is not None
        if decision.verdict == "rejected":
            reason = f": {decision.reason}" if decision.reason else ""
            return await self._ended(
                request, "rejected", f"rejected by {decision.approver}{reason}", plan
            )
        return None

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

    async def _reserve_budget(
        self,
        request: ExperimentRequest,
        plan: ExecutionPlan,
        decision: PolicyDecision,
        polling: PollingPolicy,
    ) -> ExperimentReport | None:
        """Reserves the estimated cost before submission; a refusal ends the experiment or waits
        for money to free up (asking again as often as it would poll a provider, up to every ten
        minutes), as the account's policy says."""
        execution = self._execution
        assert execution is not None
        started = workflow.now()
        interval = timedelta(seconds=min(30.0, polling.ceiling_seconds))
        while True:
            outcome = await execution.reserve(decision)
            if outcome.accepted:
                break
            if decision.on_budget_exhausted == "refuse":
                return await self._ended(request, "rejected", f"budget: {outcome.message}", plan)
            if workflow.now() - started >= request.policy.max_queue_wait:
                return await self._ended(
                    request,
                    "rejected",
                    f"budget: still no room after max_queue_wait "
                    f"{request.policy.max_queue_wait}: {outcome.message}",
                    plan,
                )
            self._progress.set(stage=Stage.AWAITING_BUDGET, awaiting=f"budget: {outcome.message}")
            await self._interruptible_sleep(interval, "wait for budget")
            interval = min(interval * 2, BUDGET_RETRY_CEILING)
        self._progress.set(awaiting=None)
        record = BudgetRecord(
            account=request.policy.account,
            reservation_key=execution.key,
            reserved_usd=plan.cost_estimate.usd,
        )
        assert self._governance is not None
        self._govern(budget=[*self._governance.budget, record])
        return None

    async def _settle_execution(self, reason: str) -> None:
        """Cancels the current backend's job, if any, and settles its money (see
        PaidExecution.abandon)."""
        execution = self._execution
        if execution is None:
            return
        await execution.abandon(reason)
        self._record_settlement(execution)

    def _record_settlement(self, execution: PaidExecution) -> None:
        """The governance record of the execution's reservation, once it was settled."""
        if execution.committed_usd is None and not execution.released:
            return
        assert self._governance is not None
        changes: dict[str, object] = (
            {"released": True} if execution.released else {"committed_usd": execution.committed_usd}
        )
        records = [
            record.model_copy(update=changes) if record.reservation_key == execution.key else record
            for record in self._governance.budget
        ]
        self._govern(budget=records)

    async def _entity_call(
        self, activity: str, arg: object, result_type: type[ResultT] | None
    ) -> ResultT:
        return await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=QUICK_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary=activity,
        )

    # --- steering: pause, reroute, cancel -------------------------------------------------------

    async def _hold_while_paused(self) -> None:
        steering = self._steering
        steering.check_interrupts()
        if not steering.paused:
            return
        previous = self._progress.current.stage
        self._progress.set(stage=Stage.PAUSED, awaiting="resume (the experiment is paused)")
        await workflow.wait_condition(lambda: not steering.paused or steering.interrupt_pending())
        self._progress.set(stage=previous, awaiting=None)
        steering.check_interrupts()

    async def _interruptible_sleep(self, interval: timedelta, summary: str) -> None:
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                self._steering.interrupt_pending, timeout=interval, timeout_summary=summary
            )
        self._steering.check_interrupts()

    async def _cancelled(self, request: ExperimentRequest, command: OpsCommand) -> ExperimentReport:
        execution = self._execution
        await self._settle_execution("experiment cancelled")
        job_id = execution.cancelled_job if execution is not None else None
        by = f" by {command.by}" if command.by else ""
        reason = f": {command.reason}" if command.reason else ""
        job = f"; provider job {job_id} cancelled" if job_id else ""
        return await self._ended(request, "cancelled", f"cancelled{by}{reason}{job}", None)

    # --- reports without a quantum answer -------------------------------------------------------

    async def _ended(
        self,
        request: ExperimentRequest,
        status: Literal["rejected", "cancelled"],
        reason: str,
        plan: ExecutionPlan | None,
    ) -> ExperimentReport:
        assert self._governance is not None
        report = await self._progress.run_stage(
            Stage.POSTPROCESSING,
            "ended_report",
            EndedReportInput(
                experiment_id=workflow.info().workflow_id,
                request=request,
                status=status,
                reason=reason,
                estimated_cost_usd=plan.cost_estimate.usd if plan else 0.0,
                actual_cost_usd=0.0,
                timings_seconds=self._progress.timings,
                governance=self._governance,
            ),
            ExperimentReport,
            task_queue=self._compute_queue,
        )
        self._progress.set(
            stage=Stage.REJECTED if status == "rejected" else Stage.CANCELLED, error=reason
        )
        return report

    async def _classical_report(self, request: ExperimentRequest) -> ExperimentReport:
        assert self._governance is not None
        if self._last_prepared is None:
            self._last_prepared = await self._prepare_reference(request)
        prepared_request, prepared, prevalidation = self._last_prepared
        self._progress.set(backend=CLASSICAL)
        report = await self._progress.run_stage(
            Stage.POSTPROCESSING,
            "classical_report",
            ClassicalReportInput(
                experiment_id=workflow.info().workflow_id,
                request=prepared_request,
                prepared=prepared,
                prevalidation=prevalidation,
                timings_seconds=self._progress.timings,
                governance=self._governance,
                reason=route_summary(self._governance) or "the fallback chain ends with classical",
            ),
            ExperimentReport,
            task_queue=self._compute_queue,
        )
        self._progress.set(stage=Stage.COMPLETED)
        return report

    async def _prepare_reference(
        self, request: ExperimentRequest
    ) -> tuple[ExperimentRequest, PreparedExperiment, Prevalidation]:
        experiment_id = workflow.info().workflow_id
        prepared, prevalidation, _ = await self._prepare(experiment_id, request)
        return request, prepared, prevalidation

    # --- steering of the paid execution (workflows/paid_execution.Steering) ---------------------

    def interrupted(self) -> bool:
        return self._steering.paused or self._steering.interrupt_pending()

    async def checkpoint(self) -> None:
        await self._hold_while_paused()

    def on_stage(self, stage: Stage) -> None:
        self._progress.enter_paid_stage(stage)

    def on_status(self, status: JobStatus) -> None:
        self._progress.job_status(status)

    async def job_done(self, job: JobRef) -> None:
        backend = self._execution.work.backend if self._execution else None
        if backend is not None and is_remote(backend):
            await self._entity_call(
                "report_backend_outcome",
                ReportOutcomeInput(
                    backend=describe_backend(backend),
                    experiment_id=workflow.info().workflow_id,
                    success=True,
                    detail="job completed",
                ),
                None,
            )

    # --- experiments started before governance existed (kept for replay) ------------------------

    async def _run_ungoverned(
        self, experiment_id: str, request: ExperimentRequest, input: ExperimentInput
    ) -> ExperimentReport:
        prepared = await self._progress.run_stage(
            Stage.PREPROCESSING,
            "preprocess",
            PreprocessInput(experiment_id=experiment_id, request=request),
            PreparedExperiment,
            task_queue=self._compute_queue,
        )
        prevalidation = await self._progress.run_stage(
            Stage.PREVALIDATING,
            "prevalidate",
            PrevalidateInput(experiment_id=experiment_id, request=request, prepared=prepared),
            Prevalidation,
            task_queue=self._compute_queue,
        )
        plan = await self._progress.run_stage(
            Stage.PLANNING,
            "plan",
            PlanInput(experiment_id=experiment_id, request=request, prepared=prepared),
            ExecutionPlan,
            task_queue=self._compute_queue,
        )
        self._progress.set(estimated_cost_usd=plan.cost_estimate.usd)
        workflow.upsert_search_attributes(
            [attrs.ESTIMATED_COST_USD.value_set(plan.cost_estimate.usd)]
        )

        job, fetched = await self._paid_execution(request, plan, input).run()
        mitigation = await self._progress.run_stage(
            Stage.MITIGATING,
            "mitigate",
            MitigateInput(
                experiment_id=experiment_id,
                request=request,
                prepared=prepared,
                plan=plan,
                counts_uri=fetched.counts_uri,
                ideal_value=prevalidation.ideal_value,
            ),
            MitigationOutcome,
            task_queue=self._compute_queue,
        )
        postprocess_input = PostprocessInput(
            experiment_id=experiment_id,
            request=request,
            prepared=prepared,
            prevalidation=prevalidation,
            plan=plan,
            job=job,
            fetched=fetched,
            mitigation=mitigation,
            timings_seconds=self._progress.timings,
        )
        report = await self._progress.run_stage(
            Stage.POSTPROCESSING,
            "postprocess",
            postprocess_input,
            ExperimentReport,
            task_queue=self._compute_queue,
        )
        self._progress.set(stage=Stage.COMPLETED)
        return report

    def _with_resolved_seed(self, request: ExperimentRequest) -> ExperimentRequest:
        """A request without a seed gets one from the workflow's deterministic RNG, so every run
        is reproducible from its manifest."""
        if request.execution.seed is not None:
            return request
        execution = request.execution.model_copy(
            update={"seed": workflow.random().randrange(2**32)}
        )
        return request.model_copy(update={"execution": execution})

    def _govern(self, **changes: object) -> None:
        assert self._governance is not None
        self._governance = self._governance.model_copy(update=changes)
        self._progress.set(governance=self._governance)
