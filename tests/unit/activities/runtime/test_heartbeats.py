"""Long work in an activity heartbeats while it runs and returns its result; CPU work runs in a
child process and a runaway task fails its activity with a named, non-retryable error."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.runtime import heartbeats
from adapters.process_pool import Limits, ProcessPool
from schemas import error_types
from tests import compute_tasks


@pytest.fixture
def beats(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    monkeypatch.setattr(heartbeats, "HEARTBEAT_INTERVAL_SECONDS", 0.02)
    return []


@pytest.fixture(scope="module")
def small_pool() -> Iterator[ProcessPool]:
    pool = ProcessPool(1, Limits(memory_bytes=600 << 20, time_seconds=2.0), tasks_per_child=50)
    try:
        yield pool
    finally:
        pool.close()


def environment(beats: list[tuple[object, ...]]) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    return env


async def test_work_that_outlasts_the_interval_heartbeats_until_done(
    beats: list[tuple[object, ...]],
) -> None:
    def slow() -> str:
        time.sleep(0.3)
        return "done"

    assert await environment(beats).run(heartbeats.in_thread_with_heartbeats, slow) == "done"
    assert len(beats) >= 5


async def test_quick_work_returns_without_a_heartbeat() -> None:
    beats: list[tuple[object, ...]] = []
    assert await environment(beats).run(heartbeats.in_thread_with_heartbeats, lambda: 42) == 42
    assert beats == []


async def test_work_in_a_child_heartbeats_and_returns(
    beats: list[tuple[object, ...]], small_pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeats, "shared_pool", lambda: small_pool)
    env = environment(beats)
    assert await env.run(heartbeats.in_child_with_heartbeats, compute_tasks.sleep, 0.3) == 0.3
    assert len(beats) >= 5


async def test_a_runaway_task_fails_its_activity_naming_the_limit_and_the_workflow(
    beats: list[tuple[object, ...]], small_pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeats, "shared_pool", lambda: small_pool)
    env = environment(beats)
    with pytest.raises(ApplicationError) as raised:
        await env.run(heartbeats.in_child_with_heartbeats, compute_tasks.hog_memory, 20)
    error = raised.value
    assert error.type == error_types.RESOURCE_LIMIT_EXCEEDED
    assert error.non_retryable
    assert "exceeded its memory limit" in error.message
    assert "limit 600 MB (QLOOP_TASK_MEMORY_MB)" in error.message
    assert f"of {env.info.workflow_id}" in error.message  # names the request it served
    with pytest.raises(ApplicationError) as raised:
        await env.run(heartbeats.in_child_with_heartbeats, compute_tasks.spin, None)
    assert raised.value.type == error_types.RESOURCE_LIMIT_EXCEEDED
    assert "exceeded its time limit" in raised.value.message


async def test_a_dead_child_fails_its_activity_as_retryable(
    small_pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeats, "shared_pool", lambda: small_pool)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            heartbeats.in_child_with_heartbeats, compute_tasks.abort, None
        )
    assert raised.value.type == error_types.COMPUTE_PROCESS_DIED
    assert not raised.value.non_retryable


async def test_errors_of_the_work_reach_the_activity_as_themselves(
    small_pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeats, "shared_pool", lambda: small_pool)
    with pytest.raises(ValueError, match=r"problem\.qasm: line 2"):
        await ActivityEnvironment().run(
            heartbeats.in_child_with_heartbeats, compute_tasks.refuse, "problem.qasm: line 2"
        )


async def test_work_that_keeps_failing_is_given_up_after_a_few_attempts(
    small_pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry policy has no limit, so that attempts lost with a worker never count; the
    activity stops retrying work that fails by itself."""
    monkeypatch.setattr(heartbeats, "shared_pool", lambda: small_pool)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=heartbeats.ATTEMPTS_ON_ERROR - 1)
    with pytest.raises(ValueError, match="flaky"):
        await env.run(heartbeats.in_child_with_heartbeats, compute_tasks.refuse, "flaky")
    env.info = dataclasses.replace(env.info, attempt=heartbeats.ATTEMPTS_ON_ERROR)
    with pytest.raises(ApplicationError) as raised:
        await env.run(heartbeats.in_child_with_heartbeats, compute_tasks.refuse, "flaky")
    assert (raised.value.type, raised.value.non_retryable) == ("ValueError", True)
    assert "flaky (given up after 4 attempts)" in raised.value.message


@pytest.mark.parametrize(
    ("error_class", "error_type", "non_retryable"),
    [
        ("TransientError", error_types.TRANSIENT, False),
        ("RejectedError", error_types.REJECTED, True),
        ("InvalidRequestError", error_types.INVALID_REQUEST, True),
    ],
)
async def test_a_providers_error_leaves_as_its_class_whatever_the_attempt(
    small_pool: ProcessPool,
    monkeypatch: pytest.MonkeyPatch,
    error_class: str,
    error_type: str,
    non_retryable: bool,
) -> None:
    """A device asked while planning: throttling is retried for as long as it lasts (never given
    up after a few attempts), a rejection falls back at once, like a provider call's."""
    monkeypatch.setattr(heartbeats, "shared_pool", lambda: small_pool)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=heartbeats.ATTEMPTS_ON_ERROR + 5)
    with pytest.raises(ApplicationError) as raised:
        await env.run(
            heartbeats.in_child_with_heartbeats, compute_tasks.provider_refuses, error_class
        )
    assert (raised.value.type, raised.value.non_retryable) == (error_type, non_retryable)
    assert raised.value.message == f"the device said no ({error_class})"
