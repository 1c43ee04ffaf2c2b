"""Builds the Temporal client and the qloop worker; nothing else.

The connection comes from Temporal's standard environment configuration (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS settings, TEMPORAL_PROFILE and the config file), so
the same worker runs against the local dev server, a self-hosted cluster or Temporal Cloud.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from activities.mitigate import mitigate_activity
from activities.observability import (
    ActivityLogContext,
    configure_logging,
    configure_tracing,
    temporal_runtime,
)
from activities.plan import plan_activity
from activities.postprocess import postprocess_activity
from activities.preprocess import preprocess_activity
from activities.prevalidate import prevalidate_activity
from activities.provider_calls import (
    cancel_job_activity,
    check_job_activity,
    fetch_result_activity,
    submit_activity,
)
from workflows.experiment import ExperimentWorkflow

TASK_QUEUE = os.environ.get("QLOOP_TASK_QUEUE", "qloop")
WORKFLOWS = [ExperimentWorkflow]
ACTIVITIES = [
    preprocess_activity,
    prevalidate_activity,
    plan_activity,
    submit_activity,
    check_job_activity,
    fetch_result_activity,
    cancel_job_activity,
    mitigate_activity,
    postprocess_activity,
]


async def connect(interceptors: list[Interceptor] | None = None) -> Client:
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    runtime = temporal_runtime()
    return await Client.connect(
        **config,
        data_converter=pydantic_data_converter,
        interceptors=interceptors or [],
        **({"runtime": runtime} if runtime else {}),
    )


def build_worker(client: Client, task_queue: str = TASK_QUEUE) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=ACTIVITIES,
        interceptors=[ActivityLogContext()],
        # After a kill -9 the server waits this long before handing a cached workflow's next task
        # to another worker; a short wait lets a restarted worker resume within one poll interval.
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=float(os.environ.get("QLOOP_STICKY_TIMEOUT_SECONDS", "3"))
        ),
        max_concurrent_activities=int(os.environ.get("QLOOP_MAX_CONCURRENT_ACTIVITIES", "8")),
    )


async def main() -> None:
    configure_logging()
    client = await connect([configure_tracing("qloop-worker")])
    worker = build_worker(client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
