"""Qiskit Aer as a provider: `ideal` and `noisy` (a device profile's noise model).

A batch runs where it is asked to, inside the `simulate` compute activity (`simulate_here`):
free and, with its seed, deterministic, so a run redone on another host returns the same counts.
Histories recorded before that activity use the asynchronous job contract of remote hardware,
jobs in the on-disk store of adapters/local_jobs.py under qloop_home()/aer-jobs/<client_token>/.

A parameterized template runs through Aer's `parameter_binds`: parsed and mapped once, bound
inside the simulator. Aer seeds the k-th executed circuit of a job with seed + k * 2113 either
way, so a template with N bindings returns exactly the counts of its N bound circuits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

from adapters import local_jobs
from adapters.circuits import (
    IDEAL_QUBITS,
    canonical_counts,
    parameter_columns,
    prepare_circuit,
    simulator_capabilities,
)
from adapters.errors import InvalidRequestError
from adapters.job_limits import check_job_size
from adapters.local_jobs import JobStore, NoiseChoice
from adapters.noise import cached_noise_model
from adapters.profiles import available_profiles, load_profile, profile_calibration
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    Cost,
    JobRef,
    JobResult,
    JobStatus,
)
from schemas.profile import DeviceProfile
from schemas.request import DepolarizingNoise

PROVIDER = "aer"
DEVICES = ("ideal", "noisy")
JOBS_DIR = "aer-jobs"


class AerAdapter:
    """The Adapter protocol on Qiskit Aer. `device` is `ideal` or `noisy` (needs a profile)."""

    def __init__(
        self,
        device: str = "ideal",
        noise_profile: str | None = None,
        extra_depolarizing: DepolarizingNoise | None = None,
    ) -> None:
        self.device = device
        self._noise = NoiseChoice(noise_profile, extra_depolarizing)
        self._profile = _check_device(device, noise_profile, extra_depolarizing)

    # --- protocol ----------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        profile = self._profile
        num_qubits = IDEAL_QUBITS if profile is None else profile.num_qubits
        return simulator_capabilities(PROVIDER, self.device, profile, num_qubits)

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return Cost(usd=0.0, detail="local simulator")

    def calibration(self) -> dict[str, str] | None:
        return profile_calibration(self._profile)

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        check_job_size(batch, shots)
        return _STORE.submit(self._new_request(batch, shots, client_token, seed))

    def status(self, job: JobRef) -> JobStatus:
        return _STORE.status(*self._job(job))

    def result(self, job: JobRef) -> JobResult:
        job_dir, _ = self._job(job)
        return _STORE.result(job_dir, job.job_id)

    def cancel(self, job: JobRef) -> None:
        job_dir, _ = self._job(job)
        _STORE.cancel(job_dir)

    def billed(self, job: JobRef) -> Cost | None:
        return local_jobs.free_once_ended(self.status(job))

    def simulate_here(self, batch: CircuitBatch, shots: int, seed: int) -> JobResult:
        check_job_size(batch, shots)
        return JobResult.model_validate(_simulate(self._new_request(batch, shots, "here", seed)))

    # --- helpers -------------------------------------------------------------------------

    def _new_request(
        self, batch: CircuitBatch, shots: int, token: str, seed: int | None
    ) -> dict[str, Any]:
        return local_jobs.new_job_request(
            "aer", PROVIDER, self.device, self._noise, batch, shots, token, seed
        )

    def _job(self, job: JobRef) -> tuple[Path, dict[str, Any]]:
        return local_jobs.owned_job(_STORE, job, PROVIDER, self.device, self._noise)


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
def _simulator(noise: NoiseChoice) -> AerSimulator:
    """One simulator per configuration: building a noise model costs far more than a run."""
    if noise.profile is None:
        return AerSimulator()
    return AerSimulator(noise_model=cached_noise_model(noise.profile, noise.extra))


# --- jobs ------------------------------------------------------------------------------------


def _prepared(request: dict[str, Any]) -> tuple[CircuitBatch, list[QuantumCircuit]]:
    noise = NoiseChoice.from_request(request)
    batch = CircuitBatch.model_validate(request["batch"])
    profile = None if noise.profile is None else load_profile(noise.profile)
    return batch, [prepare_circuit(spec, profile) for spec in batch.circuits]


def _validate(request: dict[str, Any]) -> None:
    _prepared(request)


def _simulate(request: dict[str, Any]) -> dict[str, Any]:
    noise = NoiseChoice.from_request(request)
    batch, circuits = _prepared(request)
    runs, binds = _executions(batch, circuits)
    started = time.perf_counter()
    result = (
        _simulator(noise)
        .run(
            runs,
            shots=request["shots"],
            seed_simulator=request["seed"],
            parameter_binds=binds if any(binds) else None,
        )
        .result()
    )
    if not result.success:
        raise RuntimeError(f"Aer reported failure: {result.status}")
    widths = [
        circuit.num_clbits
        for circuit, spec in zip(circuits, batch.circuits, strict=True)
        for _ in range(spec.num_executions)
    ]
    if len(result.results) != len(widths):
        raise RuntimeError(
            f"Aer returned {len(result.results)} results for {len(widths)} executed circuits"
        )
    counts = [canonical_counts(result.get_counts(i), width) for i, width in enumerate(widths)]
    return {
        "counts": counts,
        "shots": request["shots"],
        "duration_seconds": time.perf_counter() - started,
    }


def _executions(
    batch: CircuitBatch, circuits: list[QuantumCircuit]
) -> tuple[list[QuantumCircuit], list[dict[Parameter, list[float]]]]:
    """Aer's run arguments: each circuit with its parameter values (empty when plain). A
    template whose compiled form lost every parameter runs once per binding all the same."""
    runs: list[QuantumCircuit] = []
    binds: list[dict[Parameter, list[float]]] = []
    for spec, circuit in zip(batch.circuits, circuits, strict=True):
        if spec.parameters and circuit.parameters:
            runs.append(circuit)
            binds.append(parameter_columns(spec, circuit))
        else:
            runs.extend([circuit] * spec.num_executions)
            binds.extend({} for _ in range(spec.num_executions))
    return runs, binds


_STORE = JobStore(JOBS_DIR, simulate=_simulate, validate=_validate)
