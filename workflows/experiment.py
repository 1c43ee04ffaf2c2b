"""ExperimentWorkflow: one pass of the hybrid loop for one request.

preprocess → prevalidate → plan → submit → wait (poll with timers) → fetch → mitigate →
postprocess. Each stage is an activity; waiting on a provider holds no activity or thread.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas.execution import JobRef, JobState, JobStatus
    from schemas.pipeline import (
        ExecutionPlan,
        ExperimentInput,
        FetchedResult,
        FetchInput,
        JobInput,
        MitigateInput,
        MitigationOutcome,
        PlanInput,
        PostprocessInput,
        PreparedExperiment,
        PreprocessInput,
        PrevalidateInput,
        Prevalidation,
        Progress,
        Stage,
        SubmitInput,
    )
    from schemas.report import ExperimentReport
    from schemas.request import BackendChoice, ExperimentRequest
    from workflows import search_attributes as attrs

INVALID_REQUEST = "InvalidRequest"

ResultT = TypeVar("ResultT")
JOB_STATUS_ATTRIBUTES_PATCH = "job-status-search-attributes"

# Computation stages are pure functions of their input: a few quick retries cover a lost worker.
COMPUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=4,
    non_retryable_error_types=[INVALID_REQUEST, "BatchTooLargeError", "ExtrapolationFailedError"],
)
# Provider calls are idempotent (client token), so they may be retried for as long as it takes
# a provider to recover from throttling or an outage.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=30,
    non_retryable_error_types=[INVALID_REQUEST, "Rejected", "JobFailed"],
)


def client_token(workflow_id: str, run_id: str, submission_index: int) -> str:
    """At most 64 characters, as Braket's clientToken allows."""
    digest = hashlib.sha256(f"{workflow_id}/{run_id}/{submission_index}".encode()).hexdigest()
    return f"qloop-{digest[:40]}"


def describe_backend(choice: BackendChoice) -> str:
    profile = f":{choice.noise_profile}" if choice.noise_profile else ""
    return f"{choice.provider}/{choice.device}{profile}"


