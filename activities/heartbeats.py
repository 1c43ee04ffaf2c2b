"""CPU-bound work in a thread while the activity heartbeats, so that a worker killed mid-way is
noticed within the caller's heartbeat timeout instead of its (long) start-to-close timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from temporalio import activity

ResultT = TypeVar("ResultT")
HEARTBEAT_INTERVAL_SECONDS = 5.0


async def in_thread_with_heartbeats(work: Callable[[], ResultT]) -> ResultT:
    task = asyncio.ensure_future(asyncio.to_thread(work))
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_INTERVAL_SECONDS)
        if done:
            return task.result()
        activity.heartbeat()
