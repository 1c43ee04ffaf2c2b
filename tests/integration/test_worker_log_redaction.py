"""A worker with a codec key logs no request content, even when a request fails.

A real worker process with a codec key, at DEBUG, against the session's dev server. A request
whose QASM names a gate made of a unique marker gets past the door (a client that does not use
the CLI) and fails `preprocess`. History holds the failure message, encrypted; the worker's log
(its JSON lines and the SDK core's own output) must show the failure, its type, workflow id,
activity type and attempt, and never the marker.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment

from schemas.payload_encryption import KeyRing, converter_for
from schemas.pipeline import ExperimentInput
from schemas.request import ExperimentRequest
from tests.harness import REPO_ROOT
from tests.server_helpers import wait_until

KEY_ID = "redaction-key"
MARKER = "qsecret" + uuid.uuid4().hex  # a valid gate identifier nobody defines


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing(current=KEY_ID, keys={KEY_ID: os.urandom(32)}, source="test")


@pytest.fixture
def keyed_env(dev_server: WorkflowEnvironment, qloop_home: Path, ring: KeyRing) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QLOOP_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "QLOOP_TASK_QUEUE": f"redaction-{uuid.uuid4().hex[:8]}",
        "QLOOP_HOME": str(qloop_home),
        "QLOOP_CODEC_KEY": base64.b64encode(ring.keys[KEY_ID]).decode(),
        "QLOOP_CODEC_KEY_ID": KEY_ID,
        # The most an operator would turn on: request content must stay out even then.
        "QLOOP_LOG_LEVEL": "DEBUG",
    }


@pytest.fixture
def worker_log(keyed_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=REPO_ROOT, env=keyed_env, stdout=sink, stderr=sink
        )
        try:
            yield log
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def json_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_a_failed_request_leaves_its_failure_but_not_its_content_in_the_log(
    dev_server: WorkflowEnvironment, keyed_env: dict[str, str], worker_log: Path, ring: KeyRing
) -> None:
    client = await Client.connect(keyed_env["TEMPORAL_ADDRESS"], data_converter=converter_for(ring))
    request = ExperimentRequest.model_validate(
        {
            "name": "redaction-probe",
            "problem": {
                "kind": "qasm",
                "qasm": f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\n{MARKER} q[0];\n',
                "observable": {"kind": "pauli_sum", "terms": [{"pauli": "Z"}]},
            },
            "execution": {"shots": 100, "backend": {"provider": "aer", "device": "ideal"}},
            "mitigation": {"zne": None, "readout": False},
        }
    )
    workflow_id = f"redaction-{uuid.uuid4().hex[:8]}"
    with pytest.raises(WorkflowFailureError) as failed:
        await client.execute_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=request),
            id=workflow_id,
            task_queue=keyed_env["QLOOP_TASK_QUEUE"],
        )
    # With the key, the failure says what was wrong: the request's own gate.
    cause = failed.value.cause
    while not isinstance(cause, ApplicationError) or isinstance(cause, ActivityError):
        assert cause is not None and cause.cause is not None, failed.value
        cause = cause.cause
    assert MARKER in str(cause), cause

    def failure_logged() -> bool:
        return any(
            str(line["event"]).startswith("Completing activity as failed")
            for line in json_lines(worker_log)
        )

    wait_until(failure_logged, timeout=30, interval=0.2)
    text = worker_log.read_text()
    assert MARKER not in text
    lines = json_lines(worker_log)
    failures = [line for line in lines if str(line["event"]).startswith("Completing activity as")]
    details = failures[0]["temporal_activity"]
    assert isinstance(details, dict)
    assert (details["workflow_id"], details["activity_type"], details["attempt"]) == (
        workflow_id,
        "preprocess",
        1,
    )
    assert "InvalidRequest" in str(failures[0]["error_type"])
    ours = [line for line in lines if line["event"] == "activity failed"]
    assert ours and ours[0]["workflow_id"] == workflow_id
    assert "InvalidRequest" in str(ours[0]["error_type"])
