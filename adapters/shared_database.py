"""State that hosts share and that is not Temporal history, in the database QLOOP_DATABASE_URL
names: `sqlite:///absolute/path` (by default `$QLOOP_HOME/qloop.sqlite3`: the worker processes
of one host) or `postgresql://user:password@host:port/database` (a fleet, through psycopg 3).

Callers write SQL that both dialects run (`?` placeholders; `INSERT ... ON CONFLICT DO
NOTHING`; `DOUBLE PRECISION`) and run it in one transaction at a time: `with transaction() as
tx: tx.rows(...)`. Each operation opens its own connection, so nothing is shared across
threads or the compute pool's child processes; on loopback that costs a few milliseconds.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import psycopg

from schemas.settings import current_settings, database_location, qloop_home

SQLITE_FILE = "qloop.sqlite3"
SCHEMA_LOCK = 0x716C6F6F70  # "qloop"
SQLITE_BUSY_SECONDS = 20.0


class Transaction(Protocol):
    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def changed(self, sql: str, params: Sequence[object] = ()) -> int:
        """Runs a statement and says how many rows it inserted, updated or deleted."""
        ...


class _SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return list(self._connection.execute(sql, params))

    def changed(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._connection.execute(sql, params).rowcount


class _PostgresTransaction:
    def __init__(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        self._connection = connection

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._connection.execute(_pg(sql), params).fetchall()

    def changed(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._connection.execute(_pg(sql), params).rowcount


def _pg(sql: str) -> bytes:
    return sql.replace("?", "%s").encode()


class SharedDatabase:
    def __init__(self, url: str) -> None:
        location = database_location(url)
        self.url = url
        self.dialect = location.dialect
        # Set for a SQLite database only.
        self._sqlite_path = location.sqlite_path
        self._schemas: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self, schema: str = "") -> Iterator[Transaction]:
        """One transaction, committed when the block ends and rolled back when it raises.
        `schema` (idempotent DDL) runs first, once per process and database."""
        if self._sqlite_path is not None and not self._sqlite_path.exists():
            # Deleted to forget everything: the next transaction starts a new file.
            self._schemas.clear()
        if schema and schema not in self._schemas:
            self._create(schema)
        if self._sqlite_path is not None:
            with self._sqlite(self._sqlite_path) as connection, connection:
                yield _SqliteTransaction(connection)
        else:
            with psycopg.connect(self.url) as server:
                yield _PostgresTransaction(server)

    @contextmanager
    def _sqlite(self, path: Path) -> Iterator[sqlite3.Connection]:
        # The timeout waits out another process's write transaction instead of failing.
        with closing(sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS)) as connection:
            yield connection

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """The worker processes of a host share the file: WAL lets readers go on while one
        writes. The mode stays with the file; switching waits for no busy handler, so processes
        that open a new file at once retry until one of them switched it."""
        deadline = time.monotonic() + SQLITE_BUSY_SECONDS
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _create(self, schema: str) -> None:
        with self._lock:
            if schema in self._schemas:
                return
            if self._sqlite_path is not None:
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
                with self._sqlite(self._sqlite_path) as connection:
                    self._use_wal(connection)
                    connection.executescript(schema)
            else:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    # Hosts creating the same tables at once take turns (CREATE ... IF NOT
                    # EXISTS alone races in PostgreSQL); the session's end releases the lock.
                    connection.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                    connection.execute(schema.encode())
            self._schemas.add(schema)


def shared_database() -> SharedDatabase:
    configured = current_settings().database_url
    if configured is None:
        return _database_at(f"sqlite:///{qloop_home() / SQLITE_FILE}")
    return _database_at(configured.get_secret_value())


@cache
def _database_at(url: str) -> SharedDatabase:
    return SharedDatabase(url)
