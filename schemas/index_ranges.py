"""Sets of point (or batch) indices as ascending ranges: a sweep's batches and what it has
finished, carried in history at a size that does not grow with the number of points."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from pydantic import Field

from schemas.pipeline import PipelineModel


class IndexRange(PipelineModel):
    """Point indices `start` to `stop - 1`, in grid order."""

    start: int = Field(ge=0)
    stop: int = Field(ge=0)


def range_count(ranges: Sequence[IndexRange]) -> int:
    return sum(r.stop - r.start for r in ranges)


def range_indices(ranges: Sequence[IndexRange]) -> Iterator[int]:
    for r in ranges:
        yield from range(r.start, r.stop)


def as_ranges(indices: Sequence[int]) -> list[IndexRange]:
    """Ascending indices as the fewest ranges."""
    ranges: list[IndexRange] = []
    start = previous = None
    for index in indices:
        if previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None and previous is not None:
            ranges.append(IndexRange(start=start, stop=previous + 1))
        start = previous = index
    if start is not None and previous is not None:
        ranges.append(IndexRange(start=start, stop=previous + 1))
    return ranges


def split_ranges(
    ranges: Sequence[IndexRange], count: int
) -> tuple[list[IndexRange], list[IndexRange]]:
    """The first `count` indices of `ranges`, and the rest."""
    head: list[IndexRange] = []
    tail: list[IndexRange] = []
    wanted = count
    for r in ranges:
        size = r.stop - r.start
        if wanted >= size:
            head.append(r)
            wanted -= size
        elif wanted > 0:
            head.append(IndexRange(start=r.start, stop=r.start + wanted))
            tail.append(IndexRange(start=r.start + wanted, stop=r.stop))
            wanted = 0
        else:
            tail.append(r)
    return head, tail


def subtract_ranges(
    ranges: Sequence[IndexRange], removed: Iterable[IndexRange]
) -> list[IndexRange]:
    """The indices of `ranges` (ascending) that no range of `removed` (in any order) holds, as
    the fewest ranges."""
    cuts = sorted((r.start, r.stop) for r in removed if r.start < r.stop)
    kept: list[IndexRange] = []
    cut = 0
    for r in ranges:
        start = r.start
        while start < r.stop:
            # A cut that ends by `start` ends before every later index: `ranges` ascend.
            while cut < len(cuts) and cuts[cut][1] <= start:
                cut += 1
            if cut == len(cuts) or cuts[cut][0] >= r.stop:
                _extend(kept, start, r.stop)
                break
            cut_start, cut_stop = cuts[cut]
            if cut_start > start:
                _extend(kept, start, cut_start)
            start = cut_stop
    return kept


def _extend(ranges: list[IndexRange], start: int, stop: int) -> None:
    """Appends indices `start` to `stop - 1`, into the last range when they follow it."""
    if ranges and ranges[-1].stop == start:
        ranges[-1] = IndexRange(start=ranges[-1].start, stop=stop)
    else:
        ranges.append(IndexRange(start=start, stop=stop))
