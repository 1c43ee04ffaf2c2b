"""Every task the stand-in accepted, in SQLite: the queue, its results and the client tokens.

A result is kept here as well as in S3, because moto keeps S3 in memory: whenever S3 comes back
empty the stand-in puts every stored result back (see results.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUEUED_STATES = ("CREATED", "QUEUED")
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")

# action_metadata: GetQuantumTask's actionMetadata, worked out from the action once, at create.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    arn TEXT NOT NULL UNIQUE,
    client_token TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL,
    device_arn TEXT NOT NULL,
    status TEXT NOT NULL,
    action TEXT NOT NULL,
    device_parameters TEXT NOT NULL,
    shots INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at REAL NOT NULL,
    ready_at REAL NOT NULL,
    run_time REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    failure_reason TEXT,
    result TEXT,
    uploaded INTEGER NOT NULL DEFAULT 0,
    successful_shots INTEGER,
    action_metadata TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_device_status ON tasks (device_arn, status, seq);
-- The files a program-set task writes besides results.json, by key under its directory.
CREATE TABLE IF NOT EXISTS result_files (
    task_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (task_id, key)
);
"""


@dataclass(frozen=True)
class Task:
    seq: int
    id: str
    arn: str
    client_token: str
    request_hash: str
    device_arn: str
    status: str
    action: str
    device_parameters: str
    shots: int
    bucket: str
    key_prefix: str
    tags: str
    created_at: float
    ready_at: float
    run_time: float
    started_at: float | None
    ended_at: float | None
    failure_reason: str | None
    result: str | None
    uploaded: int
    successful_shots: int | None
    action_metadata: str | None

    @property
    def billed_shots(self) -> int:
        """The shots Braket bills once the task COMPLETED: all of them, except those of a
        program set's executables that failed."""
        return self.shots if self.successful_shots is None else self.successful_shots

    @property
    def directory(self) -> str:
        return f"{self.key_prefix}/{self.id}"

    @property
    def result_key(self) -> str:
        return f"{self.directory}/results.json"

    def summary(self) -> dict[str, Any]:
        return {
            "quantumTaskArn": self.arn,
            "id": self.id,
            "clientToken": self.client_token,
            "deviceArn": self.device_arn,
            "status": self.status,
            "shots": self.shots,
            "outputS3Bucket": self.bucket,
            "outputS3Directory": self.directory,
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
            "failureReason": self.failure_reason,
            "tags": json.loads(self.tags),
        }


class TaskStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(tasks)")}
        if "successful_shots" not in columns:  # a database of a stand-in before program sets
            self._db.execute("ALTER TABLE tasks ADD COLUMN successful_shots INTEGER")
        if "action_metadata" not in columns:  # filled in by fill_action_metadata
            self._db.execute("ALTER TABLE tasks ADD COLUMN action_metadata TEXT")

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            yield self._db.cursor()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, fields: dict[str, Any]) -> Task:
        """Insert a new task, or return the one that already has its client token."""
        columns = ", ".join(fields)
        marks = ", ".join(f":{name}" for name in fields)
        with self._cursor() as cur:
            cur.execute(
                f"INSERT INTO tasks ({columns}) VALUES ({marks}) "
                "ON CONFLICT(client_token) DO NOTHING",
                fields,
            )
            row = cur.execute(
                "SELECT * FROM tasks WHERE client_token = ?", (fields["client_token"],)
            ).fetchone()
        return Task(**row)

    def fill_action_metadata(self, metadata_of: Callable[[str], str]) -> None:
        """Sets the action metadata of tasks stored before it was kept: `metadata_of(action)`."""
        for task in self._many("SELECT * FROM tasks WHERE action_metadata IS NULL"):
            with self._cursor() as cur:
                cur.execute(
                    "UPDATE tasks SET action_metadata = ? WHERE id = ?",
                    (metadata_of(task.action), task.id),
                )

    def by_token(self, token: str) -> Task | None:
        return self._one("SELECT * FROM tasks WHERE client_token = ?", token)

    def by_arn(self, arn: str) -> Task | None:
        return self._one("SELECT * FROM tasks WHERE arn = ?", arn)

    def all(self) -> list[Task]:
        return self._many("SELECT * FROM tasks ORDER BY seq")

    def in_status(self, *statuses: str, device_arn: str | None = None) -> list[Task]:
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT * FROM tasks WHERE status IN ({marks})"
        args: list[Any] = list(statuses)
        if device_arn is not None:
            sql += " AND device_arn = ?"
            args.append(device_arn)
        return self._many(sql + " ORDER BY seq", *args)

    def queue_position(self, task: Task) -> int:
        """1-based place among the device's waiting tasks (FIFO by arrival)."""
        row = self._one_value(
            "SELECT COUNT(*) FROM tasks WHERE device_arn = ? AND status IN ('CREATED', 'QUEUED') "
            "AND seq <= ?",
            task.device_arn,
            task.seq,
        )
        return int(row)

    def queue_size(self, device_arn: str) -> int:
        return int(
            self._one_value(
                "SELECT COUNT(*) FROM tasks WHERE device_arn = ? "
                "AND status IN ('CREATED', 'QUEUED')",
                device_arn,
            )
        )

    def transition(self, task_id: str, frm: tuple[str, ...], to: str, **fields: Any) -> bool:
        """Move a task from one of `frm` to `to` (setting `fields`); False if it was elsewhere."""
        sets = ", ".join(["status = :to", *(f"{name} = :{name}" for name in fields)])
        marks = ", ".join(f":frm{i}" for i in range(len(frm)))
        params = {"to": to, "id": task_id, **fields, **{f"frm{i}": s for i, s in enumerate(frm)}}
        with self._cursor() as cur:
            cur.execute(f"UPDATE tasks SET {sets} WHERE id = :id AND status IN ({marks})", params)
            return cur.rowcount == 1

    def save_result(
        self, task_id: str, document: str, files: dict[str, str], successful_shots: int | None
    ) -> bool:
        """Keep a RUNNING task's results.json and its other files in one transaction; False if
        the task was no longer RUNNING (it was cancelled meanwhile)."""
        with self._cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(
                "UPDATE tasks SET result = ?, successful_shots = ? "
                "WHERE id = ? AND status = 'RUNNING'",
                (document, successful_shots, task_id),
            )
            if cur.rowcount != 1:
                cur.execute("ROLLBACK")
                return False
            cur.executemany(
                "INSERT OR REPLACE INTO result_files (task_id, key, body) VALUES (?, ?, ?)",
                [(task_id, key, body) for key, body in files.items()],
            )
            cur.execute("COMMIT")
            return True

    def result_files(self, task_id: str) -> dict[str, str]:
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT key, body FROM result_files WHERE task_id = ? ORDER BY key", (task_id,)
            ).fetchall()
        return {row["key"]: row["body"] for row in rows}

    def _one(self, sql: str, *args: Any) -> Task | None:
        with self._cursor() as cur:
            row = cur.execute(sql, args).fetchone()
        return Task(**row) if row else None

    def _many(self, sql: str, *args: Any) -> list[Task]:
        with self._cursor() as cur:
            rows = cur.execute(sql, args).fetchall()
        return [Task(**row) for row in rows]

    def _one_value(self, sql: str, *args: Any) -> Any:
        with self._cursor() as cur:
            return cur.execute(sql, args).fetchone()[0]
