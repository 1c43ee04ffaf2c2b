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
from functools import lru_cache
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

from adapters.circuits import (
    IDEAL_QUBITS,
    canonical_counts,
    parameter_columns,
    prepare_circuit,
    simulator_capabilities,
)
from adapters.errors import InvalidRequestError
from adapters.local_jobs import JobStore, NoiseChoice
from adapters.local_simulator import LocalSimulatorAdapter
from adapters.noise import cached_noise_model
from adapters.profiles import available_profiles, load_profile
from schemas.execution import (
    Capabilities,
    CircuitBatch,
)
from schemas.profile import DeviceProfile
from schemas.request import DepolarizingNoise

PROVIDER = "aer"
DEVICES = ("ideal", "noisy")
JOBS_DIR = "aer-jobs"


class AerAdapter(LocalSimulatorAdapter):
    """The Adapter protocol on Qiskit Aer. `device` is `ideal` or `noisy` (needs a profile)."""

    def __init__(
        self,
        device: str = "ideal",
        noise_profile: str | None = None,
        extra_depolarizing: DepolarizingNoise | None = None,
    ) -> None:
        super().__init__(
            provider=PROVIDER,
            device=device,
            noise=NoiseChoice(noise_profile, extra_depolarizing),
            profile=_check_device(device, noise_profile, extra_depolarizing),
            store=_STORE,
            job_prefix="aer",
            cost_detail="local simulator",
        )

    def capabilities(self) -> Capabilities:
        profile = self._profile
        num_qubits = IDEAL_QUBITS if profile is None else profile.num_qubits
        return simulator_capabilities(PROVIDER, self.device, profile, num_qubits)


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
