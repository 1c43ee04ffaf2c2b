"""Braket's per-device spending limits: Create/Update/Delete/SearchSpendingLimits, and the check
every CreateQuantumTask on a limited device passes.

As AWS documents it: a limit applies to one QPU (simulators have none); a task whose estimated
cost (per-task fee plus requested shots at the per-shot price) exceeds what remains (limit minus
total spend minus queued spend) is rejected at once with a ValidationException, as is any task
created outside the limit's time period. A task's estimate is queued while it has not ended; once
it ended, what it billed moves to the total spend (a failed or cancelled task bills nothing, so
its estimate is released).

Spend is never counted: it is derived from the task store each time (the device's tasks created
at or after the limit's creation, and within its time period if it has one), so it cannot drift
from what the tasks billed. The limits themselves, and the client tokens of the calls that made
or changed them, live in their own tables of the stand-in's SQLite file, so they survive a
restart like the tasks do.

Two creates racing on one device can both pass the check (it is not atomic with the insert);
qloop submits a job's tasks one after another.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from qpu_standin.config import Device, Settings
from qpu_standin.errors import ApiError, validation
from qpu_standin.executor import iso_time
from qpu_standin.store import TERMINAL_STATES, Task, TaskStore

# The pattern botocore's model gives spendingLimit: whole dollars or dollars and cents.
USD_PATTERN = re.compile(r"\d+(\.\d{1,2})?")
MAX_CLIENT_TOKEN = 64
FILTER_FIELDS = {"deviceArn": "device_arn", "spendingLimitArn": "arn"}
FOREVER = 253402300799.0  # 9999-12-31T23:59:59Z: the end of a limit without a time period

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spending_limits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    arn TEXT NOT NULL UNIQUE,
    device_arn TEXT NOT NULL UNIQUE,
    spending_limit TEXT NOT NULL,
    start_at REAL,
    end_at REAL,
    tags TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spending_limit_tokens (
    client_token TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    arn TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SpendingLimit:
    seq: int
    arn: str
    device_arn: str
    spending_limit: str  # USD, as the caller gave it
    start_at: float | None  # None: no time period, the limit applies whenever it exists
    end_at: float | None
    tags: str
    created_at: float
    updated_at: float

    def covers(self, moment: float) -> bool:
        """Whether a task created at `moment` is subject to (and counted against) this limit."""
        if moment < self.created_at:
            return False
        if self.start_at is None or self.end_at is None:
            return True
        return self.start_at <= moment < self.end_at


@dataclass(frozen=True)
class Spend:
    queued: Decimal  # estimates of the counted tasks that have not ended
    total: Decimal  # what the counted tasks that ended billed


def task_estimate(device: Device, shots: int) -> Decimal:
    """What Braket deducts when a task is created: the per-task fee plus the requested shots at
    the per-shot price (for a program set, `shots` is the total over its executables)."""
    return Decimal(str(device.price_per_task)) + Decimal(str(device.price_per_shot)) * shots


def spend_against(
    limit: SpendingLimit,
    tasks: Iterable[Task],
    estimate: Callable[[Task], Decimal],
    billed: Callable[[Task], Decimal],
) -> Spend:
    counted = [t for t in tasks if t.device_arn == limit.device_arn and limit.covers(t.created_at)]
    return Spend(
        queued=sum((estimate(t) for t in counted if t.status not in TERMINAL_STATES), Decimal(0)),
        total=sum((billed(t) for t in counted if t.status in TERMINAL_STATES), Decimal(0)),
    )


def remaining(limit: SpendingLimit, spend: Spend) -> Decimal:
    return Decimal(limit.spending_limit) - spend.total - spend.queued


def refusal(limit: SpendingLimit, spend: Spend, cost: Decimal, moment: float) -> str | None:
    """Why a task of estimated `cost` created at `moment` is refused; None when it fits."""
    if not limit.covers(moment):
        return (
            f"Quantum task rejected by spending limit {limit.arn}: device {limit.device_arn} "
            f"accepts tasks only from {iso_time(limit.start_at or 0)} to "
            f"{iso_time(limit.end_at or 0)}"
        )
    left = remaining(limit, spend)
    if cost <= left:
        return None
    return (
        f"Quantum task rejected by spending limit {limit.arn} on device {limit.device_arn}: "
        f"estimated cost {_usd(cost)} exceeds the remaining {_usd(max(left, Decimal(0)))} of "
        f"the {_usd(Decimal(limit.spending_limit))} spending limit (total spend "
        f"{_usd(spend.total)}, queued spend {_usd(spend.queued)})"
    )


def summary(limit: SpendingLimit, spend: Spend) -> dict[str, Any]:
    """The SpendingLimitSummary shape; a limit without a time period shows one from its creation
    to the end of year 9999 (the shape requires one)."""
    return {
        "spendingLimitArn": limit.arn,
        "deviceArn": limit.device_arn,
        "timePeriod": {
            "startAt": limit.created_at if limit.start_at is None else limit.start_at,
            "endAt": FOREVER if limit.end_at is None else limit.end_at,
        },
        "spendingLimit": limit.spending_limit,
        "queuedSpend": amount_text(spend.queued),
        "totalSpend": amount_text(spend.total),
        "createdAt": iso_time(limit.created_at),
        "updatedAt": iso_time(limit.updated_at),
        "tags": json.loads(limit.tags),
    }


def amount_text(amount: Decimal) -> str:
    """Dollars as a plain decimal string without trailing zeros: "0.39", "0.3009", "12"."""
    return format(amount.normalize(), "f")


def checked_usd(value: Any) -> str:
    if not isinstance(value, str) or USD_PATTERN.fullmatch(value) is None:
        raise validation(
            f"spendingLimit must be a string of US dollars such as 100 or 12.50, got {value!r}"
        )
    return value


def checked_period(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    fields = value if isinstance(value, dict) else {}
    start, end = fields.get("startAt"), fields.get("endAt")
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        raise validation(
            f"timePeriod needs startAt and endAt in epoch seconds, got {json.dumps(value)}"
        )
    if start >= end:
        raise validation(f"timePeriod must start before it ends, got startAt {start} >= {end}")
    return float(start), float(end)


def checked_token(body: dict[str, Any]) -> str:
    token = body.get("clientToken")
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_CLIENT_TOKEN:
        raise validation(f"clientToken must be 1 to {MAX_CLIENT_TOKEN} characters, got {token!r}")
    return token


def request_hash(operation: str, fields: dict[str, Any]) -> str:
    """What makes two calls with one client token the same request."""
    return hashlib.sha256(json.dumps([operation, fields], sort_keys=True).encode()).hexdigest()


def checked_filter(spec: Any) -> tuple[str, list[str]]:
    """A SearchSpendingLimitsFilter as (SpendingLimit field, values it may hold)."""
    fields = spec if isinstance(spec, dict) else {}
    name, values, operator = fields.get("name"), fields.get("values"), fields.get("operator")
    if name not in FILTER_FIELDS:
        raise validation(f"unsupported filter {name!r}; allowed: {', '.join(FILTER_FIELDS)}")
    if operator != "EQUAL":
        raise validation(f"unsupported filter operator {operator!r}; allowed: EQUAL")
    if not isinstance(values, list) or not values:
        raise validation(f"filter {name} needs at least one value")
    return FILTER_FIELDS[name], values


def _usd(amount: Decimal) -> str:
    return f"${amount:.2f}"


class SpendingLimits:
    """The spending limits of one stand-in, in the SQLite file at `path` (the task store's)."""

    def __init__(
        self,
        path: Path,
        tasks: TaskStore,
        settings: Callable[[], Settings],
        billed: Callable[[Task], Decimal],
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tasks = tasks
        self._settings = settings
        self._billed = billed
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)

    # --- Braket operations ------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        token = checked_token(body)
        device = self._limitable_device(body.get("deviceArn"))
        amount = checked_usd(body.get("spendingLimit"))
        period = checked_period(body.get("timePeriod"))
        tags = body.get("tags") or {}
        fields = {"deviceArn": device.arn, "spendingLimit": amount, "timePeriod": period}
        digest = request_hash("CreateSpendingLimit", {**fields, "tags": tags})
        with self._cursor() as cur:
            known = self._known_token(cur, token, digest)
            if known is not None:
                return {"spendingLimitArn": known}
            existing = cur.execute(
                "SELECT arn FROM spending_limits WHERE device_arn = ?", (device.arn,)
            ).fetchone()
            if existing is not None:
                raise validation(
                    f"device {device.arn} already has spending limit {existing['arn']}; "
                    "update or delete it"
                )
            settings = self._settings()
            arn = (
                f"arn:aws:braket:{settings.region}:{settings.account_id}:spending-limit/"
                f"{uuid.uuid4()}"
            )
            now = time.time()
            cur.execute(
                "INSERT INTO spending_limits (arn, device_arn, spending_limit, start_at, end_at, "
                "tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    arn,
                    device.arn,
                    amount,
                    *(period or (None, None)),
                    json.dumps(tags),
                    now,
                    now,
                ),
            )
            self._remember_token(cur, token, "CreateSpendingLimit", digest, arn)
        return {"spendingLimitArn": arn}

    def update(self, arn: str, body: dict[str, Any]) -> dict[str, Any]:
        token = checked_token(body)
        amount = None if body.get("spendingLimit") is None else checked_usd(body["spendingLimit"])
        period = checked_period(body.get("timePeriod"))
        digest = request_hash(
            "UpdateSpendingLimit", {"arn": arn, "spendingLimit": amount, "timePeriod": period}
        )
        with self._cursor() as cur:
            if self._known_token(cur, token, digest) is not None:
                return {}
            limit = self._limit(cur, arn)
            cur.execute(
                "UPDATE spending_limits SET spending_limit = ?, start_at = ?, end_at = ?, "
                "updated_at = ? WHERE arn = ?",
                (
                    limit.spending_limit if amount is None else amount,
                    *(period or (limit.start_at, limit.end_at)),
                    time.time(),
                    arn,
                ),
            )
            self._remember_token(cur, token, "UpdateSpendingLimit", digest, arn)
        return {}

    def delete(self, arn: str) -> dict[str, Any]:
        with self._cursor() as cur:
            self._limit(cur, arn)
            cur.execute("DELETE FROM spending_limits WHERE arn = ?", (arn,))
        return {}

    def search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Every limit that matches the request's filters, as a SpendingLimitSummary."""
        filters = [checked_filter(spec) for spec in body.get("filters") or []]
        with self._cursor() as cur:
            limits = [SpendingLimit(**row) for row in cur.execute(_SELECT + " ORDER BY seq")]
        for field, values in filters:
            limits = [limit for limit in limits if getattr(limit, field) in values]
        return [summary(limit, self._spend(limit)) for limit in limits]

    # --- the check of CreateQuantumTask ------------------------------------------------------

    def admit(self, device: Device, shots: int, moment: float) -> None:
        """Raise the ValidationException Braket answers when a task of `shots` created at
        `moment` on `device` does not fit its spending limit; nothing when it fits or the
        device has no limit."""
        with self._cursor() as cur:
            row = cur.execute(_SELECT + " WHERE device_arn = ?", (device.arn,)).fetchone()
        if row is None:
            return
        limit = SpendingLimit(**row)
        why = refusal(limit, self._spend(limit), task_estimate(device, shots), moment)
        if why is not None:
            raise validation(why)

    # --- helpers ----------------------------------------------------------------------------

    def _spend(self, limit: SpendingLimit) -> Spend:
        return spend_against(limit, self._tasks.all(), self._estimate, self._billed)

    def _estimate(self, task: Task) -> Decimal:
        device = self._settings().device(task.device_arn)
        return Decimal(0) if device is None else task_estimate(device, task.shots)

    def _limitable_device(self, arn: Any) -> Device:
        if not isinstance(arn, str) or not arn:
            raise validation("deviceArn is required")
        if "/quantum-simulator/" in arn:
            raise validation(f"{arn} is a simulator; simulators do not support spending limits")
        device = self._settings().device(arn)
        if device is None:
            raise validation(f"device {arn} does not exist")
        if device.status == "RETIRED":
            raise ApiError("DeviceRetiredException", f"{device.name} is retired")
        return device

    @staticmethod
    def _limit(cur: sqlite3.Cursor, arn: str) -> SpendingLimit:
        row = cur.execute(_SELECT + " WHERE arn = ?", (arn,)).fetchone()
        if row is None:
            raise ApiError("ResourceNotFoundException", f"spending limit {arn} not found")
        return SpendingLimit(**row)

    @staticmethod
    def _known_token(cur: sqlite3.Cursor, token: str, digest: str) -> str | None:
        """The ARN a call with this client token already acted on; it must be the same call."""
        row = cur.execute(
            "SELECT * FROM spending_limit_tokens WHERE client_token = ?", (token,)
        ).fetchone()
        if row is None:
            return None
        if row["request_hash"] != digest:
            raise validation(
                f"clientToken {token} was already used for a different {row['operation']} "
                f"request ({row['arn']})"
            )
        return str(row["arn"])

    @staticmethod
    def _remember_token(
        cur: sqlite3.Cursor, token: str, operation: str, digest: str, arn: str
    ) -> None:
        cur.execute(
            "INSERT INTO spending_limit_tokens (client_token, operation, request_hash, arn) "
            "VALUES (?, ?, ?, ?)",
            (token, operation, digest, arn),
        )

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        """One transaction at a time: a call's check and its write are not interleaved."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")


_SELECT = (
    "SELECT seq, arn, device_arn, spending_limit, start_at, end_at, tags, created_at, "
    "updated_at FROM spending_limits"
)
