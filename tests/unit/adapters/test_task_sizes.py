"""How a job's circuits are split into provider tasks: as few as the device's limits allow."""

from __future__ import annotations

import pytest

from adapters.program_sets import task_sizes
from schemas.execution import ProgramSetLimits

LIMITS = ProgramSetLimits(max_executables=100, max_total_shots=200_000)


def test_one_circuit_per_task_where_the_device_runs_no_program_sets() -> None:
    assert task_sizes(5, 1000, None) == [1, 1, 1, 1, 1]


def test_a_small_job_is_one_program_set() -> None:
    assert task_sizes(5, 1000, LIMITS) == [5]


@pytest.mark.parametrize(
    ("circuits", "shots", "sizes"),
    [
        (250, 1000, [84, 83, 83]),  # 100 executables a task at most: 3 tasks, even sizes
        (250, 4000, [50, 50, 50, 50, 50]),  # 200,000 shots a task at most: 50 circuits
        (101, 1000, [51, 50]),
        (2000, 100, [100] * 20),
    ],
)
def test_tasks_split_evenly_within_both_limits(circuits: int, shots: int, sizes: list[int]) -> None:
    found = task_sizes(circuits, shots, LIMITS)
    assert found == sizes and sum(found) == circuits
    assert all(size <= LIMITS.max_executables for size in found)
    assert all(size * shots <= LIMITS.max_total_shots for size in found)


def test_shots_beyond_a_sets_total_leave_one_circuit_per_task() -> None:
    assert task_sizes(3, 150_000, LIMITS) == [1, 1, 1]


def test_a_minimum_total_the_sets_cannot_reach_leaves_one_circuit_per_task() -> None:
    limits = ProgramSetLimits(max_executables=100, max_total_shots=200_000, min_total_shots=5000)
    assert task_sizes(3, 1000, limits) == [1, 1, 1]
    assert task_sizes(10, 1000, limits) == [10]
