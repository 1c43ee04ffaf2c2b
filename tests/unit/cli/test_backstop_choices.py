"""The pure parts of the provider backstop: which QPUs an account's policy lets it use, the
amounts a spending limit is set to, and how a spending-limit refusal is classified."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from adapters.braket_errors import classify
from adapters.braket_spending_limits import SpendingLimit, limit_text
from adapters.errors import InvalidRequestError, SpendingLimitError
from cli.provider_backstop import allowed_qpus, counted, remaining_budget
from schemas.execution import Tier
from schemas.policy import AccountPolicy, FreeWorkOnly

ANKAA = "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"
FORTE = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"
OLD = "arn:aws:braket:us-east-1::device/qpu/ionq/Harmony"
DEVICES = [
    {"deviceArn": ANKAA, "deviceType": "QPU", "deviceStatus": "ONLINE"},
    {"deviceArn": FORTE, "deviceType": "QPU", "deviceStatus": "OFFLINE"},
    {"deviceArn": OLD, "deviceType": "QPU", "deviceStatus": "RETIRED"},
]


def arns(devices: list[dict[str, Any]]) -> list[str]:
    return [device["deviceArn"] for device in devices]


def test_the_qpus_an_account_may_use_are_those_its_policy_allows() -> None:
    assert arns(allowed_qpus(AccountPolicy(), "lab", DEVICES)) == [ANKAA, FORTE]
    rigetti = AccountPolicy(allowed_backends=["aer/*", "braket/*rigetti*"])
    assert arns(allowed_qpus(rigetti, "lab", DEVICES)) == [ANKAA]
    simulators = AccountPolicy(allowed_tiers=[Tier.SIMULATOR, Tier.NOISY_SIMULATOR])
    assert allowed_qpus(simulators, "lab", DEVICES) == []
    # Without a policy file paid work is refused, so there is nothing to put a limit on.
    assert allowed_qpus(FreeWorkOnly(), "lab", DEVICES) == []


def test_a_limit_is_what_it_counted_plus_the_remaining_budget_in_whole_cents() -> None:
    assert remaining_budget(9.999) == Decimal("9.99")
    assert remaining_budget(0.0) == Decimal("0.00")
    assert counted(None) == 0
    existing = SpendingLimit(
        arn="arn:aws:braket:us-east-1:123456789012:spending-limit/x",
        device_arn=ANKAA,
        limit_usd=Decimal("5"),
        queued_usd=Decimal("0.39"),
        total_usd=Decimal("1.3009"),
    )
    assert counted(existing) == Decimal("1.3009")
    assert existing.remaining_usd == Decimal("3.3091")
    assert limit_text(counted(existing) + Decimal("2.50")) == "3.80"
    with pytest.raises(ValueError, match="0 or more"):
        limit_text(Decimal("-1"))


def error(code: str, message: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "CreateQuantumTask",
    )


def test_only_a_task_refused_by_a_spending_limit_is_a_spending_limit_error() -> None:
    refused = error("ValidationException", "Quantum task rejected by spending limit arn:x")
    classified = classify(refused, "CreateQuantumTask")
    assert isinstance(classified, SpendingLimitError)
    assert "refused by the provider's spending limit" in classified.message
    assert "arn:x" in classified.message
    # Any other validation error, and the spending-limit calls' own errors, are invalid requests.
    shots = error("ValidationException", "shots must be between 1 and 100000")
    assert type(classify(shots, "CreateQuantumTask")) is InvalidRequestError
    taken = error("ValidationException", "device already has spending limit arn:x")
    assert type(classify(taken, "CreateSpendingLimit")) is InvalidRequestError
