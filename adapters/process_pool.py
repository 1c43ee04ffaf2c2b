"""Child processes for CPU work, each task under a memory limit and a time limit.

Transpiling, simulating, folding, mitigating and classical baselines run here, never on the
threads of the worker that serves workflows: a runaway input (a circuit that unrolls to billions
of gates, a simulation that never ends) fails its own task and costs one child process, while
the worker stays up, keeps its event loop and its GIL, and serves every other workflow.

- Children are forked from a fork server that imported qloop's numerical modules once, so a new
  child starts in milliseconds and a killed one is replaced as fast.
- Long tasks step aside: a task still running after STEP_ASIDE_SECONDS is lowered in priority
  (niceness STEP_ASIDE_NICENESS) and gives its slot up, so a monster request within every
  static limit never makes a normal experiment queue behind it. `processes` tasks run at full
  priority, `max_processes` children exist at most.
- One task at a time per child. The parent samples the child's resident memory every
  `SAMPLE_SECONDS` and kills it above the memory limit, and kills it past the time limit; a hard
  cap on the child's address space (RLIMIT_AS, the limit plus slack) catches one huge allocation
  between two samples. Either way the task raises `LimitExceeded`, naming the limit and the task.
- A child serves at most `tasks_per_child` tasks, then is replaced: numerical libraries keep
  caches, and a long-lived heap only grows.
- A child exits as soon as the process that started it dies (a lifeline pipe nobody writes to),
  so a worker killed with SIGKILL leaves no orphaned computation behind.
- Each task carries the caller's environment and working directory: the fork server captured
  them once, at its start.

Configuration (worker environment): QLOOP_COMPUTE_PROCESSES (tasks at full priority, default:
the number of CPUs), QLOOP_COMPUTE_MAX_PROCESSES (children at once, default twice that),
QLOOP_TASK_MEMORY_MB (resident memory of a child, default 2048), QLOOP_TASK_TIME_LIMIT_SECONDS
(default 1800), QLOOP_TASKS_PER_PROCESS (default 50).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Generic, TypeVar

from schemas.settings import current_settings

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")

SAMPLE_SECONDS = 0.05
MEMORY_ENV = "QLOOP_TASK_MEMORY_MB"
TIME_ENV = "QLOOP_TASK_TIME_LIMIT_SECONDS"
STEP_ASIDE_SECONDS = 5.0
DELIVERY_ATTEMPTS = 3
STEP_ASIDE_NICENESS = 10
# Address space beyond the resident limit: thread stacks and malloc arenas reserve far more than
# they touch, and the backstop must never fire before the resident limit would.
ADDRESS_SPACE_SLACK_BYTES = 2 << 30
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    time_seconds: float

    @classmethod
    def from_settings(cls) -> Limits:
        configured = current_settings()
        return cls(
            memory_bytes=int(configured.task_memory_mb * _MB),
            time_seconds=configured.task_time_limit_seconds,
        )

    def describe_memory(self) -> str:
        return f"{self.memory_bytes / _MB:,.0f} MB ({MEMORY_ENV})"

    def describe_time(self) -> str:
        return f"{self.time_seconds:,.0f} s ({TIME_ENV})"


class LimitExceeded(Exception):
    """A task went over its memory or time limit; its child process was killed."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message, limit)
        self.message = message
        self.limit = limit

    def __str__(self) -> str:
        return self.message


class ChildDied(Exception):
    """The child process running a task ended without an answer, and no limit explains it."""

    def __str__(self) -> str:
        return str(self.args[0])


class TaskCancelled(Exception):
    """The caller gave the task up; its child process was killed."""


class ChildTaskError(Exception):
    """An error raised in the child that cannot cross the process boundary as itself."""


