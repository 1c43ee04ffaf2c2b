"""AdoptWorkflow: provider tasks someone submitted outside qloop (a notebook whose kernel died,
the plain Braket SDK), taken over durably.

With a request: preprocess → prevalidate → plan (what qloop would have submitted), and the
adopted tasks must hold exactly the plan's circuits, else the workflow fails before anything is
recorded. Then, task by task: wait until it ended (one `wait_for_job` activity retried with
backoff up to the poll ceiling: nothing in history per poll) → what happened, Braket's bill and
its counts → a committed entry in the account's ledger at that bill ($0 for a failed or
cancelled task, recorded as such; the key is the task's ARN, so a task adopted twice counts
once). With a request and every task completed: the counts in plan order are mitigated and
post-processed into the experiment's report.

Deterministic workflow code: activities are called through their contracts.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts
    from schemas.adoption import (
        AdoptedTask,
        AdoptInput,
        AdoptProgress,
        AdoptReport,
        InspectTasksInput,
        SettleTaskInput,
        TaskInfo,
        ledger_key,
    )
    from schemas.budget import ExternalSpend, RecordSpendInput
    from schemas.execution import JobRef
    from schemas.pipeline import ExecutionPlan, FetchInput, JobInput
    from schemas.report import ExperimentReport
    from schemas.request import BackendChoice
    from workflows.activity_options import (
        ENTITY_RETRY,
        HEARTBEAT_TIMEOUT,
        POLL_TIMEOUT,
        PROVIDER_RETRY,
        PROVIDER_TIMEOUT,
        QUICK_TIMEOUT,
    )
    from workflows.experiment_preparation import PreparedRun, prepared_run
    from workflows.experiment_reports import mitigated_report
    from workflows.paid_execution import Executed
    from workflows.timed_stages import TimedStages

# The circuits of a mismatched adoption: refused before any money is recorded.
ADOPTION_MISMATCH = "AdoptionMismatch"


@workflow.defn(name="AdoptWorkflow")
class AdoptWorkflow:
    def __init__(self) -> None:
        self._progress = AdoptProgress()
        self._stages = TimedStages()

    @workflow.query
    def progress(self) -> AdoptProgress:
        return self._progress

    def _set(self, **changes: object) -> None:
        self._progress = self._progress.model_copy(update=changes)

    @workflow.run
    async def run(self, input: AdoptInput) -> AdoptReport:
        try:
            return await self._adopt(input)
        except (ActivityError, ApplicationError) as error:
            cause = error.cause if isinstance(error, ActivityError) else error
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            self._set(stage="failed", error=message)
            raise ApplicationError(message, type=error_type, non_retryable=True) from error

    async def _adopt(self, input: AdoptInput) -> AdoptReport:
        self._set(stage="preparing", tasks_total=len(input.task_arns))
        backend = BackendChoice(provider="braket", device=input.device)
        infos = await self._inspect(input)
        prepared = None
        if input.request is not None:
            prepared = await self._prepare(input, backend)
            self._check_circuits(prepared.plan, infos)
        self._set(stage="waiting")
        tasks: list[AdoptedTask] = []
        for index, info in enumerate(infos):
            self._set(current_task=info.arn)
            await self._wait(input, backend, info)
            task = await self._settle(input, index, info)
            tasks.append(await self._record(input, task))
            self._set(tasks_ended=len(tasks), cost_usd=round(sum(t.cost_usd for t in tasks), 6))
        self._set(current_task="")
        report = AdoptReport(
            adoption_id=workflow.info().workflow_id,
            device=input.device,
            account=input.account,
            tasks=tasks,
            total_cost_usd=round(sum(t.cost_usd for t in tasks), 6),
        )
        if prepared is None:
            report = report.model_copy(
                update={"experiment_skipped": "no request describes the circuits"}
            )
        elif not all(task.status == "COMPLETED" for task in tasks):
            ended = [f"{t.arn} {t.status}" for t in tasks if t.status != "COMPLETED"]
            report = report.model_copy(
                update={
                    "experiment_skipped": "not every task completed: "
                    + "; ".join(ended[:3])
                    + (f"; and {len(ended) - 3} more" if len(ended) > 3 else "")
                }
            )
        else:
            self._set(stage="mitigating")
            experiment = await self._experiment_report(input, backend, prepared, infos)
            report = report.model_copy(update={"experiment": experiment})
        self._set(stage="completed")
        return report

    # --- steps ---------------------------------------------------------------------------------

    async def _inspect(self, input: AdoptInput) -> list[TaskInfo]:
        infos: list[TaskInfo] = await workflow.execute_activity(
            activity_contracts.inspect_adopted_tasks,
            InspectTasksInput(device=input.device, task_arns=input.task_arns),
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary="inspect adopted tasks",
        )
        return infos

    async def _prepare(self, input: AdoptInput, backend: BackendChoice) -> PreparedRun:
        assert input.request is not None
        request = input.request.on_backend(backend)
        return await prepared_run(self._stages, input.compute_task_queue, request)

    def _check_circuits(self, plan: ExecutionPlan, infos: list[TaskInfo]) -> None:
        adopted = sum(info.executables for info in infos)
        if adopted != plan.num_circuits:
            raise ApplicationError(
                f"the request plans {plan.num_circuits} circuits, the {len(infos)} adopted tasks "
                f"hold {adopted}: nothing was recorded (give one task per planned circuit, in "
                "the plan's order)",
                type=ADOPTION_MISMATCH,
                non_retryable=True,
            )

    async def _wait(self, input: AdoptInput, backend: BackendChoice, info: TaskInfo) -> None:
        """Until the task ended: its JobNotDone is retried with backoff up to the poll ceiling,
        which adds nothing to history per poll."""
        ceiling = timedelta(seconds=input.poll_ceiling_seconds)
        await workflow.execute_activity(
            activity_contracts.wait_for_job,
            JobInput(backend=backend, job=self._job(input, [info])),
            start_to_close_timeout=POLL_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=min(timedelta(seconds=1), ceiling),
                backoff_coefficient=2.0,
                maximum_interval=ceiling,
                non_retryable_error_types=PROVIDER_RETRY.non_retryable_error_types,
            ),
            summary=f"wait for {info.arn.rsplit('/', 1)[-1]}",
        )

    async def _settle(self, input: AdoptInput, index: int, info: TaskInfo) -> AdoptedTask:
        task: AdoptedTask = await workflow.execute_activity(
            activity_contracts.settle_adopted_task,
            SettleTaskInput(
                device=input.device,
                arn=info.arn,
                index=index,
                folder=workflow.info().workflow_id,
            ),
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary=f"bill and fetch {info.arn.rsplit('/', 1)[-1]}",
        )
        return task

    async def _record(self, input: AdoptInput, task: AdoptedTask) -> AdoptedTask:
        key = ledger_key(task.arn)
        reason = "" if task.status == "COMPLETED" else f"{task.status}: {task.failure_reason}"
        entry = await workflow.execute_activity(
            activity_contracts.record_spend,
            RecordSpendInput(
                account=input.account,
                spend=ExternalSpend(
                    key=key,
                    experiment_id=workflow.info().workflow_id,
                    actual_usd=task.cost_usd,
                    backend=f"braket/{input.device}",
                    note=f"adopted task {task.status}",
                    reason=reason.strip(),
                ),
            ),
            start_to_close_timeout=QUICK_TIMEOUT,
            retry_policy=ENTITY_RETRY,
            summary="record spend",
        )
        return task.model_copy(update={"ledger_key": key, "ledger_state": entry.state})

    async def _experiment_report(
        self,
        input: AdoptInput,
        backend: BackendChoice,
        run: PreparedRun,
        infos: list[TaskInfo],
    ) -> ExperimentReport:
        job = self._job(input, infos)
        fetched = await workflow.execute_activity(
            activity_contracts.fetch_result,
            FetchInput(experiment_id=workflow.info().workflow_id, backend=backend, job=job),
            start_to_close_timeout=PROVIDER_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
            summary="fetch counts in plan order",
        )
        return await mitigated_report(
            self._stages,
            input.compute_task_queue,
            run,
            Executed(job, fetched),
            governance=None,
            produced_by_reason=f"adopted {len(infos)} tasks submitted outside qloop",
        )

    # --- helpers -------------------------------------------------------------------------------

    def _job(self, input: AdoptInput, infos: list[TaskInfo]) -> JobRef:
        created = [info.created_at for info in infos if info.created_at is not None]
        return JobRef(
            provider="braket",
            device=input.device,
            job_id=",".join(info.arn for info in infos),
            client_token=f"adopted-{workflow.info().workflow_id}",
            submitted_at=min(created) if created else workflow.now(),
        )
