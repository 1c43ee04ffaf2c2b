"""Long CPU work in an activity heartbeats while it runs and returns its result."""

from __future__ import annotations

import time

import pytest
from temporalio.testing import ActivityEnvironment

from activities import heartbeats


async def test_work_that_outlasts_the_interval_heartbeats_until_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heartbeats, "HEARTBEAT_INTERVAL_SECONDS", 0.02)
    env = ActivityEnvironment()
    beats: list[tuple[object, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    def slow() -> str:
        time.sleep(0.3)
        return "done"

    assert await env.run(heartbeats.in_thread_with_heartbeats, slow) == "done"
    assert len(beats) >= 5


async def test_quick_work_returns_without_a_heartbeat() -> None:
    env = ActivityEnvironment()
    beats: list[tuple[object, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    assert await env.run(heartbeats.in_thread_with_heartbeats, lambda: 42) == 42
    assert beats == []
