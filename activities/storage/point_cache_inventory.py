"""What the sweep cache (activities/storage/point_cache.py) holds, and forgetting part of it: the
queries behind `qloop cache ls|show|purge`, on SQLite and PostgreSQL alike.

Values stored before the cache kept origins have no backend or epoch (`None` here); they are
listed as their own group and forgotten by `everything` or `stored_before`.
"""

from __future__ import annotations

from dataclasses import dataclass

from activities.storage.point_cache import SCHEMA
from adapters.shared_database import shared_database

# Both tables, joined: every value with its origin, when it has one.
_JOINED = "point_values v LEFT JOIN point_origins o ON o.fingerprint = v.fingerprint"


@dataclass(frozen=True)
class CacheGroup:
    """The values of one backend measured in one calibration epoch (None: an ideal simulator,
    or `backend` None too: stored before origins were kept)."""

    backend: str | None
    calibration_epoch: str | None
    entries: int
    sweeps: int
    oldest: str
    newest: str


@dataclass(frozen=True)
class CacheEntry:
    fingerprint: str
    value: float
    std_error: float
    raw: float
    parameters: str
    sweep_id: str
    label: str
    stored_at: str
    backend: str | None
    calibration_epoch: str | None


@dataclass(frozen=True)
class CacheSelection:
    """Which values to forget: those matching every given criterion, or `everything`.
    `stored_before` is an ISO 8601 UTC time, compared with the stored `stored_at` text."""

    backend: str | None = None
    calibration_epoch: str | None = None
    stored_before: str | None = None
    everything: bool = False

    def is_empty(self) -> bool:
        return not self.everything and self.where_clause()[1] == []

    def where_clause(self) -> tuple[str, list[str]]:
        """The SQL condition on the joined tables (`v`: values, `o`: origins), its parameters."""
        criteria = [
            ("o.backend = ?", self.backend),
            ("o.calibration_epoch = ?", self.calibration_epoch),
            ("v.stored_at < ?", self.stored_before),
        ]
        chosen = [(sql, value) for sql, value in criteria if value is not None]
        if not chosen:
            # Only `everything` reaches a query without criteria (see `is_empty`).
            return "1 = 1", []
        return " AND ".join(sql for sql, _ in chosen), [value for _, value in chosen]


def cache_groups() -> list[CacheGroup]:
    """Every backend and calibration epoch the cache holds values of, newest first."""
    with shared_database().transaction(SCHEMA) as tx:
        rows = tx.rows(
            "SELECT o.backend, o.calibration_epoch, COUNT(*), COUNT(DISTINCT v.sweep_id),"
            f" MIN(v.stored_at), MAX(v.stored_at) FROM {_JOINED}"
            " GROUP BY o.backend, o.calibration_epoch ORDER BY MAX(v.stored_at) DESC"
        )
    return [CacheGroup(*row) for row in rows]


def cache_entries(fingerprint_prefix: str, limit: int = 2) -> list[CacheEntry]:
    """The values whose fingerprint starts with the prefix (at most `limit`: two tell the
    caller that the prefix is ambiguous)."""
    with shared_database().transaction(SCHEMA) as tx:
        rows = tx.rows(
            "SELECT v.fingerprint, v.value, v.std_error, v.raw, v.parameters, v.sweep_id,"
            f" v.label, v.stored_at, o.backend, o.calibration_epoch FROM {_JOINED}"
            " WHERE v.fingerprint LIKE ? ORDER BY v.fingerprint LIMIT ?",
            [fingerprint_prefix.lower() + "%", limit],
        )
    return [CacheEntry(*row) for row in rows]


def count_selected(selection: CacheSelection) -> int:
    where, params = selection.where_clause()
    with shared_database().transaction(SCHEMA) as tx:
        ((count,),) = tx.rows(f"SELECT COUNT(*) FROM {_JOINED} WHERE {where}", params)
    return int(count)


def forget(selection: CacheSelection) -> int:
    """Deletes the selected values and their origins in one transaction; says how many values.
    A sweep planned after this measures those points again."""
    if selection.is_empty():
        raise ValueError("a cache selection needs a criterion, or `everything`")
    where, params = selection.where_clause()
    with shared_database().transaction(SCHEMA) as tx:
        forgotten = tx.changed(
            "DELETE FROM point_values WHERE fingerprint IN"
            f" (SELECT v.fingerprint FROM {_JOINED} WHERE {where})",
            params,
        )
        tx.changed(
            "DELETE FROM point_origins WHERE fingerprint NOT IN"
            " (SELECT fingerprint FROM point_values)"
        )
    return forgotten
