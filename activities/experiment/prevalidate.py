"""Prevalidation on the ideal simulator: the ideal reference value, an ideal sample of every
prepared circuit (so anyone can compare it with direct execution), and a refusal of what is too
big, too deep or too noisy to give a meaningful answer."""

from __future__ import annotations

import math

from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer import AerSimulator

from activities.experiment.admission import MAX_IDEAL_QUBITS, invalid_request
from activities.numerics.circuits import load_qasm2
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from adapters.profiles import load_profile
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Tier
from schemas.pipeline import PreparedCircuits, PreparedExperiment, PrevalidateInput, Prevalidation
from schemas.profile import DeviceProfile
from schemas.request import BitstringProbabilityObservable, DepolarizingNoise, Observable
from schemas.settings import current_settings

PREVALIDATION_ARTIFACT = "prevalidation.json"
MIN_FIDELITY = 0.01
MIN_SAMPLE_SHOTS = 4000
MAX_SAMPLE_SHOTS = 100_000
_NOT_GATES = frozenset({"barrier", "measure", "delay"})


class PrevalidationError(ValueError):
    """The experiment cannot give a meaningful answer; the message says why."""


def prevalidate(input: PrevalidateInput) -> Prevalidation:
    prepared = input.prepared
    check_limits(prepared)
    circuits = artifact_store.read_model(prepared.artifact_uri, PreparedCircuits)
    fidelity = _fidelity(input, circuits)
    if fidelity < MIN_FIDELITY:
        raise PrevalidationError(
            f"cannot succeed: estimated fidelity {fidelity:.3g} below {MIN_FIDELITY} on "
            f"{prepared.capabilities.device} ({prepared.two_qubit_gate_count} two-qubit gates, "
            f"depth {prepared.transpiled_depth}); use a smaller circuit or a better backend"
        )
    ideal = ideal_value(load_qasm2(circuits.logical_qasm), circuits.observable)
    shots = min(max(input.request.execution.shots, MIN_SAMPLE_SHOTS), MAX_SAMPLE_SHOTS)
    seed = input.request.execution.seed or 0
    measured = circuits.measured_physical_qubits
    samples = {
        basis.basis: ideal_counts(load_qasm2(basis.qasm), measured, shots, seed)
        for basis in circuits.bases
    }
    record = {
        "shots": shots,
        "seed": seed,
        "measured_physical_qubits": measured,
        "ideal_value": ideal,
        "estimated_fidelity": fidelity,
        "counts": samples,
    }
    uri = artifact_store.put_json(input.experiment_id, PREVALIDATION_ARTIFACT, record)
    return Prevalidation(ideal_value=ideal, estimated_fidelity=fidelity, artifact_uri=uri)


@implements(activity_contracts.prevalidate)
async def prevalidate_activity(input: PrevalidateInput) -> Prevalidation:
    try:
        return await in_child_with_heartbeats(prevalidate, input)
    except PrevalidationError as error:
        raise invalid_request(error) from error


def max_depth() -> int:
    return current_settings().max_depth


def check_limits(prepared: PreparedExperiment) -> None:
    if prepared.num_qubits > MAX_IDEAL_QUBITS:
        raise PrevalidationError(
            f"too wide: {prepared.num_qubits} qubits exceeds the limit {MAX_IDEAL_QUBITS} "
            "of the exact ideal reference"
        )
    limit = max_depth()
    if prepared.transpiled_depth > limit:
        raise PrevalidationError(
            f"too deep: depth {prepared.transpiled_depth} exceeds the limit {limit} "
            "(QLOOP_MAX_DEPTH) after transpiling for the backend"
        )


def ideal_value(circuit: QuantumCircuit, observable: Observable) -> float:
    """The observable's exact value on the circuit's output state."""
    state = Statevector(circuit)
    if isinstance(observable, BitstringProbabilityObservable):
        probabilities = state.probabilities()
        return float(sum(probabilities[int(b, 2)] for b in dict.fromkeys(observable.bitstrings)))
    operator = SparsePauliOp(
        [term.pauli for term in observable.terms], [term.coefficient for term in observable.terms]
    )
    return float(state.expectation_value(operator).real)


def ideal_counts(
    circuit: QuantumCircuit, measured: list[int], shots: int, seed: int
) -> dict[str, int]:
    """Counts of an ideal run measuring physical qubit `measured[i]` into classical bit i."""
    register = ClassicalRegister(len(measured), "c")
    sampled = circuit.copy()
    sampled.add_register(register)
    sampled.measure(measured, register)
    result = AerSimulator().run(sampled, shots=shots, seed_simulator=seed).result()
    return dict(result.get_counts())


def _fidelity(input: PrevalidateInput, circuits: PreparedCircuits) -> float:
    backend = input.request.execution.backend
    # Only the noisy simulator has a calibrated error model to estimate from.
    if input.prepared.capabilities.tier != Tier.NOISY_SIMULATOR or backend.noise_profile is None:
        return 1.0
    profile = load_profile(backend.noise_profile)
    measured = circuits.measured_physical_qubits
    return min(
        estimated_fidelity(load_qasm2(basis.qasm), measured, profile, backend.extra_depolarizing)
        for basis in circuits.bases
    )


def estimated_fidelity(
    circuit: QuantumCircuit,
    measured: list[int],
    profile: DeviceProfile,
    extra: DepolarizingNoise | None = None,
) -> float:
    """Product over gates of (1 - calibrated error, plus any extra depolarizing) and over
    measured qubits of (1 - mean readout error): a rough chance that nothing went wrong."""
    errors = {(gate.gate, tuple(gate.qubits)): gate.error for gate in profile.gates}
    log_fidelity = 0.0
    for instruction in circuit.data:
        name = instruction.operation.name
        if name in _NOT_GATES:
            continue
        qubits = tuple(circuit.find_bit(q).index for q in instruction.qubits)
        error = errors.get((name, qubits), 0.0) + _extra(len(qubits), extra)
        log_fidelity += math.log1p(-error) if error < 1.0 else -math.inf
    for qubit in measured:
        calibration = profile.qubits[qubit]
        readout = (calibration.readout_p1_given_0 + calibration.readout_p0_given_1) / 2
        log_fidelity += math.log1p(-readout)
    return math.exp(log_fidelity)


def _extra(num_qubits: int, extra: DepolarizingNoise | None) -> float:
    if extra is None:
        return 0.0
    return extra.one_qubit if num_qubits == 1 else extra.two_qubit
