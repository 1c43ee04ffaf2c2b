"""Stand-ins for a local simulator's simulation, for the job store's tests.

Simulations run in the compute pool's child processes, which import what they run by name: a
monkeypatched function never reaches them. These live in an importable module instead, and talk
to the test through files under QLOOP_HOME (the pool passes the caller's environment on).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from adapters import aer
from adapters.local_jobs import JobStore

RELEASE_WAIT_SECONDS = 20.0


def _home() -> Path:
    return Path(os.environ["QLOOP_HOME"])


def counting_simulation(request: dict[str, Any]) -> dict[str, Any]:
    """The real Aer simulation, recording the job's id in simulations.txt first."""
    with (_home() / "simulations.txt").open("a") as log:
        log.write(request["job_id"] + "\n")
    return aer._simulate(request)


def simulations() -> list[str]:
    path = _home() / "simulations.txt"
    return path.read_text().split() if path.exists() else []


def held_simulation(request: dict[str, Any]) -> dict[str, Any]:
    """The real simulation once `release()` was called (or after RELEASE_WAIT_SECONDS)."""
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while not (_home() / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return counting_simulation(request)


def release() -> None:
    (_home() / "release").touch()


def broken_simulation(request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("simulator out of memory")


def dying_simulation(request: dict[str, Any]) -> dict[str, Any]:
    """Kills its own process, as a crash inside a simulator would."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def aer_store(simulate: Any) -> JobStore:
    """Aer's job store with another simulation (monkeypatch it over `aer._STORE`)."""
    return JobStore(aer.JOBS_DIR, simulate=simulate, validate=aer._validate)
