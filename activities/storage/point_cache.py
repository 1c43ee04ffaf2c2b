"""The fingerprint cache of sweep points, in the shared database (adapters/shared_database.py):
one row per fingerprint (a hash of circuit, parameters, backend, shots, seed and the backend's
calibration epoch; see `activities.variational.point_fingerprints`) with the value measured for
it, and where it came from (`point_origins`: backend and calibration epoch, for
`qloop cache ls|show|purge`; a separate table, so that databases from before it need no
migration, and values stored then simply have no origin). A point found here is neither run nor
paid for again, by its sweep or any later one, on any host.

The first value stored for a fingerprint wins: later stores of the same fingerprint change
nothing. A batch is stored in one transaction, entirely or not at all; writers on several hosts
insert in fingerprint order, so two batches sharing points never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from adapters.shared_database import shared_database
from schemas.variational import PointValue

SCHEMA = """
CREATE TABLE IF NOT EXISTS point_values (
    fingerprint TEXT PRIMARY KEY,
    value DOUBLE PRECISION NOT NULL,
    std_error DOUBLE PRECISION NOT NULL,
    raw DOUBLE PRECISION NOT NULL,
    parameters TEXT NOT NULL,
    sweep_id TEXT NOT NULL,
    label TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS point_origins (
    fingerprint TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    calibration_epoch TEXT
);
"""
# Rows per statement: SQLite allows 32,766 parameters (8 per row), PostgreSQL 65,535.
LOOKUP_CHUNK = 1_000
STORE_CHUNK = 500


def cached_values(fingerprints: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """(value, std_error, raw) of every fingerprint the cache holds."""
    found: dict[str, tuple[float, float, float]] = {}
    unique = list(dict.fromkeys(fingerprints))
    with shared_database().transaction(SCHEMA) as tx:
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = tx.rows(
                "SELECT fingerprint, value, std_error, raw FROM point_values"
                f" WHERE fingerprint IN ({marks})",
                chunk,
            )
            for fingerprint, value, std_error, raw in rows:
                found[fingerprint] = (value, std_error, raw)
    return found


def store_in_cache(
    sweep_id: str,
    label: str,
    values: Sequence[PointValue],
    *,
    backend: str = "",
    calibration_epoch: str | None = None,
) -> int:
    """Stores a batch's values, measured on `backend` in `calibration_epoch`; says how many
    fingerprints were new."""
    stored_at = datetime.now(UTC).isoformat(timespec="seconds")
    rows = sorted(
        {
            v.fingerprint: (
                v.fingerprint,
                v.value,
                v.std_error,
                v.raw,
                repr(v.parameters),
                sweep_id,
                label,
                stored_at,
            )
            for v in reversed(values)
        }.values()
    )
    stored = 0
    with shared_database().transaction(SCHEMA) as tx:
        for start in range(0, len(rows), STORE_CHUNK):
            chunk = rows[start : start + STORE_CHUNK]
            marks = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            stored += tx.changed(
                f"INSERT INTO point_values VALUES {marks} ON CONFLICT (fingerprint) DO NOTHING",
                [field for row in chunk for field in row],
            )
            origin_marks = ",".join(["(?, ?, ?)"] * len(chunk))
            tx.changed(
                f"INSERT INTO point_origins VALUES {origin_marks}"
                " ON CONFLICT (fingerprint) DO NOTHING",
                [field for row in chunk for field in (row[0], backend, calibration_epoch)],
            )
    return stored
