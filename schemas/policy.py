"""Account policies: which backends an account may use, its limits, and when a person must approve.

Policies are operator configuration, not part of a request: a YAML file named by
QLOOP_POLICY_FILE. A request chooses its account; it can tighten its own limits
(`policy.max_cost_usd`) but never loosen the account's. Accounts not listed in the file follow
its `default` entry.

Without a policy file qloop fails closed: only free work runs (`FreeWorkOnly`), and work that
costs money is refused with a message saying how to allow it. An operator who wants paid work
without rules opts in with QLOOP_ALLOW_UNGOVERNED_SPEND=1: then every backend is allowed, nothing
needs approval, and paid work is capped by the account's budget ledger alone.
"""

from __future__ import annotations

import fnmatch
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from schemas.execution import Tier
from schemas.request import StrictModel
from schemas.settings import current_settings
from schemas.signatures import PublicKeyText

POLICY_FILE_ENV = "QLOOP_POLICY_FILE"
ALLOW_UNGOVERNED_SPEND_ENV = "QLOOP_ALLOW_UNGOVERNED_SPEND"
DEFAULT_ACCOUNT = "default"
_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SHORT_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ApproverName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")]


class ApprovalRule(StrictModel):
    """Approval is required when the estimated cost exceeds `required_above_usd` or the backend's
    tier is listed in `required_for_tiers`. Without a decision within `timeout` the experiment is
    rejected, or (`on_timeout: fallback`) runs on the first simulator of its fallback chain.

    `signed: true`: a decision counts only when signed by the approver's key in `public_keys`
    (one per approver, schemas/signatures.py), so a name alone proves nothing."""

    required_above_usd: Annotated[float, Field(ge=0.0)] | None = None
    required_for_tiers: list[Tier] = Field(default_factory=list)
    approvers: Annotated[list[ApproverName], Field(min_length=1)]
    timeout: timedelta = timedelta(hours=24)
    on_timeout: Literal["reject", "fallback"] = "reject"
    signed: bool = False
    public_keys: dict[ApproverName, PublicKeyText] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _a_key_per_approver(self) -> ApprovalRule:
        if not self.signed:
            if self.public_keys:
                raise ValueError(
                    "public_keys are given but signed is false: set `signed: true` to require "
                    "signed decisions, or remove public_keys"
                )
            return self
        missing = [name for name in self.approvers if name not in self.public_keys]
        if missing:
            raise ValueError(
                f"signed: true needs a public key for every approver; none for "
                f"{', '.join(missing)} (`qloop keys new NAME` prints the line to add)"
            )
        strangers = [name for name in self.public_keys if name not in self.approvers]
        if strangers:
            raise ValueError(
                f"public_keys of {', '.join(strangers)}, who are not approvers "
                f"({', '.join(self.approvers)})"
            )
        return self

    @field_validator("timeout", mode="before")
    @classmethod
    def _short_duration(cls, value: object) -> object:
        """Accepts "90s", "30m", "4h", "2d" besides ISO 8601 ("PT4H") and seconds."""
        if isinstance(value, str) and (match := _SHORT_DURATION.fullmatch(value.strip())):
            amount, unit = float(match[1]), match[2]
            return timedelta(seconds=amount * _UNIT_SECONDS[unit])
        return value

    @field_validator("timeout")
    def _positive(cls, timeout: timedelta) -> timedelta:
        if timeout <= timedelta(0):
            raise ValueError("approval timeout must be positive")
        return timeout


class BudgetDefault(StrictModel):
    """The limit a new budget ledger starts with (`qloop budget set` changes it later)."""

    limit_usd: Annotated[float, Field(ge=0.0)] = 0.0
    period: Literal["none", "day", "week", "month"] = "none"


