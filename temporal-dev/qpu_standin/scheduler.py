"""Moves tasks through the queue: CREATED → QUEUED → RUNNING → COMPLETED | FAILED | CANCELLED.

Each device's queue is FIFO: its head starts once its queue delay has passed and one of the
device's `concurrency` slots is free. A program set runs as one task (qpu_standin/program_sets.py).
A task is COMPLETED only once its result is in S3, so the
SDK never sees COMPLETED without results.json; a result that could not be uploaded stays in the
database and is retried every tick.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qpu_standin.config import Device
from qpu_standin.executor import compile_action, result_document, run, run_together
from qpu_standin.program_sets import (
    RESULTS_FILE,
    Executable,
    Outcome,
    compile_program_set,
    is_program_set,
    result_files,
)
from qpu_standin.results import S3Unavailable
from qpu_standin.service import Service
from qpu_standin.store import QUEUED_STATES, Task

log = logging.getLogger("qpu_standin")

TICK_S = 0.05
# results.json, the task's other result files by key, and its successful shots (None: all).
TaskRun = Callable[[], tuple[str, dict[str, str], int | None]]
S3_CHECK_S = 2.0


class Scheduler:
    def __init__(self, service: Service) -> None:
        self._service = service
        self._stop = threading.Event()
        workers = sum(d.concurrency for d in service.settings.devices)
        self._pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="task")
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._s3_checked_at = 0.0

    def start(self) -> None:
        self._recover()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _recover(self) -> None:
        """Tasks that were executing when the last process died run again (they were never
        reported COMPLETED); they keep their place at the head of the queue. Those that were
        being cancelled end CANCELLED: nothing runs them any more."""
        store = self._service.store
        for task in store.in_status("RUNNING"):
            if task.result is None:
                store.transition(task.id, ("RUNNING",), "QUEUED", started_at=None)
        for task in store.in_status("CANCELLING"):
            store.transition(task.id, ("CANCELLING",), "CANCELLED", ended_at=time.time())

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick(time.time())
            except Exception:  # the loop must outlive any one bad tick
                log.exception("scheduler tick failed")

    def tick(self, now: float) -> None:
        store = self._service.store
        for task in store.in_status("CREATED"):
            store.transition(task.id, ("CREATED",), "QUEUED")
        for task in store.in_status("CANCELLING"):
            # Nothing runs for a task that never started, or whose run ended with its result
            # kept but not yet in S3: no executor will come back to end it.
            if task.started_at is None or task.result is not None:
                store.transition(task.id, ("CANCELLING",), "CANCELLED", ended_at=now)
        self._watch_s3(now)
        for device in self._service.settings.devices:
            self._dispatch(device.arn, now)

    def _dispatch(self, device_arn: str, now: float) -> None:
        service = self._service
        device = service.settings.device(device_arn)
        if device is None or service.faults.device_offline(device, now):
            return
        running = [
            t for t in service.store.in_status("RUNNING", device_arn=device_arn) if t.result is None
        ]
        free = device.concurrency - len(running)
        for task in service.store.in_status(*QUEUED_STATES, device_arn=device_arn)[:free]:
            if task.ready_at > now:
                break  # FIFO: nobody overtakes the head of the queue
            if service.store.transition(task.id, ("QUEUED",), "RUNNING", started_at=now):
                self._pool.submit(self._execute, task)

    def _execute(self, task: Task) -> None:
        service = self._service
        device = service.settings.device(task.device_arn)
        try:
            assert device is not None
            action = json.loads(task.action)
            if is_program_set(action):
                run_task = self._program_set_runner(task, device, action)
            else:
                run_task = self._program_runner(task, device, action)
        except Exception as error:  # whatever went wrong, the task FAILED with its reason
            self._wait_run_time(task)
            self._finish_failed(task, str(error))
            return
        self._wait_run_time(task)
        try:
            document, files, successful_shots = run_task()
        except Exception as error:  # a task never stays RUNNING: it FAILED with the reason
            log.exception("writing the results of %s failed", task.arn)
            self._finish_failed(task, f"writing the results failed: {error}")
            return
        if service.store.save_result(task.id, document, files, successful_shots):
            self._upload(service.store.by_arn(task.arn))
        else:
            self._cancelled(task)

    def _program_runner(self, task: Task, device: Device, action: dict[str, Any]) -> TaskRun:
        """Runs the program now; the returned call writes its results.json once the task's run
        time has passed."""
        service = self._service
        compiled = compile_action(action, json.loads(task.device_parameters), device)
        if service.faults.task_fails():
            raise RuntimeError("injected task failure (task_failure_rate)")
        measurements = run(compiled, device, task.shots, service.faults.seed_for(task.seq))

        def results() -> tuple[str, dict[str, str], int | None]:
            document = result_document(
                task_arn=task.arn,
                device_arn=task.device_arn,
                shots=task.shots,
                action=action,
                measured_qubits=compiled.measured_qubits,
                measurements=measurements,
                created_at=task.created_at,
                ended_at=time.time(),
            )
            return document, {}, None

        return results

    def _program_set_runner(self, task: Task, device: Device, action: dict[str, Any]) -> TaskRun:
        """Runs every executable now, each failing on its own; the task fails only when all
        of them did."""
        service = self._service
        device_parameters = json.loads(task.device_parameters)
        executables = compile_program_set(action, device_parameters, device, task.shots)
        if service.faults.task_fails():
            raise RuntimeError("injected task failure (task_failure_rate)")
        shots = task.shots // len(executables)
        outcomes = self._outcomes(executables, device, shots, service.faults.seed_for(task.seq))
        if all(outcome.failure is not None for outcome in outcomes):
            raise RuntimeError(f"every executable failed; the first: {outcomes[0].failure}")

        def results() -> tuple[str, dict[str, str], int | None]:
            files, successful_shots = result_files(
                task_arn=task.arn,
                device_arn=task.device_arn,
                bucket=task.bucket,
                directory=task.directory,
                action=action,
                device_parameters=device_parameters,
                shots=task.shots,
                executables=executables,
                outcomes=outcomes,
                created_at=task.created_at,
                ended_at=time.time(),
            )
            document = files.pop(RESULTS_FILE)
            return document, files, successful_shots

        return results

    def _outcomes(
        self, executables: list[Executable], device: Device, shots: int, seed: int
    ) -> list[Outcome]:
        """Every executable's outcome: the injected failures first, the others run in one Aer
        job; when that job fails, one by one, so only the executables that cannot run fail."""
        injected = [self._service.faults.executable_fails() for _ in executables]
        runnable = [e for e, fails in zip(executables, injected, strict=True) if not fails]
        try:
            measured = iter(run_together([e.compiled for e in runnable], device, shots, seed))
        except Exception:  # which executable broke the job is found by running each alone
            measured = iter([self._alone(e, device, shots, seed) for e in runnable])
        return [
            Outcome(failure="injected executable failure (executable_failure_rate)")
            if fails
            else _outcome_of(next(measured))
            for fails in injected
        ]

    @staticmethod
    def _alone(
        executable: Executable, device: Device, shots: int, seed: int
    ) -> list[list[int]] | str:
        try:
            return run(executable.compiled, device, shots, seed)
        except Exception as error:  # the executable failed; its siblings still run
            return str(error)[:1000]

    def _wait_run_time(self, task: Task) -> None:
        self._stop.wait(task.run_time)

    def _finish_failed(self, task: Task, reason: str) -> None:
        store = self._service.store
        if not store.transition(
            task.id, ("RUNNING",), "FAILED", ended_at=time.time(), failure_reason=reason[:1000]
        ):
            self._cancelled(task)

    def _cancelled(self, task: Task) -> None:
        self._service.store.transition(task.id, ("CANCELLING",), "CANCELLED", ended_at=time.time())

    def _upload(self, task: Task | None) -> None:
        if task is None or task.result is None:
            return
        try:
            self._service.bucket.put(task, self._service.store.result_files(task.id))
        except S3Unavailable as error:
            log.warning("result of %s not uploaded yet: %s", task.arn, error)
            return
        if not self._service.store.transition(
            task.id, ("RUNNING",), "COMPLETED", ended_at=time.time(), uploaded=1
        ):
            self._cancelled(task)

    def _upload_pending(self) -> None:
        for task in self._service.store.in_status("RUNNING"):
            if task.result is not None:
                self._upload(task)

    def _watch_s3(self, now: float) -> None:
        """Retry pending uploads, and put every stored result back when S3 lost its state
        (moto keeps S3 in memory; a missing known bucket means it restarted empty)."""
        if now - self._s3_checked_at < S3_CHECK_S:
            return
        self._s3_checked_at = now
        self._upload_pending()
        service = self._service
        try:
            if not (service.s3_in_sync and service.s3_intact()):
                restored = service.bucket.restore(service.store, service.known_buckets())
                if restored:
                    log.info("put %d results back into S3", restored)
                service.s3_in_sync = True
        except S3Unavailable as error:
            service.s3_in_sync = False
            log.warning("S3 unavailable: %s", error)


def _outcome_of(measured: list[list[int]] | str) -> Outcome:
    if isinstance(measured, str):
        return Outcome(failure=measured)
    return Outcome(measurements=measured)
