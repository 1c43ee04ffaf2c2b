"""What the sweep cache (activities/storage/point_cache.py) holds, and forgetting part of it: the
queries behind `qloop cache ls|show|purge`, on SQLite and PostgreSQL alike.

Values stored before the cache kept origins have no backend or epoch (`None` here); they are
listed as their own group and forgotten by `everything` or `stored_before`.

Experiment results kept for reuse (activities/storage/result_cache.py) are listed as groups of
their own kind (`experiment results`, counting experiments where point groups count sweeps) and
forgotten by the same selections; `cache_entries` shows sweep values only.
"""

from __future__ import annotations

from dataclasses import dataclass

from activities.storage.point_cache import SCHEMA
from activities.storage.result_cache import SCHEMA as RESULTS_SCHEMA
from adapters.shared_database import shared_database

# Both tables, joined: every value with its origin, when it has one.
_JOINED = "point_values v LEFT JOIN point_origins o ON o.fingerprint = v.fingerprint"
POINTS = "sweep points"
RESULTS = "experiment results"


@dataclass(frozen=True)
class CacheGroup:
    """The values of one backend measured in one calibration epoch (None: an ideal simulator,
    or `backend` None too: stored before origins were kept)."""

    backend: str | None
    calibration_epoch: str | None
    entries: int
    # Sweeps that stored the values; for experiment results, the experiments.
    sweeps: int
    oldest: str
    newest: str
    kind: str = POINTS


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

    def where_clause(self, origins: str = "o.", values: str = "v.") -> tuple[str, list[str]]:
        """The SQL condition on the joined tables (`v`: values, `o`: origins; no prefixes for
        the experiment results, whose one table has all three columns), its parameters."""
        criteria = [
            (f"{origins}backend = ?", self.backend),
            (f"{origins}calibration_epoch = ?", self.calibration_epoch),
            (f"{values}stored_at < ?", self.stored_before),
        ]
        chosen = [(sql, value) for sql, value in criteria if value is not None]
        if not chosen:
            # Only `everything` reaches a query without criteria (see `is_empty`).
            return "1 = 1", []
        return " AND ".join(sql for sql, _ in chosen), [value for _, value in chosen]


def cache_groups() -> list[CacheGroup]:
    """Every backend and calibration epoch the cache holds values (or experiment results) of,
    newest first."""
    with shared_database().transaction(SCHEMA) as tx:
        rows = tx.rows(
            "SELECT o.backend, o.calibration_epoch, COUNT(*), COUNT(DISTINCT v.sweep_id),"
            f" MIN(v.stored_at), MAX(v.stored_at) FROM {_JOINED}"
            " GROUP BY o.backend, o.calibration_epoch ORDER BY MAX(v.stored_at) DESC"
        )
    with shared_database().transaction(RESULTS_SCHEMA) as tx:
        results = tx.rows(
            "SELECT backend, calibration_epoch, COUNT(*), COUNT(DISTINCT experiment_id),"
            " MIN(stored_at), MAX(stored_at) FROM experiment_results"
            " GROUP BY backend, calibration_epoch"
        )
    groups = [CacheGroup(*row) for row in rows]
    groups += [
        CacheGroup(backend, epoch, entries, experiments, oldest, newest, RESULTS)
        for backend, epoch, entries, experiments, oldest, newest in results
    ]
    # Stable: within one time, sweep points before experiment results.
    return sorted(groups, key=lambda group: group.newest, reverse=True)


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
    """Values and experiment results the selection matches."""
    where, params = selection.where_clause()
    with shared_database().transaction(SCHEMA) as tx:
        ((count,),) = tx.rows(f"SELECT COUNT(*) FROM {_JOINED} WHERE {where}", params)
    where, params = selection.where_clause("", "")
    with shared_database().transaction(RESULTS_SCHEMA) as tx:
        ((results,),) = tx.rows(f"SELECT COUNT(*) FROM experiment_results WHERE {where}", params)
    return int(count) + int(results)


def forget(selection: CacheSelection) -> int:
    """Deletes the selected values and their origins in one transaction, then the selected
    experiment results in another; says how many values and results. A sweep planned after this
    measures those points again, and an experiment those batches."""
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
    where, params = selection.where_clause("", "")
    with shared_database().transaction(RESULTS_SCHEMA) as tx:
        forgotten += tx.changed(f"DELETE FROM experiment_results WHERE {where}", params)
    return forgotten
