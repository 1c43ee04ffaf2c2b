"""The durable on-disk job store behind every local simulator adapter (Aer, Braket local).

Local simulation sits behind the same asynchronous, durable contract as remote hardware. Every
job lives on disk under qloop_home()/<store dir>/<client_token>/:

    request.json   what was asked (batch, shots, seed, device); written once, atomically
    result.json    canonical counts, once the simulation finished
    error.json     why the simulation failed
    cancelled      marker: the job was cancelled, its result is never used
    lock           held (flock) by the child process that is simulating the job

Simulations run in child processes of the worker's compute pool (adapters/process_pool.py), never
on the worker's own threads: a simulation holds the GIL for its whole run, and one that runs away
(memory, time) fails its job with the limit named while the worker serves everything else. The
batch is parsed and checked at submission in a child as well, so a refused batch is refused at
once and leaves nothing behind.

A job without result, error or marker whose lock nobody holds was orphaned by a worker that
died (its children die with it); `status` restarts it. Local simulation is free and, with the
stored seed, deterministic, so a restart returns what the first run would have.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.errors import InvalidRequestError, JobFailedError, TransientError
from adapters.process_pool import ChildDied, LimitExceeded, PoolTask, TaskCancelled, shared_pool
from schemas.execution import CircuitBatch, Cost, JobRef, JobResult, JobState, JobStatus
from schemas.request import DepolarizingNoise
from schemas.settings import qloop_home

REQUEST, RESULT, ERROR = "request.json", "result.json", "error.json"
CANCELLED, LOCK = "cancelled", "lock"
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# Module-level functions of the adapters, run in child processes (so picklable by name):
# request -> result.json payload, and request -> None or InvalidRequestError.
Simulate = Callable[[dict[str, Any]], dict[str, Any]]
Validate = Callable[[dict[str, Any]], None]

_IN_FLIGHT: dict[Path, PoolTask[None]] = {}
_IN_FLIGHT_LOCK = threading.Lock()
_SUBMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class NoiseChoice:
    """The noise configuration a job was submitted to: part of its identity."""

    profile: str | None
    extra: DepolarizingNoise | None

    def as_json(self) -> dict[str, Any]:
        extra = None if self.extra is None else self.extra.model_dump(mode="json")
        return {"noise_profile": self.profile, "extra_depolarizing": extra}

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> NoiseChoice:
        extra = request.get("extra_depolarizing")
        depolarizing = None if extra is None else DepolarizingNoise(**extra)
        return cls(request.get("noise_profile"), depolarizing)


class JobStore:
    """Jobs of one local provider under qloop_home()/`dirname`. `validate` parses and checks a
    request's batch; `simulate` turns a stored request into the result payload."""

    def __init__(self, dirname: str, simulate: Simulate, validate: Validate) -> None:
        self.dirname = dirname
        self.simulate = simulate
        self._validate = validate

    # --- submission ----------------------------------------------------------------------

    def submit(self, request: dict[str, Any]) -> JobRef:
        """Store and start `request` unless its token already has a job. Validation runs only
        for a new job, so a refused batch leaves nothing behind."""
        token = request["client_token"]
        job_dir = self.job_dir(token)
        existing = self.read_request(job_dir, token)
        if existing is not None:
            return same_job(existing, request["fingerprint"], token)
        self._validated(request)
        with _SUBMIT_LOCK:
            stored = self.create(job_dir, request)
        if stored["job_id"] != request["job_id"]:
            return same_job(stored, request["fingerprint"], token)
        self.start(job_dir, stored)
        return job_ref(stored)

    def _validated(self, request: dict[str, Any]) -> None:
        label = f"checking the batch of {request['provider']} job {request['job_id']}"
        try:
            shared_pool().run(self._validate, request, label)
        except LimitExceeded as error:
            raise InvalidRequestError(str(error)) from None
        except ChildDied as error:
            raise TransientError(str(error)) from None

    def job_dir(self, token: str) -> Path:
        if not token:
            raise InvalidRequestError("client_token must not be empty")
        if _SAFE_TOKEN.fullmatch(token):
            return self._root() / token
        # Tokens that are not plain file names (slashes, very long) are stored under their hash.
        return self._root() / ("t-" + hashlib.sha256(token.encode()).hexdigest())

    def read_request(self, job_dir: Path, token: str) -> dict[str, Any] | None:
        path = job_dir / REQUEST
        if not path.exists():
            return None
        request = read_json(path)
        if request.get("client_token") != token:
            raise InvalidRequestError(f"job directory {job_dir} belongs to another client token")
        return request

    def create(self, job_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
        """Publish the job directory with one rename, so no reader ever sees half a job. If
        another submitter (thread or process) won the race, its request is returned instead."""
        staging = job_dir.parent / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        (staging / REQUEST).write_text(json.dumps(request, indent=1))
        (staging / LOCK).touch()
        try:
            os.rename(staging, job_dir)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            existing = self.read_request(job_dir, request["client_token"])
            if existing is None:
                raise
            return existing
        return request

    def lookup(self, job: JobRef) -> tuple[Path, dict[str, Any]]:
        job_dir = self.job_dir(job.client_token)
        request = self.read_request(job_dir, job.client_token)
        if request is None or request["job_id"] != job.job_id:
            raise InvalidRequestError(
                f"unknown {job.provider} job {job.job_id} (token {job.client_token!r})"
            )
        return job_dir, request

    # --- running -------------------------------------------------------------------------

    def start(self, job_dir: Path, request: dict[str, Any]) -> None:
        with _IN_FLIGHT_LOCK:
            if job_dir in _IN_FLIGHT:
                return
            label = f"simulation of {request['provider']} job {request['job_id']}"
            task = shared_pool().submit(
                run_job, SimulationTask(job_dir, request, self.simulate), label
            )
            _IN_FLIGHT[job_dir] = task
        task.future.add_done_callback(lambda done: _settle(job_dir, done))

    # --- protocol --------------------------------------------------------------------------

    def status(self, job_dir: Path, request: dict[str, Any]) -> JobStatus:
        if (job_dir / CANCELLED).exists():
            return JobStatus(state=JobState.CANCELLED)
        if (job_dir / RESULT).exists():
            return JobStatus(state=JobState.DONE)
        if (job_dir / ERROR).exists():
            return JobStatus(state=JobState.FAILED, message=read_json(job_dir / ERROR)["message"])
        task = _in_flight(job_dir)
        if task is not None:
            return JobStatus(state=JobState.RUNNING if task.future.running() else JobState.QUEUED)
        if _locked_elsewhere(job_dir):
            return JobStatus(state=JobState.RUNNING, message="simulating in another process")
        return self._restart_orphan(job_dir, request)

    def result(self, job_dir: Path, job_id: str) -> JobResult:
        if (job_dir / CANCELLED).exists():
            raise JobFailedError(f"job {job_id} was cancelled; it has no result")
        if (job_dir / RESULT).exists():
            return JobResult.model_validate(read_json(job_dir / RESULT))
        if (job_dir / ERROR).exists():
            message = read_json(job_dir / ERROR)["message"]
            raise JobFailedError(f"job {job_id} failed: {message}")
        raise InvalidRequestError(f"job {job_id} has no result yet; poll status until it is done")

    def cancel(self, job_dir: Path) -> None:
        if (job_dir / RESULT).exists() or (job_dir / ERROR).exists():
            return
        write_atomic(job_dir / CANCELLED, datetime.now(UTC).isoformat())
        task = _in_flight(job_dir)
        if task is not None:
            task.cancel()

    def _restart_orphan(self, job_dir: Path, request: dict[str, Any]) -> JobStatus:
        self.start(job_dir, request)
        return JobStatus(
            state=JobState.RUNNING, message="restarted: the process that ran it had stopped"
        )

    def _root(self) -> Path:
        root = qloop_home() / self.dirname
        root.mkdir(parents=True, exist_ok=True)
        return root


def free_once_ended(status: JobStatus) -> Cost | None:
    """A local simulation costs nothing; like a provider's bill, it is known once the job
    ended."""
    return Cost(usd=0.0, detail="local simulator") if status.state.is_final else None


def same_job(stored: dict[str, Any], fingerprint: str, token: str) -> JobRef:
    if stored.get("fingerprint") != fingerprint:
        raise InvalidRequestError(
            f"client token {token!r} was already used for a different job (other circuits, "
            "shots, seed or device); a new job needs a new token"
        )
    return job_ref(stored)


def job_ref(request: dict[str, Any]) -> JobRef:
    return JobRef(
        provider=request["provider"],
        device=request["device"],
        job_id=request["job_id"],
        client_token=request["client_token"],
        submitted_at=datetime.fromisoformat(request["submitted_at"]),
    )


@contextlib.contextmanager
def job_lock(job_dir: Path) -> Iterator[bool]:
    """An OS lock the kernel releases when the holder dies: a held lock means a live runner."""
    with open(job_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _locked_elsewhere(job_dir: Path) -> bool:
    with job_lock(job_dir) as mine:
        return not mine


def _finished(job_dir: Path) -> bool:
    return any((job_dir / name).exists() for name in (RESULT, ERROR, CANCELLED))


def _in_flight(job_dir: Path) -> PoolTask[None] | None:
    with _IN_FLIGHT_LOCK:
        return _IN_FLIGHT.get(job_dir)


@dataclass(frozen=True)
class SimulationTask:
    job_dir: Path
    request: dict[str, Any]
    simulate: Simulate


def run_job(task: SimulationTask) -> None:
    """In a child process: simulate the job unless another process holds it or it has ended."""
    job_dir = task.job_dir
    with job_lock(job_dir) as mine:
        if not mine or _finished(job_dir):
            return
        try:
            payload = task.simulate(task.request)
        except MemoryError:
            raise  # the pool reports it as the memory limit, and the job fails with that
        except Exception as exc:  # any failure is the job's outcome, reported by status
            message = f"{type(exc).__name__}: {exc}"
            write_atomic(job_dir / ERROR, json.dumps({"message": message}))
            return
        if not (job_dir / CANCELLED).exists():
            write_atomic(job_dir / RESULT, json.dumps(payload))


def _settle(job_dir: Path, done: Future[None]) -> None:
    """In the worker, when a simulation's child is done: a child stopped at a limit, one that
    died, or a task that never reached its child cannot record why; its job fails with it."""
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.pop(job_dir, None)
    if done.cancelled():
        return
    error = done.exception()
    if error is None or isinstance(error, TaskCancelled) or _finished(job_dir):
        return
    message = str(error) if isinstance(error, LimitExceeded | ChildDied) else repr(error)
    write_atomic(job_dir / ERROR, json.dumps({"message": message}))


def new_job_request(
    job_prefix: str,
    provider: str,
    device: str,
    noise: NoiseChoice,
    batch: CircuitBatch,
    shots: int,
    token: str,
    seed: int | None,
) -> dict[str, Any]:
    """A local job's request record; its fingerprint tells a resubmission of the same batch
    under the same token from a different batch reusing it."""
    identity = {
        "device": device,
        **noise.as_json(),
        "batch": batch.identity(),
        "shots": shots,
        "seed": seed,
    }
    return {
        **identity,
        "job_id": f"{job_prefix}-{uuid.uuid4().hex}",
        "client_token": token,
        "provider": provider,
        "requested_seed": seed,
        # A seed is fixed even when none was asked for, so a restarted job repeats itself.
        "seed": seed if seed is not None else secrets.randbelow(2**31),
        "fingerprint": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
        "submitted_at": datetime.now(UTC).isoformat(),
    }


def owned_job(
    store: JobStore, job: JobRef, provider: str, device: str, noise: NoiseChoice
) -> tuple[Path, dict[str, Any]]:
    """The job's folder and request, refusing a job that another device's adapter created."""
    job_dir, request = store.lookup(job)
    if request["device"] != device or NoiseChoice.from_request(request) != noise:
        raise InvalidRequestError(
            f"job {job.job_id} belongs to {provider} device {request['device']!r} "
            f"({request.get('noise_profile')}), not to this adapter ({device!r})"
        )
    return job_dir, request
