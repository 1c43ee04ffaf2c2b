"""Bad input that reaches the hardware path ends with a clear error and no task at the provider:
refused at the CLI's door, and refused by the workflow when a client bypasses the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

import cli.start
from cli.output import EXIT_INVALID
from schemas.pipeline import ExperimentInput
from schemas.request import ExperimentRequest
from tests.harness import OFFLINE_QPU, QPU, LocalStack

UNKNOWN_QPU = "arn:aws:braket:us-east-1::device/qpu/qloop/Nowhere-99"


def request_on(device: str, *, shots: int = 100, qubits: int = 3) -> dict[str, Any]:
    return {
        "name": "hardware-refusal",
        "problem": {"kind": "ghz", "num_qubits": qubits},
        "execution": {"shots": shots, "backend": {"provider": "braket", "device": device}},
        "mitigation": {"zne": None, "readout": False},
    }


CASES = [
    ("device-offline", request_on(OFFLINE_QPU), ["offline"]),
    ("unknown-arn", request_on(UNKNOWN_QPU), ["Nowhere-99"]),
    ("shots-above-device-maximum", request_on(QPU, shots=150_000), ["execution.shots", "100000"]),
    ("more-qubits-than-device", request_on(QPU, qubits=20), ["20 qubits", "16"]),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        tmp_path_factory.mktemp("refusals"), task_queue=f"ref-{uuid.uuid4().hex[:8]}"
    )
    local.start()
    local.set_faults()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def provider_env(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack.worker_env().items():
        if key.startswith(("QLOOP_BRAKET", "QLOOP_S3", "AWS_")):
            monkeypatch.setenv(key, value)


@pytest.mark.parametrize(("case", "request_data", "words"), CASES, ids=[c[0] for c in CASES])
def test_refused_at_the_door_and_nothing_reaches_the_device(
    case: str,
    request_data: dict[str, Any],
    words: list[str],
    stack: LocalStack,
    provider_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = len(stack.tasks())
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(request_data))
    with pytest.raises(SystemExit) as exit_info:
        cli.start.admit_or_exit(str(path))
    assert exit_info.value.code == EXIT_INVALID
    message = capsys.readouterr().err
    for word in words:
        assert word.lower() in message.lower(), message
    assert len(stack.tasks()) == before


async def test_a_workflow_started_without_the_cli_fails_clearly_and_creates_no_task(
    stack: LocalStack,
) -> None:
    before = len(stack.tasks())
    worker = stack.start_worker()
    client = await Client.connect(stack.address, data_converter=pydantic_data_converter)
    try:
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(
                "ExperimentWorkflow",
                ExperimentInput(request=ExperimentRequest.model_validate(request_on(OFFLINE_QPU))),
                id=f"offline-{uuid.uuid4().hex[:6]}",
                task_queue=stack.task_queue,
            )
    finally:
        stack.kill_worker(worker)
    message = str(failure.value.cause)
    assert "preprocessing failed" in message and "offline" in message.lower()
    assert len(stack.tasks()) == before
