"""The `simulate` compute activity's function: a batch `plan` stored, simulated where it is
called, its counts stored beside it. A run redone (on another host, after its first host died)
gives the same counts, which is what lets Temporal simply retry it anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.providers.local_simulation import COUNTS_ARTIFACT, seed_of, simulate
from activities.storage import artifact_store
from adapters.errors import InvalidRequestError
from schemas.execution import CircuitBatch, CircuitSpec, JobResult
from schemas.pipeline import CircuitRole, PlannedBatch, SimulateInput
from schemas.request import BackendChoice

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
rx(0.4) q[1];
measure q[0] -> c[0];
measure q[1] -> c[1];
"""
LOCAL_BACKENDS = [
    BackendChoice(provider="aer", device="ideal"),
    BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe"),
    BackendChoice(provider="braket", device="braket_sv"),
    BackendChoice(provider="braket", device="braket_dm", noise_profile="ibm_guadalupe"),
]


@pytest.fixture(autouse=True)
def qloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QLOOP_HOME", str(tmp_path))
    return tmp_path


def stored_batch(owner: str) -> str:
    planned = PlannedBatch(
        batch=CircuitBatch(
            circuits=[CircuitSpec(name="bell", qasm=BELL, num_qubits=2, num_clbits=2)] * 2
        ),
        roles=[CircuitRole(kind="observable", basis="ZZ")] * 2,
    )
    return artifact_store.put_model(owner, "batch.json", planned)


def simulate_input(
    backend: BackendChoice, owner: str, token: str = "run-1", seed: int | None = None
) -> SimulateInput:
    return SimulateInput(
        artifact_folder=owner,
        backend=backend,
        batch_uri=stored_batch(owner),
        shots=2000,
        seed=seed,
        client_token=token,
    )


@pytest.mark.parametrize("backend", LOCAL_BACKENDS, ids=lambda b: f"{b.provider}-{b.device}")
def test_a_run_redone_gives_the_same_counts_and_stores_them(backend: BackendChoice) -> None:
    first = simulate(simulate_input(backend, "exp-a"))
    again = simulate(simulate_input(backend, "exp-b"))

    first_counts = artifact_store.read_model(first.fetched.counts_uri, JobResult)
    again_counts = artifact_store.read_model(again.fetched.counts_uri, JobResult)
    assert first.fetched.counts_uri.endswith(f"exp-a/{COUNTS_ARTIFACT}")
    assert len(first_counts.counts) == 2
    assert all(sum(counts.values()) == 2000 for counts in first_counts.counts)
    assert first_counts.counts == again_counts.counts
    assert first.fetched.actual_cost.usd == 0.0
    assert first.job.client_token == "run-1"


def test_another_run_token_or_seed_draws_other_shots() -> None:
    backend = BackendChoice(provider="aer", device="ideal")
    runs = [
        simulate(simulate_input(backend, "tok-1", token="run-1")),
        simulate(simulate_input(backend, "tok-2", token="run-2")),
        simulate(simulate_input(backend, "seed-7", token="run-1", seed=7)),
    ]
    counts = [artifact_store.read_model(r.fetched.counts_uri, JobResult).counts for r in runs]
    assert counts[0] != counts[1]
    assert counts[0] != counts[2]


def test_the_seed_is_the_requested_one_else_derived_from_the_token() -> None:
    backend = BackendChoice()
    with_seed = SimulateInput(
        artifact_folder="x", backend=backend, batch_uri="u", shots=1, seed=11, client_token="t"
    )
    assert seed_of(with_seed) == 11
    derived = [seed_of(with_seed.model_copy(update={"seed": None})) for _ in range(3)]
    assert len(set(derived)) == 1
    assert 0 <= derived[0] < 2**31


def test_a_remote_device_is_refused() -> None:
    remote = BackendChoice(
        provider="braket", device="arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1"
    )
    with pytest.raises(InvalidRequestError, match="not a local simulator"):
        simulate(simulate_input(remote, "remote"))
