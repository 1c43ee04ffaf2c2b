"""BudgetLedgerWorkflow: one long-lived entity per budget account.

Experiments reserve money before a paid submission, then commit what it actually cost or release
it. Reservations are updates with validators, and each handler checks again before it writes, so
two experiments can never spend the same dollar. The ledger never completes; it continues as new
before its history grows large, carrying its state.

The rules live in `LedgerBook`, a plain class the workflow holds, unit-tested without Temporal.

Periods are UTC calendar days, ISO weeks (from Monday) and months. Every entry counts in the
period in which it was reserved, also when it is committed later: each dollar is authorised
against exactly one period's limit. When a new period starts, the previous period's reserved and
committed spend stop counting; its open reservations stay in the ledger so that they can still
be committed or released.

What continue-as-new carries (`LedgerBook.carried_state`):
- every open reservation, always;
- closed (committed or released) entries that count in the current period or were closed within
  the last day, up to the newest `MAX_CLOSED_ENTRIES`, so the carried state stays far below
  Temporal's payload limits;
- the committed spend of closed entries of the current period beyond that bound, as one total
  (`folded_committed_usd`), so the balance stays exact.
- a digest of every closed key with how it closed (`closed_keys`), the newest
  `MAX_CLOSED_KEYS`, so a closed key is refused as a new reservation also after its entry was
  dropped: a workflow reset to before its reservation learns that the money was already settled
  instead of reserving it twice.
A retried commit or release of a dropped entry cannot happen: those come only after the caller
learned the reservation was accepted, within minutes, while the entry is still held.

Limit changes: when the account's policy names `budget_admins`, `set_limit` applies only a change
signed by one of them (schemas/signatures.py), with their keys read from the policy file by a
local activity at that moment, never from the message. A refused change is not applied; it fails
the update (so it is in the ledger's history) and is kept in `refused_limit_changes`, which
`qloop budget show` prints. A validator could refuse it without a trace in history, but it cannot
run the activity that reads the keys, and a forged change is exactly what an operator must see.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts
    from schemas.budget import (
        BUDGET_EXCEEDED,
        FIT_TOLERANCE_USD,
        LIMIT_CHANGE_REFUSED,
        MAX_REFUSED_LIMIT_CHANGES,
        RESERVATION_CLOSED,
        UNKNOWN_RESERVATION,
        BudgetAdminsInput,
        BudgetPeriod,
        ClosedState,
        ExternalSpend,
        LedgerEntry,
        LedgerInput,
        LedgerState,
        LedgerView,
        RefusedLimitChange,
        Release,
        Reservation,
        ReservationReceipt,
        SetLimit,
        Settlement,
        format_usd,
    )
    from schemas.signatures import limit_change_refusal

MAX_CLOSED_ENTRIES = 500
# About 30 bytes each in the carried state: 10,000 keep it near 300 KB, under Temporal's payload
# warning size, and cover weeks of closures for an account that settles a few hundred a day.
MAX_CLOSED_KEYS = 10_000
SIGNED_LIMITS_PATCH = "signed-limit-changes"
ADMINS_AS_ACTIVITY_PATCH = "ledger-admins-as-activity"
CLOSED_ENTRY_GRACE = timedelta(days=1)
RECENT_ENTRIES_IN_REPLIES = 20


def period_start(period: BudgetPeriod, at: datetime) -> datetime | None:
    """Start of the UTC calendar period containing `at`; None for "none" (a single period)."""
    if period == "none":
        return None
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period_start(period: BudgetPeriod, at: datetime) -> datetime | None:
    start = period_start(period, at)
    if start is None:
        return None
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(weeks=1)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def key_digest(key: str) -> str:
    """What the ledger remembers of a closed key: 64 bits of its SHA-256, enough that two keys
    of one account never collide in practice."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Balance(NamedTuple):
    limit_usd: float
    reserved_usd: float
    committed_usd: float

    @property
    def available_usd(self) -> float:
        """May be negative inside the ledger (a limit lowered below what is spent)."""
        return self.limit_usd - self.reserved_usd - self.committed_usd


