"""Fixtures of the workflow tests: qloop workers on fresh task queues."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol

import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from worker import WORKFLOWS, all_activities


class StartWorker(Protocol):
    async def __call__(
        self, client: Client, activities: Sequence[Callable[..., Any]] | None = None
    ) -> str: ...


@pytest_asyncio.fixture
async def start_worker() -> AsyncIterator[StartWorker]:
    """Starts a worker with every qloop workflow, and every qloop activity unless `activities`
    are given instead, on a fresh task queue of `client`, and returns the queue. Every worker
    started stops when the test ends."""
    async with AsyncExitStack() as workers:

        async def start(
            client: Client, activities: Sequence[Callable[..., Any]] | None = None
        ) -> str:
            task_queue = f"test-{uuid.uuid4().hex}"
            await workers.enter_async_context(
                Worker(
                    client,
                    task_queue=task_queue,
                    workflows=WORKFLOWS,
                    activities=all_activities() if activities is None else activities,
                )
            )
            return task_queue

        yield start
