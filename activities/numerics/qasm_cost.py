"""The static cost of an OpenQASM 2 or 3 program, read before any parser builds it: qubits and
bits declared, and the gates the circuit has once gate definitions, subroutines, loops, `pow`
modifiers and register broadcasts are unrolled - counted without unrolling anything.

Each definition's cost is computed once, where it is defined (a definition can only use what is
defined before it, so a recursive definition refers to something undefined), and each use
multiplies it: by the trip counts of the loops around it, the exponent of `pow(k) @`, the width
of the registers it is broadcast over. Forty doubling definitions cost forty additions here and
2^40 gates in a parser that expands them.

What the count depends on must be known statically: register sizes, loop ranges and sets, `pow`
and `ctrl` arguments. A loop variable is known as the interval it runs over, so a triangular
loop (`for j in [i + 1:n - 1]`) is bounded by its widest trip. What cannot be bounded (a `while`
loop, a loop over a run-time value) is refused with the reason. This is a tokeniser and a
recursive-descent reader of the program's structure, not a validator: whatever it lets through,
Qiskit's parser checks afterwards, with the program's size now bounded.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from qiskit.qasm2 import LEGACY_CUSTOM_INSTRUCTIONS

from activities.numerics.circuits import CircuitError, qasm_version
from schemas.limits import (
    MAX_CLASSICAL_BITS,
    MAX_NESTING_DEPTH,
    MAX_POWERED_GATE_QUBITS,
    MAX_QASM3_BYTES,
    MAX_QASM_BYTES,
    MAX_UNROLLED_GATES,
)

# Counts beyond this are only ever compared with limits far below it; capping keeps the integer
# arithmetic of a hostile program (2^(2^n) gates) cheap.
COUNT_CAP = 10**30
# Integer constants beyond 2^64 are no register size, trip count or exponent a circuit can use.
INTEGER_CAP = 2**64

# OpenQASM 3's stdgates.inc: name -> qubits.
STDGATES = {
    **dict.fromkeys(("p", "phase", "x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx"), 1),
    **dict.fromkeys(("rx", "ry", "rz", "id", "u1", "u2", "u3"), 1),
    **dict.fromkeys(("cx", "CX", "cy", "cz", "cp", "cphase", "crx", "cry", "crz", "ch"), 2),
    **dict.fromkeys(("swap", "cu"), 2),
    **dict.fromkeys(("ccx", "cswap"), 3),
}
QASM3_BUILTINS = {"U": 1, "gphase": 0}
# OpenQASM 2: U and CX are the language's own; Qiskit's parser knows some gates without an
# include (builtin) and the rest of qelib1.inc after `include "qelib1.inc";`.
QASM2_BUILTINS = {"U": 1, "CX": 2} | {
    gate.name: gate.num_qubits for gate in LEGACY_CUSTOM_INSTRUCTIONS if gate.builtin
}
QELIB1 = {gate.name: gate.num_qubits for gate in LEGACY_CUSTOM_INSTRUCTIONS}

MODIFIERS = ("inv", "pow", "ctrl", "negctrl")
CLASSICAL_TYPES = frozenset(
    ("int", "uint", "float", "angle", "bool", "complex", "duration", "stretch", "array")
)
CONSTANTS = {
    "pi": math.pi,
    "π": math.pi,
    "tau": math.tau,
    "τ": math.tau,
    "euler": math.e,
    "ℇ": math.e,
}
OPENING = frozenset(("(", "[", "{"))

_TOKEN = re.compile(
    r"""
    (?P<skip>[ \t\r\f\v]+|//[^\n]*)
    |(?P<newline>\n)
    |(?P<comment>/\*.*?\*/)
    |(?P<annotation>\#?pragma\b[^\n]*|@[^\W\d][\w.]*[^\n]*)
    |(?P<number>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?
         (?:(?:im|dt|ns|us|µs|ms|s)\b)?)
    |(?P<string>"[^"\n]*"|'[^'\n]*')
    |(?P<name>[^\W\d]\w*|\$\d+)
    |(?P<op>\*\*=?|<<=?|>>=?|->|==|!=|<=|>=|&&|\|\||\+\+|[-+*/%&|^]=|[-+*/%&|^~!<>=@:;,.(){}\[\]\#])
    """,
    re.VERBOSE | re.DOTALL,
)

Token = tuple[str, str, int]  # kind, text, line
# What a classical expression is known to be: an interval of values, or None when unknown.
Bounds = tuple[float, float] | None


class QasmCostError(CircuitError):
    """A program whose cost cannot be bounded, or whose bound exceeds a limit."""


@dataclass(frozen=True)
class QasmCost:
    version: int
    qubits: int
    bits: int
    gates: int


def qasm_cost(text: str) -> QasmCost:
    """The program's declared qubits and bits and its gate count after unrolling; raises
    QasmCostError naming the line, the limit and the value for what it refuses."""
    version = qasm_version(text)
    size = len(text.encode("utf-8"))
    limit = MAX_QASM3_BYTES if version == 3 else MAX_QASM_BYTES
    if size > limit:
        raise QasmCostError(
            f"{size:,} bytes of OpenQASM {version}; the limit is {limit:,} bytes"
            + (" (the OpenQASM 3 parser reads about 50 KB a second)" if version == 3 else "")
        )
    reader = _Reader(text, version)
    gates = reader.program()
    if gates > MAX_UNROLLED_GATES:
        raise QasmCostError(
            f"{_count(gates)} gates after unrolling gate definitions, loops and broadcasts; "
            f"the limit is {MAX_UNROLLED_GATES:,}"
        )
    return QasmCost(version=version, qubits=reader.qubits, bits=reader.bits, gates=gates)


def _count(value: int) -> str:
    return f"more than {COUNT_CAP:,}" if value >= COUNT_CAP else f"{value:,}"


def _capped(value: int) -> int:
    return min(value, COUNT_CAP)


# --- tokens --------------------------------------------------------------------------------------


def _tokens(text: str, version: int) -> Iterator[Token]:
    line, position, end = 1, 0, len(text)
    match = _TOKEN.match
    while position < end:
        found = match(text, position)
        if found is None:
            raise QasmCostError(f"line {line}: unexpected character {text[position]!r}")
        kind, position = found.lastgroup or "", found.end()
        if kind == "newline":
            line += 1
        elif kind in ("comment", "annotation"):
            line += found.group().count("\n")
        elif kind == "op" and found.group() == "++" and version == 2:
            # OpenQASM 2 has no concatenation: `1++2` is 1 + (+2).
            yield from (("op", "+", line), ("op", "+", line))
        elif kind != "skip":
            yield kind, found.group(), line
    while True:
        yield "end", "end of program", line


class _Stream:
    def __init__(self, text: str, version: int) -> None:
        self._tokens = _tokens(text, version)
        self._ahead: deque[Token] = deque()

    def peek(self, ahead: int = 0) -> Token:
        while len(self._ahead) <= ahead:
            self._ahead.append(next(self._tokens))
        return self._ahead[ahead]

    def text(self, ahead: int = 0) -> str:
        return self.peek(ahead)[1]

    def line(self) -> int:
        return self.peek()[2]

    def take(self) -> Token:
        kind, _, line = self.peek()
        if kind == "end":
            raise QasmCostError(f"line {line}: the program ends in the middle of a statement")
        return self._ahead.popleft()

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text and self.peek()[0] != "string":
            self._ahead.popleft()
            return True
        return False

    def expect(self, text: str) -> None:
        kind, found, line = self.take()
        if found != text or kind == "string":
            raise QasmCostError(f"line {line}: expected {text!r}, found {found!r}")

    def name(self) -> str:
        kind, found, line = self.take()
        if kind != "name":
            raise QasmCostError(f"line {line}: expected a name, found {found!r}")
        return found


# --- symbols ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Qubits:
    """A qubit register, an alias of qubits, or one qubit."""

    size: int


@dataclass(frozen=True)
class _Number:
    """A classical value: a constant, a loop variable's interval, or unknown (None)."""

    bounds: Bounds


@dataclass(frozen=True)
class _Definition:
    """A gate or subroutine: its qubits (None when it takes registers), its unrolled cost and
    how deeply definitions nest inside it (a built-in gate is 0)."""

    qubits: int | None
    cost: int
    depth: int


@dataclass
class _Body:
    """The definition being read: its name (a use of it is recursion) and the deepest
    definition it uses."""

    name: str
    deepest_use: int = 0


Scope = dict[str, _Qubits | _Number]


class _Reader:
    def __init__(self, text: str, version: int) -> None:
        self.tokens = _Stream(text, version)
        self.version = version
        self.keywords = KEYWORDS_3 if version == 3 else KEYWORDS_2
        builtins = QASM3_BUILTINS if version == 3 else QASM2_BUILTINS
        self.gates = {name: _Definition(n, 1, 0) for name, n in builtins.items()}
        self.routines: dict[str, _Definition] = {}
        self.scopes: list[Scope] = [{}]
        self.qubits = 0
        self.bits = 0
        self.nesting = 0
        self.body: _Body | None = None
        # Subroutines called inside the expressions of the statement being read.
        self.calls = 0

    # --- statements ------------------------------------------------------------------------------

    def program(self) -> int:
        total = 0
        while self.tokens.peek()[0] != "end":
            total = _capped(total + self.statement())
        return total

    def statement(self) -> int:
        kind, text, line = self.tokens.peek()
        outer_calls, self.calls = self.calls, 0
        if kind == "op" and text == ";":
            self.tokens.take()
            cost = 0
        elif kind == "op" and text == "{":
            cost = self.block()
        elif kind != "name":
            raise QasmCostError(f"line {line}: unexpected {text!r} where a statement starts")
        elif text in self.keywords:
            cost = self.keywords[text](self)
        else:
            cost = self.call_or_assignment()
        cost = _capped(cost + self.calls)
        self.calls = outer_calls
        return cost

    def block(self) -> int:
        self.tokens.expect("{")
        self.enter(self.tokens.line())
        self.scopes.append({})
        total = 0
        while not self.tokens.accept("}"):
            if self.tokens.peek()[0] == "end":
                raise QasmCostError(f"line {self.tokens.line()}: a block is not closed with '}}'")
            total = _capped(total + self.statement())
        self.scopes.pop()
        self.nesting -= 1
        return total

    def body_statement(self) -> int:
        """The body of a loop or branch: a block or one statement."""
        if self.tokens.text() == "{":
            return self.block()
        self.enter(self.tokens.line())
        self.scopes.append({})
        cost = self.statement()
        self.scopes.pop()
        self.nesting -= 1
        return cost

    def enter(self, line: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING_DEPTH:
            raise QasmCostError(
                f"line {line}: blocks and statements nested {self.nesting} deep; the limit is "
                f"{MAX_NESTING_DEPTH}"
            )

    def skip_statement(self) -> int:
        """A statement whose gates do not matter (declarations, assignments, measurements,
        barriers): read to its ';', counting the subroutines it calls."""
        cost = 0
        depth = 0
        while True:
            kind, text, line = self.tokens.take()
            if kind == "string":
                continue
            if text in OPENING:
                depth += 1
                self.check_expression_depth(depth, line)
            elif text in CLOSING:
                depth -= 1
                if depth < 0:
                    raise QasmCostError(f"line {line}: unexpected {text!r}")
            elif text == ";" and depth == 0:
                return cost
            elif kind == "name" and self.tokens.text() == "(":
                cost = _capped(cost + self.use_routine(text, line))

    def skip_group(self) -> None:
        """From an opening bracket to its closing one, whatever is inside."""
        depth = 0
        while True:
            kind, text, line = self.tokens.take()
            if kind == "string":
                continue
            if text in OPENING:
                depth += 1
                self.check_expression_depth(depth, line)
            elif text in CLOSING:
                depth -= 1
                if depth == 0:
                    return

    def check_expression_depth(self, depth: int, line: int) -> None:
        if depth > MAX_NESTING_DEPTH:
            raise QasmCostError(
                f"line {line}: an expression nested {depth} deep; the limit is {MAX_NESTING_DEPTH}"
            )

    # --- headers and declarations ----------------------------------------------------------

    def include(self) -> int:
        self.tokens.take()
        _, name, line = self.tokens.take()
        self.tokens.expect(";")
        wanted, gates = LIBRARIES[self.version]
        if name != wanted:
            raise QasmCostError(
                f"line {line}: include {name}: qloop reads no files; OpenQASM {self.version} "
                f"programs may include {wanted} only"
            )
        for gate, qubits in gates.items():
            self.gates.setdefault(gate, _Definition(qubits, 1, 0))
        return 0

    def old_style_register(self) -> int:
        """`qreg q[n];` or `creg c[n];`."""
        _, keyword, line = self.tokens.take()
        name = self.tokens.name()
        size = 1
        if self.tokens.accept("["):
            size = self.constant_int(f"the size of register {name!r}", line)
            self.tokens.expect("]")
        self.tokens.expect(";")
        self.declare(name, size, keyword == "qreg", line)
        return 0

    def register(self) -> int:
        """`qubit[n] q;`, `qubit q;`, `bit[n] c;`, `bit c = measure q;`."""
        _, keyword, line = self.tokens.take()
        size = 1
        if self.tokens.accept("["):
            size = self.constant_int(f"the size of a {keyword} register", line)
            self.tokens.expect("]")
        name = self.tokens.name()
        self.declare(name, size, keyword == "qubit", line)
        return 0 if self.tokens.accept(";") else self.skip_statement()

    def declare(self, name: str, size: int, quantum: bool, line: int) -> None:
        if size < 0:
            raise QasmCostError(f"line {line}: register {name!r} has a negative size ({size})")
        if quantum:
            self.qubits = _capped(self.qubits + size)
            self.scopes[-1][name] = _Qubits(size)
            return
        self.bits = _capped(self.bits + size)
        self.scopes[-1][name] = _Number(None)
        if self.bits > MAX_CLASSICAL_BITS:
            raise QasmCostError(
                f"line {line}: {_count(self.bits)} classical bits declared; the limit is "
                f"{MAX_CLASSICAL_BITS:,}"
            )

    def const_declaration(self) -> int:
        self.tokens.take()
        self.skip_type()
        name = self.tokens.name()
        self.tokens.expect("=")
        value = self.expression()
        self.tokens.expect(";")
        self.scopes[-1][name] = _Number(value)
        return 0

    def classical_declaration(self) -> int:
        self.skip_type()
        self.scopes[-1][self.tokens.name()] = _Number(None)
        return 0 if self.tokens.accept(";") else self.skip_statement()

    def skip_type(self) -> None:
        """A type: its name and designator (`int[32]`, `complex[float[64]]`, `array[...]`)."""
        self.tokens.name()
        if self.tokens.text() == "[":
            self.skip_group()

    def alias(self) -> int:
        """`let a = q[0:2] ++ r;`: an alias of qubits is a register of the summed size."""
        self.tokens.take()
        name = self.tokens.name()
        self.tokens.expect("=")
        sizes = [self.qubit_operand_size(required=False)]
        while self.tokens.accept("++"):
            sizes.append(self.qubit_operand_size(required=False))
        self.tokens.expect(";")
        known = [size for size in sizes if size is not None]
        self.scopes[-1][name] = _Qubits(sum(known)) if known else _Number(None)
        return 0

    def calibration(self) -> int:
        _, keyword, line = self.tokens.peek()
        raise QasmCostError(
            f"line {line}: '{keyword}' (pulse-level calibration) is not supported; qloop runs "
            "gate-level circuits"
        )

    # --- definitions -------------------------------------------------------------------------

    def gate_definition(self) -> int:
        _, _, line = self.tokens.take()
        name = self.tokens.name()
        scope: Scope = {}
        if self.tokens.accept("("):
            while not self.tokens.accept(")"):
                scope[self.tokens.name()] = _Number(None)
                self.tokens.accept(",")
        qubits = 0
        while self.tokens.text() != "{":
            scope[self.tokens.name()] = _Qubits(1)
            qubits += 1
            self.tokens.accept(",")
        self.gates[name] = self.definition(name, scope, qubits, line)
        return 0

    def opaque(self) -> int:
        self.tokens.take()
        name = self.tokens.name()
        if self.tokens.text() == "(":
            self.skip_group()
        qubits = 0
        while not self.tokens.accept(";"):
            self.tokens.name()
            qubits += 1
            self.tokens.accept(",")
        self.gates[name] = _Definition(qubits, 1, 0)
        return 0

    def subroutine(self) -> int:
        """`def f(qubit a, qubit[4] r, int n) -> bit { ... }`: qubit parameters are registers
        of their declared size; classical parameters are unknown values, so nothing the count
        depends on may depend on them."""
        _, _, line = self.tokens.take()
        name = self.tokens.name()
        self.tokens.expect("(")
        scope: Scope = {}
        while not self.tokens.accept(")"):
            if self.tokens.accept("qubit"):
                size = 1
                if self.tokens.accept("["):
                    size = self.constant_int("the size of a qubit parameter", line)
                    self.tokens.expect("]")
                scope[self.tokens.name()] = _Qubits(size)
            else:
                while self.tokens.text(1) not in (",", ")"):
                    if self.tokens.text() in OPENING:
                        self.skip_group()
                    else:
                        self.tokens.take()
                scope[self.tokens.name()] = _Number(None)
            self.tokens.accept(",")
        if self.tokens.accept("->"):
            self.skip_type()
        self.routines[name] = self.definition(name, scope, None, line)
        return 0

    def definition(self, name: str, scope: Scope, qubits: int | None, line: int) -> _Definition:
        if self.body is not None:
            raise QasmCostError(
                f"line {line}: {name!r} is defined inside {self.body.name!r}; definitions "
                "belong at the top level"
            )
        self.body = _Body(name)
        self.scopes.append(scope)
        cost = self.block()
        self.scopes.pop()
        depth = self.body.deepest_use + 1
        self.body = None
        if depth > MAX_NESTING_DEPTH:
            raise QasmCostError(
                f"line {line}: {name!r} nests gate definitions {depth} deep; the limit is "
                f"{MAX_NESTING_DEPTH}"
            )
        return _Definition(qubits, cost, depth)

    def use(self, definition: _Definition) -> None:
        if self.body is not None:
            self.body.deepest_use = max(self.body.deepest_use, definition.depth)

    def refuse_recursion(self, name: str, line: int) -> None:
        if self.body is not None and name == self.body.name:
            raise QasmCostError(
                f"line {line}: {name!r} uses itself; a recursive definition cannot be unrolled"
            )

    def use_routine(self, name: str, line: int) -> int:
        """The cost of calling `name` if it is a subroutine (0 for functions such as sin)."""
        self.refuse_recursion(name, line)
        routine = self.routines.get(name)
        if routine is None:
            return 0
        self.use(routine)
        return routine.cost

    # --- control flow ----------------------------------------------------------------------------

    def for_loop(self) -> int:
        _, _, line = self.tokens.take()
        if self.tokens.text(1) != "in":
            self.skip_type()
        variable = self.tokens.name()
        self.tokens.expect("in")
        if self.tokens.accept("["):
            trips, bounds = self.range_trips(line)
            self.tokens.expect("]")
        elif self.tokens.text() == "{":
            trips, bounds = self.set_trips()
        else:
            raise QasmCostError(
                f"line {line}: the loop runs over {self.tokens.text()!r}, whose length is only "
                "known when the program runs; loop over a constant range [a:b] or set {a, b}"
            )
        self.scopes.append({variable: _Number(bounds)})
        cost = self.body_statement()
        self.scopes.pop()
        return _capped(trips * cost)

    def range_trips(self, line: int) -> tuple[int, Bounds]:
        """Trips of an inclusive range [start:stop] or [start:step:stop] (an upper bound when
        an end is an interval) and the interval its variable runs over."""
        parts = [self.expression()]
        while self.tokens.accept(":"):
            parts.append(self.expression())
        if len(parts) not in (2, 3):
            raise QasmCostError(f"line {line}: a loop range is [start:stop] or [start:step:stop]")
        start, stop = parts[0], parts[-1]
        step = parts[1] if len(parts) == 3 else (1, 1)
        if start is None or stop is None or step is None or step[0] != step[1]:
            raise QasmCostError(
                f"line {line}: the loop's range is not a constant; qloop counts a loop's gates "
                "before running it, so its start, step and stop must be known"
            )
        if step[0] == 0:
            raise QasmCostError(f"line {line}: a loop range with step 0 never ends")
        return _trips(start, step[0], stop, line), (min(start[0], stop[0]), max(start[1], stop[1]))

    def set_trips(self) -> tuple[int, Bounds]:
        self.tokens.expect("{")
        values: list[Bounds] = []
        while not self.tokens.accept("}"):
            values.append(self.expression())
            self.tokens.accept(",")
        known = [value for value in values if value is not None]
        if len(known) < len(values) or not known:
            return len(values), None
        return len(values), (min(v[0] for v in known), max(v[1] for v in known))

    def while_loop(self) -> int:
        raise QasmCostError(
            f"line {self.tokens.line()}: a while loop has no bound qloop can know before "
            "running it (and qloop runs unitary circuits measured at the end); unroll it, or "
            "loop over a constant range"
        )

    def branch(self) -> int:
        """if/else: both branches count (an upper bound; Qiskit's reader refuses classical
        control afterwards anyway)."""
        self.tokens.take()
        if self.tokens.text() != "(":
            raise QasmCostError(f"line {self.tokens.line()}: expected '(' after 'if'")
        self.skip_group()
        cost = self.body_statement()
        if self.tokens.accept("else"):
            cost = _capped(cost + self.body_statement())
        return cost

    def switch(self) -> int:
        self.tokens.take()
        self.skip_group()
        self.tokens.expect("{")
        cost = 0
        while not self.tokens.accept("}"):
            if not self.tokens.accept("default"):
                self.tokens.expect("case")
                while self.tokens.text() != "{":
                    self.expression()
                    self.tokens.accept(",")
            cost = _capped(cost + self.block())
        return cost

    def box(self) -> int:
        self.tokens.take()
        if self.tokens.text() == "[":
            self.skip_group()
        return self.block()

    def delay(self) -> int:
        """`delay[t] q;` is one instruction per qubit."""
        self.tokens.take()
        if self.tokens.text() == "[":
            self.skip_group()
        total = 0
        while not self.tokens.accept(";"):
            total += self.qubit_operand_size(required=True) or 0
            self.tokens.accept(",")
        return total

    # --- gate calls, subroutine calls, assignments ------------------------------------------

    def call_or_assignment(self) -> int:
        _, name, line = self.tokens.peek()
        if name in self.gates or (self.version == 3 and name in MODIFIERS):
            return self.gate_call()
        self.refuse_recursion(name, line)
        if name in self.routines or self.lookup(name) is not None:
            return self.skip_statement()
        if self.tokens.text(1) in ASSIGNMENTS:
            return self.skip_statement()
        raise QasmCostError(f"line {line}: gate {name!r} is not defined")

    def gate_call(self) -> int:
        line = self.tokens.line()
        modifiers: list[tuple[str, Bounds]] = []
        while self.version == 3 and self.tokens.text() in MODIFIERS:
            modifier = self.tokens.name()
            argument: Bounds = (1, 1)
            if self.tokens.accept("("):
                argument = self.expression()
                self.tokens.expect(")")
            self.tokens.expect("@")
            modifiers.append((modifier, argument))
        name = self.tokens.name()
        self.refuse_recursion(name, line)
        gate = self.gates.get(name)
        if gate is None:
            raise QasmCostError(f"line {line}: gate {name!r} is not defined")
        self.use(gate)
        if self.tokens.accept("("):
            while not self.tokens.accept(")"):
                self.expression()
                self.tokens.accept(",")
        if self.tokens.text() == "[":
            self.skip_group()
        sizes: list[int] = []
        while not self.tokens.accept(";"):
            sizes.append(self.qubit_operand_size(required=True) or 1)
            self.tokens.accept(",")
        width = gate.qubits if gate.qubits is not None else len(sizes)
        factor = 1
        for modifier, argument in reversed(modifiers):
            if modifier in ("ctrl", "negctrl"):
                controls = self.known_int(argument, f"the argument of {modifier}", line)
                # Controlling a gate controls every gate of its definition, and a gate with k
                # controls decomposes into about k + 1 gates.
                factor = _capped(factor * (1 + max(controls, 0)))
                width += controls
            elif modifier == "pow":
                factor = _capped(factor * self.power_factor(argument, width, line))
        return _capped(gate.cost * factor * max(sizes, default=1))

    def power_factor(self, exponent: Bounds, width: int, line: int) -> int:
        if exponent is None:
            raise QasmCostError(
                f"line {line}: the exponent of pow is not a constant; qloop counts the gates "
                "of pow(k) @ before running the program"
            )
        if width > MAX_POWERED_GATE_QUBITS:
            raise QasmCostError(
                f"line {line}: pow(k) @ on a gate of {width} qubits; the limit is "
                f"{MAX_POWERED_GATE_QUBITS} (a power is computed from the gate's 2^n x 2^n "
                "unitary)"
            )
        largest = max(abs(exponent[0]), abs(exponent[1]))
        if not math.isfinite(largest) or largest >= COUNT_CAP:
            return COUNT_CAP
        return max(1, math.ceil(largest))

    def qubit_operand_size(self, required: bool) -> int | None:
        """The number of qubits an operand names: a register's size, a slice's length, 1 for
        one qubit. None (when not `required`) for an operand that is not qubits."""
        kind, name, line = self.tokens.take()
        if kind == "name" and name.startswith("$"):
            index = _number(name[1:])
            highest = COUNT_CAP if index is None else int(min(index[0], COUNT_CAP))
            self.qubits = max(self.qubits, _capped(highest + 1))
            return 1
        symbol = self.lookup(name) if kind == "name" else None
        if not isinstance(symbol, _Qubits):
            if required:
                raise QasmCostError(f"line {line}: {name!r} is not a qubit or a qubit register")
            while self.tokens.text() == "[":
                self.skip_group()
            return None
        size = symbol.size
        while self.tokens.accept("["):
            size = self.index_size(size)
            self.tokens.expect("]")
        return size

    def index_size(self, size: int) -> int:
        """How many elements an index selects from `size` elements: a set's, a range's (never
        more than there are), or one."""
        if self.tokens.accept("{"):
            count = 0
            while not self.tokens.accept("}"):
                self.expression()
                count += 1
                self.tokens.accept(",")
            return count
        parts: list[Bounds] = []
        while True:
            at_end = self.tokens.text() in (":", "]", ",")
            parts.append(None if at_end else self.expression())
            if not self.tokens.accept(":"):
                break
        while self.tokens.accept(","):
            self.expression()
        if len(parts) == 1:
            return 1
        start, stop = parts[0] or (0, 0), parts[-1] or (size - 1, size - 1)
        step = parts[1] if len(parts) == 3 else (1, 1)
        if step is None or step[0] != step[1] or step[0] == 0:
            return size
        try:
            return min(size, _trips(start, step[0], stop, 0))
        except QasmCostError:
            return size

    def lookup(self, name: str) -> _Qubits | _Number | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    # --- classical expressions -------------------------------------------------------------

    def constant_int(self, what: str, line: int) -> int:
        return self.known_int(self.expression(), what, line)

    def known_int(self, value: Bounds, what: str, line: int) -> int:
        if value is not None and value[0] == value[1] and math.isinf(value[0]):
            raise QasmCostError(f"line {line}: {what} is larger than 2^64")
        if value is None or value[0] != value[1] or value[0] != math.floor(value[0]):
            raise QasmCostError(f"line {line}: {what} is not a constant integer")
        return int(value[0])

    def expression(self, depth: int = 1, lowest: int = 1) -> Bounds:
        """Precedence climbing over OpenQASM's binary operators. The value is an interval when
        it follows from constants and loop variables, else None."""
        self.check_expression_depth(depth, self.tokens.line())
        left = self.unary(depth)
        operators, power = (BINARY_3, "**") if self.version == 3 else (BINARY_2, "^")
        while True:
            kind, operator, line = self.tokens.peek()
            precedence = operators.get(operator) if kind == "op" else None
            if precedence is None or precedence < lowest:
                return left
            self.tokens.take()
            # Powers associate to the right, everything else to the left.
            right = self.expression(depth + 1, precedence + (operator != power))
            left = _combine("**" if operator == power else operator, left, right, line)

    def unary(self, depth: int) -> Bounds:
        kind, text, line = self.tokens.peek()
        if kind == "op" and text in ("-", "+", "!", "~"):
            self.tokens.take()
            self.check_expression_depth(depth + 1, line)
            value = self.unary(depth + 1)
            if text == "+":
                return value
            if text == "-" and value is not None:
                return (-value[1], -value[0])
            return None
        value = self.primary(depth)
        while self.tokens.text() == "[":
            self.skip_group()
            value = None
        return value

    def primary(self, depth: int) -> Bounds:
        kind, text, line = self.tokens.take()
        if kind == "number":
            return _number(text)
        if kind == "string":
            return None
        if kind == "op" and text == "(":
            value = self.expression(depth + 1)
            self.tokens.expect(")")
            return value
        if kind == "op" and text == "{":
            while not self.tokens.accept("}"):
                self.expression(depth + 1)
                self.tokens.accept(",")
            return None
        if kind != "name":
            raise QasmCostError(f"line {line}: unexpected {text!r} in an expression")
        if self.version == 3 and text == "measure":
            self.qubit_operand_size(required=False)
            return None
        if self.version == 3 and text in CASTS:
            if self.tokens.text() == "[":
                self.skip_group()
            self.tokens.expect("(")
            value = self.expression(depth + 1)
            self.tokens.expect(")")
            return value
        if self.tokens.accept("("):
            self.calls = _capped(self.calls + self.use_routine(text, line))
            while not self.tokens.accept(")"):
                self.expression(depth + 1)
                self.tokens.accept(",")
            return None
        if text in CONSTANTS:
            return (CONSTANTS[text], CONSTANTS[text])
        symbol = self.lookup(text)
        return symbol.bounds if isinstance(symbol, _Number) else None


def _trips(start: tuple[float, float], step: float, stop: tuple[float, float], line: int) -> int:
    """The most trips of an inclusive range whose ends lie in the given intervals."""
    span = stop[1] - start[0] if step > 0 else start[1] - stop[0]
    if not math.isfinite(span):
        raise QasmCostError(f"line {line}: the loop's range is not finite")
    return max(0, math.floor(span / abs(step)) + 1)


def _number(text: str) -> Bounds:
    """A literal's value. An integer beyond 2^64 is infinite: never a usable size or count, and
    a literal of a million digits is never converted."""
    digits = text.replace("_", "")
    base = {"0x": 16, "0o": 8, "0b": 2}.get(digits[:2].lower())
    if base is not None or digits.isdigit():
        significant = (digits[2:] if base else digits).lstrip("0") or "0"
        value = int(significant, base or 10) if len(significant) <= 64 else INTEGER_CAP + 1
        return (value, value) if value <= INTEGER_CAP else (math.inf, math.inf)
    if not (digits[-1].isdigit() or digits[-1] == "."):
        return None  # an imaginary number or a duration
    number = float(digits)
    return (number, number)


def _combine(operator: str, left: Bounds, right: Bounds, line: int) -> Bounds:
    if left is None or right is None:
        return None
    if operator == "+":
        return _checked(left[0] + right[0], left[1] + right[1], line)
    if operator == "-":
        return _checked(left[0] - right[1], left[1] - right[0], line)
    if operator == "*":
        products = [a * b for a in left for b in right]
        return _checked(min(products), max(products), line)
    if left[0] != left[1] or right[0] != right[1]:
        return None
    try:
        value = _exact(operator, left[0], right[0], line)
    except QasmCostError:
        raise
    except (ArithmeticError, ValueError):
        return None
    if value is None or isinstance(value, complex):
        return None
    return _checked(value, value, line)


def _exact(operator: str, a: float, b: float, line: int) -> float | None:
    integers = isinstance(a, int) and isinstance(b, int)
    if operator == "/":
        return a // b if integers else a / b
    if operator == "%":
        return a % b
    if operator == "**":
        if integers and b > 0 and abs(a) > 1 and b * math.log2(abs(a)) > 64:
            raise QasmCostError(f"line {line}: the integer {a}**{b} is larger than 2^64")
        return a**b
    if operator in ("<<", ">>") and isinstance(a, int) and isinstance(b, int):
        if operator == "<<" and (b > 64 or abs(a) << max(b, 0) > INTEGER_CAP):
            raise QasmCostError(f"line {line}: the integer {a} << {b} is larger than 2^64")
        return a << b if operator == "<<" else a >> b
    return None


def _checked(low: float, high: float, line: int) -> Bounds:
    for value in (low, high):
        if isinstance(value, int) and abs(value) > INTEGER_CAP:
            raise QasmCostError(f"line {line}: an integer in this expression is larger than 2^64")
    return (low, high)


BINARY_3 = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
    "<": 7, "<=": 7, ">": 7, ">=": 7, "<<": 8, ">>": 8,
    "+": 9, "-": 9, "*": 10, "/": 10, "%": 10, "**": 12,
}  # fmt: skip
BINARY_2 = {"==": 6, "+": 9, "-": 9, "*": 10, "/": 10, "^": 12}
ASSIGNMENTS = frozenset(("=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", "&=", "|=", "^="))
CLOSING = frozenset((")", "]", "}"))
CASTS = CLASSICAL_TYPES | {"bit"}
LIBRARIES = {2: ('"qelib1.inc"', QELIB1), 3: ('"stdgates.inc"', STDGATES)}

KEYWORDS_2: dict[str, Callable[[_Reader], int]] = {
    "OPENQASM": _Reader.skip_statement,
    "include": _Reader.include,
    "qreg": _Reader.old_style_register,
    "creg": _Reader.old_style_register,
    "gate": _Reader.gate_definition,
    "opaque": _Reader.opaque,
    "if": _Reader.branch,
    **dict.fromkeys(("measure", "reset", "barrier"), _Reader.skip_statement),
}
KEYWORDS_3: dict[str, Callable[[_Reader], int]] = {
    **KEYWORDS_2,
    "qubit": _Reader.register,
    "bit": _Reader.register,
    "const": _Reader.const_declaration,
    "let": _Reader.alias,
    "def": _Reader.subroutine,
    "defcal": _Reader.calibration,
    "cal": _Reader.calibration,
    "for": _Reader.for_loop,
    "while": _Reader.while_loop,
    "switch": _Reader.switch,
    "box": _Reader.box,
    "delay": _Reader.delay,
    **dict.fromkeys(CLASSICAL_TYPES, _Reader.classical_declaration),
    **dict.fromkeys(
        ("input", "output", "extern", "return", "break", "continue", "end", "nop"),
        _Reader.skip_statement,
    ),
}