class PoolTask(Generic[ResultT]):
    """A submitted task: its future (running once a child has it), and a way to give it up
    (which kills its child)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.future: Future[ResultT] = Future()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        if not self.future.cancel():
            self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class ProcessPool:
    """Runs `function(argument)` in child processes; `function` must be importable by name
    (a module-level function) and its argument and result picklable."""

    def __init__(
        self,
        processes: int,
        limits: Limits,
        tasks_per_child: int,
        preload: Sequence[str] = (),
        max_processes: int | None = None,
    ) -> None:
        self.limits = limits
        self.processes = processes
        self.max_processes = max(max_processes or 2 * processes, processes)
        self._tasks_per_child = tasks_per_child
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(preload))
        self._children_allowed = threading.BoundedSemaphore(self.max_processes)
        self._full_priority = threading.BoundedSemaphore(processes)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, function: Callable[[ArgT], ResultT], argument: ArgT, label: str
    ) -> PoolTask[ResultT]:
        """Queues the task; it runs as soon as a slot is free. Thread-safe."""
        task: PoolTask[ResultT] = PoolTask(label)
        threading.Thread(
            target=self._execute, args=(function, argument, task), name="qloop-compute", daemon=True
        ).start()
        return task

    def run(self, function: Callable[[ArgT], ResultT], argument: ArgT, label: str) -> ResultT:
        """Runs the task and waits for its result (from a thread that may block)."""
        return self.submit(function, argument, label).future.result()

    def warm_up(self) -> None:
        """Starts the fork server and a child per process slot ahead of the first tasks."""
        while True:
            with self._lock:
                if self._closed or len(self._children) >= self.processes:
                    return
            child = _Child(self._context, self.limits)
            with self._lock:
                self._children.add(child)
                self._idle.append(child)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children = list(self._children)
        for child in children:
            child.kill()

    def child_pids(self) -> list[int]:
        with self._lock:
            return [child.pid for child in self._children]

    # --- in the task's own thread ----------------------------------------------------------------

    def _execute(self, function: Callable[[Any], Any], argument: Any, task: PoolTask[Any]) -> None:
        with self._children_allowed:
            self._full_priority.acquire()
            slot = _Slot(self._full_priority)
            try:
                # Cancelling the future while the task waits keeps it from ever running.
                if task.future.set_running_or_notify_cancel():
                    self._run_in_child(function, argument, task, slot)
            finally:
                slot.release()

    def _run_in_child(
        self, function: Callable[[Any], Any], argument: Any, task: PoolTask[Any], slot: _Slot
    ) -> None:
        for _ in range(DELIVERY_ATTEMPTS):
            try:
                child = self._take_child()
            except BaseException as error:
                task.future.set_exception(error)
                return
            try:
                result = child.run(function, argument, task, self.limits, slot)
            except _Undelivered:
                # The child died while idle and the exit was not reported yet: the task never
                # started, so another child may run it.
                self._discard(child)
                continue
            except (LimitExceeded, ChildDied, TaskCancelled) as error:
                self._discard(child)
                task.future.set_exception(error)
            except BaseException as error:
                self._give_back(child)
                task.future.set_exception(error)
            else:
                self._give_back(child)
                task.future.set_result(result)
            return
        task.future.set_exception(
            ChildDied(f"{task.label}: {DELIVERY_ATTEMPTS} child processes died before taking it")
        )

    def _take_child(self) -> _Child:
        # A child that died while idle is found when it does not take its task (_Undelivered).
        with self._lock:
            if self._closed:
                raise RuntimeError("the compute pool is closed")
            if self._idle:
                return self._idle.pop()
        child = _Child(self._context, self.limits)
        with self._lock:
            self._children.add(child)
        return child

    def _give_back(self, child: _Child) -> None:
        # A child that stepped aside keeps its lower priority for good: it is not reused.
        if child.tasks >= self._tasks_per_child or child.stepped_aside or not child.alive:
            self._discard(child)
            return
        with self._lock:
            if not self._closed:
                self._idle.append(child)
                return
        self._discard(child)

    def _discard(self, child: _Child) -> None:
        child.kill()
        with self._lock:
            self._children.discard(child)


class _Slot:
    """A task's full-priority slot, given up once: when the task steps aside or ends."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._semaphore.release()


class _Child:
    """One child process and the parent's ends of its pipes."""

    def __init__(self, context: Any, limits: Limits) -> None:
        parent_end, child_end = context.Pipe()
        lifeline_read, lifeline_write = context.Pipe(duplex=False)
        backstop = limits.memory_bytes + ADDRESS_SPACE_SLACK_BYTES
        self.process = context.Process(
            target=child_main,
            args=(child_end, lifeline_read, backstop),
            name="qloop-compute-child",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        lifeline_read.close()
        self.connection: Connection = parent_end
        self._lifeline: Connection = lifeline_write
        self.tasks = 0
        self.stepped_aside = False
        # The task's thread and the pool's close() may kill the same child at once: its pipes
        # are closed once, never twice (a second close could hit a descriptor reused since).
        self._kill_lock = threading.Lock()
        self._killed = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def resident_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                return int(statm.read().split()[1]) * _PAGE_BYTES
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            return 0

    def run(
        self,
        function: Callable[[Any], Any],
        argument: Any,
        task: PoolTask[Any],
        limits: Limits,
        slot: _Slot,
    ) -> Any:
        message = ForkingPickler.dumps((function, argument, dict(os.environ), os.getcwd()))
        try:
            self.connection.send_bytes(message)
        except (BrokenPipeError, ConnectionResetError):
            raise _Undelivered from None
        self.tasks += 1
        started = time.monotonic()
        peak = 0
        taken = False
        while True:
            if self.connection.poll(SAMPLE_SECONDS):
                try:
                    reply = self.connection.recv()
                except (EOFError, OSError):
                    raise (self._died(task, started, peak) if taken else _Undelivered()) from None
                if reply == _TAKEN:
                    taken = True
                    continue
                return _unwrap(reply, task, limits, peak)
            if not self.alive:
                raise self._died(task, started, peak) if taken else _Undelivered()
            resident = self.resident_bytes()
            peak = max(peak, resident)
            if resident > limits.memory_bytes:
                self.kill()
                raise LimitExceeded(
                    f"{task.label} exceeded its memory limit: {resident / _MB:,.0f} MB resident, "
                    f"limit {limits.describe_memory()}; the child process was stopped",
                    limit="memory",
                )
            elapsed = time.monotonic() - started
            if elapsed > STEP_ASIDE_SECONDS and not self.stepped_aside:
                self._step_aside(slot)
            if elapsed > limits.time_seconds:
                self.kill()
                raise LimitExceeded(
                    f"{task.label} exceeded its time limit: still running after {elapsed:,.0f} s, "
                    f"limit {limits.describe_time()}; the child process was stopped",
                    limit="time",
                )
            if task.cancelled:
                self.kill()
                raise TaskCancelled(f"{task.label} was cancelled")

    def _step_aside(self, slot: _Slot) -> None:
        self.stepped_aside = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.setpriority(os.PRIO_PROCESS, self.pid, STEP_ASIDE_NICENESS)
        slot.release()

    def _died(self, task: PoolTask[Any], started: float, peak: int) -> ChildDied:
        self.process.join(timeout=5)
        code = self.process.exitcode
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code is not None and code < 0
            else f"exit code {code}"
        )
        return ChildDied(
            f"{task.label}: its child process died ({how}) after "
            f"{time.monotonic() - started:,.1f} s, at {peak / _MB:,.0f} MB resident"
        )

    def kill(self) -> None:
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
            if self.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            self.process.join(timeout=10)
            self.connection.close()
            self._lifeline.close()


