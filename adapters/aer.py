"""Qiskit Aer as a provider: `ideal` and `noisy` (a device profile's noise model).

Local, but behind the same asynchronous, durable contract as remote hardware. Every job lives
on disk under qloop_home()/aer-jobs/<client_token>/:

    request.json   what was asked (batch, shots, seed, device); written once, atomically
    result.json    canonical counts, once the simulation finished
    error.json     why the simulation failed
    cancelled      marker: the job was cancelled, its result is never used
    lock           held (flock) by the process that is simulating the job
    restarts       how often an orphaned simulation was restarted (gives up after 3)

A job without result, error or marker whose lock nobody holds was orphaned by a process that
died; `status` restarts it. Local simulation is free and, with the stored seed, deterministic,
so a restart returns what the first run would have.
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
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit, qasm2, transpile
from qiskit_aer import AerSimulator

from adapters.errors import InvalidRequestError, JobFailedError
from adapters.noise import cached_noise_model
from adapters.profiles import available_profiles, load_profile
from adapters.settings import qloop_home
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    CircuitSpec,
    Cost,
    JobRef,
    JobResult,
    JobState,
    JobStatus,
    Pricing,
    Tier,
)
from schemas.profile import DeviceProfile
from schemas.request import DepolarizingNoise

PROVIDER = "aer"
DEVICES = ("ideal", "noisy")
IDEAL_QUBITS = 28
MAX_SHOTS = 1_000_000
MAX_CIRCUITS_PER_JOB = 500
# Closed under inversion (sx/sxdg, s/sdg, t/tdg, self-inverse rest, parametrised rotations) so
# that folding a circuit for ZNE never leaves the basis.
IDEAL_BASIS = [
    "id", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "sxdg",
    "rx", "ry", "rz", "p", "u", "cx", "cz", "swap", "ccx", "measure",
]  # fmt: skip
# Not gates: Aer executes these natively and a noise model never targets them.
NON_GATES = frozenset({"measure", "barrier", "reset", "delay"})
CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "break_loop",
                          "continue_loop", "box"})  # fmt: skip

JOBS_DIR = "aer-jobs"
REQUEST, RESULT, ERROR = "request.json", "result.json", "error.json"
CANCELLED, LOCK, RESTARTS = "cancelled", "lock", "restarts"
MAX_RESTARTS = 3
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# Simulations run off the caller's thread so submit returns at once; Aer parallelises inside.
_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qloop-aer")
_IN_FLIGHT: dict[Path, Future[None]] = {}
_IN_FLIGHT_LOCK = threading.Lock()
_SUBMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Noise:
    """The device configuration a job was submitted to: part of its identity."""

    profile: str | None
    extra: DepolarizingNoise | None

    def as_json(self) -> dict[str, Any]:
        extra = None if self.extra is None else self.extra.model_dump(mode="json")
        return {"noise_profile": self.profile, "extra_depolarizing": extra}

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> _Noise:
        extra = request.get("extra_depolarizing")
        depolarizing = None if extra is None else DepolarizingNoise(**extra)
        return cls(request.get("noise_profile"), depolarizing)


class AerAdapter:
    """The Adapter protocol on Qiskit Aer. `device` is `ideal` or `noisy` (needs a profile)."""

    def __init__(
        self,
        device: str = "ideal",
        noise_profile: str | None = None,
        extra_depolarizing: DepolarizingNoise | None = None,
    ) -> None:
        self.device = device
        self._noise = _Noise(noise_profile, extra_depolarizing)
        self._profile = _check_device(device, noise_profile, extra_depolarizing)

    # --- protocol ----------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        profile = self._profile
        return Capabilities(
            provider=PROVIDER,
            device=self.device,
            tier=Tier.SIMULATOR if profile is None else Tier.NOISY_SIMULATOR,
            num_qubits=IDEAL_QUBITS if profile is None else profile.num_qubits,
            basis_gates=list(IDEAL_BASIS if profile is None else profile.basis_gates),
            coupling_map=None if profile is None else list(profile.coupling_map),
            max_shots=MAX_SHOTS,
            max_circuits_per_job=MAX_CIRCUITS_PER_JOB,
            cancellable=True,
            pricing=Pricing(source="local simulator, free"),
        )

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return Cost(usd=0.0, detail="local simulator")

    def calibration(self) -> dict[str, str] | None:
        if self._profile is None:
            return None
        return {
            "profile": self._profile.name,
            "source": self._profile.source,
            "calibrated_at": self._profile.calibrated_at,
        }

    def submit(
        self, batch: CircuitBatch, shots: int, client_token: str, seed: int | None
    ) -> JobRef:
        self._check_limits(batch, shots)
        job_dir = _job_dir(client_token)
        fingerprint = self._fingerprint(batch, shots, seed)
        existing = _read_request(job_dir, client_token)
        if existing is not None:
            return self._same_job(existing, fingerprint, client_token)
        circuits = [_prepare(spec, self._profile) for spec in batch.circuits]
        request = self._new_request(batch, shots, client_token, seed, fingerprint)
        with _SUBMIT_LOCK:
            stored = _create_job(job_dir, request)
        if stored["job_id"] != request["job_id"]:
            return self._same_job(stored, fingerprint, client_token)
        _start(job_dir, stored, circuits)
        return _job_ref(stored)

    def status(self, job: JobRef) -> JobStatus:
        job_dir, request = self._job(job)
        if (job_dir / CANCELLED).exists():
            return JobStatus(state=JobState.CANCELLED)
        if (job_dir / RESULT).exists():
            return JobStatus(state=JobState.DONE)
        if (job_dir / ERROR).exists():
            return JobStatus(state=JobState.FAILED, message=_read_json(job_dir / ERROR)["message"])
        future = _in_flight(job_dir)
        if future is not None:
            return JobStatus(state=JobState.RUNNING if future.running() else JobState.QUEUED)
        if _locked_elsewhere(job_dir):
            return JobStatus(state=JobState.RUNNING, message="simulating in another process")
        return _restart_orphan(job_dir, request)

    def result(self, job: JobRef) -> JobResult:
        job_dir, _ = self._job(job)
        if (job_dir / CANCELLED).exists():
            raise JobFailedError(f"job {job.job_id} was cancelled; it has no result")
        if (job_dir / RESULT).exists():
            return JobResult.model_validate(_read_json(job_dir / RESULT))
        if (job_dir / ERROR).exists():
            message = _read_json(job_dir / ERROR)["message"]
            raise JobFailedError(f"job {job.job_id} failed: {message}")
        raise InvalidRequestError(
            f"job {job.job_id} has no result yet; poll status until it is done"
        )

    def cancel(self, job: JobRef) -> None:
        job_dir, _ = self._job(job)
        if (job_dir / RESULT).exists() or (job_dir / ERROR).exists():
            return
        _write_atomic(job_dir / CANCELLED, datetime.now(UTC).isoformat())
        future = _in_flight(job_dir)
        if future is not None:
            future.cancel()

    # --- helpers -------------------------------------------------------------------------

    def _check_limits(self, batch: CircuitBatch, shots: int) -> None:
        if not 1 <= shots <= MAX_SHOTS:
            raise InvalidRequestError(f"shots must be between 1 and {MAX_SHOTS}, got {shots}")
        if len(batch.circuits) > MAX_CIRCUITS_PER_JOB:
            raise InvalidRequestError(
                f"a job holds at most {MAX_CIRCUITS_PER_JOB} circuits, got {len(batch.circuits)}"
            )

    def _fingerprint(self, batch: CircuitBatch, shots: int, seed: int | None) -> str:
        identity = {
            "device": self.device,
            **self._noise.as_json(),
            "batch": batch.model_dump(mode="json"),
            "shots": shots,
            "seed": seed,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _new_request(
        self, batch: CircuitBatch, shots: int, token: str, seed: int | None, fingerprint: str
    ) -> dict[str, Any]:
        return {
            "job_id": f"aer-{uuid.uuid4().hex}",
            "client_token": token,
            "provider": PROVIDER,
            "device": self.device,
            **self._noise.as_json(),
            "batch": batch.model_dump(mode="json"),
            "shots": shots,
            "requested_seed": seed,
            # A seed is fixed even when none was asked for, so a restarted job repeats itself.
            "seed": seed if seed is not None else secrets.randbelow(2**31),
            "fingerprint": fingerprint,
            "submitted_at": datetime.now(UTC).isoformat(),
        }

    def _same_job(self, stored: dict[str, Any], fingerprint: str, token: str) -> JobRef:
        if stored.get("fingerprint") != fingerprint:
            raise InvalidRequestError(
                f"client token {token!r} was already used for a different job (other circuits, "
                "shots, seed or device); a new job needs a new token"
            )
        return _job_ref(stored)

    def _job(self, job: JobRef) -> tuple[Path, dict[str, Any]]:
        job_dir = _job_dir(job.client_token)
        request = _read_request(job_dir, job.client_token)
        if request is None or request["job_id"] != job.job_id:
            raise InvalidRequestError(f"unknown aer job {job.job_id} (token {job.client_token!r})")
        if request["device"] != self.device or _Noise.from_request(request) != self._noise:
            raise InvalidRequestError(
                f"job {job.job_id} belongs to aer device {request['device']!r} "
                f"({request.get('noise_profile')}), not to this adapter ({self.device!r})"
            )
        return job_dir, request


# --- devices ---------------------------------------------------------------------------------


def _check_device(
    device: str, noise_profile: str | None, extra: DepolarizingNoise | None
) -> DeviceProfile | None:
    if device not in DEVICES:
        raise InvalidRequestError(
            f"unknown device {device!r} for provider aer; allowed: {', '.join(DEVICES)}"
        )
    if device == "ideal":
        if noise_profile is not None or extra is not None:
            raise InvalidRequestError(
                "device ideal takes no noise_profile or extra_depolarizing; use device noisy"
            )
        return None
    if noise_profile is None:
        raise InvalidRequestError(
            f"noisy needs noise_profile; available: {', '.join(available_profiles())}"
        )
    return load_profile(noise_profile)


@lru_cache(maxsize=16)
def _simulator(noise: _Noise) -> AerSimulator:
    """One simulator per configuration: building a noise model costs far more than a run."""
    if noise.profile is None:
        return AerSimulator()
    return AerSimulator(noise_model=cached_noise_model(noise.profile, noise.extra))


# --- circuits --------------------------------------------------------------------------------


def _prepare(spec: CircuitSpec, profile: DeviceProfile | None) -> QuantumCircuit:
    """Parse and check one circuit; map it onto the device only if it is not there already."""
    circuit = _parse(spec)
    max_qubits = IDEAL_QUBITS if profile is None else profile.num_qubits
    if circuit.num_qubits > max_qubits:
        raise InvalidRequestError(
            f"circuit {spec.name!r} uses {circuit.num_qubits} qubits; the device has {max_qubits}"
        )
    if circuit.num_clbits == 0:
        raise InvalidRequestError(f"circuit {spec.name!r} measures nothing: it has no clbits")
    if circuit.num_clbits != spec.num_clbits:
        raise InvalidRequestError(
            f"circuit {spec.name!r} declares {spec.num_clbits} clbits but its QASM has "
            f"{circuit.num_clbits}"
        )
    if _runs_as_is(circuit, profile):
        return circuit
    return _map_to_device(spec.name, circuit, profile)


def _parse(spec: CircuitSpec) -> QuantumCircuit:
    try:
        return qasm2.loads(
            spec.qasm,
            custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS,
            custom_classical=qasm2.LEGACY_CUSTOM_CLASSICAL,
        )
    except Exception as exc:
        raise InvalidRequestError(f"circuit {spec.name!r} is not valid OpenQASM 2: {exc}") from exc


def _runs_as_is(circuit: QuantumCircuit, profile: DeviceProfile | None) -> bool:
    if profile is None:
        allowed = set(IDEAL_BASIS) | NON_GATES | CONTROL_FLOW
        return all(inst.operation.name in allowed for inst in circuit.data)
    # On a noisy device every gate must be one the noise model knows, on a coupled pair;
    # anything else would run silently noiseless.
    allowed = set(profile.basis_gates) | NON_GATES
    coupled = {tuple(edge) for edge in profile.coupling_map}
    for inst in circuit.data:
        if inst.operation.name not in allowed:
            return False
        if inst.operation.name not in NON_GATES and len(inst.qubits) == 2:
            pair = tuple(circuit.find_bit(q).index for q in inst.qubits)
            if pair not in coupled:
                return False
    return True


def _map_to_device(
    name: str, circuit: QuantumCircuit, profile: DeviceProfile | None
) -> QuantumCircuit:
    """Translate at optimization_level=0: a ZNE fold must survive, so nothing is simplified.
    Sabre layout and routing still apply: a trivial layout drags in ancilla qubits through
    swaps, and every extra active qubit doubles the cost of a noisy simulation."""
    basis = IDEAL_BASIS if profile is None else profile.basis_gates
    coupling = None if profile is None else [list(edge) for edge in profile.coupling_map]
    try:
        return transpile(
            circuit,
            basis_gates=list(basis),
            coupling_map=coupling,
            optimization_level=0,
            layout_method=None if profile is None else "sabre",
            routing_method=None if profile is None else "sabre",
            seed_transpiler=0,
        )
    except Exception as exc:
        raise InvalidRequestError(f"circuit {name!r} cannot run on this device: {exc}") from exc


def canonical_counts(counts: dict[str, int], num_clbits: int) -> dict[str, int]:
    """Qiskit order (rightmost = clbit 0), no register spaces, zero-padded to num_clbits."""
    canonical: dict[str, int] = {}
    for key, count in counts.items():
        bits = key.replace(" ", "")
        if bits.startswith("0x"):
            bits = format(int(bits, 16), "b")
        bits = bits.zfill(num_clbits)
        canonical[bits] = canonical.get(bits, 0) + int(count)
    return canonical


# --- jobs ------------------------------------------------------------------------------------


def _start(job_dir: Path, request: dict[str, Any], circuits: list[QuantumCircuit] | None) -> None:
    with _IN_FLIGHT_LOCK:
        if job_dir in _IN_FLIGHT:
            return
        future = _EXECUTOR.submit(_run_job, job_dir, request, circuits)
        _IN_FLIGHT[job_dir] = future
    future.add_done_callback(lambda _: _forget(job_dir))


def _restart_orphan(job_dir: Path, request: dict[str, Any]) -> JobStatus:
    # A job that kills its process (out of memory) would otherwise take every poller down
    # with it, forever.
    restarts = int(_read_text(job_dir / RESTARTS) or "0")
    if restarts >= MAX_RESTARTS:
        message = f"simulation was interrupted {restarts} times; giving up"
        _write_atomic(job_dir / ERROR, json.dumps({"message": message}))
        return JobStatus(state=JobState.FAILED, message=message)
    _write_atomic(job_dir / RESTARTS, str(restarts + 1))
    _start(job_dir, request, None)
    return JobStatus(
        state=JobState.RUNNING, message="restarted: the process that ran it had stopped"
    )


def _forget(job_dir: Path) -> None:
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.pop(job_dir, None)


def _in_flight(job_dir: Path) -> Future[None] | None:
    with _IN_FLIGHT_LOCK:
        return _IN_FLIGHT.get(job_dir)


def _run_job(job_dir: Path, request: dict[str, Any], circuits: list[QuantumCircuit] | None) -> None:
    with _job_lock(job_dir) as mine:
        if not mine or _finished(job_dir):
            return
        try:
            payload = _simulate(request, circuits)
        except Exception as exc:  # any failure is the job's outcome, reported by status
            _write_atomic(job_dir / ERROR, json.dumps({"message": f"{type(exc).__name__}: {exc}"}))
            return
        if not (job_dir / CANCELLED).exists():
            _write_atomic(job_dir / RESULT, json.dumps(payload))


def _simulate(request: dict[str, Any], circuits: list[QuantumCircuit] | None) -> dict[str, Any]:
    noise = _Noise.from_request(request)
    batch = CircuitBatch.model_validate(request["batch"])
    if circuits is None:
        profile = None if noise.profile is None else load_profile(noise.profile)
        circuits = [_prepare(spec, profile) for spec in batch.circuits]
    started = time.perf_counter()
    result = (
        _simulator(noise)
        .run(circuits, shots=request["shots"], seed_simulator=request["seed"])
        .result()
    )
    if not result.success:
        raise RuntimeError(f"Aer reported failure: {result.status}")
    counts = [
        canonical_counts(result.get_counts(i), circuit.num_clbits)
        for i, circuit in enumerate(circuits)
    ]
    return {
        "counts": counts,
        "shots": request["shots"],
        "duration_seconds": time.perf_counter() - started,
    }


def _finished(job_dir: Path) -> bool:
    return any((job_dir / name).exists() for name in (RESULT, ERROR, CANCELLED))


@contextlib.contextmanager
def _job_lock(job_dir: Path) -> Iterator[bool]:
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


def _locked_elsewhere(job_dir: Path) -> bool:
    with _job_lock(job_dir) as mine:
        return not mine


# --- job store -------------------------------------------------------------------------------


def _jobs_root() -> Path:
    root = qloop_home() / JOBS_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def _job_dir(token: str) -> Path:
    if not token:
        raise InvalidRequestError("client_token must not be empty")
    if _SAFE_TOKEN.fullmatch(token):
        return _jobs_root() / token
    # Tokens that are not plain file names (slashes, very long) are stored under their hash.
    return _jobs_root() / ("t-" + hashlib.sha256(token.encode()).hexdigest())


def _read_request(job_dir: Path, token: str) -> dict[str, Any] | None:
    path = job_dir / REQUEST
    if not path.exists():
        return None
    request = _read_json(path)
    if request.get("client_token") != token:
        raise InvalidRequestError(f"job directory {job_dir} belongs to another client token")
    return request


def _create_job(job_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Publish the job directory with one rename, so no reader ever sees half a job. If another
    submitter (thread or process) won the race, its request is returned instead."""
    staging = job_dir.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    (staging / REQUEST).write_text(json.dumps(request, indent=1))
    (staging / LOCK).touch()
    try:
        os.rename(staging, job_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        existing = _read_request(job_dir, request["client_token"])
        if existing is None:
            raise
        return existing
    return request


def _job_ref(request: dict[str, Any]) -> JobRef:
    return JobRef(
        provider=PROVIDER,
        device=request["device"],
        job_id=request["job_id"],
        client_token=request["client_token"],
        submitted_at=datetime.fromisoformat(request["submitted_at"]),
    )


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
