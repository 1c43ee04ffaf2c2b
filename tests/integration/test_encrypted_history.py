"""Histories written with a codec key hold no request, circuit or result in clear text.

A real worker process and the `qloop` CLI run with a codec key in their environment against the
session's dev server; the test then reads the histories twice: with a plain client (what the
server, its database and anyone without the key see) and with the key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from schemas.payload_encryption import ENCRYPTED_ENCODING, KeyRing, converter_for
from schemas.pipeline import ExperimentInput
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_ID = "it-key"
# Fields that are not payloads of the experiment: search attributes are indexed in clear text by
# design, and headers carry only the trace context.
CLEAR_TEXT_FIELDS = ("search_attributes", "header")
# The SDK's own bookkeeping in its markers, written without the codec: a patch marker's patch id,
# a local activity marker's sequence number, type and timings (its result is encrypted).
SDK_MARKER_BOOKKEEPING = {"core_patch": "patch-data", "core_local_activity": "data"}
ROTATION = "ry(0.3141) q[0];"


def qasm_request(name: str, body: str) -> dict[str, object]:
    return {
        "schema_version": 1,
        "name": name,
        "problem": {
            "kind": "qasm",
            "qasm": f'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nbit[1] c;\n{body}\n'
            "c = measure q;\n",
            "observable": {"kind": "pauli_sum", "terms": [{"pauli": "Z", "coefficient": 1.0}]},
        },
        "execution": {"shots": 3000, "seed": 11, "backend": {"provider": "aer", "device": "ideal"}},
        "mitigation": {"zne": None, "readout": False},
    }


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing(current=KEY_ID, keys={KEY_ID: os.urandom(32)}, source="test")


@pytest.fixture
def keyed_env(dev_server: WorkflowEnvironment, qloop_home: Path, ring: KeyRing) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("QLOOP_CODEC")},
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "QLOOP_TASK_QUEUE": f"enc-{uuid.uuid4().hex[:8]}",
        "QLOOP_HOME": str(qloop_home),
        "QLOOP_CODEC_KEY": base64.b64encode(ring.keys[KEY_ID]).decode(),
        "QLOOP_CODEC_KEY_ID": KEY_ID,
    }


@pytest.fixture
def worker_log(keyed_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=REPO_ROOT, env=keyed_env, stdout=sink, stderr=sink
        )
        try:
            yield log
        finally:
            worker.terminate()
            worker.wait(timeout=30)


@pytest_asyncio.fixture(loop_scope="session")
async def keyed_client(dev_server: WorkflowEnvironment, ring: KeyRing) -> AsyncIterator[Client]:
    yield await Client.connect(
        dev_server.client.service_client.config.target_host, data_converter=converter_for(ring)
    )


def nested(message: Message, path: str = "") -> Iterator[tuple[str, Message]]:
    """`message` and every message inside it, with its field path."""
    yield path, message
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            items = [(f"{where}[{key}]", item) for key, item in value.items()]
        else:
            items = [(where, item) for item in (value if field.is_repeated else [value])]
        for item_path, item in items:
            yield from nested(item, item_path)


def assert_nothing_in_clear_text(events: list[HistoryEvent], secrets: list[str]) -> int:
    """Every experiment payload is encrypted and no secret appears anywhere in the raw events;
    returns how many encrypted payloads were seen."""
    encrypted = 0
    for event in events:
        raw = event.SerializeToString()
        for secret in secrets:
            assert secret.encode() not in raw, (secret, EventType.Name(event.event_type))
        marker = event.marker_recorded_event_attributes.marker_name
        bookkeeping = SDK_MARKER_BOOKKEEPING.get(marker)
        clear_text = [*CLEAR_TEXT_FIELDS, f"details[{bookkeeping}]" if bookkeeping else "-"]
        for path, inner in nested(event):
            if isinstance(inner, Failure):
                assert (inner.message, inner.stack_trace) == ("Encoded failure", ""), path
            if not isinstance(inner, Payload) or any(f in path for f in clear_text):
                continue
            assert inner.metadata["encoding"] == ENCRYPTED_ENCODING, path
            assert inner.metadata["encryption-key-id"] == KEY_ID.encode(), path
            encrypted += 1
    return encrypted


async def test_history_shows_no_request_circuit_or_result_without_the_key(
    dev_server: WorkflowEnvironment,
    keyed_env: dict[str, str],
    keyed_client: Client,
    worker_log: Path,
    tmp_path: Path,
) -> None:
    name = f"confidential-{uuid.uuid4().hex[:6]}"
    request_file = tmp_path / "request.yaml"
    request_file.write_text(yaml.safe_dump(qasm_request(name, ROTATION)))
    workflow_id = f"enc-{uuid.uuid4().hex[:8]}"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "starter.py", "run", str(request_file), "--id", workflow_id,
        "--wait", "--json",
        cwd=REPO_ROOT, env=keyed_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(cli.communicate(), timeout=300)
    assert cli.returncode == 0, stderr.decode() + worker_log.read_text()[-3000:]
    report = ExperimentReport.model_validate_json(stdout)
    results = [repr(report.raw.value), repr(report.ideal_value)]
    assert all(len(text) >= 5 for text in results), results  # long enough to never match by chance

    history = await dev_server.client.get_workflow_handle(workflow_id).fetch_history()
    encrypted = assert_nothing_in_clear_text(history.events, [name, ROTATION, *results])
    assert encrypted >= 10  # input, result, static summary and details, every activity's in/out

    # With the key, the same history reads back: the request, its summary and the result.
    decoded = await keyed_client.get_workflow_handle(workflow_id).fetch_history()
    started = decoded.events[0].workflow_execution_started_event_attributes
    [experiment] = await keyed_client.data_converter.decode(
        started.input.payloads, [ExperimentInput]
    )
    assert experiment.request.name == name and ROTATION in experiment.request.problem.qasm
    [summary] = await keyed_client.data_converter.decode([decoded.events[0].user_metadata.summary])
    assert summary.startswith(f"{name}: qasm")
    completed = decoded.events[-1].workflow_execution_completed_event_attributes
    [result] = await keyed_client.data_converter.decode(
        completed.result.payloads, [ExperimentReport]
    )
    assert result == report


async def test_failure_messages_are_encrypted_too(
    dev_server: WorkflowEnvironment,
    keyed_env: dict[str, str],
    keyed_client: Client,
    worker_log: Path,
) -> None:
    """A request refused inside the workflow (a reset, started past the CLI's door): the
    activity's and the workflow's failure messages are in history only as ciphertext."""
    name = f"confidential-{uuid.uuid4().hex[:6]}"
    request = ExperimentRequest.model_validate(qasm_request(name, f"{ROTATION}\nreset q[0];"))
    handle = await keyed_client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request),
        id=f"enc-fail-{uuid.uuid4().hex[:8]}",
        task_queue=keyed_env["QLOOP_TASK_QUEUE"],
        result_type=ExperimentReport,
    )
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), timeout=120)

    history = await dev_server.client.get_workflow_handle(handle.id).fetch_history()
    events = history.events
    assert_nothing_in_clear_text(events, [name, ROTATION, "reset on"])
    failed = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert failed, [EventType.Name(e.event_type) for e in events]

    decoded = await keyed_client.data_converter.decode_failure(
        failed[0].activity_task_failed_event_attributes.failure
    )
    assert "reset on" in str(decoded), worker_log.read_text()[-3000:]
