"""The device noise model: calibrated gate errors, readout errors, extra depolarizing noise."""

from __future__ import annotations

import math

import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import average_gate_fidelity
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel

from adapters.errors import InvalidRequestError
from adapters.noise import build_noise_model, gate_error, thermal_error
from adapters.profiles import available_profiles, load_profile
from schemas.profile import DeviceProfile
from schemas.request import DepolarizingNoise

SHOTS = 200_000


@pytest.fixture(scope="module")
def profile() -> DeviceProfile:
    return load_profile("ibm_guadalupe")


@pytest.fixture(scope="module")
def model(profile: DeviceProfile) -> NoiseModel:
    return build_noise_model(profile, None)


def _flip_rate(model: NoiseModel, qubit: int, prepare_one: bool, gates: int = 1) -> float:
    """Fraction of shots that read the wrong value after preparing |0> or |1> on `qubit`."""
    circuit = QuantumCircuit(qubit + 1, 1)
    for _ in range(gates if prepare_one else 0):
        circuit.x(qubit)
    circuit.measure(qubit, 0)
    counts = AerSimulator(noise_model=model).run(circuit, shots=SHOTS, seed_simulator=7).result()
    wrong = "0" if prepare_one else "1"
    return counts.get_counts().get(wrong, 0) / SHOTS


def _sigma(rate: float) -> float:
    return math.sqrt(max(rate, 1e-4) * (1 - rate) / SHOTS)


def test_profiles_are_listed_and_unknown_names_are_refused() -> None:
    assert "ibm_guadalupe" in available_profiles()
    with pytest.raises(InvalidRequestError, match="available: ibm_guadalupe"):
        load_profile("nope")


def test_every_qubit_has_a_readout_error(model: NoiseModel, profile: DeviceProfile) -> None:
    readout_qubits = {
        tuple(error["gate_qubits"][0])
        for error in model.to_dict()["errors"]
        if error["type"] == "roerror"
    }
    assert readout_qubits == {(q,) for q in range(profile.num_qubits)}


def test_gate_errors_match_the_calibration(profile: DeviceProfile) -> None:
    """Total error = calibrated error, unless relaxation over the gate time alone exceeds it
    (then relaxation is the whole error, as in qiskit-aer's device model)."""
    for gate in profile.gates:
        error = gate_error(gate, profile.qubits)
        relax = thermal_error((profile.qubits[q] for q in gate.qubits), gate.duration_ns)
        assert error is not None and relax is not None
        expected = max(gate.error, 1 - average_gate_fidelity(relax))
        assert 1 - average_gate_fidelity(error) == pytest.approx(expected, rel=1e-6)


def test_every_physical_gate_is_noisy(model: NoiseModel, profile: DeviceProfile) -> None:
    assert {"sx", "x", "id", "cx", "measure"} <= set(model.noise_instructions)
    assert "rz" not in model.noise_instructions  # virtual: a frame change carries no error


@pytest.mark.parametrize("qubit", [0, 3, 7])
def test_x_then_measure_errs_at_readout_plus_gate_rate(
    model: NoiseModel, profile: DeviceProfile, qubit: int
) -> None:
    calibration = profile.qubits[qubit]
    gate_error = next(g.error for g in profile.gates if g.gate == "x" and g.qubits == [qubit])
    expected = calibration.readout_p0_given_1
    observed = _flip_rate(model, qubit, prepare_one=True)
    assert expected - 5 * _sigma(expected) <= observed
    assert observed <= expected + 2 * gate_error + 5 * _sigma(expected)

    ground = _flip_rate(model, qubit, prepare_one=False)
    assert ground == pytest.approx(calibration.readout_p1_given_0, abs=5 * _sigma(ground))


def test_extra_depolarizing_adds_its_pauli_error_rate(profile: DeviceProfile) -> None:
    base = _flip_rate(build_noise_model(profile, None), 0, prepare_one=True)
    extra = DepolarizingNoise(one_qubit=0.05, two_qubit=0.0)
    noisier = _flip_rate(build_noise_model(profile, extra), 0, prepare_one=True)
    # Two of the three Paulis (X, Y) flip a Z-basis readout.
    assert noisier - base == pytest.approx(0.05 * 2 / 3, abs=0.006)


def test_extra_two_qubit_depolarizing_increases_cx_error(profile: DeviceProfile) -> None:
    def cx_error(model: NoiseModel) -> float:
        circuit = QuantumCircuit(2, 2)
        circuit.cx(0, 1)
        circuit.measure([0, 1], [0, 1])
        run = AerSimulator(noise_model=model).run(circuit, shots=SHOTS, seed_simulator=3)
        return 1 - run.result().get_counts().get("00", 0) / SHOTS

    base = cx_error(build_noise_model(profile, None))
    noisier = cx_error(build_noise_model(profile, DepolarizingNoise(two_qubit=0.1)))
    assert noisier > base + 0.05


def test_t2_beyond_twice_t1_is_truncated_not_refused(profile: DeviceProfile) -> None:
    qubits = [q.model_copy(update={"t2_us": 3 * q.t1_us}) for q in profile.qubits]
    odd = profile.model_copy(update={"qubits": qubits})
    assert "x" in build_noise_model(odd, None).noise_instructions
