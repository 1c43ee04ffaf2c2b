"""Hostile requests (tests/hostile/): the CLI refuses each one at the door, within a wall-clock
budget, with exit code 2 and a message naming the limit and the request's value, while its own
memory stays small; the bombs that pass every static limit pass the door cheaply.

Every CLI run is its own process (`python starter.py ...`, as a user runs it) pointed at a port
nothing listens on, so a request that got past the door could not start anything. Its peak
resident memory is measured by a small launcher process that starts it and reads its own
RUSAGE_CHILDREN: Linux carries a process's peak across fork and exec, so a CLI forked straight
from this test session (hundreds of MB by then) would report the session's size, and this
session's RUSAGE_CHILDREN would be the largest child it ever waited for (servers, workers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from activities.experiment.admission import admit
from schemas.loading import load_request
from tests.harness import REPO_ROOT
from tests.hostile import large_requests
from tests.server_helpers import free_ports

HOSTILE = REPO_ROOT / "tests" / "hostile"
REFUSED = HOSTILE / "requests"
ADMITTED = HOSTILE / "admitted"
README = HOSTILE / "README.md"
# Starting the CLI (importing Qiskit and the Temporal SDK) takes about 3 s of it on 2 shared cores.
BUDGET_SECONDS = 10.0
MAX_CLI_RSS_MB = 500
# Admitting a bomb that passes the door: at most parsing 50 KB of OpenQASM 3 (about a second).
ADMISSION_BUDGET_SECONDS = 5.0

# file -> (CLI command, what the refusal must say: the limit and the value)
EXPECTED: dict[str, tuple[str, list[str]]] = {
    "qasm2-nested-definitions.yaml": ("run", ["1,099,511,627,776 gates", "limit is 100,000"]),
    "qasm3-nested-definitions.yaml": ("run", ["1,099,511,627,776 gates", "limit is 100,000"]),
    "qasm2-definition-chain-too-deep.yaml": ("run", ["65 deep", "limit is 64"]),
    "qasm3-billion-iteration-loop.yaml": ("run", ["1,000,000,000 gates", "limit is 100,000"]),
    "qasm3-nested-loops.yaml": ("run", ["20,000,000 gates", "limit is 100,000"]),
    "qasm3-pow-modifier.yaml": ("run", ["1,000,000,000 gates", "limit is 100,000"]),
    "qasm3-pow-on-wide-gate.yaml": ("run", ["gate of 12 qubits", "limit is 8"]),
    "qasm3-loop-over-broadcast.yaml": ("run", ["240,000 gates", "limit is 100,000"]),
    "qasm3-subroutine-in-loop.yaml": ("run", ["1,000,000 gates", "limit is 100,000"]),
    "qasm2-huge-register.yaml": ("run", ["100000000 qubits", "at most 24"]),
    "qasm3-huge-physical-qubit.yaml": ("run", ["100000000 qubits", "at most 24"]),
    "qasm2-huge-classical-register.yaml": ("run", ["1,000,000,000 classical bits", "1,024"]),
    "qasm3-while-loop.yaml": ("run", ["line 5", "while loop has no bound"]),
    "qasm3-recursive-gate.yaml": ("run", ["'loop' uses itself", "recursive"]),
    "qasm3-recursive-subroutine.yaml": ("run", ["'forever' uses itself", "recursive"]),
    "qasm3-loop-bound-from-parameter.yaml": ("run", ["line 4", "range is not a constant"]),
    "qasm3-deep-parentheses.yaml": ("run", ["nested 65 deep", "limit is 64"]),
    "qasm2-deep-unary-minus.yaml": ("run", ["nested 65 deep", "limit is 64"]),
    "qasm3-integer-overflow.yaml": ("run", ["2**100", "larger than 2^64"]),
    "qasm2-include-local-file.yaml": ("run", ['"/etc/passwd"', 'include "qelib1.inc" only']),
    "pauli-terms-bases-times-scale-factors.yaml": (
        "run",
        ["10,002 circuits", "1,000 measurement bases", "at most 500 per job"],
    ),
    "qaoa-largest-graph.yaml": ("run", ["32 nodes", "at most 24"]),
    "qaoa-edge-list-too-long.yaml": ("run", ["at most 496 items", "not 600"]),
    "mirror-widest-deepest.yaml": ("run", ["32 qubits", "at most 24"]),
    "mirror-deep-many-scale-factors.yaml": ("run", ["9,122,400 gates", "limit is 2,000,000"]),
    "yaml-alias-bomb.yaml": ("run", ["23,456,790,143 values", "limit is 200,000"]),
    "yaml-deep-nesting.yaml": ("run", ["501 levels", "limit is 32"]),
    "json-deep-nesting.json": ("run", ["501 levels", "limit is 32"]),
    "qasm-file-from-device.yaml": ("run", ["more than 1,000,000 bytes", "limit is 1,000,000"]),
    "too-many-tags.yaml": ("run", ["40 tags", "limit is 32"]),
    "fallback-chain-too-long.yaml": ("run", ["at most 8 items", "not 20"]),
    "loop-two-points-exceed-job.yaml": ("loop", ["2 point(s) needs 600 circuits", "at most 500"]),
    "sweep-million-points.yaml": ("sweep", ["1,000,000 points", "at most 100,000"]),
    # written by tests/hostile/large_requests.py
    "oversized-file.yaml": ("run", ["3,000,070 bytes", "limit is 2,000,000"]),
    "bitstrings-100k.json": ("run", ["at most 1000 items", "not 100000"]),
    "qasm3-too-long.yaml": ("run", ["bytes of OpenQASM 3", "limit is 50,000 bytes"]),
    "qasm2-too-long.yaml": ("run", ["1,100,207 characters", "limit is 1,000,000"]),
}


@dataclass(frozen=True)
class CliRun:
    exit_code: int
    stderr: str
    seconds: float
    peak_rss_mb: float


# Runs argv[2:], writes its children's peak resident memory (kilobytes) to argv[1], exits as it did.
LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_cli(command: str, path: Path, folder: Path) -> CliRun:
    """`python starter.py COMMAND PATH`, killed after twice the budget."""
    env = {**os.environ, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_ports(1)[0]}"}
    stderr_path = folder / f"{path.name}.stderr"
    peak_path = folder / f"{path.name}.peak"
    cli = [sys.executable, "starter.py", command, str(path)]
    with stderr_path.open("wb") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(peak_path), *cli],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            process.wait(timeout=2 * BUDGET_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        seconds = time.monotonic() - started
    return CliRun(
        exit_code=process.returncode,
        stderr=stderr_path.read_text(),
        seconds=seconds,
        peak_rss_mb=int(peak_path.read_text()) / 1024 if peak_path.exists() else float("inf"),
    )


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("large-hostile-requests")
    return {
        **large_requests.write(folder / "refused", large_requests.REFUSED),
        **large_requests.write(folder / "admitted", large_requests.ADMITTED),
    }


def test_the_corpus_has_at_least_twenty_requests_each_with_an_expectation() -> None:
    on_disk = {path.name for path in REFUSED.iterdir()}
    assert on_disk | set(large_requests.REFUSED) == set(EXPECTED)
    assert len(EXPECTED) >= 20


def test_the_readme_describes_every_request() -> None:
    text = README.read_text()
    admitted = {path.name for path in ADMITTED.iterdir()} | set(large_requests.ADMITTED)
    missing = [name for name in [*EXPECTED, *admitted] if f"`{name}`" not in text]
    assert not missing, f"tests/hostile/README.md does not describe {missing}"
    admitted_section = text.split("## Admitted", 1)[1]
    assert all(f"`{name}`" in admitted_section for name in admitted)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_cli_refuses_a_hostile_request_at_the_door(
    name: str, large: dict[str, Path], tmp_path: Path
) -> None:
    command, expected = EXPECTED[name]
    path = large.get(name, REFUSED / name)
    run = run_cli(command, path, tmp_path)
    assert run.exit_code == 2, run.stderr
    assert run.stderr.startswith(f"refused: {path}: invalid request"), run.stderr
    for text in expected:
        assert text in run.stderr, f"{text!r} not in {run.stderr!r}"
    assert run.seconds < BUDGET_SECONDS, f"refusing {name} took {run.seconds:.1f} s"
    assert run.peak_rss_mb < MAX_CLI_RSS_MB, f"the CLI grew to {run.peak_rss_mb:.0f} MB"


@pytest.mark.parametrize(
    "name", sorted([path.name for path in ADMITTED.iterdir()] + list(large_requests.ADMITTED))
)
def test_bombs_within_every_static_limit_pass_the_door_cheaply(
    name: str, large: dict[str, Path]
) -> None:
    """These must fail cleanly (or finish) in a child process of a worker; admitting them costs
    no more than reading them."""
    started = time.monotonic()
    request = load_request(large.get(name, ADMITTED / name))
    admitted = admit(request)
    assert admitted.capabilities.status == "ONLINE"
    assert time.monotonic() - started < ADMISSION_BUDGET_SECONDS
    # Nothing was built for a template: its circuit waits for preprocess.
    assert "built" not in vars(admitted)
