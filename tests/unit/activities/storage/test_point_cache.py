"""The sweep's fingerprint cache in both databases it runs on: SQLite (one host) and a real
PostgreSQL server (a fleet). The first value stored for a fingerprint wins, a batch is stored
entirely or not at all, and writers in several processes at once neither lose nor overwrite a
value nor deadlock."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import psycopg
import pytest

from activities.storage.point_cache import cached_values, store_in_cache
from adapters.shared_database import SharedDatabase, shared_database
from schemas.settings import redacted
from schemas.variational import PointValue


def value(fingerprint: str, measured: float) -> PointValue:
    return PointValue(
        parameters=[measured], fingerprint=fingerprint, value=measured, std_error=0.01, raw=measured
    )


def test_the_first_value_stored_for_a_fingerprint_wins(database_url: str) -> None:
    assert shared_database().url == database_url
    assert store_in_cache("sweep-1", "batch-00000", [value("a", 1.0), value("b", 2.0)]) == 2
    assert store_in_cache("sweep-2", "batch-00000", [value("b", 9.0), value("c", 3.0)]) == 1
    assert cached_values(["a", "b", "c", "d"]) == {
        "a": (1.0, 0.01, 1.0),
        "b": (2.0, 0.01, 2.0),
        "c": (3.0, 0.01, 3.0),
    }
    # A batch naming a point twice keeps its first value, as two batches would.
    assert store_in_cache("sweep-3", "batch-00000", [value("e", 5.0), value("e", 6.0)]) == 1
    assert cached_values(["e"]) == {"e": (5.0, 0.01, 5.0)}


def test_a_thousand_point_lookup_finds_every_stored_point(database_url: str) -> None:
    stored = [value(f"fp-{i:05d}", float(i)) for i in range(0, 3000, 2)]
    assert store_in_cache("sweep-1", "batch-00000", stored) == 1500
    wanted = [f"fp-{i:05d}" for i in range(1000)]
    found = cached_values(wanted)
    assert sorted(found) == wanted[::2]
    assert all(found[f"fp-{i:05d}"][0] == float(i) for i in range(0, 1000, 2))


def test_a_batch_is_stored_entirely_or_not_at_all(database_url: str) -> None:
    # A value the database refuses (no standard error) after one it accepts, in one batch.
    broken = [value("x", 1.0), value("y", 2.0).model_copy(update={"std_error": None})]
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError), match=r"(?i)not.null"):
        store_in_cache("sweep-1", "batch-00000", broken)
    assert cached_values(["x", "y"]) == {}


def write_batches(
    url: str, writer: int, fingerprints: list[str], start_together: BarrierType
) -> None:
    """One host's worker: stores its batches (its own values) in its own order, starting when
    every writer is ready."""
    os.environ["QLOOP_DATABASE_URL"] = url
    order = random.Random(writer).sample(fingerprints, len(fingerprints))
    start_together.wait(timeout=60)
    for start in range(0, len(order), 50):
        batch = [value(fp, float(writer)) for fp in order[start : start + 50]]
        store_in_cache(f"sweep-{writer}", f"batch-{start:05d}", batch)


def test_writers_in_several_processes_at_once_keep_one_value_per_point(
    database_url: str,
) -> None:
    fingerprints = [f"shared-{i:04d}" for i in range(600)]
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(4)
    writers = [
        context.Process(
            target=write_batches, args=(database_url, writer, fingerprints, start_together)
        )
        for writer in range(1, 5)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
    assert [process.exitcode for process in writers] == [0, 0, 0, 0]
    found = cached_values(fingerprints)
    assert sorted(found) == fingerprints
    assert {measured for measured, _, _ in found.values()} <= {1.0, 2.0, 3.0, 4.0}
    # Whatever was stored first stays: storing everything again changes nothing.
    assert store_in_cache("late", "batch-00000", [value(fp, 7.0) for fp in fingerprints]) == 0
    assert cached_values(fingerprints) == found


def test_a_database_url_of_another_kind_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///absolute/path or postgresql://"):
        SharedDatabase("mysql://root:secret@db/qloop")
    with pytest.raises(ValueError) as refused:
        SharedDatabase("mysql://root:secret@db/qloop")
    assert "secret" not in str(refused.value)
    assert redacted("postgresql://qloop:hunter2@db:5432/qloop") == (
        "postgresql://qloop:***@db:5432/qloop"
    )


def test_deleting_the_sqlite_file_forgets_everything_and_the_cache_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shared.sqlite3"
    monkeypatch.setenv("QLOOP_DATABASE_URL", f"sqlite:///{path}")
    assert store_in_cache("sweep-1", "batch-00000", [value("a", 1.0)]) == 1
    for file in tmp_path.glob("shared.sqlite3*"):
        file.unlink()
    assert cached_values(["a"]) == {}
    assert store_in_cache("sweep-2", "batch-00000", [value("a", 2.0)]) == 1
    assert cached_values(["a"]) == {"a": (2.0, 0.01, 2.0)}
