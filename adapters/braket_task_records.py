"""Which Braket tasks a job's client token has created so far, in the shared database
(adapters/shared_database.py), so a submit retried on any host goes on where the last attempt
stopped instead of creating the job's tasks again.

Braket makes each CreateQuantumTask idempotent on its own client token (one per task of a job),
which covers a retry within its window; this record covers any retry, however late, and refuses
a token reused for other circuits, shots or device.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.errors import InvalidRequestError
from adapters.shared_database import shared_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS braket_jobs (
    client_token TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    submitted_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS braket_job_tasks (
    client_token TEXT NOT NULL,
    task_index INTEGER NOT NULL,
    task_arn TEXT NOT NULL,
    PRIMARY KEY (client_token, task_index)
);
"""


@dataclass(frozen=True)
class TaskRecord:
    client_token: str
    device: str
    submitted_at: datetime
    task_arns: list[str]


def open_record(client_token: str, fingerprint: str, device: str) -> TaskRecord:
    """The record of `client_token`, created empty on first use. InvalidRequestError when the
    token was used for another job (its fingerprint differs)."""
    if not client_token:
        raise InvalidRequestError("client_token must not be empty")
    now = datetime.now(UTC).isoformat()
    with shared_database().transaction(SCHEMA) as tx:
        tx.changed(
            "INSERT INTO braket_jobs VALUES (?, ?, ?, ?) ON CONFLICT (client_token) DO NOTHING",
            (client_token, device, fingerprint, now),
        )
        [(stored_device, stored_fingerprint, submitted_at)] = tx.rows(
            "SELECT device, fingerprint, submitted_at FROM braket_jobs WHERE client_token = ?",
            (client_token,),
        )
        arns = tx.rows(
            "SELECT task_arn FROM braket_job_tasks WHERE client_token = ? ORDER BY task_index",
            (client_token,),
        )
    if stored_fingerprint != fingerprint:
        raise InvalidRequestError(
            f"client token {client_token!r} was already used for a different job (other "
            "circuits, shots or device); a new job needs a new token"
        )
    return TaskRecord(
        client_token,
        stored_device,
        datetime.fromisoformat(submitted_at),
        [arn for (arn,) in arns],
    )


def add_task(record: TaskRecord, arn: str) -> TaskRecord:
    """The record with the job's next task, stored before the one after it is created. An
    attempt racing this one (a timed-out attempt still running on another host) stores the
    same ARN: Braket answers both with the task its per-task client token created."""
    index = len(record.task_arns)
    with shared_database().transaction(SCHEMA) as tx:
        tx.changed(
            "INSERT INTO braket_job_tasks VALUES (?, ?, ?)"
            " ON CONFLICT (client_token, task_index) DO NOTHING",
            (record.client_token, index, arn),
        )
    return TaskRecord(
        record.client_token, record.device, record.submitted_at, [*record.task_arns, arn]
    )
