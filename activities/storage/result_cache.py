"""Experiment results kept for reuse (`execution.reuse: within_calibration`), in the shared
database beside the sweep cache (adapters/shared_database.py): one row per batch fingerprint
(activities/experiment/result_reuse.py) naming the experiment and job that measured it, the
counts artifact, the backend and calibration epoch, and what it paid. No counts are copied: the
row points at the artifact store, which hosts share as they share this database.

A table of its own, not `point_values`: its keys are fingerprints of whole batches, a space no
sweep point's fingerprint falls into, and its rows carry a job rather than a value. The first
result stored for a fingerprint wins. `qloop cache ls|purge` count and forget these rows with the
sweep's values (activities/storage/point_cache_inventory.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.shared_database import shared_database
from schemas.execution import JobRef
from schemas.report import ReusedResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiment_results (
    fingerprint TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    calibration_epoch TEXT,
    experiment_id TEXT NOT NULL,
    job TEXT NOT NULL,
    counts_uri TEXT NOT NULL,
    shots INTEGER NOT NULL,
    paid_usd DOUBLE PRECISION NOT NULL,
    stored_at TEXT NOT NULL
);
"""
_COLUMNS = (
    "fingerprint, backend, calibration_epoch, experiment_id, job, counts_uri, shots, paid_usd,"
    " stored_at"
)


def stored_result(fingerprint: str) -> ReusedResult | None:
    """The result stored under the fingerprint, if any."""
    with shared_database().transaction(SCHEMA) as tx:
        rows = tx.rows(
            f"SELECT {_COLUMNS} FROM experiment_results WHERE fingerprint = ?", [fingerprint]
        )
    if not rows:
        return None
    fingerprint, backend, epoch, experiment_id, job, counts_uri, shots, paid, stored_at = rows[0]
    return ReusedResult(
        fingerprint=fingerprint,
        experiment_id=experiment_id,
        job=JobRef.model_validate_json(job),
        counts_uri=counts_uri,
        shots=int(shots),
        backend=backend,
        calibration_epoch=epoch,
        paid_usd=float(paid),
        stored_at=stored_at,
    )


def store_result(
    fingerprint: str,
    *,
    backend: str,
    calibration_epoch: str | None,
    experiment_id: str,
    job: JobRef,
    counts_uri: str,
    shots: int,
    paid_usd: float,
) -> bool:
    """Stores a result under its fingerprint; False when one was already there (kept)."""
    stored_at = datetime.now(UTC).isoformat(timespec="seconds")
    with shared_database().transaction(SCHEMA) as tx:
        changed = tx.changed(
            f"INSERT INTO experiment_results ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (fingerprint) DO NOTHING",
            [
                fingerprint,
                backend,
                calibration_epoch,
                experiment_id,
                job.model_dump_json(),
                counts_uri,
                shots,
                paid_usd,
                stored_at,
            ],
        )
    return changed > 0
