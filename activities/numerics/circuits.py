"""Logical circuits: OpenQASM 2/3 parsing and the problem templates (QAOA MaxCut, GHZ, mirror).

A logical circuit is unitary and carries no classical bits: qloop measures every qubit at the
end itself, in the bases its observable needs. Anything that would make that wrong (a
measurement in the middle, a reset, classical control) is refused with a named reason.
Bit and qubit order follow Qiskit: in a label or bitstring the rightmost character is qubit 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import qiskit.qasm2 as qasm2
import qiskit.qasm3 as qasm3
from openqasm3.parser import QASM3ParsingError
from qiskit import QuantumCircuit
from qiskit.circuit import ControlFlowOp, Qubit
from qiskit.exceptions import QiskitError
from qiskit.quantum_info import Clifford, random_clifford

from schemas.request import (
    BitstringProbabilityObservable,
    Graph,
    Observable,
    PauliSumObservable,
    PauliTerm,
)

# Every operation qloop reads back from its own QASM (logical and transpiled circuits) must be
# understood the same way it was written: the legacy gate set of qelib1.inc plus Qiskit's extras.
_CUSTOM = qasm2.LEGACY_CUSTOM_INSTRUCTIONS
_LOCATED = re.compile(r"^(?:<input>:)?L?(\d+)[,:]C?(\d+):\s*(.*)$", re.DOTALL)
_HEADER = re.compile(r"^\s*OPENQASM\s+(\d+)(?:\.\d+)?\s*;")
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_DROPPED = {"barrier", "measure"}


class CircuitError(ValueError):
    """A circuit qloop cannot run; the message names the line or instruction and the problem."""


@dataclass(frozen=True)
class Built:
    """A logical circuit and the observable to estimate on its output state."""

    circuit: QuantumCircuit
    observable: Observable


# --- OpenQASM ------------------------------------------------------------------------------


def qasm_version(text: str) -> int:
    """The major OpenQASM version from the header (comments before it are allowed)."""
    match = _HEADER.match(_COMMENTS.sub(lambda m: "\n" * m.group().count("\n"), text))
    if match is None:
        raise CircuitError(
            "line 1: missing header: the program must start with 'OPENQASM 2.0;' or 'OPENQASM 3.0;'"
        )
    version = int(match.group(1))
    if version not in (2, 3):
        raise CircuitError(f"line 1: OpenQASM {version} is not supported; use OpenQASM 2.0 or 3.0")
    return version


def parse_qasm(text: str) -> QuantumCircuit:
    """Parse OpenQASM 2 or 3 (chosen by the header); errors name the line and the problem."""
    if qasm_version(text) == 2:
        return _parse_qasm2(text)
    return _parse_qasm3(text)


def load_qasm2(text: str) -> QuantumCircuit:
    """Read back OpenQASM 2 that qloop wrote (logical or transpiled circuits)."""
    return qasm2.loads(text, include_path=(), custom_instructions=_CUSTOM)


def _parse_qasm2(text: str) -> QuantumCircuit:
    # An empty include path: qelib1.inc is built into the parser, and a request must never make
    # the worker read files from its own disk.
    try:
        return qasm2.loads(text, include_path=(), custom_instructions=_CUSTOM)
    except qasm2.QASM2ParseError as error:
        raise CircuitError(_located(error.message)) from None
    except Exception as error:
        raise _unreadable(error) from None


def _parse_qasm3(text: str) -> QuantumCircuit:
    try:
        return qasm3.loads(text)
    except QASM3ParsingError as error:
        raise CircuitError(_qasm3_syntax_error(error)) from None
    except QiskitError as error:
        raise CircuitError(_located(str(error.message))) from None
    except Exception as error:
        raise _unreadable(error) from None


def _unreadable(error: Exception) -> CircuitError:
    # The importers fail on some malformed input with plain Python errors; untrusted text that
    # cannot be read is a refused request, never a crashed activity.
    return CircuitError(f"the program cannot be read: {type(error).__name__}: {error}")


def _located(message: str) -> str:
    match = _LOCATED.match(message.strip())
    if match is None:
        return message
    line, _column, problem = match.groups()
    return f"line {line}: {problem.rstrip('.')}"


def _qasm3_syntax_error(error: QASM3ParsingError) -> str:
    if error.args and error.args[0]:
        return _located(str(error.args[0]))
    # The parser bails out on the first syntax error and keeps the token only in the cause.
    cancellation = error.__cause__
    recognition = cancellation.args[0] if cancellation is not None and cancellation.args else None
    token = getattr(recognition, "offendingToken", None)
    if token is None:
        return "syntax error (the OpenQASM 3 parser gave no position)"
    return f"line {token.line}: syntax error at {token.text!r}"


# --- what qloop can run ----------------------------------------------------------------------


def to_logical(circuit: QuantumCircuit) -> QuantumCircuit:
    """The unitary part of `circuit`: terminal measurements and barriers removed, no clbits.

    Refuses mid-circuit measurement, classical control and resets in every case, not only with
    ZNE: qloop replaces the circuit's measurements by its own measurement of every qubit, so
    anything that depends on a measurement result would silently compute something else.
    """
    if circuit.parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters))
        raise CircuitError(f"the circuit has unbound parameters ({names}); give numeric values")
    _check_measurements_terminal(circuit)
    logical = QuantumCircuit(circuit.num_qubits, global_phase=circuit.global_phase)
    for instruction in circuit.data:
        if instruction.operation.name not in _DROPPED:
            qubits = [circuit.find_bit(q).index for q in instruction.qubits]
            logical.append(instruction.operation, qubits)
    if not any(inst.operation.name != "id" for inst in logical.data):
        raise CircuitError("the circuit has no gates: there is nothing to run")
    return logical


def _check_measurements_terminal(circuit: QuantumCircuit) -> None:
    measured: set[Qubit] = set()
    for number, instruction in enumerate(circuit.data, start=1):
        operation = instruction.operation
        where = f"{_names(circuit, instruction.qubits)} at instruction {number}"
        if isinstance(operation, ControlFlowOp):
            raise CircuitError(
                f"classically controlled '{operation.name}' on {where}: "
                "qloop measures every qubit at the end itself, so an "
                "operation that depends on a measurement result cannot run"
            )
        if operation.name == "reset":
            raise CircuitError(
                f"reset on {where}: qloop runs unitary circuits measured at the end "
                "(ZNE folding cannot invert a reset)"
            )
        if operation.name == "measure":
            measured.update(instruction.qubits)
            continue
        reused = [q for q in instruction.qubits if q in measured]
        if reused and operation.name != "barrier":
            raise CircuitError(
                f"mid-circuit measurement on {_names(circuit, reused[:1])} "
                f"at instruction {number}: "
                "ZNE folding needs every measurement at the end, and qloop measures every qubit "
                "at the end itself"
            )


def _names(circuit: QuantumCircuit, qubits: list[Qubit] | tuple[Qubit, ...]) -> str:
    names = []
    for qubit in qubits:
        location = circuit.find_bit(qubit)
        if location.registers:
            register, index = location.registers[0]
            names.append(f"{register.name}[{index}]")
        else:
            names.append(f"qubit {location.index}")
    return "qubit " + ", ".join(names) if len(names) == 1 else "qubits " + ", ".join(names)


def describe_observable(observable: Observable, max_terms: int = 8) -> str:
    """A short human-readable label (qubit 0 is the rightmost character)."""
    if isinstance(observable, BitstringProbabilityObservable):
        return "P(" + " | ".join(observable.bitstrings) + ")"
    shown = observable.terms[:max_terms]
    text = f"{shown[0].coefficient:g}*{shown[0].pauli}"
    for term in shown[1:]:
        sign = "-" if term.coefficient < 0 else "+"
        text += f" {sign} {abs(term.coefficient):g}*{term.pauli}"
    hidden = len(observable.terms) - len(shown)
    return text + (f" + ... ({hidden} more terms)" if hidden else "")


# --- templates -------------------------------------------------------------------------------


def ghz(num_qubits: int) -> Built:
    """H on qubit 0 and a CX chain; ideal P(0...0) + P(1...1) = 1."""
    circuit = QuantumCircuit(num_qubits)
    circuit.h(0)
    for qubit in range(num_qubits - 1):
        circuit.cx(qubit, qubit + 1)
    observable = BitstringProbabilityObservable(bitstrings=["0" * num_qubits, "1" * num_qubits])
    return Built(circuit, observable)


def mirror(num_qubits: int, depth: int, seed: int) -> Built:
    """`depth` layers of random Cliffords on random qubit pairs, each layer's inverse in reverse
    order, then an X frame, so the ideal output is one known, non-zero bitstring.

    Each inverse is synthesised from the Clifford's adjoint rather than by reversing its gates:
    the transpiler then cannot cancel the mirror away gate by gate.
    """
    rng = np.random.default_rng(seed)
    layers = [_clifford_layer(num_qubits, rng) for _ in range(depth)]
    circuit = QuantumCircuit(num_qubits)
    for layer in layers:
        for clifford, qubits in layer:
            circuit.compose(clifford.to_circuit(), qubits, inplace=True)
    for layer in reversed(layers):
        for clifford, qubits in layer:
            circuit.compose(clifford.adjoint().to_circuit(), qubits, inplace=True)
    flips = rng.integers(0, 2, size=num_qubits)
    if not flips.any():
        flips[int(rng.integers(num_qubits))] = 1
    for qubit in np.flatnonzero(flips):
        circuit.x(int(qubit))
    target = "".join(str(int(bit)) for bit in reversed(flips))
    return Built(circuit, BitstringProbabilityObservable(bitstrings=[target]))


def _clifford_layer(num_qubits: int, rng: np.random.Generator) -> list[tuple[Clifford, list[int]]]:
    order = [int(q) for q in rng.permutation(num_qubits)]
    layer = [
        (random_clifford(2, seed=int(rng.integers(2**31))), order[k : k + 2])
        for k in range(0, num_qubits - 1, 2)
    ]
    if num_qubits % 2:
        layer.append((random_clifford(1, seed=int(rng.integers(2**31))), order[-1:]))
    return layer


def qaoa_maxcut(graph: Graph, gammas: list[float], betas: list[float]) -> Built:
    """QAOA: |+>^n, then per layer exp(-i gamma w Z_u Z_v) on each edge and exp(-i beta X) on
    each qubit; the observable is the cut value."""
    circuit = QuantumCircuit(graph.nodes)
    circuit.h(range(graph.nodes))
    for gamma, beta in zip(gammas, betas, strict=True):
        for edge in graph.edges:
            circuit.rzz(2 * gamma * edge.weight, edge.u, edge.v)
        circuit.rx(2 * beta, range(graph.nodes))
    return Built(circuit, maxcut_observable(graph))


def maxcut_observable(graph: Graph) -> PauliSumObservable:
    """Cut value = sum over edges of w (1 - Z_u Z_v) / 2, as one all-I term and one ZZ per edge."""
    n = graph.nodes
    total = sum(edge.weight for edge in graph.edges)
    terms = [PauliTerm(pauli="I" * n, coefficient=total / 2)]
    for edge in graph.edges:
        label = ["I"] * n
        label[n - 1 - edge.u] = "Z"
        label[n - 1 - edge.v] = "Z"
        terms.append(PauliTerm(pauli="".join(label), coefficient=-edge.weight / 2))
    return PauliSumObservable(terms=terms)
