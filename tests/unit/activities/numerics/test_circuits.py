"""Circuits: OpenQASM 2/3 parsing with located errors, what qloop refuses, and the templates'
known ideal values (computed with real Qiskit statevectors)."""

from __future__ import annotations

import numpy as np
import pytest
import qiskit.qasm2 as qasm2
from qiskit.quantum_info import SparsePauliOp, Statevector

from activities.experiment.prevalidate import ideal_value
from activities.numerics import circuits, classical
from activities.numerics.circuits import CircuitError
from schemas.request import Graph

BELL_QASM2 = """// a comment before the header
OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
barrier q;
measure q -> c;
"""

HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\n'

BELL_QASM3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""


def ring(nodes: int) -> Graph:
    return Graph(nodes=nodes, edges=[{"u": i, "v": (i + 1) % nodes} for i in range(nodes)])


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [BELL_QASM2, BELL_QASM3], ids=["qasm2", "qasm3"])
def test_parse_bell_in_both_versions(text: str) -> None:
    logical = circuits.to_logical(circuits.parse_qasm(text))
    assert logical.num_qubits == 2
    assert logical.num_clbits == 0
    assert [inst.operation.name for inst in logical.data] == ["h", "cx"]
    probabilities = Statevector(logical).probabilities_dict()
    assert probabilities == pytest.approx({"00": 0.5, "11": 0.5})


def test_version_comes_from_the_header_after_comments() -> None:
    assert circuits.qasm_version(BELL_QASM2) == 2
    assert circuits.qasm_version("/* block\ncomment */ OPENQASM 3;\nqubit q;") == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\nfoo q[0];\n',
            "line 4: 'foo' is not defined",
        ),
        ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncx q[0] q[1];\n', "line 4: "),
        (
            'OPENQASM 2.0;\ninclude "secrets.inc";\nqreg q[1];\n',
            "line 2: unable to find 'secrets.inc'",
        ),
        ("OPENQASM 3.0;\nqubit[1] q;\nh q[0];\n", "line 3: gate 'h' is not defined"),
        (
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0]\ncx q[0], q[1];\n',
            "line 5: syntax error",
        ),
        (
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\n$ q;\n',
            "line 4: token recognition error",
        ),
        ("qreg q[1];\n", "line 1: missing header"),
        ("OPENQASM 4.0;\n", "OpenQASM 4 is not supported"),
    ],
    ids=[
        "q2-unknown-gate",
        "q2-syntax",
        "q2-include",
        "q3-no-stdgates",
        "q3-syntax",
        "q3-lexer",
        "no-header",
        "v4",
    ],
)
def test_parse_errors_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(CircuitError) as error:
        circuits.parse_qasm(text)
    assert expected in str(error.value)


# --- what qloop refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "measure q[0] -> c[0];\nx q[0];\n",
            "mid-circuit measurement on qubit q[0] at instruction 2",
        ),
        (
            "measure q[0] -> c[0];\nif(c==1) x q[1];\n",
            "classically controlled 'if_else' on qubit q[1]",
        ),
        ("h q[0];\nreset q[1];\n", "reset on qubit q[1] at instruction 2"),
        ("barrier q;\nmeasure q -> c;\n", "the circuit has no gates"),
    ],
    ids=["mid-circuit", "conditional", "reset", "empty"],
)
def test_refused_circuits(body: str, expected: str) -> None:
    text = HEADER + "creg c[2];\n" + body
    with pytest.raises(CircuitError) as error:
        circuits.to_logical(circuits.parse_qasm(text))
    assert expected in str(error.value)


def test_terminal_measurement_then_barrier_is_accepted() -> None:
    text = HEADER + "creg c[2];\nh q[0];\nmeasure q[0] -> c[0];\nbarrier q;\nx q[1];\n"
    logical = circuits.to_logical(circuits.parse_qasm(text))
    assert [inst.operation.name for inst in logical.data] == ["h", "x"]


