"""A loop's trajectory in the artifact store: chunks written before continue-as-new, joined
again in order, and the final JSON and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from activities.storage.artifact_store import path_of
from activities.variational.loop_trajectory import read_trajectory, save_chunk, write_trajectory
from schemas.loop import (
    SaveTrajectoryChunkInput,
    TrajectoryChunk,
    TrajectoryEntry,
    TrajectoryView,
    WriteTrajectoryInput,
)


def entry(iteration: int) -> TrajectoryEntry:
    return TrajectoryEntry(
        iteration=iteration,
        point=[0.1 * iteration, -0.2],
        values=[1.0 + iteration, 2.0 + iteration],
        best_value=1.5,
        cost_usd=0.25 * iteration,
    )


def test_chunks_and_held_entries_join_in_order(qloop_home: Path) -> None:
    first = save_chunk(
        SaveTrajectoryChunkInput(
            owner_id="loop-1", index=0, chunk=TrajectoryChunk(entries=[entry(0), entry(1)])
        )
    )
    second = save_chunk(
        SaveTrajectoryChunkInput(
            owner_id="loop-1", index=1, chunk=TrajectoryChunk(entries=[entry(2)])
        )
    )
    assert path_of(first).name == "trajectory-00000.json"
    assert path_of(first).is_relative_to(qloop_home)
    view = TrajectoryView(chunks=[first, second], entries=[entry(3)])
    assert read_trajectory(view) == [entry(0), entry(1), entry(2), entry(3)]

    # A retried save of the same chunk rewrites the same file.
    again = save_chunk(
        SaveTrajectoryChunkInput(
            owner_id="loop-1", index=1, chunk=TrajectoryChunk(entries=[entry(2)])
        )
    )
    assert again == second


def test_the_whole_trajectory_is_written_as_json_and_csv() -> None:
    chunk = save_chunk(
        SaveTrajectoryChunkInput(
            owner_id="loop-2", index=0, chunk=TrajectoryChunk(entries=[entry(0)])
        )
    )
    uri = write_trajectory(
        WriteTrajectoryInput(
            owner_id="loop-2", trajectory=TrajectoryView(chunks=[chunk], entries=[entry(1)])
        )
    )
    written = TrajectoryChunk.model_validate_json(path_of(uri).read_text())
    assert written.entries == [entry(0), entry(1)]
    with path_of(uri).with_suffix(".csv").open() as table:
        rows = list(csv.DictReader(table))
    assert list(rows[0]) == [
        "iteration",
        "p0",
        "p1",
        "value_plus",
        "value_minus",
        "best_value",
        "cost_usd",
    ]
    assert [float(rows[1][key]) for key in ("p0", "value_plus", "cost_usd")] == [0.1, 2.0, 0.25]
