"""Circuit families against exact statevector arithmetic: the parameterized circuits prepare the
states they claim, and their classical references are right."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.quantum_info import Operator, SparsePauliOp, Statevector
from scipy.optimize import minimize

from activities.experiment.prevalidate import ideal_value
from activities.numerics import circuits, classical
from activities.numerics.families import family_circuit, family_observable
from activities.variational.classical_reference import classical_reference, ground_energy
from schemas.request import Graph
from schemas.variational import QaoaFamily, ReferenceInput, VqeFamily

H2_TERMS = [
    ("II", -1.052373245772859),
    ("IZ", 0.39793742484318045),
    ("ZI", -0.39793742484318045),
    ("ZZ", -0.01128010425623538),
    ("XX", 0.18093119978423156),
]
H2_GROUND_ENERGY = -1.857275030202382
# Hartree-Fock for H2 in the parity mapping: qubit 0 set ("01"), all angles zero.
H2_HARTREE_FOCK = -1.052373245772859 - 2 * 0.39793742484318045 + 0.01128010425623538
CHEMICAL_ACCURACY = 1.6e-3

GRAPH = Graph.model_validate(
    {
        "nodes": 4,
        "edges": [
            {"u": 0, "v": 1, "weight": 1.0},
            {"u": 1, "v": 2, "weight": 2.0},
            {"u": 2, "v": 3, "weight": 0.5},
            {"u": 3, "v": 0, "weight": 1.5},
            {"u": 0, "v": 2, "weight": 1.0},
        ],
    }
)


def h2_family(reps: int = 1, initial_bits: str = "01") -> VqeFamily:
    return VqeFamily.model_validate(
        {
            "hamiltonian": {"terms": [{"pauli": p, "coefficient": c} for p, c in H2_TERMS]},
            "ansatz": {"reps": reps, "initial_bits": initial_bits},
        }
    )


def h2_matrix() -> np.ndarray:
    return SparsePauliOp([p for p, _ in H2_TERMS], [c for _, c in H2_TERMS]).to_matrix()


# --- QAOA ----------------------------------------------------------------------------------


def test_qaoa_parameters_are_gammas_then_betas() -> None:
    built = family_circuit(QaoaFamily(graph=GRAPH, layers=3))
    assert built.parameter_names == ["gamma_0", "gamma_1", "gamma_2", "beta_0", "beta_1", "beta_2"]


@pytest.mark.parametrize("layers", [1, 2])
def test_qaoa_bound_is_the_qaoa_template_of_the_experiment(layers: int) -> None:
    """Same angles, same state as the `qaoa_maxcut` experiment template (RZZ(2 gamma w))."""
    rng = np.random.default_rng(layers)
    gammas, betas = rng.uniform(-1, 1, layers).tolist(), rng.uniform(-1, 1, layers).tolist()
    bound = family_circuit(QaoaFamily(graph=GRAPH, layers=layers)).bind([*gammas, *betas])
    template = circuits.qaoa_maxcut(GRAPH, gammas, betas).circuit
    assert Operator(bound).equiv(Operator(template))


def test_qaoa_observable_is_the_cut_weight_of_every_partition() -> None:
    observable = family_observable(QaoaFamily(graph=GRAPH))
    operator = SparsePauliOp(
        [t.pauli for t in observable.terms], [t.coefficient for t in observable.terms]
    )
    assert np.allclose(np.diag(operator.to_matrix()).real, classical.cut_values(GRAPH))


def test_qaoa_exact_values_agree_with_the_direct_qaoa_simulation() -> None:
    family = QaoaFamily(graph=GRAPH, layers=2)
    points = np.random.default_rng(3).uniform(-1.5, 1.5, size=(5, 4)).tolist()
    reference = classical_reference(ReferenceInput(family=family, points=points))
    direct = [classical.qaoa_expectation(GRAPH, p[:2], p[2:]) for p in points]
    assert reference.exact_values == pytest.approx(direct, abs=1e-10)
    assert reference.baseline_method == "brute_force_maxcut"
    assert reference.baseline_value == classical.max_cut(GRAPH).value


# --- VQE -----------------------------------------------------------------------------------


def test_h2_exact_ground_energy_is_numpy_eigvalsh() -> None:
    reference = classical_reference(ReferenceInput(family=h2_family()))
    assert reference.baseline_method == "exact_diagonalisation"
    assert reference.baseline_value == pytest.approx(np.linalg.eigvalsh(h2_matrix())[0], abs=1e-12)
    assert reference.baseline_value == pytest.approx(H2_GROUND_ENERGY, abs=1e-9)
    assert reference.exact_values == []


def test_ground_energy_of_a_wide_hamiltonian_uses_the_sparse_solver() -> None:
    """14 qubits (beyond the dense limit): the open transverse-field Ising chain
    -J sum Z_i Z_i+1 - h sum X_i, whose ground energy is known in closed form (free fermions:
    minus the sum of the singular values of the bidiagonal matrix with h on the diagonal and J
    above it)."""
    width, coupling, field = 14, 1.0, 0.7
    terms = []
    for qubit in range(width - 1):
        label = ["I"] * width
        label[qubit] = label[qubit + 1] = "Z"
        terms.append({"pauli": "".join(label), "coefficient": -coupling})
    for qubit in range(width):
        label = ["I"] * width
        label[qubit] = "X"
        terms.append({"pauli": "".join(label), "coefficient": -field})
    family = VqeFamily.model_validate({"hamiltonian": {"terms": terms}})
    bidiagonal = np.diag([field] * width) + np.diag([coupling] * (width - 1), 1)
    exact = -np.linalg.svd(bidiagonal, compute_uv=False).sum()
    assert ground_energy(family.hamiltonian) == pytest.approx(exact, abs=1e-8)


def test_hardware_efficient_ansatz_at_zero_is_the_reference_state() -> None:
    family = h2_family(reps=2)
    built = family_circuit(family)
    assert built.parameter_names == [f"theta_{k}" for k in range(6)]
    state = Statevector(built.bind([0.0] * 6))
    assert state.probabilities_dict() == pytest.approx({"01": 1.0})
    assert ideal_value(built.bind([0.0] * 6), built.observable) == pytest.approx(H2_HARTREE_FOCK)


def test_hardware_efficient_ansatz_layout() -> None:
    """RY layer, CNOT ladder, final RY layer: the unitary of the definition, gate by gate."""
    built = family_circuit(h2_family(reps=1, initial_bits=""))
    angles = [0.3, -0.7, 1.1, 0.4]
    expected = np.eye(4, dtype=complex)

    def ry(theta: float) -> np.ndarray:
        c, s = np.cos(theta / 2), np.sin(theta / 2)
        return np.array([[c, -s], [s, c]])

    # Qiskit order: the kron's right factor is qubit 0; CX(0 -> 1).
    cx01 = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]])
    expected = np.kron(ry(angles[1]), ry(angles[0])) @ expected
    expected = cx01 @ expected
    expected = np.kron(ry(angles[3]), ry(angles[2])) @ expected
    assert Operator(built.bind(angles)).equiv(Operator(expected))


def test_h2_ansatz_reaches_the_ground_energy_within_chemical_accuracy() -> None:
    """The shipped ansatz (reps 1 from Hartree-Fock) can represent the H2 ground state, so an
    ideal VQE can reach chemical accuracy."""
    built = family_circuit(h2_family())

    def energy(point: np.ndarray) -> float:
        return ideal_value(built.bind(point.tolist()), built.observable)

    best = minimize(energy, np.zeros(4), method="COBYLA", options={"maxiter": 400, "rhobeg": 0.3})
    assert best.fun == pytest.approx(H2_GROUND_ENERGY, abs=CHEMICAL_ACCURACY / 10)


def test_a_point_of_the_wrong_length_is_refused_with_the_names() -> None:
    built = family_circuit(QaoaFamily(graph=GRAPH))
    with pytest.raises(ValueError, match=r"2 values \(gamma_0, beta_0\), got 3"):
        built.bind([0.1, 0.2, 0.3])