def test_unbound_parameters_are_refused() -> None:
    text = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float theta;\nqubit[1] q;\nrx(theta) q[0];\n'
    )
    with pytest.raises(CircuitError, match="unbound parameters \\(theta\\)"):
        circuits.to_logical(circuits.parse_qasm(text))


def test_registers_are_flattened_in_declaration_order() -> None:
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg a[1];\nqreg b[2];\nx b[1];\n'
    logical = circuits.to_logical(circuits.parse_qasm(text))
    assert Statevector(logical).probabilities_dict() == pytest.approx({"100": 1.0})


def test_logical_qasm_round_trips() -> None:
    text = HEADER.replace("q[2]", "q[3]") + "cu1(0.3) q[0],q[1];\nrzz(0.2) q[1],q[2];\nh q;\n"
    logical = circuits.to_logical(circuits.parse_qasm(text))
    reread = circuits.load_qasm2(qasm2.dumps(logical))
    assert Statevector(reread).equiv(Statevector(logical))


# --- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_qubits", [2, 5])
def test_ghz_ideal_value_is_one(num_qubits: int) -> None:
    built = circuits.ghz(num_qubits)
    assert built.observable.bitstrings == ["0" * num_qubits, "1" * num_qubits]
    assert ideal_value(built.circuit, built.observable) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("num_qubits", "depth", "seed"), [(1, 3, 0), (2, 4, 1), (5, 4, 7), (6, 10, 42)]
)
def test_mirror_returns_its_known_nontrivial_bitstring(
    num_qubits: int, depth: int, seed: int
) -> None:
    built = circuits.mirror(num_qubits, depth, seed)
    (target,) = built.observable.bitstrings
    assert len(target) == num_qubits
    assert "1" in target
    assert built.circuit.num_nonlocal_gates() > 0 or num_qubits == 1
    assert ideal_value(built.circuit, built.observable) == pytest.approx(1.0)


def test_mirror_is_deterministic_in_its_seed() -> None:
    first, again, other = (
        circuits.mirror(4, 5, 3),
        circuits.mirror(4, 5, 3),
        circuits.mirror(4, 5, 4),
    )
    assert first.circuit == again.circuit
    assert first.observable == again.observable
    assert first.circuit != other.circuit


def test_maxcut_observable_is_the_cut_value_of_every_partition() -> None:
    graph = Graph(
        nodes=4,
        edges=[{"u": 0, "v": 1, "weight": 2.0}, {"u": 1, "v": 3, "weight": -0.5}, {"u": 2, "v": 3}],
    )
    observable = circuits.maxcut_observable(graph)
    assert set(observable.terms[0].pauli) == {"I"}
    operator = SparsePauliOp(
        [t.pauli for t in observable.terms], [t.coefficient for t in observable.terms]
    )
    diagonal = np.real(np.diag(operator.to_matrix()))
    np.testing.assert_allclose(diagonal, classical.cut_values(graph))


def test_qaoa_circuit_expectation_matches_the_classical_simulation() -> None:
    graph = Graph(
        nodes=5,
        edges=[
            {"u": 0, "v": 1, "weight": 1.5},
            {"u": 1, "v": 2},
            {"u": 2, "v": 3},
            {"u": 3, "v": 4, "weight": 0.7},
            {"u": 0, "v": 4},
        ],
    )
    gammas, betas = [0.4, 0.9], [0.6, 0.2]
    built = circuits.qaoa_maxcut(graph, gammas, betas)
    assert ideal_value(built.circuit, built.observable) == pytest.approx(
        classical.qaoa_expectation(graph, gammas, betas), abs=1e-9
    )


def test_describe_observable_is_short() -> None:
    assert circuits.describe_observable(circuits.ghz(3).observable) == "P(000 | 111)"
    label = circuits.describe_observable(circuits.maxcut_observable(ring(12)))
    assert label.startswith("6*IIIIIIIIIIII - 0.5*")
    assert label.endswith("(5 more terms)")
