"""Amazon Braket's per-device spending limits (CreateSpendingLimit, UpdateSpendingLimit,
SearchSpendingLimits) and the devices they can be put on (SearchDevices' QPUs).

Braket checks every CreateQuantumTask on a limited device against what remains of the limit and
rejects a task that does not fit, whoever submits it: the backstop under qloop's budget ledgers
(`qloop budget set --provider-backstop`, cli/provider_backstop.py). A limit counts every task
since it was created, so moving it means setting it to what it already counted plus the new
allowance.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from adapters.braket_aws import braket_client
from adapters.braket_errors import aws_errors
from adapters.errors import TransientError

CENT = Decimal("0.01")


@dataclass(frozen=True)
class SpendingLimit:
    """One device's limit as SearchSpendingLimits lists it, in US dollars."""

    arn: str
    device_arn: str
    limit_usd: Decimal
    queued_usd: Decimal  # estimates of its tasks that have not ended
    total_usd: Decimal  # what its tasks that ended were billed

    @property
    def remaining_usd(self) -> Decimal:
        return self.limit_usd - self.total_usd - self.queued_usd

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> SpendingLimit:
        return cls(
            arn=summary["spendingLimitArn"],
            device_arn=summary["deviceArn"],
            limit_usd=Decimal(summary["spendingLimit"]),
            queued_usd=Decimal(summary["queuedSpend"]),
            total_usd=Decimal(summary["totalSpend"]),
        )


def limit_text(amount: Decimal) -> str:
    """An amount as CreateSpendingLimit takes it (dollars and at most two decimals), rounded
    down so a limit never allows more than `amount`."""
    if amount < 0:
        raise ValueError(f"a spending limit must be 0 or more US dollars, got {amount}")
    return str(amount.quantize(CENT, rounding=ROUND_DOWN))


def qpu_devices(region: str | None = None) -> list[dict[str, Any]]:
    """Every device SearchDevices lists with deviceType QPU (the only kind a limit applies to)."""
    client = braket_client(region)
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        with aws_errors("SearchDevices"):
            page = client.search_devices(
                filters=[], maxResults=100, **({"nextToken": token} if token else {})
            )
        found.extend(d for d in page.get("devices", []) if d.get("deviceType") == "QPU")
        token = page.get("nextToken") or ""
        if not token:
            return found


def spending_limits(region: str | None = None) -> dict[str, SpendingLimit]:
    """The account's spending limits by device ARN."""
    client = braket_client(region)
    found: dict[str, SpendingLimit] = {}
    token = ""
    while True:
        with aws_errors("SearchSpendingLimits"):
            page = client.search_spending_limits(
                maxResults=100, **({"nextToken": token} if token else {})
            )
        for summary in page.get("spendingLimits", []):
            limit = SpendingLimit.from_summary(summary)
            found[limit.device_arn] = limit
        token = page.get("nextToken") or ""
        if not token:
            return found


def set_spending_limit(
    device_arn: str,
    amount: Decimal,
    existing: SpendingLimit | None,
    client_token: str,
    region: str | None = None,
) -> SpendingLimit:
    """Put the device's limit at `amount` (creating it when `existing` is None) and return it
    as Braket now lists it. `client_token` makes a retried call the same call."""
    client = braket_client(region)
    text = limit_text(amount)
    if existing is None:
        with aws_errors("CreateSpendingLimit"):
            arn = client.create_spending_limit(
                clientToken=client_token, deviceArn=device_arn, spendingLimit=text
            )["spendingLimitArn"]
    else:
        arn = existing.arn
        with aws_errors("UpdateSpendingLimit"):
            client.update_spending_limit(
                spendingLimitArn=arn, clientToken=client_token, spendingLimit=text
            )
    with aws_errors("SearchSpendingLimits"):
        listed = client.search_spending_limits(
            filters=[{"name": "spendingLimitArn", "values": [arn], "operator": "EQUAL"}]
        )["spendingLimits"]
    if not listed:
        raise TransientError(
            f"Braket does not list spending limit {arn} it just set on {device_arn} yet"
        )
    return SpendingLimit.from_summary(listed[0])
