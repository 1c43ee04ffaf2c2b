"""Temporal's cancellation of a workflow, seen through the activity it interrupted.

A cancelled workflow cancels the activity it awaits, and the await raises ActivityError with a
CancelledError cause, not asyncio.CancelledError. A workflow that turns every ActivityError into
its own failure would then end FAILED ("... failed: Cancelled") instead of CANCELED.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception

# Runs recorded before this turned the cancelled activity into a failure.
CANCELLED_ACTIVITY_PATCH = "cancelled-activity-ends-cancelled"


def cancelled_by_request(error: BaseException) -> bool:
    """The error is the workflow's own cancellation arriving through an activity (or a wait):
    the workflow ends cancelled, not failed."""
    return is_cancelled_exception(error) and workflow.patched(CANCELLED_ACTIVITY_PATCH)
