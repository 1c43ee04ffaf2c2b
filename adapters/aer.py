"""Qiskit Aer as a provider: `ideal` and `noisy` (a device profile's noise model).

Local, but behind the same asynchronous, durable contract as remote hardware: jobs live in
the on-disk job store of adapters/local_jobs.py under qloop_home()/aer-jobs/<client_token>/.
Local simulation is free and, with the stored seed, deterministic, so a restarted orphan returns
what the first run would have.

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

from qiskit import QuantumCircuit, qasm2, qasm3, transpile
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

from adapters import local_jobs
from adapters.errors import InvalidRequestError
from adapters.local_jobs import JobStore, NoiseChoice
from adapters.noise import cached_noise_model
from adapters.profiles import available_profiles, load_profile, profile_calibration
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    CircuitSpec,
    Cost,
    JobRef,
    JobResult,
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


def simulator_capabilities(
    provider: str, device: str, profile: DeviceProfile | None, num_qubits: int
) -> Capabilities:
    """A local simulator: free, any qubit pair unless a device profile says otherwise."""
    return Capabilities(
        provider=provider,
        device=device,
        tier=Tier.SIMULATOR if profile is None else Tier.NOISY_SIMULATOR,
        num_qubits=num_qubits,
        basis_gates=list(IDEAL_BASIS if profile is None else profile.basis_gates),
        coupling_map=None if profile is None else list(profile.coupling_map),
        max_shots=MAX_SHOTS,
        max_circuits_per_job=MAX_CIRCUITS_PER_JOB,
        cancellable=True,
        pricing=Pricing(source=f"{provider} local simulator, free"),
        simulated_in_activity=True,
    )


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
        self._check_limits(batch, shots)
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
        self._check_limits(batch, shots)
        return JobResult.model_validate(_simulate(self._new_request(batch, shots, "here", seed)))

    # --- helpers -------------------------------------------------------------------------

    def _check_limits(self, batch: CircuitBatch, shots: int) -> None:
        if not 1 <= shots <= MAX_SHOTS:
            raise InvalidRequestError(f"shots must be between 1 and {MAX_SHOTS}, got {shots}")
        if batch.num_executions > MAX_CIRCUITS_PER_JOB:
            raise InvalidRequestError(
                f"a job holds at most {MAX_CIRCUITS_PER_JOB} circuits (every binding of a "
                f"template counts), got {batch.num_executions}"
            )

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
    if spec.parameters:
        return _parse_template(spec)
    try:
        return qasm2.loads(
            spec.qasm,
            custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS,
            custom_classical=qasm2.LEGACY_CUSTOM_CLASSICAL,
        )
    except Exception as exc:
        raise InvalidRequestError(f"circuit {spec.name!r} is not valid OpenQASM 2: {exc}") from exc


def _parse_template(spec: CircuitSpec) -> QuantumCircuit:
    try:
        circuit = qasm3.loads(spec.qasm)
    except Exception as exc:
        raise InvalidRequestError(f"template {spec.name!r} is not valid OpenQASM 3: {exc}") from exc
    unbound = sorted({p.name for p in circuit.parameters} - set(spec.parameters))
    if unbound:
        raise InvalidRequestError(
            f"template {spec.name!r} declares inputs {unbound} that its parameters "
            f"{spec.parameters} do not bind"
        )
    return circuit


def parameter_columns(spec: CircuitSpec, circuit: QuantumCircuit) -> dict[Parameter, list[float]]:
    """The values of each of the circuit's parameters, one per binding (Aer's parameter_binds)."""
    position = {name: i for i, name in enumerate(spec.parameters)}
    return {
        parameter: [row[position[parameter.name]] for row in spec.bindings]
        for parameter in circuit.parameters
    }


def bound_circuits(spec: CircuitSpec, circuit: QuantumCircuit) -> list[QuantumCircuit]:
    """The spec's executed circuits: the circuit itself, or the template at every binding."""
    if not spec.parameters:
        return [circuit]
    columns = parameter_columns(spec, circuit)
    return [
        circuit.assign_parameters({p: values[row] for p, values in columns.items()})
        for row in range(len(spec.bindings))
    ]


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


def _prepared(request: dict[str, Any]) -> tuple[CircuitBatch, list[QuantumCircuit]]:
    noise = NoiseChoice.from_request(request)
    batch = CircuitBatch.model_validate(request["batch"])
    profile = None if noise.profile is None else load_profile(noise.profile)
    return batch, [_prepare(spec, profile) for spec in batch.circuits]


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