@workflow.defn(name="ExperimentWorkflow")
class ExperimentWorkflow:
    def __init__(self) -> None:
        self._progress = Progress(stage=Stage.PREPROCESSING, backend="")
        self._published_stage: Stage | None = None
        self._compute_queue: str | None = None
        self._timings: dict[str, float] = {}

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        return self._progress

    @workflow.run
    async def run(self, input: ExperimentInput) -> ExperimentReport:
        request = self._with_resolved_seed(input.request)
        self._compute_queue = input.compute_task_queue
        experiment_id = workflow.info().workflow_id
        backend = request.execution.backend
        self._set_progress(stage=Stage.PREPROCESSING, backend=describe_backend(backend))
        workflow.upsert_search_attributes(
            [
                attrs.BACKEND.value_set(describe_backend(backend)),
                attrs.PROVIDER.value_set(backend.provider),
                attrs.ACCOUNT.value_set(request.policy.account),
            ]
        )
        try:
            return await self._run_stages(experiment_id, request, input)
        except ActivityError as error:
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            failed_stage = self._progress.stage
            self._set_progress(stage=Stage.FAILED, error=f"{failed_stage.value}: {message}")
            raise ApplicationError(
                f"{failed_stage.value} failed: {message}", type=error_type, non_retryable=True
            ) from error

    async def _run_stages(
        self, experiment_id: str, request: ExperimentRequest, input: ExperimentInput
    ) -> ExperimentReport:
        backend = request.execution.backend
        prepared = await self._stage(
            Stage.PREPROCESSING,
            "preprocess",
            PreprocessInput(experiment_id=experiment_id, request=request),
            PreparedExperiment,
            task_queue=self._compute_queue,
        )
        prevalidation = await self._stage(
            Stage.PREVALIDATING,
            "prevalidate",
            PrevalidateInput(experiment_id=experiment_id, request=request, prepared=prepared),
            Prevalidation,
            task_queue=self._compute_queue,
        )
        plan = await self._stage(
            Stage.PLANNING,
            "plan",
            PlanInput(experiment_id=experiment_id, request=request, prepared=prepared),
            ExecutionPlan,
            task_queue=self._compute_queue,
        )
        self._set_progress(estimated_cost_usd=plan.cost_estimate.usd)
        workflow.upsert_search_attributes(
            [attrs.ESTIMATED_COST_USD.value_set(plan.cost_estimate.usd)]
        )

        job = await self._submit(experiment_id, request, plan, submission_index=0)
        await self._wait_until_done(job, backend, input)
        fetched = await self._stage(
            Stage.FETCHING,
            "fetch_result",
            FetchInput(experiment_id=experiment_id, backend=backend, job=job),
            FetchedResult,
            timeout=timedelta(minutes=10),
            retry=PROVIDER_RETRY,
        )
        mitigation = await self._stage(
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
            timings_seconds=self._timings,
        )
        report = await self._stage(
            Stage.POSTPROCESSING,
            "postprocess",
            postprocess_input,
            ExperimentReport,
            task_queue=self._compute_queue,
        )
        self._set_progress(stage=Stage.COMPLETED)
        return report

    async def _stage(
        self,
        stage: Stage,
        activity: str,
        arg: object,
        result_type: type[ResultT],
        *,
        timeout: timedelta = timedelta(minutes=10),
        retry: RetryPolicy = COMPUTE_RETRY,
        task_queue: str | None = None,
    ) -> ResultT:
        """One stage as one activity; `task_queue` None runs it on the workflow's own queue."""
        self._set_progress(stage=stage)
        started = workflow.now()
        result = await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            task_queue=task_queue,
            start_to_close_timeout=timeout,
            retry_policy=retry,
            summary=stage.value,
        )
        self._record_time(stage.value, started)
        return result

    async def _submit(
        self,
        experiment_id: str,
        request: ExperimentRequest,
        plan: ExecutionPlan,
        submission_index: int,
    ) -> JobRef:
        # The token is a pure function of the workflow and the submission index, so a retry after
        # a lost reply finds the first job instead of paying for a second one.
        token = client_token(experiment_id, workflow.info().run_id, submission_index)
        return await self._stage(
            Stage.SUBMITTING,
            "submit",
            SubmitInput(
                backend=request.execution.backend,
                batch_uri=plan.batch_uri,
                shots=request.execution.shots,
                seed=request.execution.seed,
                client_token=token,
            ),
            JobRef,
            timeout=timedelta(minutes=2),
            retry=PROVIDER_RETRY,
        )

    async def _wait_until_done(
        self, job: JobRef, backend: BackendChoice, input: ExperimentInput
    ) -> None:
        self._set_progress(stage=Stage.WAITING, job_state=JobState.QUEUED)
        started = workflow.now()
        deadline = started + input.request.policy.max_queue_wait
        interval = timedelta(seconds=input.polling.initial_seconds)
        ceiling = timedelta(seconds=input.polling.ceiling_seconds)
        while True:
            status = await workflow.execute_activity(
                "check_job",
                JobInput(backend=backend, job=job),
                result_type=JobStatus,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=PROVIDER_RETRY,
                summary="poll",
            )
            self._publish_job_status(status)
            self._set_progress(
                job_state=status.state,
                queue_position=status.queue_position,
                polls=self._progress.polls + 1,
            )
            if status.state == JobState.DONE:
                break
            if status.state.is_final:
                raise ApplicationError(
                    f"job {job.job_id} on {job.device} ended {status.state.value}: "
                    f"{status.message or 'no reason given'}",
                    type="JobFailed",
                    non_retryable=True,
                )
            if workflow.now() >= deadline:
                raise ApplicationError(
                    f"job {job.job_id} still {status.state.value} after the request's "
                    f"max_queue_wait of {input.request.policy.max_queue_wait}",
                    type="QueueDeadlineExceeded",
                    non_retryable=True,
                )
            await workflow.sleep(interval, summary="wait for provider")
            interval = min(interval * 2, ceiling)
        self._record_time(Stage.WAITING.value, started)

    def _publish_job_status(self, status: JobStatus) -> None:
        """Provider status and queue position as search attributes, upserted only on change."""
        if not workflow.patched(JOB_STATUS_ATTRIBUTES_PATCH):
            return
        if (status.state, status.queue_position) == (
            self._progress.job_state,
            self._progress.queue_position,
        ) and self._progress.polls > 0:
            return
        position = (
            attrs.QUEUE_POSITION.value_set(status.queue_position)
            if status.queue_position is not None
            else attrs.QUEUE_POSITION.value_unset()
        )
        workflow.upsert_search_attributes(
            [attrs.JOB_STATUS.value_set(status.state.value), position]
        )

    def _with_resolved_seed(self, request: ExperimentRequest) -> ExperimentRequest:
        """A request without a seed gets one from the workflow's deterministic RNG, so every run
        is reproducible from its manifest."""
        if request.execution.seed is not None:
            return request
        execution = request.execution.model_copy(
            update={"seed": workflow.random().randrange(2**32)}
        )
        return request.model_copy(update={"execution": execution})

    def _record_time(self, name: str, started: datetime) -> None:
        elapsed = workflow.now() - started
        self._timings[name] = round(elapsed.total_seconds(), 3)

    def _set_progress(self, **changes: object) -> None:
        self._progress = self._progress.model_copy(update=changes)
        if self._progress.stage != self._published_stage:
            self._published_stage = self._progress.stage
            workflow.upsert_search_attributes([attrs.STAGE.value_set(self._progress.stage.value)])
        workflow.set_current_details(self._details_markdown())

    def _details_markdown(self) -> str:
        progress = self._progress
        lines = [f"**Stage:** {progress.stage.value}", f"**Backend:** {progress.backend}"]
        if progress.estimated_cost_usd is not None:
            lines.append(f"**Estimated cost:** ${progress.estimated_cost_usd:.2f}")
        if progress.stage == Stage.WAITING:
            state = progress.job_state.value if progress.job_state else "submitted"
            queue = f", queue position {progress.queue_position}" if progress.queue_position else ""
            lines.append(
                f"Waiting for the provider: job {state}{queue}, {progress.polls} polls so far."
            )
        if progress.error:
            lines.append(f"**Error:** {progress.error}")
        return "\n\n".join(lines)
