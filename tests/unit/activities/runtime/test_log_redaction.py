"""With payload encryption on, a worker's logs keep failures visible (type, ids, attempt, frames)
but never their messages or what a workflow's log line quotes: the request content that history
encrypts. The SDK's own failure lines are produced for real, by a worker on the dev server in
this process (a workflow task failing in a loop left the shared time-skipping server unusable for
the tests after it)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import structlog
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.runtime.observability import (
    REDACTED,
    ActivityLogContext,
    configure_logging,
    payload_encryption_on,
)

MARKER = "qasm-secret-" + uuid.uuid4().hex


@activity.defn(name="refuse_request")
async def refuse_request(qasm: str) -> None:
    try:
        raise ValueError(f"unknown gate in line {qasm!r}")
    except ValueError as error:
        raise ApplicationError(
            f"problem.qasm: {error}", type="InvalidRequest", non_retryable=True
        ) from error


@workflow.defn(sandboxed=False)
class RefusedRequest:
    @workflow.run
    async def run(self, qasm: str) -> None:
        workflow.logger.warning("leaving %s for %s: %s", "braket/qpu", "aer/ideal", qasm)
        await workflow.execute_activity(
            refuse_request,
            qasm,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@workflow.defn(sandboxed=False)
class BrokenWorkflowTask:
    @workflow.run
    async def run(self, qasm: str) -> None:
        raise RuntimeError(f"cannot replay {qasm}")


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, object]]]]:
    """Restores the root logger and structlog after the test configures them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


async def run_failures(env: WorkflowEnvironment) -> str:
    """A workflow whose activity fails with MARKER in its message, and a workflow whose task
    fails with MARKER in its message; returns the first one's id."""
    queue = f"redaction-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[RefusedRequest, BrokenWorkflowTask],
        activities=[refuse_request],
        interceptors=[ActivityLogContext()],
    ):
        refused_id = f"refused-{uuid.uuid4()}"
        with pytest.raises(WorkflowFailureError):
            await env.client.execute_workflow(
                RefusedRequest.run, f"{MARKER} q[0];", id=refused_id, task_queue=queue
            )
        broken = await env.client.start_workflow(
            BrokenWorkflowTask.run, MARKER, id=f"broken-{uuid.uuid4()}", task_queue=queue
        )
        for _ in range(100):
            events = [event.event_type async for event in broken.fetch_history_events()]
            if EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED in events:
                break
            await asyncio.sleep(0.1)
        await broken.terminate("test over")
    return refused_id


async def test_failure_lines_keep_type_ids_and_attempt_but_not_the_request(
    dev_server: WorkflowEnvironment, logs: Callable[[], list[dict[str, object]]]
) -> None:
    configure_logging("INFO", redact=True)
    workflow_id = await run_failures(dev_server)
    lines = logs()
    assert MARKER not in json.dumps(lines)

    (sdk,) = [line for line in lines if str(line["event"]).startswith("Completing activity as")]
    assert sdk["level"] == "warning"
    assert sdk["error_type"] == "ApplicationError(InvalidRequest) <- ValueError"
    details = sdk["temporal_activity"]
    assert isinstance(details, dict)
    assert (details["workflow_id"], details["activity_type"], details["attempt"]) == (
        workflow_id,
        "refuse_request",
        1,
    )
    trace = str(sdk["exception"])
    assert "in refuse_request" in trace and f"ApplicationError(InvalidRequest): {REDACTED}" in trace

    (ours,) = [line for line in lines if line["event"] == "activity failed"]
    assert (ours["workflow_id"], ours["activity"], ours["attempt"]) == (
        workflow_id,
        "refuse_request",
        1,
    )
    assert (ours["error_type"], ours["error"]) == ("ApplicationError(InvalidRequest)", REDACTED)

    (leaving,) = [line for line in lines if str(line["event"]).startswith("leaving ")]
    assert str(leaving["event"]).startswith(f"leaving {REDACTED} for {REDACTED}: {REDACTED}")

    task_failures = [line for line in lines if str(line["event"]).startswith("Failed activation")]
    assert task_failures
    assert task_failures[0]["error_type"] == "RuntimeError"
    assert "BrokenWorkflowTask" in str(task_failures[0]["event"])


async def test_without_encryption_the_same_lines_carry_the_message(
    dev_server: WorkflowEnvironment, logs: Callable[[], list[dict[str, object]]]
) -> None:
    configure_logging("INFO", redact=False)
    await run_failures(dev_server)
    lines = logs()
    (sdk,) = [line for line in lines if str(line["event"]).startswith("Completing activity as")]
    assert MARKER in str(sdk["exception"])
    (leaving,) = [line for line in lines if str(line["event"]).startswith("leaving ")]
    assert MARKER in str(leaving["event"])


def test_a_line_quoting_an_error_outside_any_workflow_loses_only_the_message(
    logs: Callable[[], list[dict[str, object]]],
) -> None:
    configure_logging("INFO", redact=True)
    try:
        raise KeyError(f"payload {MARKER}")
    except KeyError as error:
        logging.getLogger("asyncio").error("Task failed: %s", error, exc_info=True)
    logging.getLogger("qloop.worker").warning("temporal not reachable yet, retrying: %s", "down")
    failed, unreachable = logs()
    assert MARKER not in json.dumps(failed)
    assert (failed["event"], failed["error_type"]) == (f"Task failed: {REDACTED}", "KeyError")
    assert unreachable["event"] == "temporal not reachable yet, retrying: down"


def test_redaction_follows_the_codec_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not payload_encryption_on()
    monkeypatch.setenv("QLOOP_CODEC_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("QLOOP_CODEC_KEY_ID", "k1")
    assert payload_encryption_on()
    monkeypatch.setenv("QLOOP_CODEC_KEY", "not base64 of 32 bytes")
    assert payload_encryption_on()  # a broken key stops the worker later; redact until then
