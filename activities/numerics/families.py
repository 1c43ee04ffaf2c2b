"""Circuit families of variational loops and sweeps: the parameterized circuit of a family, its
observable, and a point bound into it.

- QAOA MaxCut (weighted): |+>^n, then per layer k the cost layer exp(-i gamma_k w Z_u Z_v) on
  every edge (RZZ(2 gamma_k w), the convention of the `qaoa_maxcut` experiment template and of
  `classical.qaoa_expectation`, so the same angles mean the same state everywhere) and the mixer
  RX(2 beta_k) on every qubit. Point = [gamma_1..gamma_p, beta_1..beta_p]; the observable is the
  cut weight, sum over edges of w/2 (I - Z_u Z_v).
- VQE, hardware-efficient ansatz: X on the qubits set in `initial_bits` (qubit 0 rightmost),
  then `reps` times (RY on every qubit, CNOT ladder 0→1→…→n-1), then a final RY layer. Point =
  the RY angles layer by layer, qubit 0 first; the observable is the Hamiltonian.

Parameters are named `gamma_k`, `beta_k` and `theta_k`: valid OpenQASM 3 identifiers, so a
template keeps them as its `input float[64]` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from activities.numerics.circuits import maxcut_observable
from schemas.request import PauliSumObservable
from schemas.variational import CircuitFamily, QaoaFamily, VqeFamily


@dataclass(frozen=True)
class FamilyCircuit:
    """A family's logical circuit (unitary, unmeasured) with its parameters in point order."""

    circuit: QuantumCircuit
    parameters: list[Parameter]
    observable: PauliSumObservable

    @property
    def parameter_names(self) -> list[str]:
        return [parameter.name for parameter in self.parameters]

    def bind(self, point: Sequence[float]) -> QuantumCircuit:
        """The circuit at `point` (one value per parameter, in point order)."""
        if len(point) != len(self.parameters):
            raise ValueError(
                f"a point of this family has {len(self.parameters)} values "
                f"({', '.join(self.parameter_names)}), got {len(point)}"
            )
        return self.circuit.assign_parameters(dict(zip(self.parameters, point, strict=True)))


def family_circuit(family: CircuitFamily) -> FamilyCircuit:
    if isinstance(family, QaoaFamily):
        return _qaoa(family)
    return _hardware_efficient(family)


def family_observable(family: CircuitFamily) -> PauliSumObservable:
    if isinstance(family, QaoaFamily):
        return maxcut_observable(family.graph)
    return family.hamiltonian


def describe_family(family: CircuitFamily) -> str:
    if isinstance(family, QaoaFamily):
        edges = len(family.graph.edges)
        return f"QAOA MaxCut, {family.graph.nodes} nodes, {edges} edges, p={family.layers}"
    terms = len(family.hamiltonian.terms)
    return (
        f"VQE, {family.num_qubits} qubits, {terms} Pauli terms, hardware-efficient "
        f"ansatz reps={family.ansatz.reps}"
    )


def _qaoa(family: QaoaFamily) -> FamilyCircuit:
    graph = family.graph
    gammas = [Parameter(f"gamma_{k}") for k in range(family.layers)]
    betas = [Parameter(f"beta_{k}") for k in range(family.layers)]
    circuit = QuantumCircuit(graph.nodes, name="qaoa_maxcut")
    circuit.h(range(graph.nodes))
    for gamma, beta in zip(gammas, betas, strict=True):
        for edge in graph.edges:
            circuit.rzz(2 * edge.weight * gamma, edge.u, edge.v)
        circuit.rx(2 * beta, range(graph.nodes))
    return FamilyCircuit(circuit, [*gammas, *betas], maxcut_observable(graph))


def _hardware_efficient(family: VqeFamily) -> FamilyCircuit:
    width = family.num_qubits
    thetas = [Parameter(f"theta_{k}") for k in range(family.num_parameters)]
    circuit = QuantumCircuit(width, name="hardware_efficient")
    for qubit, bit in enumerate(reversed(family.ansatz.initial_bits)):
        if bit == "1":
            circuit.x(qubit)
    layers = [thetas[k * width : (k + 1) * width] for k in range(family.ansatz.reps + 1)]
    for layer in layers[:-1]:
        _ry_layer(circuit, layer)
        for qubit in range(width - 1):
            circuit.cx(qubit, qubit + 1)
    _ry_layer(circuit, layers[-1])
    return FamilyCircuit(circuit, thetas, family.hamiltonian)


def _ry_layer(circuit: QuantumCircuit, angles: Sequence[Parameter]) -> None:
    for qubit, angle in enumerate(angles):
        circuit.ry(angle, qubit)
