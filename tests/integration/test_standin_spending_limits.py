"""The QPU stand-in's spending limits (temporal-dev/qpu_standin/spending_limits.py) through plain
boto3: Create/Update/Delete/SearchSpendingLimits, and what CreateQuantumTask does on a limited
device. Guadalupe-16 costs $0.30 per task plus $0.0009 per shot, so 100 shots are $0.39."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.braket_calls import (
    create_bell_task,
    delete_spending_limits,
    plain_client,
    refusal_of_bell_task,
    task_when_ended,
)
from tests.harness import OFFLINE_QPU, QPU, LocalStack

pytestmark = pytest.mark.integration

HUNDRED_SHOTS = Decimal("0.39")


@pytest.fixture
def braket(standin: LocalStack) -> Iterator[Any]:
    """A plain boto3 client of the stand-in; the device has no spending limit before or after."""
    client = plain_client(standin.standin_url)
    standin.set_faults()
    delete_spending_limits(client)
    yield client
    standin.set_faults()
    delete_spending_limits(client)


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
    before = create_bell_task(
        braket
    )  # a task from before the limit existed does not count against it
    _limit(braket, "1.00")
    first, second = create_bell_task(braket), create_bell_task(braket)
    assert _spend(braket) == (2 * HUNDRED_SHOTS, 0)
    # $0.22 remain: a task of $0.39 is over it, and so is one of $0.30 + 1 shot.
    message = refusal_of_bell_task(braket)
    assert f"spending limit {_summary(braket)['spendingLimitArn']}" in message
    assert f"device {QPU}" in message
    assert "estimated cost $0.39 exceeds the remaining $0.22 of the $1.00 spending limit" in message
    assert "estimated cost $0.30 exceeds the remaining $0.22" in refusal_of_bell_task(
        braket, shots=1
    )
    assert task_when_ended(braket, before)["status"] == "COMPLETED"
    assert task_when_ended(braket, first)["status"] == "COMPLETED"
    assert task_when_ended(braket, second)["status"] == "COMPLETED"
    assert _spend(braket) == (0, 2 * HUNDRED_SHOTS)
    assert "total spend $0.78, queued spend $0.00" in refusal_of_bell_task(braket, shots=1)
    # Raising the limit makes room at once.
    braket.update_spending_limit(
        spendingLimitArn=_summary(braket)["spendingLimitArn"],
        clientToken=str(uuid.uuid4()),
        spendingLimit="1.17",
    )
    assert task_when_ended(braket, create_bell_task(braket))["status"] == "COMPLETED"
    assert _spend(braket) == (0, 3 * HUNDRED_SHOTS)
    billed = {t["quantumTaskArn"]: Decimal(t["billedUsd"]) for t in standin.tasks()}
    assert billed[first] == billed[second] == HUNDRED_SHOTS


def test_a_cancelled_task_releases_its_queued_estimate(braket: Any, standin: LocalStack) -> None:
    standin.set_faults(queue_delay_s=30)
    _limit(braket, "0.50")
    queued = create_bell_task(braket)
    assert _spend(braket) == (HUNDRED_SHOTS, 0)
    assert "remaining $0.11" in refusal_of_bell_task(braket)
    braket.cancel_quantum_task(quantumTaskArn=queued, clientToken=str(uuid.uuid4()))
    assert task_when_ended(braket, queued)["status"] == "CANCELLED"
    assert _spend(braket) == (0, 0)
    replacement = create_bell_task(braket)
    assert _spend(braket) == (HUNDRED_SHOTS, 0)
    braket.cancel_quantum_task(quantumTaskArn=replacement, clientToken=str(uuid.uuid4()))
    task_when_ended(braket, replacement)


def test_a_failed_task_bills_nothing_and_gives_its_estimate_back(
    braket: Any, standin: LocalStack
) -> None:
    standin.set_faults(task_failure_rate=1.0)
    _limit(braket, "0.50")
    assert task_when_ended(braket, create_bell_task(braket))["status"] == "FAILED"
    assert _spend(braket) == (0, 0)
    standin.set_faults()
    assert task_when_ended(braket, create_bell_task(braket))["status"] == "COMPLETED"
    assert _spend(braket) == (0, HUNDRED_SHOTS)


def test_outside_its_time_period_a_limited_device_takes_no_task(braket: Any) -> None:
    later = int(time.time()) + 3600
    _limit(braket, "100", timePeriod={"startAt": later, "endAt": later + 3600})
    assert "accepts tasks only from" in refusal_of_bell_task(braket)
    assert _spend(braket) == (0, 0)


def _refused_call(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    message: str = raised.value.response["Error"]["Message"]
    return message
