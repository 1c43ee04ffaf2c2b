"""A Braket NoiseModel equivalent to the Aer noise model of adapters/noise.py for a profile.

Each calibrated gate gets, in Aer's order, a depolarizing channel sized so that together with
relaxation the gate's average error equals its calibrated error (the very channel noise.py
computes), then thermal relaxation (T1/T2 over the gate duration) as a Kraus channel, then the
optional extra depolarizing error. Relaxation is given as Kraus operators of the same channel
Aer uses because Braket's named damping channels on a two-qubit gate would apply one qubit's
damping rate to both qubits. Every qubit's asymmetric readout error P(1|0) != P(0|1) is a
Kraus channel right before its measurement: in front of a Z measurement it changes the outcome
populations exactly like Aer's assignment matrix (BitFlip would force them to be equal).
The channels are therefore the same as Aer's, not an approximation; what differs is only that
Braket's density-matrix simulator evolves them exactly where Aer samples them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from braket.circuits import Gate, Noise
from braket.circuits.noise_model import GateCriteria, MeasureCriteria, NoiseModel
from qiskit.quantum_info import Kraus, Operator, average_gate_fidelity
from qiskit_aer.noise import QuantumError

from adapters.errors import InvalidRequestError
from adapters.noise import calibrated_gates, depolarizing_for_target, thermal_error
from adapters.profiles import load_profile
from schemas.profile import DeviceProfile, GateCalibration, QubitCalibration
from schemas.request import DepolarizingNoise

# The Braket gate that qiskit-braket-provider's to_braket emits for each calibratable gate.
BRAKET_GATES: dict[str, type[Gate]] = {
    "id": Gate.I, "x": Gate.X, "y": Gate.Y, "z": Gate.Z, "h": Gate.H, "sx": Gate.V,
    "sxdg": Gate.Vi, "rx": Gate.Rx, "ry": Gate.Ry, "cx": Gate.CNot, "cz": Gate.CZ,
    "ecr": Gate.ECR, "swap": Gate.Swap, "iswap": Gate.ISwap,
}  # fmt: skip
# Braket bounds the probability of a non-identity Pauli at full depolarization.
MAX_PAULI_PROBABILITY = {1: 0.75, 2: 0.9375}


def build_noise_model(profile: DeviceProfile, extra: DepolarizingNoise | None = None) -> NoiseModel:
    """The Braket NoiseModel of `profile` on its physical qubit indices, plus `extra`."""
    model = NoiseModel()
    for gate in calibrated_gates(profile):
        criteria = _criteria(gate)
        for channel in gate_channels(gate, profile.qubits, extra):
            model.add_noise(channel, criteria)
    for index, qubit in enumerate(profile.qubits):
        channel = readout_channel(qubit)
        if channel is not None:
            model.add_noise(channel, MeasureCriteria(index))
    return model


@lru_cache(maxsize=16)
def cached_noise_model(profile_name: str, extra: DepolarizingNoise | None) -> NoiseModel:
    return build_noise_model(load_profile(profile_name), extra)


def gate_channels(
    gate: GateCalibration, qubits: list[QubitCalibration], extra: DepolarizingNoise | None
) -> list[Noise]:
    """The channels that follow `gate`, in the order Aer composes them."""
    arity = len(gate.qubits)
    relax = thermal_error((qubits[q] for q in gate.qubits), gate.duration_ns)
    depolarizing = depolarizing_for_target(gate.error, arity, relax)
    channels: list[Noise] = []
    if depolarizing is not None:
        channels.append(_depolarizing(pauli_probability(depolarizing, arity), arity))
    if relax is not None:
        channels.append(kraus_channel(relax))
    extra_probability = 0.0 if extra is None else (extra.one_qubit, extra.two_qubit)[arity - 1]
    if extra_probability > 0:
        channels.append(_depolarizing(extra_probability, arity))
    return channels


def pauli_probability(depolarizing: QuantumError, num_qubits: int) -> float:
    """Probability of a non-identity Pauli in a depolarizing channel, from its average gate
    fidelity F: p = (d + 1)(1 - F) / d."""
    dim = 2**num_qubits
    fidelity = float(average_gate_fidelity(depolarizing))
    return min((dim + 1) * (1 - fidelity) / dim, MAX_PAULI_PROBABILITY[num_qubits])


def kraus_channel(error: QuantumError) -> Noise:
    # Qiskit orders a matrix's qubits little-endian (qarg 0 least significant), Braket
    # big-endian (first target most significant).
    kraus = Kraus(error.to_quantumchannel())
    return Noise.Kraus([Operator(matrix).reverse_qargs().data for matrix in kraus.data])


def readout_channel(qubit: QubitCalibration) -> Noise | None:
    """|0> reads 1 with P(1|0), |1> reads 0 with P(0|1), as a channel before the measurement."""
    p1_given_0, p0_given_1 = qubit.readout_p1_given_0, qubit.readout_p0_given_1
    if p1_given_0 == 0 and p0_given_1 == 0:
        return None
    keep = np.diag([np.sqrt(1 - p1_given_0), np.sqrt(1 - p0_given_1)])
    decay = np.array([[0, np.sqrt(p0_given_1)], [0, 0]])
    excite = np.array([[0, 0], [np.sqrt(p1_given_0), 0]])
    return Noise.Kraus([keep, decay, excite])


def _depolarizing(probability: float, num_qubits: int) -> Noise:
    if num_qubits == 1:
        return Noise.Depolarizing(probability)
    return Noise.TwoQubitDepolarizing(probability)


def _criteria(gate: GateCalibration) -> GateCriteria:
    braket_gate = BRAKET_GATES.get(gate.gate)
    if braket_gate is None or len(gate.qubits) > 2:
        raise InvalidRequestError(
            f"profile gate {gate.gate!r} on {gate.qubits} has no Braket noise equivalent; "
            f"supported: {', '.join(sorted(BRAKET_GATES))} on 1 or 2 qubits"
        )
    qubits = gate.qubits[0] if len(gate.qubits) == 1 else [tuple(gate.qubits)]
    return GateCriteria(braket_gate, qubits)
