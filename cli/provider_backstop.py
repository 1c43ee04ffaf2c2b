"""`qloop budget set ACCOUNT ... --provider-backstop`: the account's remaining budget mirrored
into Braket's spending limit of every QPU the account's policy lets it use.

The ledger guards what goes through qloop; the spending limit is checked by Braket itself on
every CreateQuantumTask, so it also stops a task submitted around qloop (straight through boto3
or the SDK) that costs more than the account has left. A Braket limit counts every task since it
was created, so a device's limit is set to what it already counted (its total spend) plus the
remaining budget. Each QPU gets the whole remaining amount: the limits of several QPUs together
can let through up to that many times the budget. The limit is a snapshot of the ledger, taken
now: run the command again after raising the budget or at the start of a new period.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from activities.governance.policy import static_refusal
from adapters.braket_spending_limits import (
    CENT,
    SpendingLimit,
    qpu_devices,
    set_spending_limit,
    spending_limits,
)
from schemas.execution import Tier
from schemas.policy import AccountPolicy
from schemas.request import BackendChoice

# The backstop is about devices, not request sizes: a request of one shot passes any max_shots.
ANY_SHOTS = 1


@dataclass(frozen=True)
class BackstopLimit:
    """What was set on one device: `limit_usd` = `counted_usd` (the limit's total spend before
    the change) + `remaining_usd` (the ledger's available amount)."""

    device_arn: str
    device_name: str
    spending_limit_arn: str
    previous_limit_usd: Decimal | None  # None: the device had no limit
    counted_usd: Decimal
    remaining_usd: Decimal
    limit_usd: Decimal
    queued_usd: Decimal

    def as_json(self) -> dict[str, Any]:
        previous = self.previous_limit_usd
        return {
            "device_arn": self.device_arn,
            "device_name": self.device_name,
            "spending_limit_arn": self.spending_limit_arn,
            "previous_limit_usd": None if previous is None else str(previous),
            "counted_usd": str(self.counted_usd),
            "remaining_usd": str(self.remaining_usd),
            "limit_usd": str(self.limit_usd),
            "queued_usd": str(self.queued_usd),
        }

    def line(self) -> str:
        previous = self.previous_limit_usd
        was = "new" if previous is None else f"was ${previous:.2f}"
        return (
            f"  {self.device_name:20} limit ${self.limit_usd:.2f} = ${self.counted_usd:.2f} "
            f"already counted + ${self.remaining_usd:.2f} remaining ({was}; "
            f"{self.spending_limit_arn})"
        )


def remaining_budget(available_usd: float) -> Decimal:
    """The ledger's available amount in cents, rounded down: the backstop never allows more."""
    return Decimal(str(available_usd)).quantize(CENT, rounding=ROUND_DOWN)


def allowed_qpus(
    policy: AccountPolicy, account: str, devices: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The QPUs (SearchDevices summaries) the account's policy lets it use, as the door checks
    them (`braket/<ARN>` against allowed_backends, the qpu tier against allowed_tiers); retired
    devices take no limit."""
    return [
        device
        for device in devices
        if device.get("deviceStatus") != "RETIRED"
        and static_refusal(
            policy,
            account,
            BackendChoice(provider="braket", device=device["deviceArn"]),
            Tier.QPU,
            ANY_SHOTS,
        )
        is None
    ]


def counted(existing: SpendingLimit | None) -> Decimal:
    """What a device's limit already counts for good: the bills of its tasks that ended. (The
    estimates of its queued tasks stay deducted until they end, so while some are queued the
    backstop leaves less than the remaining budget, never more.)"""
    return Decimal(0) if existing is None else existing.total_usd


def set_provider_backstop(
    policy: AccountPolicy, account: str, remaining_usd: Decimal
) -> list[BackstopLimit]:
    """Set the spending limit of every QPU the account may use to leave `remaining_usd`."""
    limits = spending_limits()
    settings = []
    for device in allowed_qpus(policy, account, qpu_devices()):
        arn = device["deviceArn"]
        existing = limits.get(arn)
        already = counted(existing)
        now = set_spending_limit(arn, already + remaining_usd, existing, str(uuid.uuid4()))
        settings.append(
            BackstopLimit(
                device_arn=arn,
                device_name=device.get("deviceName") or arn,
                spending_limit_arn=now.arn,
                previous_limit_usd=None if existing is None else existing.limit_usd,
                counted_usd=already,
                remaining_usd=remaining_usd,
                limit_usd=now.limit_usd,
                queued_usd=now.queued_usd,
            )
        )
    return settings


def format_backstop(account: str, remaining_usd: Decimal, settings: list[BackstopLimit]) -> str:
    if not settings:
        return f"provider backstop: account {account!r} may use no Braket QPU; no limit set"
    head = (
        f"provider backstop: Braket spending limits leaving ${remaining_usd:.2f} on each QPU "
        f"account {account!r} may use (together they can let through more)"
    )
    return "\n".join([head, *(setting.line() for setting in settings)])
