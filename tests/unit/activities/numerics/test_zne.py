"""The ZNE core against mitiq itself, on real circuits and a noisy Aer simulator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from mitiq import zne as mitiq_zne
from mitiq.zne.scaling.folding import UnfoldableCircuitError
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import Operator
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from activities.experiment.plan import measured
from activities.numerics.observables import Distribution, expectation, standard_error
from activities.numerics.zne import (
    bootstrap,
    extrapolate,
    fold,
    fold_gates_in_order,
    make_factory,
    percentile_interval,
    plot_fit,
    scale_method,
    to_device_basis,
)
from schemas.request import PauliSumObservable, PauliTerm

BASIS_GATES = ["cx", "id", "rz", "sx", "x"]
ZZ = PauliSumObservable(terms=[PauliTerm(pauli="ZZ")])


def noisy_simulator() -> AerSimulator:
    noise = NoiseModel(basis_gates=BASIS_GATES)
    noise.add_all_qubit_quantum_error(depolarizing_error(0.002, 1), ["sx", "x"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.03, 2), ["cx"])
    noise.add_all_qubit_readout_error(ReadoutError([[0.97, 0.03], [0.05, 0.95]]))
    return AerSimulator(noise_model=noise)


def physical_circuit() -> QuantumCircuit:
    """A 2-qubit circuit in the device gate set, placed on physical qubits 3 and 1 of 5."""
    logical = QuantumCircuit(2)
    logical.ry(0.4, 0)
    logical.cx(0, 1)
    logical.rx(0.3, 1)
    logical.cx(1, 0)
    logical.cx(0, 1)
    physical = QuantumCircuit(5)
    physical.compose(
        transpile(logical, basis_gates=BASIS_GATES, optimization_level=0),
        qubits=[3, 1],
        inplace=True,
    )
    return physical


def zz_from_counts(counts: dict[str, int]) -> float:
    return expectation(ZZ, {"ZZ": counts})


def test_folded_circuits_scale_the_gate_count_and_keep_the_unitary() -> None:
    circuit = physical_circuit()
    gates = sum(circuit.count_ops().values())
    for method in ("global", "gates_at_random", "gates_from_left", "gates_from_right"):
        folded = fold(circuit, [1.0, 1.5, 3.0, 5.0], method, seed=4)
        for scale, scaled in zip([1.0, 1.5, 3.0, 5.0], folded, strict=True):
            assert sum(scaled.count_ops().values()) == pytest.approx(scale * gates, rel=0.15)
            assert Operator(scaled).equiv(Operator(circuit))


def test_folds_survive_the_device_basis_and_no_qubit_moves() -> None:
    circuit = physical_circuit()
    cx_pairs = {
        tuple(circuit.find_bit(q).index for q in inst.qubits)
        for inst in circuit.data
        if inst.operation.name == "cx"
    }
    folded = to_device_basis(fold(circuit, [1.0, 3.0, 5.0], "global", seed=0), BASIS_GATES)
    for scale, scaled in zip([1, 3, 5], folded, strict=True):
        assert set(scaled.count_ops()) <= set(BASIS_GATES)
        assert scaled.count_ops()["cx"] == scale * circuit.count_ops()["cx"]
        assert scaled.num_qubits == circuit.num_qubits
        assert {
            tuple(scaled.find_bit(q).index for q in inst.qubits)
            for inst in scaled.data
            if inst.operation.name == "cx"
        } == cx_pairs
        assert Operator(scaled).equiv(Operator(circuit))


def test_folding_from_the_left_and_right_folds_the_expected_end() -> None:
    circuit = QuantumCircuit(2)
    for k in range(10):
        circuit.rz(0.1 * (k + 1), 0)
    circuit.sx(1)  # qubit 1 is otherwise idle: mitiq pads it with identities, never folded

    def folded(method: str) -> tuple[list[float], int]:
        scaled = fold(circuit, [1.4], method, seed=0)[0]  # type: ignore[arg-type]
        angles = [float(i.operation.params[0]) for i in scaled.data if i.operation.name == "rz"]
        return [round(a, 6) for a in angles], scaled.count_ops().get("sx", 0)

    # 11 gates at scale 1.4 need 2 folds. The sx shares the first moment with rz(0.1), so from
    # the left both of them are folded; from the right the last two rz are.
    left_angles, left_sx = folded("gates_from_left")
    assert left_angles[:5] == [0.1, -0.1, 0.1, 0.2, 0.3]
    assert left_sx == 2  # sx, sxdg, sx: the sxdg is counted apart
    right_angles, right_sx = folded("gates_from_right")
    assert right_angles[-7:] == [0.8, 0.9, -0.9, 0.9, 1.0, -1.0, 1.0]
    assert right_sx == 1


def test_ordered_folding_keeps_measurements_at_the_end_and_refuses_mid_circuit_ones() -> None:
    measured_circuit = physical_circuit()
    measured_circuit.measure_all()
    for from_left in (True, False):
        scaled = fold_gates_in_order(measured_circuit, 3.0, from_left=from_left)
        names = [inst.operation.name for inst in scaled.data]
        first_measure = names.index("measure")
        assert names[first_measure:] == ["measure"] * measured_circuit.num_qubits
        assert scaled.count_ops()["cx"] == 3 * measured_circuit.count_ops()["cx"]
    mid = QuantumCircuit(1, 1)
    mid.h(0)
    mid.measure(0, 0)
    mid.x(0)
    with pytest.raises(UnfoldableCircuitError, match="intermediate measurements"):
        fold_gates_in_order(mid, 3.0, from_left=True)


@pytest.mark.parametrize(
    ("method", "order"),
    [("richardson", None), ("linear", None), ("polynomial", 2), ("exponential", None)],
)
def test_extrapolate_equals_the_factorys_own_reduction(method: str, order: int | None) -> None:
    scales = [1.0, 2.0, 3.0, 4.0]
    values = [0.8 * np.exp(-0.2 * s) + 0.1 for s in scales]
    factory = make_factory(scales, method, order)  # type: ignore[arg-type]
    for scale, value in zip(scales, values, strict=True):
        factory.push({"scale_factor": scale}, value)
    assert extrapolate(scales, values, method, order) == pytest.approx(factory.reduce())  # type: ignore[arg-type]


def test_two_stage_zne_matches_mitiq_execute_with_zne_within_shot_noise() -> None:
    """Same circuit, scale factors, folding and factory; the two runs differ only by shot noise,
    so they must agree within 4 standard errors of their difference."""
    shots = 40_000
    simulator = noisy_simulator()
    circuit = physical_circuit()
    scales = [1.0, 2.0, 3.0]
    qubits = [3, 1]
    method = scale_method("gates_at_random", seed=11)

    def run(circuits: list[QuantumCircuit], seed: int) -> list[dict[str, int]]:
        executed = to_device_basis([measured(c, qubits) for c in circuits], BASIS_GATES)
        result = simulator.run(executed, shots=shots, seed_simulator=seed).result()
        return [result.get_counts(i) for i in range(len(executed))]

    counts = run(fold(circuit, scales, "gates_at_random", seed=11), seed=100)
    values = [zz_from_counts(c) for c in counts]
    two_stage = extrapolate(scales, values, "richardson")

    calls = iter(range(200, 300))
    direct = mitiq_zne.execute_with_zne(
        circuit,
        lambda c: zz_from_counts(run([c], seed=next(calls))[0]),
        factory=make_factory(scales, "richardson"),
        scale_noise=method,
    )
    # Richardson is linear in the values: its weights give the extrapolated value's error.
    weights = [extrapolate(scales, list(np.eye(3)[k]), "richardson") for k in range(3)]
    errors = [standard_error(ZZ, {"ZZ": c}) for c in counts]
    extrapolated_error = float(
        np.sqrt(sum((w * e) ** 2 for w, e in zip(weights, errors, strict=True)))
    )
    assert abs(two_stage - direct) < 4 * np.sqrt(2) * extrapolated_error


def test_bootstrap_interval_covers_the_true_value() -> None:
    true_p = 0.3
    rng = np.random.default_rng(5)
    observed = rng.multinomial(2000, [1 - true_p, true_p])
    distribution = Distribution.from_counts({"0": observed[0], "1": observed[1]}, 1)

    def statistic(ds: Sequence[Distribution]) -> np.ndarray:
        return np.array([ds[0].weights[1] / ds[0].total])

    samples = bootstrap([distribution], statistic, 1000, np.random.default_rng(9))
    low, high = percentile_interval(samples[:, 0], 0.95)
    assert low < true_p < high
    binomial = np.sqrt(true_p * (1 - true_p) / 2000)
    assert high - low == pytest.approx(2 * 1.96 * binomial, rel=0.15)
    again = bootstrap([distribution], statistic, 1000, np.random.default_rng(9))
    np.testing.assert_array_equal(samples, again)


def test_plot_fit_is_a_png() -> None:
    png = plot_fit(
        [1.0, 2.0, 3.0], [0.8, 0.65, 0.52], [0.01] * 3, "richardson", None, (0.97, 0.9, 1.0), 1.0
    )
    assert png.startswith(b"\x89PNG")
