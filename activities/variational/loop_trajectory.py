"""A variational loop's trajectory in the artifact store.

Before a loop continues as new it writes the entries it holds to a numbered chunk, so what it
carries stays small however long it runs; at the end the chunks and the last entries become one
`trajectory.json` (and `trajectory.csv` for a spreadsheet). The `trajectory` query names the
chunks and holds the rest, and `read_trajectory` puts them back together.
"""

from __future__ import annotations

import csv
import io

from activities.runtime.heartbeats import in_thread_with_heartbeats
from activities.storage.artifact_store import put_bytes, put_model, read_model
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.loop import (
    SaveTrajectoryChunkInput,
    TrajectoryChunk,
    TrajectoryEntry,
    TrajectoryView,
    WriteTrajectoryInput,
)


def save_chunk(input: SaveTrajectoryChunkInput) -> str:
    return put_model(input.owner_id, f"trajectory-{input.index:05d}.json", input.chunk)


def read_trajectory(view: TrajectoryView) -> list[TrajectoryEntry]:
    """Every entry, oldest first: the chunks' entries, then those the view holds."""
    entries: list[TrajectoryEntry] = []
    for uri in view.chunks:
        entries.extend(read_model(uri, TrajectoryChunk).entries)
    entries.extend(view.entries)
    return entries


def write_trajectory(input: WriteTrajectoryInput) -> str:
    """The whole trajectory as `trajectory.json` (its URI is returned) and `trajectory.csv`."""
    entries = read_trajectory(input.trajectory)
    put_bytes(input.owner_id, "trajectory.csv", as_csv(entries).encode())
    return put_model(input.owner_id, "trajectory.json", TrajectoryChunk(entries=entries))


def as_csv(entries: list[TrajectoryEntry]) -> str:
    """One row per iteration: the iterate's parameters as p0..pN, the measured values as
    value_plus and value_minus, the best value and the cost so far."""
    width = len(entries[0].point) if entries else 0
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "iteration",
            *(f"p{i}" for i in range(width)),
            "value_plus",
            "value_minus",
            "best_value",
            "cost_usd",
        ]
    )
    for entry in entries:
        writer.writerow(
            [entry.iteration, *entry.point, *entry.values, entry.best_value, entry.cost_usd]
        )
    return out.getvalue()


@implements(activity_contracts.save_trajectory_chunk)
async def save_trajectory_chunk_activity(input: SaveTrajectoryChunkInput) -> str:
    return save_chunk(input)


@implements(activity_contracts.write_trajectory)
async def write_trajectory_activity(input: WriteTrajectoryInput) -> str:
    return await in_thread_with_heartbeats(lambda: write_trajectory(input))
