"""Timeouts and retry policies of every activity call, in one place.

Any worker may die at any moment. Every activity therefore either finishes in seconds under
QUICK_TIMEOUT, or heartbeats and is called with HEARTBEAT_TIMEOUT: a worker killed with SIGKILL
costs at most that (plus the retry's first backoff), never a long start-to-close timeout. The
long start-to-close timeouts below are outer bounds for work that is alive and heartbeating.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from schemas import error_types

HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""How long a heartbeating activity may stay silent before the server gives it to another worker
(activities heartbeat every couple of seconds: activities.runtime.heartbeats)."""

QUICK_TIMEOUT = timedelta(seconds=15)
"""Ledger, breaker and policy calls, artifact bookkeeping: seconds each."""

COMPUTE_TIMEOUT = timedelta(hours=2)
"""Outer bound of a CPU stage. Its child process has its own time limit
(QLOOP_TASK_TIME_LIMIT_SECONDS) and may wait for a free one first."""

POLL_TIMEOUT = timedelta(minutes=2)
"""Outer bound of one provider poll, which heartbeats: a batch's status is one call per task."""

PROVIDER_TIMEOUT = timedelta(minutes=30)
"""Outer bound of submit, fetch and cancel, which heartbeat: a batch of many provider tasks is
created, downloaded or cancelled one task at a time."""

# Computation stages are pure functions of their input, retried for as long as workers keep dying
# under them; work that keeps failing by itself is given up after a few attempts by the activity
# (activities.runtime.heartbeats.ATTEMPTS_ON_ERROR), since attempts here would count lost workers
# too. The short ceiling keeps a stage that lost several workers in a row from waiting long after
# the last one.
COMPUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[
        error_types.INVALID_REQUEST,
        error_types.RESOURCE_LIMIT_EXCEEDED,
        error_types.BATCH_TOO_LARGE,
        error_types.EXTRAPOLATION_FAILED,
    ],
)

# Provider calls are idempotent (client token), so they may be retried for as long as it takes
# a provider to recover from throttling or an outage.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=30,
    non_retryable_error_types=[
        error_types.INVALID_REQUEST,
        error_types.REJECTED,
        error_types.JOB_FAILED,
    ],
)

# Ledger and breaker calls are idempotent updates to entity workflows on the same cluster: retry
# them for as long as the cluster needs to come back.
ENTITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)

# Writing a small artifact: retried quickly, for as long as a lost worker takes to come back.
ARTIFACT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
