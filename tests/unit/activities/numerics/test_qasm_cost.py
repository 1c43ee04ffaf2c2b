"""The static counter of OpenQASM programs (activities/numerics/qasm_cost.py): exact on what
Qiskit reads, an upper bound on loops and modifiers, refusals that name the line, the limit and
the value."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ControlFlowOp

from activities.numerics import circuits
from activities.numerics.qasm_cost import QELIB1, STDGATES, QasmCostError, qasm_cost
from schemas.limits import MAX_NESTING_DEPTH

CORPUS = Path(__file__).parents[4].parent / "shared" / "corpus" / "qasmbench"
EXAMPLES = Path(__file__).parents[4] / "examples"
Q2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
Q3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
NOT_GATES = {"measure", "barrier", "reset"}
# Gates of the libraries, as Qiskit names them once read (c3sqrtx becomes c3sx).
LIBRARY = set(QELIB1) | set(STDGATES) | {"U", "CX", "u", "gphase", "c3sx"}


def unrolled_gates(circuit: QuantumCircuit) -> int:
    """Gates of a parsed circuit once every user-defined gate is replaced by its definition."""
    total = 0
    for instruction in circuit.data:
        operation = instruction.operation
        if operation.name in NOT_GATES:
            continue
        if isinstance(operation, ControlFlowOp):
            total += sum(unrolled_gates(block) for block in operation.blocks)
        elif operation.name in LIBRARY or operation.definition is None:
            total += 1
        else:
            total += unrolled_gates(operation.definition)
    return total


def readable(path: Path) -> bool:
    try:
        circuits.parse_qasm(path.read_text())
    except circuits.CircuitError:
        return False
    return True


CORPUS_FILES = sorted(CORPUS.glob("*.qasm")) + sorted(EXAMPLES.glob("circuits/*.qasm"))


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_the_count_is_exact_on_every_corpus_circuit_qiskit_reads(path: Path) -> None:
    text = path.read_text()
    cost = qasm_cost(text)
    if not readable(path):
        return  # refused later by Qiskit's reader, with its own line number
    parsed = circuits.parse_qasm(text)
    assert cost.gates == unrolled_gates(parsed)
    assert cost.qubits == parsed.num_qubits
    assert cost.bits == parsed.num_clbits


@pytest.mark.parametrize(
    ("program", "gates"),
    [
        (Q3 + "qubit[10] q;\nh q;\n", 10),
        (Q3 + "qubit[10] q;\ncx q[0:4], q[5:9];\n", 5),
        (Q3 + "qubit[10] q;\nx q[{1, 3, 5}];\n", 3),
        (Q3 + "qubit[10] q;\nx q[0:2:9];\n", 5),
        (Q3 + "qubit[4] a;\nqubit[4] b;\nlet c = a[0:1] ++ b;\nh c;\n", 6),
        (Q3 + "qubit q;\ngate pair a { x a; y a; }\ngate quad a { pair a; pair a; }\nquad q;\n", 4),
        (
            Q2
            + "qreg q[3];\ngate g(t) a, b { rz(t) a; cx a, b; }\ng(0.1) q[0], q[1];\nu(1,2,3) q;\n",
            5,
        ),
        (Q3 + "qubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n", 2),
        (Q3 + "qubit q; // a comment\n/* x q;\n x q; */\n@annotation x q;\nx q;\n", 1),
        (Q3 + "qubit[2] q;\nU(0.1, 0.2, 0.3) q[0];\n", 1),
    ],
)
def test_definitions_and_broadcasts_count_like_qiskit(program: str, gates: int) -> None:
    assert qasm_cost(program).gates == gates == unrolled_gates(circuits.parse_qasm(program))


@pytest.mark.parametrize(
    ("program", "gates"),
    [
        (Q3 + "qubit q;\nfor int i in [0:99] { x q; y q; }\n", 200),
        (Q3 + "qubit q;\nfor int i in [10:-2:0] x q;\n", 6),
        (Q3 + "qubit q;\nfor i in {1, 5, 9} { x q; }\n", 3),
        # A triangular loop is bounded by its widest trip: 10 x 9, not 45.
        (
            Q3 + "const int n = 10;\nqubit[n] q;\n"
            "for int i in [0:n - 1] { for int j in [i + 1:n - 1] { cz q[i], q[j]; } }\n",
            90,
        ),
        (Q3 + "qubit q;\nfor int i in [0x10:0b1_0011] { x q; }\n", 4),
        (
            Q3 + "qubit q;\ndef f(qubit a) { for int i in [1:10] { h a; } }\n"
            "for int j in [1:3] { f(q); }\n",
            30,
        ),
        (Q3 + "qubit q;\nbit c;\nif (c) { x q; } else { x q; y q; }\n", 3),
        (Q3 + "qubit q;\nint k;\nswitch (k) { case 0, 1 { x q; } default { y q; z q; } }\n", 3),
        (Q3 + "qubit q;\nbox [100ns] { x q; x q; }\ndelay[20ns] q;\n", 3),
        (Q3 + "qubit[2] q;\npow(3) @ x q[0];\npow(0.5) @ h q[1];\ninv @ x q[0];\n", 5),
        (Q3 + "qubit[3] q;\nctrl(2) @ x q[0], q[1], q[2];\nnegctrl @ h q[0], q[1];\n", 5),
        (Q2 + "qreg q[2];\ncreg c[2];\nif (c == 1) x q[0];\nopaque m a, b;\nm q[0], q[1];\n", 2),
        (Q3 + "qubit[2] q;\ngphase(0.5);\nctrl @ gphase(0.5) q[0];\n", 3),
    ],
)
def test_loops_subroutines_branches_and_modifiers_are_multiplied_not_expanded(
    program: str, gates: int
) -> None:
    assert qasm_cost(program).gates == gates


def test_forty_doubling_definitions_count_two_to_the_forty_without_expanding() -> None:
    definitions = "gate g0 a { x a; }\n" + "".join(
        f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}\n" for i in range(1, 41)
    )
    program = definitions + "qreg q[1];\ng40 q[0];\n"
    with pytest.raises(QasmCostError, match=r"1,099,511,627,776 gates .* the limit is 100,000"):
        qasm_cost(Q2 + program)


def test_qubits_are_counted_without_allocating_them() -> None:
    assert qasm_cost(Q2 + "qreg q[100000000];\nx q[0];\n").qubits == 100_000_000
    assert qasm_cost(Q3 + "x $99999999;\n").qubits == 100_000_000
    assert qasm_cost(Q3 + "const int n = 3 * 4;\nqubit[n] a;\nqubit b;\nx b;\n").qubits == 13


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (Q2 + "qreg q[1];\nfoo q[0];\n", r"^line 4: gate 'foo' is not defined"),
        (Q3 + "gate g a { x a; g a; }\nqubit q;\ng q;\n", r"^line 3: 'g' uses itself"),
        (Q3 + "def f(qubit a) { f(a); }\nqubit q;\nf(q);\n", r"^line 3: 'f' uses itself"),
        (Q3 + "qubit q;\nbit c;\nwhile (c) { x q; }\n", r"^line 5: a while loop has no bound"),
        (Q3 + "qubit q;\nint n;\nfor int i in [0:n] { x q; }\n", r"^line 5: .* not a constant"),
        (Q3 + "qubit q;\nfor int i in [0:0:9] { x q; }\n", r"step 0 never ends"),
        (Q3 + "array[int, 3] a;\nqubit q;\nfor int i in a { x q; }\n", r"runs over 'a'"),
        (Q3 + "qubit q;\nfor int i in [0:2**70] { x q; }\n", r"2\*\*70 is larger than 2\^64"),
        (Q3 + "qubit q;\nfor int i in [0:1 << 80] { x q; }\n", r"1 << 80 is larger than 2\^64"),
        (Q3 + "qubit q;\nint n = 2;\npow(n) @ x q;\n", r"exponent of pow is not a constant"),
        (Q3 + "qubit[9] q;\npow(2) @ ctrl(8) @ x q;\n", r"gate of 9 qubits; the limit is 8"),
        (Q2 + "qreg q[1];\ncreg c[2000];\n", r"2,000 classical bits declared; the limit is 1,024"),
        (Q2 + 'include "other.inc";\n', r'include "other.inc": qloop reads no files'),
        (Q3 + "defcal x $0 { }\n", r"'defcal' \(pulse-level calibration\) is not supported"),
        (Q3 + "qubit q;\nx q; `\n", r"^line 4: unexpected character '`'"),
        (Q3 + "qubit q;\n{ x q;\n", r"a block is not closed"),
        (Q3 + "qubit q;\nrz(0.1", r"the program ends in the middle of a statement"),
        (Q3 + "qubit[n] q;\n", r"the size of a qubit register is not a constant integer"),
        ("OPENQASM 3.0;\nqubit q;\nh q;\n", r"gate 'h' is not defined"),
    ],
)
def test_what_cannot_be_bounded_is_refused_naming_the_line(program: str, message: str) -> None:
    with pytest.raises(QasmCostError, match=message):
        qasm_cost(program)


@pytest.mark.parametrize(
    ("program", "what"),
    [
        ("qubit q;\nrz(" + "(" * 65 + "1" + ")" * 65 + ") q;\n", "an expression nested 65 deep"),
        ("qubit q;\nrz(" + "-" * 70 + "1) q;\n", "an expression nested 65 deep"),
        ("qubit q;\nbit c;\n" + "if (c) " * 70 + "x q;\n", "statements nested 65 deep"),
        ("qubit q;\n" + "{" * 70 + "}" * 70 + "\n", "statements nested 65 deep"),
        (
            "gate c0 a { x a; }\n"
            + "".join(f"gate c{i} a {{ c{i - 1} a; }}\n" for i in range(1, 70))
            + "qubit q;\nc69 q;\n",
            "'c64' nests gate definitions 65 deep",
        ),
    ],
)
def test_nesting_deeper_than_the_limit_is_refused(program: str, what: str) -> None:
    with pytest.raises(QasmCostError, match=f"{what}; the limit is {MAX_NESTING_DEPTH}"):
        qasm_cost(Q3 + program)


def test_nesting_at_the_limit_is_counted() -> None:
    depth = MAX_NESTING_DEPTH - 1  # the statement's own expression is the first level
    program = Q3 + "qubit q;\nrz(" + "(" * depth + "1" + ")" * depth + ") q;\n"
    assert qasm_cost(program).gates == 1
    chain = "gate c0 a { x a; }\n" + "".join(
        f"gate c{i} a {{ c{i - 1} a; }}\n" for i in range(1, MAX_NESTING_DEPTH)
    )
    assert qasm_cost(Q3 + chain + f"qubit q;\nc{MAX_NESTING_DEPTH - 1} q;\n").gates == 1


def test_text_sizes_are_bounded_per_version() -> None:
    long3 = Q3 + "qubit q;\n" + "x q;\n" * 12_000
    with pytest.raises(QasmCostError, match=r"^60,\d+ bytes of OpenQASM 3; the limit is 50,000"):
        qasm_cost(long3)
    long2 = Q2 + "qreg q[1];\n" + "// padding\n" * 90_000
    assert qasm_cost(long2).gates == 0
    with pytest.raises(
        QasmCostError, match=r"^1,\d+,\d+ bytes of OpenQASM 2; the limit is 1,000,000"
    ):
        qasm_cost(long2 + "// padding\n" * 10_000)


SAMPLE_3 = Q3 + (
    "const int n = 4;\nqubit[n] q;\nbit[n] c;\ngate g(t) a, b { rz(t) a; cx a, b; }\n"
    "for int i in [0:n - 2] { g(pi / 2) q[i], q[i + 1]; }\nlet r = q[0:1] ++ q[{2, 3}];\n"
    "h r;\nctrl @ x q[0], q[1];\nbox { x q; }\nc = measure q;\n"
)
MUTATIONS = list("(){}[];,:@$=+-*/<>!~&|^.\"'#\n abcxqh0129")


def test_mangled_programs_are_judged_like_qiskit_judges_them() -> None:
    """Random edits of real programs: the counter raises nothing but CircuitError; it refuses
    nothing Qiskit reads unless a limit says so; and where both read a program, its count is
    never below Qiskit's."""
    rng = random.Random(7)
    sources = [SAMPLE_3] + [path.read_text()[:5000] for path in CORPUS_FILES[:12]]
    both = 0
    for _ in range(1000):
        text = list(rng.choice(sources))
        for _ in range(rng.randint(1, 2)):
            position = rng.randrange(len(text))
            text[position : position + rng.randint(0, 1)] = rng.choice(MUTATIONS) * rng.randint(
                1, 3
            )
        program = "".join(text)
        try:
            gates: int | None = qasm_cost(program).gates
        except circuits.CircuitError as error:
            gates, refusal = None, str(error)
        try:
            parsed = circuits.parse_qasm(program)
        except circuits.CircuitError:
            continue
        if gates is None:
            assert "the limit is" in refusal, (refusal, program)
            continue
        both += 1
        assert gates >= unrolled_gates(parsed), program
    assert both > 20