class _Undelivered(Exception):
    """The child died before it took the task: the task never started."""


# A child's first reply to a task: from then on the task may have had effects.
_TAKEN = ("taken",)


def _unwrap(reply: tuple[Any, ...], task: PoolTask[Any], limits: Limits, peak: int) -> Any:
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "memory":
        raise LimitExceeded(
            f"{task.label} exceeded its memory limit: an allocation failed at the address-space "
            f"cap that backs the limit {limits.describe_memory()} ({peak / _MB:,.0f} MB resident "
            "when last sampled)",
            limit="memory",
        )
    error: BaseException = reply[1]
    raise error


# --- in the child ------------------------------------------------------------------------------


def child_main(connection: Connection, lifeline: Connection, address_space_bytes: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    _cap_address_space(address_space_bytes)
    while True:
        try:
            function, argument, environment, cwd = connection.recv()
        except (EOFError, OSError):
            return
        connection.send(_TAKEN)
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(cwd)
        connection.send(_call(function, argument))


def _call(function: Callable[[Any], Any], argument: Any) -> tuple[Any, ...]:
    try:
        result = function(argument)
    except MemoryError:
        return ("memory",)
    except BaseException as error:  # every error is the task's outcome, sent to the caller
        return ("error", _portable(error))
    try:
        pickle.dumps(result)
    except Exception as error:
        return ("error", ChildTaskError(f"the result cannot be sent back: {error}"))
    return ("ok", result)


def _portable(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else its type, message and traceback."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        trace = "".join(traceback.format_exception(error))
        return ChildTaskError(f"{type(error).__name__}: {error}\n{trace}")


def _exit_with_parent(lifeline: Connection) -> None:
    # Nobody ever writes to the lifeline: recv returns only when the parent's end closes, that is
    # when the parent exited or was killed.
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(70)


def _cap_address_space(extra_bytes: int) -> None:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        current = int(statm.read().split()[0]) * _PAGE_BYTES
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


# --- the pool of this process --------------------------------------------------------------------

# The fork server imports every qloop module this process has imported when the pool starts (the
# worker imports its activities first), so children start with them loaded.
PRELOAD_PACKAGES = ("schemas", "adapters", "activities")
# Not NUMBA_NUM_THREADS: numba refuses a new value once its threads run, and this process may
# have run them before its pool started.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_shared: ProcessPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> ProcessPool:
    """The process's pool, created on first use from the environment (see module doc)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            preload = sorted(name for name in sys.modules if name.split(".")[0] in PRELOAD_PACKAGES)
            configured = current_settings()
            processes = configured.compute_processes or os.cpu_count() or 1
            share_cores(processes)
            _shared = ProcessPool(
                processes=processes,
                max_processes=configured.compute_max_processes or 2 * processes,
                limits=Limits.from_settings(),
                tasks_per_child=configured.tasks_per_process,
                preload=preload,
            )
        return _shared


def share_cores(processes: int) -> None:
    """Gives each full-priority task its share of the cores for the numerical libraries' own
    threads. Aer (OpenMP) and BLAS start a thread per core in every process, so tasks side by side
    would otherwise run cores x tasks threads that spin against each other (two 250-point sweep
    batches took 3.5 times as long). Read by the libraries when they load, that is when the fork
    server starts, so set before it; an operator's own setting wins."""
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    for name in THREAD_ENV:
        os.environ.setdefault(name, threads)


def close_shared_pool() -> None:
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None:
        pool.close()
