"""The QPU stand-in's spending limits (temporal-dev/qpu_standin/spending_limits.py) through plain
boto3: Create/Update/Delete/SearchSpendingLimits, and what CreateQuantumTask does on a limited
device. Guadalupe-16 costs $0.30 per task plus $0.0009 per shot, so 100 shots are $0.39."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.harness import OFFLINE_QPU, QPU, LocalStack

pytestmark = pytest.mark.integration

BUCKET = "qloop-results"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
HUNDRED_SHOTS = Decimal("0.39")


@pytest.fixture
def braket(standin: LocalStack) -> Iterator[Any]:
    """A plain boto3 client of the stand-in; the device has no spending limit before or after."""
    client = boto3.client(
        "braket",
        region_name="us-east-1",
        endpoint_url=standin.standin_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    standin.set_faults()
    _delete_limits(client)
    yield client
    standin.set_faults()
    _delete_limits(client)


def _delete_limits(client: Any) -> None:
    for limit in client.search_spending_limits()["spendingLimits"]:
        client.delete_spending_limit(spendingLimitArn=limit["spendingLimitArn"])


def _limit(client: Any, amount: str, **extra: Any) -> str:
    arn: str = client.create_spending_limit(
        clientToken=str(uuid.uuid4()), deviceArn=QPU, spendingLimit=amount, **extra
    )["spendingLimitArn"]
    return arn


def _summary(client: Any) -> dict[str, Any]:
    found = client.search_spending_limits(
        filters=[{"name": "deviceArn", "values": [QPU], "operator": "EQUAL"}]
    )["spendingLimits"]
    assert len(found) == 1
    summary: dict[str, Any] = found[0]
    return summary


def _spend(client: Any) -> tuple[Decimal, Decimal]:
    """(queuedSpend, totalSpend) of the device's limit."""
    summary = _summary(client)
    return Decimal(summary["queuedSpend"]), Decimal(summary["totalSpend"])


def _create(client: Any, shots: int = 100) -> str:
    program = {
        "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
        "source": "OPENQASM 3.0;\nqubit[2] q;\nh q[0];\ncnot q[0], q[1];\n",
    }
    arn: str = client.create_quantum_task(
        clientToken=str(uuid.uuid4()),
        deviceArn=QPU,
        shots=shots,
        outputS3Bucket=BUCKET,
        outputS3KeyPrefix="spending-limits",
        action=json.dumps(program),
    )["quantumTaskArn"]
    return arn