class AccountPolicy(StrictModel):
    """`allowed_backends` are shell patterns over backend names as qloop prints them
    (`aer/ideal`, `aer/noisy:ibm_guadalupe`, `braket/braket_sv`, `braket/arn:aws:braket:...`)."""

    allowed_backends: list[str] = Field(default_factory=lambda: ["*"])
    allowed_tiers: list[Tier] = Field(default_factory=lambda: list(Tier))
    max_shots: Annotated[int, Field(ge=1)] | None = None
    max_cost_usd: Annotated[float, Field(ge=0.0)] | None = None
    approval: ApprovalRule | None = None
    on_budget_exhausted: Literal["refuse", "wait"] = "refuse"
    budget: BudgetDefault = BudgetDefault()
    # Who may change the ledger's limit, by a signed change (schemas/signatures.py); empty:
    # anyone who can send the ledger an update.
    budget_admins: dict[ApproverName, PublicKeyText] = Field(default_factory=dict)


class PolicyBook(StrictModel):
    accounts: dict[str, AccountPolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _account_names(self) -> PolicyBook:
        for name in self.accounts:
            if not _ACCOUNT.fullmatch(name):
                raise ValueError(f"account name {name!r} must match {_ACCOUNT.pattern}")
        return self

    def for_account(self, account: str) -> AccountPolicy:
        return self.accounts.get(account) or self.accounts.get(DEFAULT_ACCOUNT) or AccountPolicy()


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message names the file and the field."""


class FreeWorkOnly(AccountPolicy):
    """Every account's policy when no policy file is configured and the operator has not opted
    in to ungoverned spending: work that costs money is refused (activities/governance/policy.py),
    whatever the account. Never read from a file."""


def ungoverned_spend_allowed() -> bool:
    """Whether the operator opted in to paid work without a policy file."""
    return current_settings().allow_ungoverned_spend


def no_policy_file_refusal(what: str) -> str:
    """Why `what` (work that costs money) is refused without a policy file, and how to allow it."""
    return (
        f"{what}, and no policy file is configured, so only free work runs; set "
        f"{POLICY_FILE_ENV} to a policy file (temporal-dev/policies.yaml is an example), or "
        f"{ALLOW_UNGOVERNED_SPEND_ENV}=1 to allow paid work with no policy rules"
    )


def governance_notice() -> str | None:
    """What a worker or the CLI says at start when no policy file governs paid work; None when
    one does."""
    if current_settings().policy_file is not None:
        return None
    if ungoverned_spend_allowed():
        return (
            f"no policy file ({POLICY_FILE_ENV} is not set) and {ALLOW_UNGOVERNED_SPEND_ENV}=1: "
            "paid work runs with no policy rules (no approvals, no cost limits); only budget "
            "ledgers cap it"
        )
    return (
        f"no policy file ({POLICY_FILE_ENV} is not set): work that costs money (a QPU, a device "
        f"ARN, an estimated cost above $0) is refused and free simulators run; set "
        f"{POLICY_FILE_ENV}, or {ALLOW_UNGOVERNED_SPEND_ENV}=1 to allow paid work without rules"
    )


def load_policy_book(path: str | os.PathLike[str] | None = None) -> PolicyBook:
    """The policy file named by `path` or QLOOP_POLICY_FILE. Without one: free work only, or no
    rules at all when the operator opted in (QLOOP_ALLOW_UNGOVERNED_SPEND=1)."""
    location = path or current_settings().policy_file
    if not location:
        if ungoverned_spend_allowed():
            return PolicyBook()
        return PolicyBook(accounts={DEFAULT_ACCOUNT: FreeWorkOnly()})
    file = Path(location)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except OSError as error:
        raise PolicyError(f"{POLICY_FILE_ENV}={file}: cannot read it: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"{file}: not valid YAML: {error}") from None
    try:
        return PolicyBook.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()
        )
        raise PolicyError(f"{file}: {problems}") from None


def backend_allowed(policy: AccountPolicy, backend_name: str) -> bool:
    return any(fnmatch.fnmatchcase(backend_name, pattern) for pattern in policy.allowed_backends)
