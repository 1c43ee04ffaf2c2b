"""The classical reference of a circuit family: its baseline (brute-force maximum cut, or exact
diagonalisation) and the exact statevector value at given points."""

from __future__ import annotations

import numpy as np
from qiskit.quantum_info import SparsePauliOp
from scipy.sparse.linalg import eigsh

from activities.experiment.admission import (
    MAX_IDEAL_QUBITS,
    AdmissionError,
    invalid_request,
)
from activities.experiment.prevalidate import ideal_value
from activities.numerics import classical
from activities.numerics.families import (
    family_circuit,
)
from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.variational.batch_preparation import check_points
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.request import PauliSumObservable
from schemas.variational import (
    QaoaFamily,
    Reference,
    ReferenceInput,
)

# Dense exact diagonalisation up to this width; a sparse Lanczos solver beyond it.
MAX_DENSE_QUBITS = 12


def classical_reference(input: ReferenceInput) -> Reference:
    family = input.family
    if family.num_qubits > MAX_IDEAL_QUBITS:
        raise AdmissionError(
            f"family: {family.num_qubits} qubits; the exact reference allows at most "
            f"{MAX_IDEAL_QUBITS}"
        )
    built = family_circuit(family)
    if isinstance(family, QaoaFamily):
        optimum = classical.max_cut(family.graph)
        method, baseline = "brute_force_maxcut", optimum.value
    else:
        method, baseline = "exact_diagonalisation", ground_energy(family.hamiltonian)
    if input.points:
        check_points(built, input.points)
    exact = [ideal_value(built.bind(point), built.observable) for point in input.points]
    return Reference(baseline_method=method, baseline_value=baseline, exact_values=exact)


@implements(activity_contracts.classical_reference)
async def classical_reference_activity(input: ReferenceInput) -> Reference:
    try:
        return await in_child_with_heartbeats(classical_reference, input)
    except AdmissionError as error:
        raise invalid_request(error) from error


def ground_energy(hamiltonian: PauliSumObservable) -> float:
    """The lowest eigenvalue of the Pauli sum (Hermitian: real coefficients)."""
    operator = SparsePauliOp(
        [term.pauli for term in hamiltonian.terms],
        [term.coefficient for term in hamiltonian.terms],
    )
    if hamiltonian.num_qubits <= MAX_DENSE_QUBITS:
        return float(np.linalg.eigvalsh(operator.to_matrix())[0])
    lowest = eigsh(operator.to_matrix(sparse=True), k=1, which="SA", return_eigenvectors=False)
    return float(lowest[0])