def _ended(client: Any, arn: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = client.get_quantum_task(quantumTaskArn=arn)
        if task["status"] in TERMINAL:
            return task
        time.sleep(0.1)
    pytest.fail(f"{arn} did not end within {timeout}s")


def _refused(client: Any, shots: int = 100) -> str:
    with pytest.raises(ClientError) as raised:
        _create(client, shots)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message: str = raised.value.response["Error"]["Message"]
    return message


def _error_code(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    code: str = raised.value.response["Error"]["Code"]
    return code


def test_create_search_update_delete_and_client_tokens(braket: Any, standin: LocalStack) -> None:
    token = str(uuid.uuid4())
    period = {"startAt": int(time.time()) - 60, "endAt": int(time.time()) + 3600}
    arn = braket.create_spending_limit(
        clientToken=token, deviceArn=QPU, spendingLimit="10.50", timePeriod=period,
        tags={"owner": "tests"},
    )["spendingLimitArn"]  # fmt: skip
    assert arn.startswith("arn:aws:braket:us-east-1:123456789012:spending-limit/")
    # The same call again (a retry after a lost reply) is the same limit; another one is refused.
    again = braket.create_spending_limit(
        clientToken=token, deviceArn=QPU, spendingLimit="10.50", timePeriod=period,
        tags={"owner": "tests"},
    )["spendingLimitArn"]  # fmt: skip
    assert again == arn
    assert "already used" in _refused_call(
        lambda: braket.create_spending_limit(clientToken=token, deviceArn=QPU, spendingLimit="11")
    )
    assert "already has spending limit" in _refused_call(lambda: _limit(braket, "5"))

    summary = _summary(braket)
    assert summary["spendingLimitArn"] == arn
    assert (summary["spendingLimit"], summary["queuedSpend"], summary["totalSpend"]) == (
        "10.50", "0", "0",
    )  # fmt: skip
    assert summary["timePeriod"]["startAt"].timestamp() == period["startAt"]
    assert summary["timePeriod"]["endAt"].timestamp() == period["endAt"]
    assert summary["tags"] == {"owner": "tests"}
    by_arn = braket.search_spending_limits(
        filters=[{"name": "spendingLimitArn", "values": [arn], "operator": "EQUAL"}]
    )["spendingLimits"]
    assert [s["spendingLimitArn"] for s in by_arn] == [arn]

    update_token = str(uuid.uuid4())
    braket.update_spending_limit(spendingLimitArn=arn, clientToken=update_token, spendingLimit="2")
    braket.update_spending_limit(spendingLimitArn=arn, clientToken=update_token, spendingLimit="2")
    updated = _summary(braket)
    assert updated["spendingLimit"] == "2"
    assert updated["timePeriod"] == summary["timePeriod"]  # an update leaves out what it omits
    assert updated["updatedAt"] > summary["updatedAt"]

    # Limits live in the stand-in's database, like its tasks.
    standin.restart_standin()
    assert _summary(braket)["spendingLimit"] == "2"

    braket.delete_spending_limit(spendingLimitArn=arn)
    assert braket.search_spending_limits()["spendingLimits"] == []
    assert _error_code(lambda: braket.delete_spending_limit(spendingLimitArn=arn)) == (
        "ResourceNotFoundException"
    )
    assert _error_code(
        lambda: braket.update_spending_limit(
            spendingLimitArn=arn, clientToken=str(uuid.uuid4()), spendingLimit="3"
        )
    ) == "ResourceNotFoundException"  # fmt: skip


def test_bad_input_is_refused_with_what_is_allowed(braket: Any) -> None:
    simulator = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
    assert "simulators do not support" in _refused_call(
        lambda: braket.create_spending_limit(
            clientToken=str(uuid.uuid4()), deviceArn=simulator, spendingLimit="5"
        )
    )
    unknown = QPU.replace("Guadalupe-16", "Nowhere-1")
    assert "does not exist" in _refused_call(
        lambda: braket.create_spending_limit(
            clientToken=str(uuid.uuid4()), deviceArn=unknown, spendingLimit="5"
        )
    )
    backwards = {"startAt": 2_000_000_000, "endAt": 1_900_000_000}
    assert "must start before it ends" in _refused_call(
        lambda: _limit(braket, "5", timePeriod=backwards)
    )
    assert "allowed: deviceArn, spendingLimitArn" in _refused_call(
        lambda: braket.search_spending_limits(
            filters=[{"name": "status", "values": ["x"], "operator": "EQUAL"}]
        )
    )
    # A device that is offline still takes a limit (it is the device, not its state, that is
    # limited).
    braket.create_spending_limit(
        clientToken=str(uuid.uuid4()), deviceArn=OFFLINE_QPU, spendingLimit="5"
    )
    assert len(braket.search_spending_limits()["spendingLimits"]) == 1


def test_a_task_over_the_remaining_limit_is_rejected_and_spend_moves_from_queued_to_total(
    braket: Any, standin: LocalStack
) -> None:
    standin.set_faults(queue_delay_s=1.5)
    before = _create(braket)  # a task from before the limit existed does not count against it
    _limit(braket, "1.00")
    first, second = _create(braket), _create(braket)
    assert _spend(braket) == (2 * HUNDRED_SHOTS, 0)
    # $0.22 remain: a task of $0.39 is over it, and so is one of $0.30 + 1 shot.
    message = _refused(braket)
    assert f"spending limit {_summary(braket)['spendingLimitArn']}" in message
    assert f"device {QPU}" in message
    assert "estimated cost $0.39 exceeds the remaining $0.22 of the $1.00 spending limit" in message
    assert "estimated cost $0.30 exceeds the remaining $0.22" in _refused(braket, shots=1)
    assert _ended(braket, before)["status"] == "COMPLETED"
    assert _ended(braket, first)["status"] == "COMPLETED"
    assert _ended(braket, second)["status"] == "COMPLETED"
    assert _spend(braket) == (0, 2 * HUNDRED_SHOTS)
    assert "total spend $0.78, queued spend $0.00" in _refused(braket, shots=1)
    # Raising the limit makes room at once.
    braket.update_spending_limit(
        spendingLimitArn=_summary(braket)["spendingLimitArn"],
        clientToken=str(uuid.uuid4()),
        spendingLimit="1.17",
    )
    assert _ended(braket, _create(braket))["status"] == "COMPLETED"
    assert _spend(braket) == (0, 3 * HUNDRED_SHOTS)
    billed = {t["quantumTaskArn"]: Decimal(t["billedUsd"]) for t in standin.tasks()}
    assert billed[first] == billed[second] == HUNDRED_SHOTS


def test_a_cancelled_task_releases_its_queued_estimate(braket: Any, standin: LocalStack) -> None:
    standin.set_faults(queue_delay_s=30)
    _limit(braket, "0.50")
    queued = _create(braket)
    assert _spend(braket) == (HUNDRED_SHOTS, 0)
    assert "remaining $0.11" in _refused(braket)
    braket.cancel_quantum_task(quantumTaskArn=queued, clientToken=str(uuid.uuid4()))
    assert _ended(braket, queued)["status"] == "CANCELLED"
    assert _spend(braket) == (0, 0)
    replacement = _create(braket)
    assert _spend(braket) == (HUNDRED_SHOTS, 0)
    braket.cancel_quantum_task(quantumTaskArn=replacement, clientToken=str(uuid.uuid4()))
    _ended(braket, replacement)


def test_a_failed_task_bills_nothing_and_gives_its_estimate_back(
    braket: Any, standin: LocalStack
) -> None:
    standin.set_faults(task_failure_rate=1.0)
    _limit(braket, "0.50")
    assert _ended(braket, _create(braket))["status"] == "FAILED"
    assert _spend(braket) == (0, 0)
    standin.set_faults()
    assert _ended(braket, _create(braket))["status"] == "COMPLETED"
    assert _spend(braket) == (0, HUNDRED_SHOTS)


def test_outside_its_time_period_a_limited_device_takes_no_task(braket: Any) -> None:
    later = int(time.time()) + 3600
    _limit(braket, "100", timePeriod={"startAt": later, "endAt": later + 3600})
    assert "accepts tasks only from" in _refused(braket)
    assert _spend(braket) == (0, 0)


def _refused_call(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    message: str = raised.value.response["Error"]["Message"]
    return message
