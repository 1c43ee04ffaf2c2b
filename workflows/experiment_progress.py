"""An experiment's progress as people see it: the `progress` query, the search attributes the
Web UI and `qloop list` filter on, the markdown details of the Web UI, and how long each stage
took (for the report).

Stages that are one activity run through `stages` (workflows/timed_stages.py), which publishes
each as it begins; the paid execution's stages (reserve, submit, wait, fetch) are timed from
`enter_paid_stage` until the next stage begins.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from schemas.execution import JobState, JobStatus
    from schemas.pipeline import ApprovalRequirement, Progress, Stage
    from schemas.request import BackendChoice
    from workflows import search_attributes as attrs
    from workflows.experiment_details import details_markdown
    from workflows.paid_execution import describe_backend
    from workflows.timed_stages import TimedStages

JOB_STATUS_ATTRIBUTES_PATCH = "job-status-search-attributes"


class ExperimentProgress:
    def __init__(self, pending_approval: Callable[[], ApprovalRequirement | None]) -> None:
        self.current = Progress(stage=Stage.PREPROCESSING, backend="")
        self.stages = TimedStages(on_stage=self._enter_stage)
        self._published_stage: Stage | None = None
        self._paid_stage: tuple[Stage, datetime] | None = None
        self._pending_approval = pending_approval

    def set(self, **changes: object) -> None:
        self.current = self.current.model_copy(update=changes)
        if self.current.stage != self._published_stage:
            self._published_stage = self.current.stage
            workflow.upsert_search_attributes([attrs.STAGE.value_set(self.current.stage.value)])
        workflow.set_current_details(
            details_markdown(self.current, self._pending_approval(), workflow.info().workflow_id)
        )

    def _enter_stage(self, stage: Stage) -> None:
        self.close_paid_stage()
        self.set(stage=stage)

    def switch_backend(self, backend: BackendChoice) -> None:
        name = describe_backend(backend)
        if name != self.current.backend:
            workflow.upsert_search_attributes(
                [attrs.BACKEND.value_set(name), attrs.PROVIDER.value_set(backend.provider)]
            )
        self.set(backend=name, job_state=None, queue_position=None, polls=0)

    # --- the paid execution's stages and polls --------------------------------------------------

    def enter_paid_stage(self, stage: Stage) -> None:
        self.close_paid_stage()
        self._paid_stage = (stage, workflow.now())
        if stage == Stage.WAITING:
            self.set(stage=stage, job_state=JobState.QUEUED, polls=0)
        else:
            self.set(stage=stage)

    def close_paid_stage(self) -> None:
        if self._paid_stage is not None:
            stage, started = self._paid_stage
            self.stages.record(stage, started)
            self._paid_stage = None

    def job_status(self, status: JobStatus) -> None:
        self._publish_job_status(status)
        self.set(
            job_state=status.state,
            queue_position=status.queue_position,
            polls=self.current.polls + 1,
        )

    def _publish_job_status(self, status: JobStatus) -> None:
        """Provider status and queue position as search attributes, upserted only on change."""
        if not workflow.patched(JOB_STATUS_ATTRIBUTES_PATCH):
            return
        if (status.state, status.queue_position) == (
            self.current.job_state,
            self.current.queue_position,
        ) and self.current.polls > 0:
            return
        position = (
            attrs.QUEUE_POSITION.value_set(status.queue_position)
            if status.queue_position is not None
            else attrs.QUEUE_POSITION.value_unset()
        )
        workflow.upsert_search_attributes(
            [attrs.JOB_STATUS.value_set(status.state.value), position]
        )