class LedgerBook:
    """The ledger's state and rules. Methods named `check_*` only raise; the others change
    state and check first, so a handler never relies on what its validator saw."""

    def __init__(self, account: str, state: LedgerState) -> None:
        self.account = account
        self.limit_usd = state.limit_usd
        self.period: BudgetPeriod = state.period
        self.limit_set_by = state.limit_set_by
        self.limit_set_at = state.limit_set_at
        self.limit_key_id = state.limit_key_id
        self.limit_signed_at = state.limit_signed_at
        self.refused_limit_changes = list(state.refused_limit_changes)
        # Creation order, which is also the order carried across continue-as-new.
        self._entries: dict[str, LedgerEntry] = {entry.key: entry for entry in state.entries}
        self._folded_committed_usd = state.folded_committed_usd
        self._folded_entries = state.folded_entries
        self._folded_until = state.folded_until
        self._closed_keys: dict[str, ClosedState] = dict(state.closed_keys)

    # --- balance ------------------------------------------------------------------------------

    def _counts_now(self, created_at: datetime, now: datetime) -> bool:
        return period_start(self.period, created_at) == period_start(self.period, now)

    def _folded_counts(self, now: datetime) -> bool:
        # After a change of period the folded total may span periods; it counts in full while its
        # newest entry does, so the ledger errs toward refusing, never toward overspending.
        return self._folded_until is not None and self._counts_now(self._folded_until, now)

    def balance(self, now: datetime) -> Balance:
        counted = [e for e in self._entries.values() if self._counts_now(e.created_at, now)]
        reserved = math.fsum(e.amount_usd for e in counted if e.state == "reserved")
        committed = [e.actual_usd or 0.0 for e in counted if e.state == "committed"]
        if self._folded_counts(now):
            committed.append(self._folded_committed_usd)
        return Balance(self.limit_usd, reserved, math.fsum(committed))

    # --- rules --------------------------------------------------------------------------------

    def closed_as(self, key: str) -> ClosedState | None:
        entry = self._entries.get(key)
        if entry is not None:
            return None if entry.state == "reserved" else entry.state
        return self._closed_keys.get(key_digest(key))

    def check_reservation(self, reservation: Reservation, now: datetime) -> None:
        closed = self.closed_as(reservation.key)
        if closed is not None:
            raise ApplicationError(
                f"account '{self.account}': reservation '{reservation.key}' was already {closed} "
                "and is never reserved again; a new submission needs a new key",
                closed,
                type=RESERVATION_CLOSED,
            )
        if reservation.key in self._entries:
            return
        balance = self.balance(now)
        # A free run (a simulator) always fits, even on an account that is over its limit.
        if reservation.amount_usd <= max(balance.available_usd, 0.0) + FIT_TOLERANCE_USD:
            return
        message = (
            f"account '{self.account}': a reservation of {format_usd(reservation.amount_usd)} "
            f"does not fit: {format_usd(max(balance.available_usd, 0.0))} available of a "
            f"{format_usd(balance.limit_usd)} limit ({format_usd(balance.reserved_usd)} reserved, "
            f"{format_usd(balance.committed_usd)} committed this period)"
        )
        if self.limit_usd == 0:
            message += (
                f"; no budget is set: `qloop budget set {self.account} --limit-usd AMOUNT` sets one"
            )
        raise ApplicationError(message, max(balance.available_usd, 0.0), type=BUDGET_EXCEEDED)

    def reserve(self, reservation: Reservation, now: datetime) -> ReservationReceipt:
        """An open key returns its entry: a retried reservation never reserves twice. A closed
        key is refused (ReservationClosed, with how it closed as the detail)."""
        self.check_reservation(reservation, now)
        entry = self._entries.get(reservation.key)
        created = entry is None
        if entry is None:
            entry = LedgerEntry(
                key=reservation.key,
                experiment_id=reservation.experiment_id,
                backend=reservation.backend,
                note=reservation.note,
                amount_usd=reservation.amount_usd,
                state="reserved",
                created_at=now,
                updated_at=now,
            )
            self._entries[entry.key] = entry
        return ReservationReceipt(
            entry=entry, created=created, available_usd=max(self.balance(now).available_usd, 0.0)
        )

    def _known(self, key: str, action: str) -> LedgerEntry:
        entry = self._entries.get(key)
        if entry is None:
            raise ApplicationError(
                f"account '{self.account}': cannot {action} '{key}': no reservation with this "
                "key is open or recently closed on this account",
                type=UNKNOWN_RESERVATION,
            )
        return entry

    def check_commit(self, settlement: Settlement) -> None:
        entry = self._known(settlement.key, "commit")
        if entry.state == "released":
            raise ApplicationError(
                f"account '{self.account}': reservation '{entry.key}' was released "
                f"({entry.reason or 'no reason given'}) and cannot be committed",
                type=RESERVATION_CLOSED,
            )
        committed = entry.actual_usd or 0.0
        differs = abs(committed - settlement.actual_usd) > FIT_TOLERANCE_USD
        if entry.state == "committed" and differs:
            raise ApplicationError(
                f"account '{self.account}': reservation '{entry.key}' is already committed at "
                f"{format_usd(committed)}; committing it again must repeat that amount, "
                f"not {format_usd(settlement.actual_usd)}",
                type=RESERVATION_CLOSED,
            )

    def commit(self, settlement: Settlement, now: datetime) -> LedgerEntry:
        """Records the actual cost, also above the reserved amount: the money is spent, and the
        ledger must say so (the view then shows nothing available)."""
        self.check_commit(settlement)
        entry = self._entries[settlement.key]
        if entry.state == "reserved":
            entry = entry.model_copy(
                update={
                    "state": "committed",
                    "actual_usd": settlement.actual_usd,
                    "updated_at": now,
                }
            )
            self._entries[entry.key] = entry
            self._remember_closed(entry.key, "committed")
        return entry

    def check_release(self, release: Release) -> None:
        entry = self._known(release.key, "release")
        if entry.state == "committed":
            raise ApplicationError(
                f"account '{self.account}': reservation '{entry.key}' is committed at "
                f"{format_usd(entry.actual_usd or 0.0)}; spent money cannot be released",
                type=RESERVATION_CLOSED,
            )

    def release(self, release: Release, now: datetime) -> LedgerEntry:
        self.check_release(release)
        entry = self._entries[release.key]
        if entry.state == "reserved":
            entry = entry.model_copy(
                update={"state": "released", "reason": release.reason, "updated_at": now}
            )
            self._entries[entry.key] = entry
            self._remember_closed(entry.key, "released")
        return entry

    def check_spend(self, spend: ExternalSpend) -> None:
        """Money spent outside qloop is recorded whatever the limit; only a key that closed
        otherwise (released, or committed at another amount) is refused."""
        entry = self._entries.get(spend.key)
        closed = self.closed_as(spend.key)
        if entry is None and closed != "released":
            return
        if entry is not None and entry.state == "committed":
            committed = entry.actual_usd or 0.0
            if abs(committed - spend.actual_usd) <= FIT_TOLERANCE_USD:
                return
            raise ApplicationError(
                f"account '{self.account}': '{spend.key}' is already recorded at "
                f"{format_usd(committed)}, not {format_usd(spend.actual_usd)}",
                "committed",
                type=RESERVATION_CLOSED,
            )
        raise ApplicationError(
            f"account '{self.account}': key '{spend.key}' is "
            f"{entry.state if entry is not None else closed} and cannot record spend",
            closed or "reserved",
            type=RESERVATION_CLOSED,
        )

    def record_spend(self, spend: ExternalSpend, now: datetime) -> LedgerEntry:
        """A committed entry at what the provider billed (also $0, so that the ledger says what
        happened to a failed or cancelled task). A repeated key returns its entry."""
        self.check_spend(spend)
        entry = self._entries.get(spend.key)
        if entry is not None:
            return entry
        entry = LedgerEntry(
            key=spend.key,
            experiment_id=spend.experiment_id,
            backend=spend.backend,
            note=spend.note,
            amount_usd=spend.actual_usd,
            actual_usd=spend.actual_usd,
            state="committed",
            reason=spend.reason,
            created_at=now,
            updated_at=now,
        )
        if self.closed_as(spend.key) == "committed":
            # Recorded before and dropped from the carried entries: counted once, not again.
            return entry
        self._entries[entry.key] = entry
        self._remember_closed(entry.key, "committed")
        return entry

    def _remember_closed(self, key: str, state: ClosedState) -> None:
        self._closed_keys[key_digest(key)] = state
        while len(self._closed_keys) > MAX_CLOSED_KEYS:
            del self._closed_keys[next(iter(self._closed_keys))]

    def set_limit(self, command: SetLimit, now: datetime, verified_key_id: str = "") -> None:
        """`verified_key_id`: the key whose signature over this change was verified; the time it
        was signed then bounds every later signed change (so none can be replayed)."""
        self.limit_usd = command.limit_usd
        self.period = command.period
        self.limit_set_by = command.by
        self.limit_set_at = now
        self.limit_key_id = verified_key_id
        if verified_key_id and command.signature is not None:
            self.limit_signed_at = command.signature.issued_at

    def refuse_limit_change(self, command: SetLimit, why: str, now: datetime) -> None:
        refused = RefusedLimitChange(
            at=now, by=command.by, limit_usd=command.limit_usd, period=command.period, why=why
        )
        self.refused_limit_changes = [*self.refused_limit_changes, refused][
            -MAX_REFUSED_LIMIT_CHANGES:
        ]

    # --- reading and carrying -----------------------------------------------------------------

    def view(self, now: datetime, recent: int | None = None) -> LedgerView:
        balance = self.balance(now)
        newest_first = list(reversed(self._entries.values()))
        return LedgerView(
            account=self.account,
            limit_usd=self.limit_usd,
            period=self.period,
            period_start=period_start(self.period, now),
            reserved_usd=round(balance.reserved_usd, 9),
            committed_usd=round(balance.committed_usd, 9),
            available_usd=round(max(balance.available_usd, 0.0), 9),
            entries=newest_first if recent is None else newest_first[: max(recent, 0)],
            limit_set_by=self.limit_set_by,
            limit_set_at=self.limit_set_at,
            limit_key_id=self.limit_key_id,
            refused_limit_changes=self.refused_limit_changes,
            folded_committed_usd=self._folded_committed_usd if self._folded_counts(now) else 0.0,
        )

    def carried_state(self, now: datetime) -> LedgerState:
        """The bounded state for continue-as-new (see the module docstring)."""
        closed_kept: list[LedgerEntry] = []
        for entry in self._entries.values():
            if entry.state == "reserved":
                continue
            if self._counts_now(entry.created_at, now) or now - entry.updated_at < (
                CLOSED_ENTRY_GRACE
            ):
                closed_kept.append(entry)
        closed_kept.sort(key=lambda entry: entry.updated_at, reverse=True)
        overflow = closed_kept[MAX_CLOSED_ENTRIES:]
        kept_keys = {entry.key for entry in closed_kept[:MAX_CLOSED_ENTRIES]}

        folded_usd = self._folded_committed_usd if self._folded_counts(now) else 0.0
        folded_entries = self._folded_entries if self._folded_counts(now) else 0
        folded_until = self._folded_until if self._folded_counts(now) else None
        for entry in overflow:
            if not self._counts_now(entry.created_at, now):
                continue
            folded_usd += entry.actual_usd or 0.0
            folded_entries += 1
            folded_until = max(folded_until or entry.created_at, entry.created_at)
        return LedgerState(
            limit_usd=self.limit_usd,
            period=self.period,
            limit_set_by=self.limit_set_by,
            limit_set_at=self.limit_set_at,
            limit_key_id=self.limit_key_id,
            limit_signed_at=self.limit_signed_at,
            refused_limit_changes=self.refused_limit_changes,
            entries=[
                entry
                for entry in self._entries.values()
                if entry.state == "reserved" or entry.key in kept_keys
            ],
            folded_committed_usd=folded_usd,
            folded_entries=folded_entries,
            folded_until=folded_until,
            closed_keys=self._closed_keys,
        )

    def details(self, now: datetime) -> str:
        """Markdown for the Web UI's current details."""
        balance = self.balance(now)
        per = "" if self.period == "none" else f" per {self.period}"
        return "\n\n".join(
            [
                f"**Limit:** {format_usd(self.limit_usd)}{per}",
                f"**Reserved:** {format_usd(balance.reserved_usd)}",
                f"**Committed:** {format_usd(balance.committed_usd)}",
                f"**Available:** {format_usd(max(balance.available_usd, 0.0))}",
            ]
        )


