"""The type names of the errors that cross an activity boundary (ApplicationError.type).

Activities raise them, workflows and retry policies decide on them; both refer to these names so
that a renamed error breaks at import, not in production.
"""

from __future__ import annotations

INVALID_REQUEST = "InvalidRequest"
"""The request or circuit cannot run: never retried, shown as is."""

RESOURCE_LIMIT_EXCEEDED = "ResourceLimitExceeded"
"""A CPU task went over its child process's memory or time limit: never retried."""

COMPUTE_PROCESS_DIED = "ComputeProcessDied"
"""A CPU task's child process died without an answer and no limit explains it: retried."""

TRANSIENT = "Transient"
REJECTED = "Rejected"
JOB_FAILED = "JobFailed"
QUEUE_DEADLINE_EXCEEDED = "QueueDeadlineExceeded"
JOB_NOT_DONE = "JobNotDone"
"""`wait_for_job` while the job still queues or runs: retried at the poll ceiling until done."""

BATCH_TOO_LARGE = "BatchTooLargeError"
"""activities.experiment.plan.BatchTooLargeError, named by its class as Temporal names unhandled
errors."""

EXTRAPOLATION_FAILED = "ExtrapolationFailedError"
"""activities.experiment.mitigate.ExtrapolationFailedError, likewise."""

ARTIFACT_OUTSIDE_STORE = "ArtifactOutsideStore"
"""An artifact URL outside the configured store (QLOOP_ARTIFACT_URL): never retried."""

POLICY_REFUSED = "PolicyRefused"
"""The account's policy forbids the submission (or it needs an approval nobody can give)."""

POLICY_FILE_INVALID = "PolicyFileInvalid"
"""The policy file on a worker cannot be read or does not validate."""

DECISION_REFUSED = "DecisionRefused"
"""An approval or rejection that is not the approvers' to give (or not signed as required)."""

INVALID_VALUES = "InvalidValues"
"""A loop iteration's measured values are not finite numbers."""

NO_BACKEND_LEFT = "NoBackendLeft"
"""Every backend of the experiment's fallback chain failed or was left."""
