"""Why a workflow that should have closed is still running, in a few lines: what it waits on
(pending activities and workflow task), failed workflow tasks (nondeterminism), and its last
events. A chaos test that gives up on a workflow says this, since on CI there is nothing else to
look at afterwards."""

from __future__ import annotations

from temporalio.api.enums.v1 import (
    EventType,
    PendingActivityState,
    PendingWorkflowTaskState,
    WorkflowTaskFailedCause,
)
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle

LAST_EVENTS = 12
TEXT_LIMIT = 300


async def why_still_running(handle: WorkflowHandle) -> str:
    """Most telling last, since CI shows the end of its output: the last events, then what the
    workflow waits on, then its failed workflow tasks."""
    description = await handle.describe()
    raw = description.raw_description
    events = [event async for event in handle.fetch_history_events()]
    lines = [f"{handle.id} (run {description.run_id}), {description.history_length} events; last:"]
    lines.extend(f"    {_event_line(event)}" for event in events[-LAST_EVENTS:])
    if raw.HasField("pending_workflow_task"):
        task = raw.pending_workflow_task
        state = PendingWorkflowTaskState.Name(task.state)
        lines.append(f"  pending workflow task: {state}, attempt {task.attempt}")
    for pending in raw.pending_activities:
        failure = pending.last_failure.message[:TEXT_LIMIT]
        lines.append(
            f"  pending activity {pending.activity_type.name} (id {pending.activity_id}): "
            f"{PendingActivityState.Name(pending.state)}, attempt {pending.attempt}, "
            f"last worker {pending.last_worker_identity or '-'}, last failure {failure or '-'}"
        )
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failed = event.workflow_task_failed_event_attributes
            cause = WorkflowTaskFailedCause.Name(failed.cause)
            lines.append(
                f"  workflow task failed at event {event.event_id}: {cause}: "
                f"{failed.failure.message[:TEXT_LIMIT]}"
            )
    return "\n".join(lines)


def _event_line(event: HistoryEvent) -> str:
    name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    detail = ""
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        detail = event.activity_task_scheduled_event_attributes.activity_type.name
    elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
        detail = event.workflow_execution_signaled_event_attributes.signal_name
    elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
        timeout = event.timer_started_event_attributes.start_to_fire_timeout
        detail = f"{timeout.ToTimedelta().total_seconds():g} s"
    elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        detail = event.activity_task_failed_event_attributes.failure.message[:TEXT_LIMIT]
    at = event.event_time.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
    return f"{event.event_id} {at} {name} {detail}".rstrip()
