"""Braket calls made the way someone outside qloop makes them: a plain boto3 client of the QPU
stand-in, a Bell-state task created from raw OpenQASM, a wait until it ended, and the device
spending limits cleared."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.harness import QPU

BUCKET = "qloop-results"
ENDED = {"COMPLETED", "FAILED", "CANCELLED"}
BELL_PROGRAM = {
    "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
    "source": "OPENQASM 3.0;\nqubit[2] q;\nh q[0];\ncnot q[0], q[1];\n",
}


def plain_client(endpoint_url: str) -> Any:
    """boto3's Braket client of the stand-in with any keys, as someone holding the account's
    credentials has; one retry at most, so a test sees what the service answered."""
    return boto3.client(
        "braket",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="outside",
        aws_secret_access_key="outside",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def create_bell_task(
    client: Any,
    *,
    shots: int = 100,
    device: str = QPU,
    prefix: str = "around-qloop",
    token: str | None = None,
) -> str:
    arn: str = client.create_quantum_task(
        clientToken=token or str(uuid.uuid4()),
        deviceArn=device,
        shots=shots,
        outputS3Bucket=BUCKET,
        outputS3KeyPrefix=prefix,
        action=json.dumps(BELL_PROGRAM),
    )["quantumTaskArn"]
    return arn


def refusal_of_bell_task(client: Any, shots: int = 100) -> str:
    """The message of the ValidationException that refuses creating a Bell task."""
    with pytest.raises(ClientError) as raised:
        create_bell_task(client, shots=shots)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    message: str = raised.value.response["Error"]["Message"]
    return message


def task_when_ended(client: Any, arn: str, timeout: float = 60) -> dict[str, Any]:
    """GetQuantumTask once the task COMPLETED, FAILED or was CANCELLED."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get_quantum_task(quantumTaskArn=arn)
        if task["status"] in ENDED:
            return task
        time.sleep(0.1)
    pytest.fail(f"{arn} did not end within {timeout}s")


def delete_spending_limits(client: Any) -> None:
    for limit in client.search_spending_limits()["spendingLimits"]:
        client.delete_spending_limit(spendingLimitArn=limit["spendingLimitArn"])
