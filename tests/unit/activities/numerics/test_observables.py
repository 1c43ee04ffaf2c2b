"""Observables from counts, and tensored readout mitigation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError

from activities.numerics.observables import (
    Distribution,
    basis_for_pauli,
    bitstring_probability,
    expectation,
    product_expectation,
    standard_error,
)
from activities.numerics.readout import (
    confusion_matrices,
    inverse_matrices,
    mitigate_distribution,
    mitigate_factors,
)
from schemas.request import BitstringProbabilityObservable, PauliSumObservable, PauliTerm

SHOTS = 4000


def pauli_sum(*labels: str, coefficient: float = 1.0) -> PauliSumObservable:
    return PauliSumObservable(terms=[PauliTerm(pauli=p, coefficient=coefficient) for p in labels])


def bell_in_basis(basis: str) -> QuantumCircuit:
    """(|00> + |11>)/sqrt2 with both qubits rotated so that `basis` is read as Z."""
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    for qubit, axis in enumerate(reversed(basis)):
        if axis == "Y":
            circuit.sdg(qubit)
        if axis in "XY":
            circuit.h(qubit)
    circuit.measure_all()
    return circuit


def run_counts(
    circuits: list[QuantumCircuit], simulator: AerSimulator, seed: int
) -> list[dict[str, int]]:
    result = simulator.run(circuits, shots=SHOTS, seed_simulator=seed).result()
    return [result.get_counts(i) for i in range(len(circuits))]


def test_bell_state_pauli_expectations_in_qiskit_convention() -> None:
    bases = ["ZZ", "XX", "YY"]
    counts = dict(
        zip(bases, run_counts([bell_in_basis(b) for b in bases], AerSimulator(), 1), strict=True)
    )
    assert expectation(pauli_sum("ZZ"), counts) == pytest.approx(1.0)
    assert expectation(pauli_sum("XX"), counts) == pytest.approx(1.0)
    assert expectation(pauli_sum("YY"), counts) == pytest.approx(-1.0)
    # Single-qubit terms of a Bell state average to zero up to shot noise.
    assert abs(expectation(pauli_sum("ZI"), counts)) < 5 / np.sqrt(SHOTS)
    total = expectation(
        PauliSumObservable(
            terms=[
                PauliTerm(pauli="XX", coefficient=0.5),
                PauliTerm(pauli="YY", coefficient=-0.5),
                PauliTerm(pauli="ZZ", coefficient=2.0),
            ]
        ),
        counts,
    )
    assert total == pytest.approx(3.0)


def test_parity_is_on_the_terms_support_with_qubit_zero_rightmost() -> None:
    counts = {"001": 30, "100": 10}  # qubit 0 is 1 in the first outcome, qubit 2 in the second
    assert expectation(pauli_sum("IIZ"), {"ZZZ": counts}) == pytest.approx((-30 + 10) / 40)
    assert expectation(pauli_sum("ZII"), {"ZZZ": counts}) == pytest.approx((30 - 10) / 40)
    assert expectation(pauli_sum("ZIZ"), {"ZZZ": counts}) == pytest.approx(-1.0)


def test_terms_are_measured_in_an_agreeing_basis_where_i_reads_as_z() -> None:
    assert basis_for_pauli("XI", ["ZZ", "XZ"]) == "XZ"
    assert basis_for_pauli("IZ", ["XI"]) == "XI"
    assert basis_for_pauli("II", ["YY"]) == "YY"
    with pytest.raises(ValueError, match="measures the Pauli term XY"):
        basis_for_pauli("XY", ["XX", "YY"])


def test_bitstring_probability_counts_each_listed_bitstring() -> None:
    observable = BitstringProbabilityObservable(bitstrings=["00", "11"])
    assert bitstring_probability(observable, {"00": 45, "11": 35, "01": 20}) == pytest.approx(0.8)


def test_standard_error_matches_the_binomial_formula() -> None:
    counts = {"0": 3000, "1": 1000}
    mean = 0.5
    assert expectation(pauli_sum("Z"), {"Z": counts}) == pytest.approx(mean)
    assert standard_error(pauli_sum("Z"), {"Z": counts}) == pytest.approx(
        np.sqrt((1 - mean**2) / 4000)
    )
    # Two copies of the same term in one basis are fully correlated: the error doubles.
    doubled = PauliSumObservable(terms=[PauliTerm(pauli="Z"), PauliTerm(pauli="Z")])
    assert standard_error(doubled, {"Z": counts}) == pytest.approx(
        2 * np.sqrt((1 - mean**2) / 4000)
    )


def test_outcomes_wider_than_the_measured_bits_are_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        Distribution.from_counts({"101": 1}, 2)


# --- readout ---------------------------------------------------------------------------------

CONFUSION = np.array(
    [
        [[0.97, 0.06], [0.03, 0.94]],
        [[0.92, 0.10], [0.08, 0.90]],
        [[0.99, 0.04], [0.01, 0.96]],
    ]
)


def dense_to_distribution(probabilities: np.ndarray) -> Distribution:
    num_bits = int(np.log2(len(probabilities)))
    labels = [format(i, f"0{num_bits}b") for i in range(len(probabilities))]
    return Distribution.from_counts(dict(zip(labels, probabilities, strict=True)), num_bits)


def apply_confusion(probabilities: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    return mitigate_distribution(probabilities, confusion)  # forward map: same contraction


def test_exact_calibration_recovers_a_known_distribution() -> None:
    ideal = np.array([0.4, 0.0, 0.1, 0.05, 0.0, 0.15, 0.0, 0.3])
    measured = apply_confusion(ideal, CONFUSION)
    zeros = apply_confusion(np.eye(8)[0], CONFUSION)
    ones = apply_confusion(np.eye(8)[7], CONFUSION)
    confusion = confusion_matrices(dense_to_distribution(zeros), dense_to_distribution(ones))
    np.testing.assert_allclose(confusion, CONFUSION, atol=1e-12)
    recovered = mitigate_distribution(measured, inverse_matrices(confusion))
    np.testing.assert_allclose(recovered, ideal, atol=1e-12)


def test_corrected_factors_equal_the_expectation_on_the_mitigated_distribution() -> None:
    rng = np.random.default_rng(3)
    measured = rng.dirichlet(np.ones(8))
    inverses = inverse_matrices(CONFUSION)
    quasi = dense_to_distribution(mitigate_distribution(measured, inverses))
    for factors in (np.array([[1, -1], [1, 1], [1, -1]]), np.array([[0, 1], [1, 0], [0, 1]])):
        on_quasi = product_expectation(quasi, factors.astype(float))
        on_measured = product_expectation(
            dense_to_distribution(measured), mitigate_factors(factors.astype(float), inverses)
        )
        assert on_measured == pytest.approx(on_quasi, abs=1e-12)


def test_sampled_calibration_on_aer_readout_errors_recovers_the_distribution() -> None:
    noise = NoiseModel()
    for qubit, matrix in enumerate(CONFUSION):
        noise.add_readout_error(ReadoutError(matrix.T), [qubit])
    simulator = AerSimulator(noise_model=noise)
    state = QuantumCircuit(3)
    state.ry(1.1, 0)
    state.x(2)
    state.cx(0, 1)
    zeros = QuantumCircuit(3)
    ones = QuantumCircuit(3)
    ones.x([0, 1, 2])
    circuits = [c.copy() for c in (state, zeros, ones)]
    for circuit in circuits:
        circuit.measure_all()
    measured, cal0, cal1 = (
        Distribution.from_counts(c, 3) for c in run_counts(circuits, simulator, 7)
    )
    inverses = inverse_matrices(confusion_matrices(cal0, cal1))
    dense = np.zeros(8)
    for bits, weight in zip(measured.bits, measured.weights, strict=True):
        dense[int(sum(int(b) << i for i, b in enumerate(bits)))] += weight / measured.total
    recovered = mitigate_distribution(dense, inverses)
    ideal = np.zeros(8)
    ideal[0b100] = np.cos(1.1 / 2) ** 2
    ideal[0b111] = np.sin(1.1 / 2) ** 2
    # Shot noise of 4000-shot frequencies (<= 0.008), amplified by the inverses (~1.2x per qubit).
    np.testing.assert_allclose(recovered, ideal, atol=0.03)
    assert np.abs(dense - ideal).max() > 3 * np.abs(recovered - ideal).max()


def test_a_qubit_that_reads_randomly_cannot_be_inverted() -> None:
    calibration = Distribution.from_counts({"0": 50, "1": 50}, 1)
    with pytest.raises(ValueError, match=r"qubits \[0\]"):
        inverse_matrices(confusion_matrices(calibration, calibration))


@pytest.mark.parametrize("bits", ["".join(b) for b in itertools.product("01", repeat=3)])
def test_every_bitstring_maps_to_its_own_index(bits: str) -> None:
    distribution = Distribution.from_counts({bits: 1}, 3)
    assert [int(b) for b in distribution.bits[0]] == [int(c) for c in reversed(bits)]
