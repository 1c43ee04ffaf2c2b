"""Long work inside an activity, heartbeating while it runs, so that a worker killed mid-way is
noticed within the caller's heartbeat timeout instead of its (long) start-to-close timeout.

- `in_child_with_heartbeats`: CPU work (transpile, simulate, fold, mitigate, baselines) in a child
  process of the worker's compute pool (adapters/process_pool.py), under its memory and time
  limits. A task over a limit fails its activity with ResourceLimitExceeded, never retried; the
  worker stays up.
- `in_thread_with_heartbeats`: I/O-bound work (provider calls) on a thread of the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.providers.provider_failures import as_application_error
from adapters.errors import ProviderError
from adapters.process_pool import ChildDied, LimitExceeded, shared_pool
from schemas import error_types

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
HEARTBEAT_INTERVAL_SECONDS = 2.0
ATTEMPTS_ON_ERROR = 4
"""Attempts after which a CPU stage whose work keeps failing is given up. The retry policy has no
limit of its own: attempts that a dead worker cost (heartbeat timeouts) never count."""


async def in_child_with_heartbeats(function: Callable[[ArgT], ResultT], argument: ArgT) -> ResultT:
    """`function(argument)` in a child process; `function` must be a module-level function and
    its argument and result picklable. Errors it raises reach the caller as themselves, but
    for a provider's, which leave as the ApplicationError of their class."""
    task = shared_pool().submit(function, argument, _label())
    try:
        return await _heartbeat_until_done(asyncio.wrap_future(task.future))
    except asyncio.CancelledError:
        task.cancel()
        raise
    except LimitExceeded as error:
        raise ApplicationError(
            str(error), error.limit, type=error_types.RESOURCE_LIMIT_EXCEEDED, non_retryable=True
        ) from None
    except ChildDied as error:
        raise ApplicationError(
            str(error), type=error_types.COMPUTE_PROCESS_DIED, non_retryable=_last_attempt()
        ) from None
    except ApplicationError:
        raise
    except ProviderError as error:
        # A provider asked during CPU work (a device's properties): its class decides, as for
        # a provider call, not the attempt count.
        raise as_application_error(error) from error
    except Exception as error:
        if not _last_attempt():
            raise
        raise ApplicationError(
            f"{error} (given up after {ATTEMPTS_ON_ERROR} attempts)",
            type=type(error).__name__,
            non_retryable=True,
        ) from error


async def in_thread_with_heartbeats(work: Callable[[], ResultT]) -> ResultT:
    return await _heartbeat_until_done(asyncio.ensure_future(asyncio.to_thread(work)))


async def _heartbeat_until_done(work: asyncio.Future[ResultT]) -> ResultT:
    while True:
        done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_INTERVAL_SECONDS)
        if done:
            return work.result()
        activity.heartbeat()


def _last_attempt() -> bool:
    return activity.in_activity() and activity.info().attempt >= ATTEMPTS_ON_ERROR


def _label() -> str:
    """What the task is, for the errors that name it: the stage and the workflow it serves."""
    if not activity.in_activity():
        return "a compute task"
    info = activity.info()
    return f"{info.activity_type} of {info.workflow_id}"
