"""The compute pool: child processes under memory and time limits, replaced when they die or
exceed a limit, gone when the process that started them dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import process_pool
from adapters.process_pool import (
    ChildDied,
    ChildTaskError,
    LimitExceeded,
    Limits,
    ProcessPool,
    TaskCancelled,
)
from tests import compute_tasks

REPO_ROOT = Path(__file__).resolve().parents[3]
LIMITS = Limits(memory_bytes=700 << 20, time_seconds=3.0)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPool]:
    pool = ProcessPool(2, LIMITS, tasks_per_child=5, preload=["tests.compute_tasks"])
    try:
        yield pool
    finally:
        pool.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_task_returns_its_result_with_the_callers_environment(
    pool: ProcessPool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert pool.run(compute_tasks.square, 12, "square") == 144
    monkeypatch.setenv("QLOOP_POOL_TEST", "seen in the child")
    monkeypatch.chdir(tmp_path)
    assert pool.run(compute_tasks.environment, "QLOOP_POOL_TEST", "env") == (
        "seen in the child",
        str(tmp_path),
    )


def test_a_task_over_the_memory_limit_is_stopped_and_named(pool: ProcessPool) -> None:
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as raised:
        pool.run(compute_tasks.hog_memory, 20, "preprocess of exp-hog")
    assert raised.value.limit == "memory"
    message = str(raised.value)
    assert "preprocess of exp-hog exceeded its memory limit" in message
    assert "limit 700 MB (QLOOP_TASK_MEMORY_MB)" in message
    assert time.monotonic() - started < 20
    assert pool.run(compute_tasks.square, 3, "next") == 9  # a fresh child took over


def test_one_huge_allocation_hits_the_address_space_cap(pool: ProcessPool) -> None:
    with pytest.raises(LimitExceeded) as raised:
        pool.run(compute_tasks.allocate_at_once, 64, "plan of exp-alloc")
    assert raised.value.limit == "memory"
    assert "address-space cap" in str(raised.value)


def test_a_task_over_the_time_limit_is_stopped_and_named(pool: ProcessPool) -> None:
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as raised:
        pool.run(compute_tasks.spin, None, "mitigate of exp-spin")
    elapsed = time.monotonic() - started
    assert raised.value.limit == "time"
    assert "mitigate of exp-spin exceeded its time limit" in str(raised.value)
    assert "limit 3 s (QLOOP_TASK_TIME_LIMIT_SECONDS)" in str(raised.value)
    assert 3.0 <= elapsed < 8.0


def test_a_child_that_dies_is_reported_and_replaced(pool: ProcessPool) -> None:
    with pytest.raises(ChildDied, match=r"simulate of exp-abort: .*died \(killed by SIGABRT\)"):
        pool.run(compute_tasks.abort, None, "simulate of exp-abort")
    assert pool.run(compute_tasks.square, 4, "next") == 16


def test_errors_of_the_task_reach_the_caller_as_themselves(pool: ProcessPool) -> None:
    with pytest.raises(ValueError, match="line 3: unknown gate"):
        pool.run(compute_tasks.refuse, "line 3: unknown gate", "refuse")
    with pytest.raises(ChildTaskError, match="Unpicklable: odd error"):
        pool.run(compute_tasks.refuse_unpicklably, "odd error", "refuse")


def test_children_are_recycled_after_their_quota_of_tasks(pool: ProcessPool) -> None:
    pids = [pool.run(compute_tasks.pid, None, "pid") for _ in range(12)]
    assert max(pids.count(pid) for pid in set(pids)) <= 5
    assert len(set(pids)) >= 3


def test_tasks_run_side_by_side_up_to_the_pool_size(pool: ProcessPool) -> None:
    started = time.monotonic()
    tasks = [pool.submit(compute_tasks.sleep, 1.0, f"sleep {i}") for i in range(2)]
    assert [task.future.result() for task in tasks] == [1.0, 1.0]
    assert time.monotonic() - started < 1.8


def test_cancelling_a_running_task_stops_its_child(pool: ProcessPool, tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    task = pool.submit(compute_tasks.touch_then_spin, str(marker), "cancel me")
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    child = int(marker.read_text())
    task.cancel()
    with pytest.raises(TaskCancelled):
        task.future.result(timeout=10)
    assert not alive(child)


def test_children_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import time
        from adapters.process_pool import Limits, ProcessPool
        from tests import compute_tasks
        if __name__ == "__main__":
            pool = ProcessPool(1, Limits(1 << 30, 600), 50, preload=["tests.compute_tasks"])
            pool.submit(compute_tasks.touch_then_spin, {str(marker)!r}, "orphan")
            time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(marker.read_text())
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_long_task_steps_aside_for_a_short_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One slot at full priority: a task still running after the step-aside time lowers its
    priority and frees the slot, so a short task does not queue behind it."""
    monkeypatch.setattr(process_pool, "STEP_ASIDE_SECONDS", 0.5)
    pool = ProcessPool(
        1, Limits(700 << 20, 60.0), 50, preload=["tests.compute_tasks"], max_processes=2
    )
    try:
        marker = tmp_path / "long.pid"
        long = pool.submit(compute_tasks.touch_then_spin, str(marker), "long")
        time.sleep(1.5)
        started = time.monotonic()
        assert pool.run(compute_tasks.square, 5, "short") == 25
        assert time.monotonic() - started < 1.0
        assert os.getpriority(os.PRIO_PROCESS, int(marker.read_text())) == (
            process_pool.STEP_ASIDE_NICENESS
        )
        long.cancel()
        with pytest.raises(TaskCancelled):
            long.future.result(timeout=10)
    finally:
        pool.close()


