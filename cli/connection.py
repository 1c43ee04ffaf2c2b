"""Reaching Temporal: the client, the task queue and a workflow's Web UI link."""

from __future__ import annotations

from urllib.parse import quote

from temporalio.client import (
    Client,
)

from schemas.settings import current_settings


def workflow_link(client: Client, workflow_id: str) -> str:
    namespace, workflow = quote(client.namespace), quote(workflow_id, safe="")
    return f"{current_settings().ui_url}/namespaces/{namespace}/workflows/{workflow}"


async def connect() -> Client:
    from activities.runtime.observability import configure_tracing
    from worker import connect as connect_client

    return await connect_client([configure_tracing("qloop-cli")])


def task_queue() -> str:
    return current_settings().task_queue
