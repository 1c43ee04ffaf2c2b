"""Braket's local simulators as a provider: `braket_sv`, and `braket_dm` with a device profile
(its Braket noise model, adapters/braket_noise.py) and extra depolarizing noise.

A batch runs where it is asked to, inside the `simulate` compute activity (`simulate_here`);
histories recorded before that activity use jobs in the on-disk store of adapters/local_jobs.py
(qloop_home()/braket-local-jobs/<token>/). The local simulators take no seed, so a run asks for
the exact outcome distribution (shots=0 with a probability result) and samples it with the run's
seed: counts are reproducible wherever the run happens, as with Aer. A parameterized template
runs as one circuit per binding, bound in Qiskit before translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
from braket.circuits import Circuit
from braket.devices import LocalSimulator
from qiskit import QuantumCircuit

from adapters.braket_device import ARN_PREFIX
from adapters.braket_noise import cached_noise_model
from adapters.braket_programs import translate, without_measurements
from adapters.circuits import (
    bound_circuits,
    clbit_qubits,
    execution_name,
    prepare_circuit,
    simulator_capabilities,
)
from adapters.errors import InvalidRequestError
from adapters.local_jobs import JobStore, NoiseChoice
from adapters.local_simulator import LocalSimulatorAdapter
from adapters.profiles import available_profiles, load_profile
from schemas.execution import (
    Capabilities,
    CircuitBatch,
)
from schemas.profile import DeviceProfile
from schemas.request import BRAKET_LOCAL_DEVICES, DepolarizingNoise

PROVIDER = "braket"
LOCAL_JOBS_DIR = "braket-local-jobs"


class BraketLocalAdapter(LocalSimulatorAdapter):
    """The Adapter protocol on Braket's LocalSimulator: `braket_sv`, or `braket_dm` with an
    optional device profile (its Braket noise model) and extra depolarizing noise."""

    def __init__(
        self,
        device: str = "braket_sv",
        noise_profile: str | None = None,
        extra_depolarizing: DepolarizingNoise | None = None,
    ) -> None:
        super().__init__(
            provider=PROVIDER,
            device=device,
            noise=NoiseChoice(noise_profile, extra_depolarizing),
            profile=_check_local_device(device, noise_profile, extra_depolarizing),
            store=_LOCAL_STORE,
            job_prefix="braket-local",
            cost_detail="Braket local simulator",
        )

    @cached_property
    def _max_qubits(self) -> int:
        qubits = int(LocalSimulator(self.device).properties.paradigm.qubitCount)
        return qubits if self._profile is None else min(qubits, self._profile.num_qubits)

    def capabilities(self) -> Capabilities:
        profile = self._profile
        return simulator_capabilities(PROVIDER, self.device, profile, self._max_qubits)


@dataclass(frozen=True)
class _LocalProgram:
    """A circuit ready for the local simulator: noise applied, measurements replaced by the
    probability of the measured qubits in ascending order. The local simulators get the order
    of an unsorted probability target wrong (for [3, 5, 2] they answer as for [5, 3, 2]), and a
    layout on a coupling map measures in any order, so `axes` puts the sorted result into
    canonical order: axis j of the canonical tensor (clbit n-1-j) is axis axes[j] of the
    simulator's."""

    circuit: Circuit
    axes: tuple[int, ...]

    @property
    def num_clbits(self) -> int:
        return len(self.axes)

    def canonical(self, probabilities: np.ndarray) -> np.ndarray:
        tensor = probabilities.reshape([2] * self.num_clbits)
        return tensor.transpose(self.axes).reshape(-1)


def _check_local_device(
    device: str, noise_profile: str | None, extra: DepolarizingNoise | None
) -> DeviceProfile | None:
    if device not in BRAKET_LOCAL_DEVICES:
        raise InvalidRequestError(
            f"unknown device {device!r} for provider braket; allowed: "
            f"{', '.join(BRAKET_LOCAL_DEVICES)} or a device ARN ({ARN_PREFIX}...)"
        )
    if device == "braket_sv" and (noise_profile is not None or extra is not None):
        raise InvalidRequestError(
            "braket_sv takes no noise_profile or extra_depolarizing; use device braket_dm"
        )
    if noise_profile is None:
        if extra is not None:
            raise InvalidRequestError(
                "extra_depolarizing adds to a device profile; give noise_profile too "
                f"(available: {', '.join(available_profiles())})"
            )
        return None
    return load_profile(noise_profile)


def _local_programs(request: dict[str, Any]) -> list[_LocalProgram]:
    noise = NoiseChoice.from_request(request)
    profile = None if noise.profile is None else load_profile(noise.profile)
    max_qubits = int(LocalSimulator(request["device"]).properties.paradigm.qubitCount)
    batch = CircuitBatch.model_validate(request["batch"])
    programs: list[_LocalProgram] = []
    for spec in batch.circuits:
        template = prepare_circuit(spec, profile)
        measured = clbit_qubits(template, spec.name)
        for row, circuit in enumerate(bound_circuits(spec, template)):
            name = execution_name(spec, row)
            programs.append(_local_program(name, circuit, measured, noise, max_qubits))
    return programs


def _local_program(
    name: str, circuit: QuantumCircuit, measured: list[int], noise: NoiseChoice, max_qubits: int
) -> _LocalProgram:
    program = translate(circuit, name)
    if program.qubit_count > max_qubits:
        raise InvalidRequestError(
            f"circuit {name!r} acts on {program.qubit_count} qubits; the simulator "
            f"takes at most {max_qubits}"
        )
    if noise.profile is not None:
        program = cached_noise_model(noise.profile, noise.extra).apply(program)
    exact = without_measurements(program)
    for qubit in sorted(set(measured) - set(exact.qubits)):
        # The simulator allocates only qubits that an instruction touches; added after the
        # noise model, this identity carries no noise.
        exact.i(qubit)
    target = sorted(measured)
    axes = tuple(target.index(qubit) for qubit in reversed(measured))
    return _LocalProgram(exact.probability(target=target), axes)


def _validate_local(request: dict[str, Any]) -> None:
    _local_programs(request)


def _simulate_local(request: dict[str, Any]) -> dict[str, Any]:
    programs = _local_programs(request)
    simulator = LocalSimulator(request["device"])
    rng = np.random.default_rng(request["seed"])
    started = datetime.now(UTC)
    counts = []
    for program in programs:
        result = simulator.run(program.circuit, shots=0).result()
        values = np.asarray(result.values[0])
        probabilities = program.canonical(values)
        counts.append(_sample(probabilities, request["shots"], program.num_clbits, rng))
    return {
        "counts": counts,
        "shots": request["shots"],
        "duration_seconds": (datetime.now(UTC) - started).total_seconds(),
    }


def _sample(
    probabilities: np.ndarray, shots: int, num_clbits: int, rng: np.random.Generator
) -> dict[str, int]:
    clipped = np.clip(probabilities.real, 0.0, None)  # exact zeros come back as -1e-17
    drawn = rng.multinomial(shots, clipped / clipped.sum())
    return {format(int(i), f"0{num_clbits}b"): int(drawn[i]) for i in np.flatnonzero(drawn)}


# Each simulation runs alone in its child process: numba's default threading layer, which the
# local simulators' parallel kernels use, aborts a process that enters them from two threads.
_LOCAL_STORE = JobStore(LOCAL_JOBS_DIR, simulate=_simulate_local, validate=_validate_local)