def closed_from_two_threads(pool: ProcessPool) -> list[BaseException]:
    """What close() raised when two threads called it at the same moment."""
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def close() -> None:
        start.wait()
        try:
            pool.close()
        except BaseException as error:  # collected for the caller's assertion
            errors.append(error)

    threads = [threading.Thread(target=close) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_a_pool_closed_from_two_threads_at_once_closes_each_pipe_once() -> None:
    """close() from two threads at once (as a worker shutting down while a task's thread
    discards its child) kills each child once: no pipe is closed twice."""
    for _ in range(10):
        pool = ProcessPool(2, Limits(700 << 20, 60.0), 50, preload=["tests.compute_tasks"])
        pool.warm_up()
        assert closed_from_two_threads(pool) == []


def test_no_more_children_than_the_maximum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(process_pool, "STEP_ASIDE_SECONDS", 0.2)
    pool = ProcessPool(
        1, Limits(700 << 20, 60.0), 50, preload=["tests.compute_tasks"], max_processes=2
    )
    try:
        tasks = [
            pool.submit(compute_tasks.touch_then_spin, str(tmp_path / f"{i}.pid"), f"long {i}")
            for i in range(3)
        ]
        time.sleep(1.5)
        assert [task.future.running() for task in tasks] == [True, True, False]
        assert len(pool.child_pids()) == 2
        tasks[0].cancel()
        deadline = time.monotonic() + 10
        while not tasks[2].future.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tasks[2].future.running()
        for task in tasks[1:]:
            task.cancel()
    finally:
        pool.close()


def test_a_child_killed_while_idle_is_replaced(pool: ProcessPool) -> None:
    idle = pool.run(compute_tasks.pid, None, "pid")
    os.kill(idle, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(idle) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [pool.run(compute_tasks.square, n, "after") for n in range(3)] == [0, 1, 4]


def test_a_task_given_to_a_child_that_just_died_goes_to_another(pool: ProcessPool) -> None:
    # No wait after the kill: the pool may still believe the child alive when it hands it a task.
    for n in range(20):
        os.kill(pool.run(compute_tasks.pid, None, "pid"), signal.SIGKILL)
        assert pool.run(compute_tasks.square, n, "after") == n * n