@workflow.defn(name="BudgetLedgerWorkflow")
class BudgetLedgerWorkflow:
    @workflow.init
    def __init__(self, input: LedgerInput) -> None:
        state = input.state or LedgerState(limit_usd=input.limit_usd, period=input.period)
        self._book = LedgerBook(input.account, state)
        self._period_changed = False
        # One limit change at a time: each checks its signature against the last one's, and
        # reads the policy in a local activity; concurrent local activities do not replay in
        # the order they ran (temporalio/sdk-python#1578).
        self._limit_change_lock = asyncio.Lock()

    @workflow.run
    async def run(self, input: LedgerInput) -> None:
        self._publish_details()
        while not self._continue_as_new_due(input.max_history_events):
            self._period_changed = False
            boundary = next_period_start(self._book.period, workflow.now())
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._period_changed or self._continue_as_new_due(input.max_history_events)
                    ),
                    timeout=None if boundary is None else boundary - workflow.now(),
                    timeout_summary="start of the next budget period",
                )
            except TimeoutError:
                # This timer only wakes the ledger when a period starts, so that queries, which
                # read the clock of the last workflow task, see the new period.
                self._publish_details()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            LedgerInput(
                account=input.account,
                state=self._book.carried_state(workflow.now()),
                max_history_events=input.max_history_events,
            )
        )

    def _continue_as_new_due(self, max_history_events: int) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > max_history_events
        )

    def _publish_details(self) -> None:
        workflow.set_current_details(self._book.details(workflow.now()))

    @workflow.update
    async def set_limit(self, command: SetLimit) -> LedgerView:
        async with self._limit_change_lock:
            verified_key_id = ""
            if workflow.patched(SIGNED_LIMITS_PATCH):
                refusal, verified_key_id = await self._check_limit_change(command)
                if refusal is not None:
                    self._book.refuse_limit_change(command, refusal, workflow.now())
                    workflow.logger.warning("limit change refused: %s", refusal)
                    raise ApplicationError(
                        f"account '{self._book.account}': limit change refused: {refusal}",
                        type=LIMIT_CHANGE_REFUSED,
                        non_retryable=True,
                    )
            self._book.set_limit(command, workflow.now(), verified_key_id)
            self._period_changed = True
            self._publish_details()
        return self._book.view(workflow.now(), RECENT_ENTRIES_IN_REPLIES)

    async def _check_limit_change(self, command: SetLimit) -> tuple[str | None, str]:
        """(refusal or None, id of the key whose signature was verified or "")."""
        # A regular activity, for the reason the experiment checks its policy in one
        # (workflows/experiment.py: replay of a local activity recorded a workflow task late).
        execute = (
            workflow.execute_activity
            if workflow.patched(ADMINS_AS_ACTIVITY_PATCH)
            else workflow.execute_local_activity
        )
        try:
            admins = await execute(
                activity_contracts.budget_admins,
                BudgetAdminsInput(account=self._book.account),
                start_to_close_timeout=timedelta(seconds=10),
                # A policy file that cannot be read refuses the change (fail closed) after a
                # few attempts, instead of holding the caller until it is fixed.
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="budget admins",
            )
        except (ActivityError, ApplicationError) as error:
            # A failed local activity raises its ApplicationError as it is, not an ActivityError.
            cause = error.cause if isinstance(error, ActivityError) else error
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            return f"the account's budget admins could not be read from the policy: {message}", ""
        refusal = limit_change_refusal(
            account=self._book.account,
            limit_usd=command.limit_usd,
            period=command.period,
            admin=command.by,
            signature=command.signature,
            admins=admins.admins,
            last_signed_at=self._book.limit_signed_at,
            now=workflow.now(),
        )
        signed = refusal is None and bool(admins.admins) and command.signature is not None
        return refusal, command.signature.key_id if signed and command.signature else ""

    @workflow.update
    def reserve(self, reservation: Reservation) -> ReservationReceipt:
        receipt = self._book.reserve(reservation, workflow.now())
        self._publish_details()
        return receipt

    @reserve.validator
    def validate_reserve(self, reservation: Reservation) -> None:
        self._book.check_reservation(reservation, workflow.now())

    @workflow.update
    def commit(self, settlement: Settlement) -> LedgerEntry:
        entry = self._book.commit(settlement, workflow.now())
        self._publish_details()
        return entry

    @commit.validator
    def validate_commit(self, settlement: Settlement) -> None:
        self._book.check_commit(settlement)

    @workflow.update
    def release(self, release: Release) -> LedgerEntry:
        entry = self._book.release(release, workflow.now())
        self._publish_details()
        return entry

    @release.validator
    def validate_release(self, release: Release) -> None:
        self._book.check_release(release)

    @workflow.update
    def record_spend(self, spend: ExternalSpend) -> LedgerEntry:
        """Money spent outside qloop (an adopted provider task), committed as billed."""
        entry = self._book.record_spend(spend, workflow.now())
        self._publish_details()
        return entry

    @record_spend.validator
    def validate_record_spend(self, spend: ExternalSpend) -> None:
        self._book.check_spend(spend)

    @workflow.query
    def view(self, recent: int | None = None) -> LedgerView:
        """The current period's balance and the `recent` newest entries (all when None)."""
        return self._book.view(workflow.now(), recent)
