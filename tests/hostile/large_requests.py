"""Hostile requests too large to keep in git, written on demand: `python
tests/hostile/large_requests.py DIR` writes them into DIR, and
tests/unit/cli/test_hostile_requests.py writes them into its temporary folder.
tests/hostile/README.md says what each one is."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

HEADER_2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\n'
HEADER_3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\n'
ONE_BIT = '{kind: bitstring_probability, bitstrings: ["0"]}'


def qasm_request(name: str, program: str) -> str:
    indented = "".join(f"    {line}\n" for line in program.splitlines())
    return (
        f"schema_version: 1\nname: {name}\nproblem:\n  kind: qasm\n  observable: {ONE_BIT}\n"
        f"  qasm: |\n{indented}"
    )


def gate_lines(header: str, size: int) -> str:
    """`header` followed by lines of 40 `x q[0];` calls, `size` characters at least."""
    line = " ".join(["x q[0];"] * 40) + "\n"
    return header + line * (size // len(line) + 1)


def oversized_file() -> str:
    padding = "# padding\n" * 300_000
    return f"schema_version: 1\nname: oversized\nproblem: {{kind: ghz, num_qubits: 2}}\n{padding}"


def bitstrings_100k() -> str:
    request = {
        "schema_version": 1,
        "name": "bitstrings",
        "problem": {
            "kind": "qasm",
            "qasm": HEADER_2 + "x q[0];\n",
            "observable": {"kind": "bitstring_probability", "bitstrings": ["0"] * 100_000},
        },
    }
    return json.dumps(request)


def qasm3_too_long() -> str:
    return qasm_request("qasm3-long", gate_lines(HEADER_3, 60_000))


def qasm2_too_long() -> str:
    return qasm_request("qasm2-long", gate_lines(HEADER_2, 1_100_000))


def qasm3_near_the_limit() -> str:
    """Admitted: 49,000 bytes of OpenQASM 3, about a second of parsing wherever it is read."""
    program = HEADER_3
    line = "rz(0.7853981633974483) q[0];\nh q[0];\n"
    program += line * ((49_000 - len(program)) // len(line))
    return qasm_request("qasm3-near-limit", program)


REFUSED: dict[str, Callable[[], str]] = {
    "oversized-file.yaml": oversized_file,
    "bitstrings-100k.json": bitstrings_100k,
    "qasm3-too-long.yaml": qasm3_too_long,
    "qasm2-too-long.yaml": qasm2_too_long,
}
ADMITTED: dict[str, Callable[[], str]] = {"qasm3-near-the-size-limit.yaml": qasm3_near_the_limit}


def write(folder: Path, requests: dict[str, Callable[[], str]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in requests.items():
        paths[name] = folder / name
        paths[name].write_text(make())
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for path in [*write(target, REFUSED).values(), *write(target, ADMITTED).values()]:
        print(path)
