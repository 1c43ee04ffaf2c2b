"""Contracts of the budget ledger: one `BudgetLedgerWorkflow` per account holds its limit and
every reservation made against it, and experiments talk to it through three activities
(`reserve_budget`, `settle_budget`, `release_budget`).

Money is in US dollars as floats; the ledger compares sums with a tolerance of a nano-dollar, so
amounts such as $0.10 add up the way a reader expects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import Field

from schemas.pipeline import PipelineModel
from schemas.request import PolicySpec
from schemas.signatures import LimitSignature

# One rule for account names wherever they appear: requests, ledgers, the CLI.
ACCOUNT_PATTERN: str = PolicySpec.model_json_schema()["properties"]["account"]["pattern"]
ACCOUNT_RULE = (
    "1 to 63 characters: lowercase letters, digits, '_', '.' and '-', "
    "starting with a letter or a digit"
)

AccountName = Annotated[str, Field(pattern=ACCOUNT_PATTERN)]
Usd = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
ReservationKey = Annotated[str, Field(min_length=1, max_length=512)]

BudgetPeriod = Literal["none", "day", "week", "month"]
BUDGET_PERIODS: tuple[str, ...] = get_args(BudgetPeriod)
EntryState = Literal["reserved", "committed", "released"]
ClosedState = Literal["committed", "released"]

# ApplicationError types of the ledger's refusals.
BUDGET_EXCEEDED = "BudgetExceeded"
UNKNOWN_RESERVATION = "UnknownReservation"
RESERVATION_CLOSED = "ReservationClosed"
LIMIT_CHANGE_REFUSED = "LimitChangeRefused"
# Refused limit changes the ledger keeps (and carries across continue-as-new), newest last.
MAX_REFUSED_LIMIT_CHANGES = 20

FIT_TOLERANCE_USD = 1e-9


LEDGER_WORKFLOW_PREFIX = "budget-"


def ledger_workflow_id(account: str) -> str:
    return f"{LEDGER_WORKFLOW_PREFIX}{account}"


def format_usd(amount: float) -> str:
    """Cents, unless the amount has finer parts (per-shot prices): then up to six decimals."""
    if abs(amount - round(amount, 2)) < FIT_TOLERANCE_USD:
        return f"${amount:,.2f}"
    return f"${amount:,.6f}".rstrip("0")


class SetLimit(PipelineModel):
    """A new limit per UTC calendar `period` ("none": one limit for all time); `by` names who set
    it, for the record. When the account's policy names `budget_admins`, `by` must be one of
    them and `signature` theirs over exactly this change (schemas/signatures.py)."""

    limit_usd: Usd
    period: BudgetPeriod = "none"
    by: str = ""
    signature: LimitSignature | None = None


class BudgetAdminsInput(PipelineModel):
    account: AccountName


class BudgetAdmins(PipelineModel):
    """Name -> public key (`ed25519:...`) of who may sign limit changes; empty: anyone may."""

    admins: dict[str, str] = Field(default_factory=dict)


class RefusedLimitChange(PipelineModel):
    at: datetime
    by: str
    limit_usd: float
    period: BudgetPeriod
    why: str


class Reservation(PipelineModel):
    """Money set aside before a paid submission. `key` makes it idempotent: a retried
    reservation of an open key finds the first one; a closed key is never reserved again
    (workflows/paid_keys.py makes the keys)."""

    key: ReservationKey
    experiment_id: str
    amount_usd: Usd
    backend: str = ""
    note: str = ""


class Settlement(PipelineModel):
    """What a reserved submission actually cost."""

    key: ReservationKey
    actual_usd: Usd


class Release(PipelineModel):
    """A reservation that will not be spent (refused, failed before submission, cancelled)."""

    key: ReservationKey
    reason: str


class LedgerEntry(PipelineModel):
    key: str
    experiment_id: str
    backend: str = ""
    note: str = ""
    amount_usd: float
    actual_usd: float | None = None
    state: EntryState
    reason: str = ""
    created_at: datetime
    updated_at: datetime


class LedgerState(PipelineModel):
    """Everything a ledger carries across continue-as-new.

    `entries` are in creation order. Closed entries beyond the ledger's bound are folded into
    `folded_committed_usd` (their committed spend) with `folded_until`, the creation time of the
    newest folded entry, which decides the period the total counts in. `closed_keys`: a digest of
    every recently closed key (oldest first) with how it closed, so that no closed key is ever
    accepted as a new reservation, also after its entry was dropped.
    """

    limit_usd: Usd = 0.0
    period: BudgetPeriod = "none"
    limit_set_by: str = ""
    limit_set_at: datetime | None = None
    limit_key_id: str = ""
    limit_signed_at: datetime | None = None
    refused_limit_changes: list[RefusedLimitChange] = Field(default_factory=list)
    entries: list[LedgerEntry] = Field(default_factory=list)
    folded_committed_usd: float = 0.0
    folded_entries: int = 0
    folded_until: datetime | None = None
    closed_keys: dict[str, ClosedState] = Field(default_factory=dict)


class LedgerInput(PipelineModel):
    """Starts a ledger (`state` None: a new one with `limit_usd` per `period`) or continues one
    (`state` carried by continue-as-new; `limit_usd` and `period` are then ignored)."""

    account: AccountName
    limit_usd: Usd = 0.0
    period: BudgetPeriod = "none"
    state: LedgerState | None = None
    max_history_events: Annotated[int, Field(ge=1)] = 10_000


class LedgerView(PipelineModel):
    """The balance of the current period (`period_start` None when the period is "none").
    `available_usd` is never negative, even when the limit was lowered below what is spent;
    `entries` are newest first. `limit_key_id`: the key that signed the current limit (empty
    when it was set unsigned)."""

    account: str
    limit_usd: float
    period: BudgetPeriod
    period_start: datetime | None
    reserved_usd: float
    committed_usd: float
    available_usd: float
    entries: list[LedgerEntry]
    limit_set_by: str = ""
    limit_set_at: datetime | None = None
    limit_key_id: str = ""
    refused_limit_changes: list[RefusedLimitChange] = Field(default_factory=list)
    folded_committed_usd: float = 0.0


class ReservationReceipt(PipelineModel):
    """What the ledger's `reserve` update returns: the entry (the existing one for a known key,
    then `created` is False) and what remains available after it."""

    entry: LedgerEntry
    created: bool
    available_usd: float


class ReserveBudgetInput(PipelineModel):
    """`initial_limit_usd` / `initial_period`: what the account's ledger starts with if this
    reservation is its first use (from the account's policy); an existing ledger ignores them."""

    account: AccountName
    reservation: Reservation
    initial_limit_usd: Usd = 0.0
    initial_period: BudgetPeriod = "none"


class ReservationOutcome(PipelineModel):
    """`accepted` False when the reservation does not fit, or when its key was already closed
    (`closed_as` then says how: a committed key's job was paid and settled, a released key's
    must not be paid for); `message` says why."""

    accepted: bool
    message: str
    available_usd: float
    closed_as: ClosedState | None = None


class SettleBudgetInput(PipelineModel):
    account: AccountName
    settlement: Settlement


class ReleaseBudgetInput(PipelineModel):
    account: AccountName
    release: Release


class ExternalSpend(PipelineModel):
    """Money spent outside qloop (a provider task someone else submitted and qloop adopted),
    recorded as committed at what the provider billed, whatever the limit: it is already spent.
    `key` makes it idempotent: the same key with the same amount finds the first entry."""

    key: ReservationKey
    experiment_id: str
    actual_usd: Usd
    backend: str = ""
    note: str = ""
    reason: str = ""


class RecordSpendInput(PipelineModel):
    """`initial_limit_usd` / `initial_period`: as in ReserveBudgetInput, for a ledger this record
    starts."""

    account: AccountName
    spend: ExternalSpend
    initial_limit_usd: Usd = 0.0
    initial_period: BudgetPeriod = "none"
