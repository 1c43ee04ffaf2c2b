"""AerAdapter against real Aer: durable, idempotent, canonical, validated."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from adapters import aer, local_jobs
from adapters.aer import AerAdapter
from adapters.errors import InvalidRequestError, JobFailedError
from adapters.profiles import load_profile
from adapters.registry import get_adapter
from schemas.execution import CircuitBatch, CircuitSpec, JobRef, JobResult, JobState, Tier
from schemas.request import BackendChoice, DepolarizingNoise
from tests import local_job_doubles as doubles

HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
BELL = HEADER + "qreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n"


def spec(body: str, qubits: int, clbits: int, name: str = "c0") -> CircuitSpec:
    qasm = HEADER + f"qreg q[{qubits}];\ncreg c[{clbits}];\n" + body
    return CircuitSpec(name=name, qasm=qasm, num_qubits=qubits, num_clbits=clbits)


def batch(*specs: CircuitSpec) -> CircuitBatch:
    return CircuitBatch(circuits=list(specs))


BELL_BATCH = CircuitBatch(
    circuits=[CircuitSpec(name="bell", qasm=BELL, num_qubits=2, num_clbits=2)]
)


@pytest.fixture(autouse=True)
def qloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QLOOP_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every simulation the adapter runs is recorded (doubles.simulations())."""
    monkeypatch.setattr(aer, "_STORE", doubles.aer_store(doubles.counting_simulation))


def wait_final(adapter: AerAdapter, job: JobRef, timeout: float = 60.0) -> JobState:
    deadline = time.monotonic() + timeout
    while True:
        state = adapter.status(job).state
        if state.is_final or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def run(adapter: AerAdapter, circuits: CircuitBatch, shots: int, token: str) -> JobResult:
    job = adapter.submit(circuits, shots, token, seed=11)
    assert wait_final(adapter, job) is JobState.DONE
    return adapter.result(job)


# --- idempotency -------------------------------------------------------------------------


@pytest.mark.usefixtures("counted")
def test_same_token_gives_the_same_job_and_one_simulation(qloop_home: Path) -> None:
    adapter = AerAdapter()
    first = adapter.submit(BELL_BATCH, 100, "tok-1", seed=1)
    second = adapter.submit(BELL_BATCH, 100, "tok-1", seed=1)
    assert second == first
    assert wait_final(adapter, first) is JobState.DONE
    third = AerAdapter().submit(BELL_BATCH, 100, "tok-1", seed=1)
    assert third == first
    assert wait_final(adapter, first) is JobState.DONE
    assert doubles.simulations() == [first.job_id]
    assert [p.name for p in (qloop_home / "aer-jobs").iterdir()] == ["tok-1"]
    assert len(list((qloop_home / "aer-jobs").rglob("request.json"))) == 1


@pytest.mark.usefixtures("counted")
def test_concurrent_submits_with_one_token_make_one_job() -> None:
    adapter = AerAdapter()
    refs: list[JobRef] = []
    threads = [
        threading.Thread(target=lambda: refs.append(adapter.submit(BELL_BATCH, 50, "race", 5)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({ref.job_id for ref in refs}) == 1
    assert wait_final(adapter, refs[0]) is JobState.DONE
    assert doubles.simulations() == [refs[0].job_id]


def test_same_token_with_other_circuits_is_refused() -> None:
    adapter = AerAdapter()
    adapter.submit(BELL_BATCH, 100, "tok-2", seed=1)
    with pytest.raises(InvalidRequestError, match="already used"):
        adapter.submit(batch(spec("x q[0];\nmeasure q -> c;\n", 1, 1)), 100, "tok-2", seed=1)
    with pytest.raises(InvalidRequestError, match="already used"):
        adapter.submit(BELL_BATCH, 200, "tok-2", seed=1)


def test_tokens_that_are_not_file_names_are_stored_safely(qloop_home: Path) -> None:
    adapter = AerAdapter()
    job = adapter.submit(BELL_BATCH, 10, "wf/../../etc:1", seed=1)
    assert wait_final(adapter, job) is JobState.DONE
    assert all(p.parent == qloop_home / "aer-jobs" for p in (qloop_home / "aer-jobs").iterdir())


# --- results -----------------------------------------------------------------------------


def test_bell_state_on_ideal() -> None:
    result = run(AerAdapter(), BELL_BATCH, 4000, "bell")
    counts = result.counts[0]
    assert set(counts) == {"00", "11"}
    assert counts["00"] / 4000 == pytest.approx(0.5, abs=0.05)
    assert result.shots == 4000


def test_canonical_bit_order_rightmost_is_clbit_0() -> None:
    result = run(AerAdapter(), batch(spec("x q[0];\nmeasure q -> c;\n", 3, 3)), 100, "order")
    assert result.counts == [{"001": 100}]


def test_several_registers_are_joined_without_spaces() -> None:
    qasm = HEADER + "qreg q[3];\ncreg a[1];\ncreg b[2];\nx q[0];\nx q[2];\n"
    qasm += "measure q[0] -> a[0];\nmeasure q[1] -> b[0];\nmeasure q[2] -> b[1];\n"
    circuits = batch(CircuitSpec(name="regs", qasm=qasm, num_qubits=3, num_clbits=3))
    assert run(AerAdapter(), circuits, 50, "regs").counts == [{"101": 50}]


def test_counts_are_zero_padded_and_in_batch_order() -> None:
    circuits = batch(
        spec("measure q -> c;\n", 4, 4, name="zeros"),
        spec("x q[3];\nmeasure q -> c;\n", 4, 4, name="top"),
    )
    assert run(AerAdapter(), circuits, 20, "pad").counts == [{"0000": 20}, {"1000": 20}]


def test_gates_outside_the_basis_are_translated() -> None:
    circuits = batch(spec("cu1(pi) q[0],q[1];\nh q[0];\nmeasure q -> c;\n", 2, 2))
    counts = run(AerAdapter(), circuits, 2000, "cu1").counts[0]
    assert set(counts) == {"00", "01"}


def test_same_seed_same_counts() -> None:
    adapter = AerAdapter()
    assert run(adapter, BELL_BATCH, 500, "s1").counts == run(adapter, BELL_BATCH, 500, "s2").counts


# --- durability --------------------------------------------------------------------------


def _write_orphan(adapter: AerAdapter, circuits: CircuitBatch, token: str) -> JobRef:
    """A job whose submitting process died before (or while) it simulated: request only."""
    request = adapter._new_request(circuits, 300, token, 3)
    aer._STORE.create(aer._STORE.job_dir(token), request)
    return local_jobs.job_ref(request)


@pytest.mark.usefixtures("counted")
def test_orphaned_job_is_restarted_by_status() -> None:
    job = _write_orphan(AerAdapter(), BELL_BATCH, "orphan")
    fresh = AerAdapter()
    assert fresh.status(job).state in (JobState.RUNNING, JobState.QUEUED, JobState.DONE)
    assert wait_final(fresh, job) is JobState.DONE
    assert set(fresh.result(job).counts[0]) <= {"00", "11"}
    assert doubles.simulations() == [job.job_id]


def test_orphan_recovery_reports_running_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aer, "_STORE", doubles.aer_store(doubles.held_simulation))
    job = _write_orphan(AerAdapter(), BELL_BATCH, "orphan-slow")
    adapter = AerAdapter()
    first = adapter.status(job)
    assert first.state is JobState.RUNNING and "restarted" in (first.message or "")
    assert adapter.status(job).state in (JobState.RUNNING, JobState.QUEUED)
    doubles.release()
    assert wait_final(adapter, job) is JobState.DONE


def test_a_simulation_that_kills_its_process_fails_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulation runs in a child process: its death fails the job, named, and the process
    that asked (here the test itself, as a worker would) carries on."""
    monkeypatch.setattr(aer, "_STORE", doubles.aer_store(doubles.dying_simulation))
    adapter = AerAdapter()
    job = adapter.submit(BELL_BATCH, 10, "poison", seed=1)
    assert wait_final(adapter, job) is JobState.FAILED
    with pytest.raises(JobFailedError, match=r"died \(killed by SIGKILL\)"):
        adapter.result(job)
    monkeypatch.undo()
    assert run(AerAdapter(), BELL_BATCH, 10, "after-poison").shots == 10


@pytest.mark.usefixtures("counted")
def test_job_held_by_another_live_process_is_not_restarted() -> None:
    job = _write_orphan(AerAdapter(), BELL_BATCH, "held")
    with local_jobs.job_lock(aer._STORE.job_dir("held")) as mine:  # stands in for a live runner
        assert mine
        status = AerAdapter().status(job)
    assert status.state is JobState.RUNNING and "another process" in (status.message or "")
    assert doubles.simulations() == []


def test_cancel_before_it_runs() -> None:
    adapter = AerAdapter()
    job = _write_orphan(adapter, BELL_BATCH, "cancel-me")
    adapter.cancel(job)
    assert adapter.status(job).state is JobState.CANCELLED
    assert adapter.status(job).state is JobState.CANCELLED  # not resurrected as an orphan
    with pytest.raises(JobFailedError, match="cancelled"):
        adapter.result(job)


def test_cancel_after_done_keeps_the_result() -> None:
    adapter = AerAdapter()
    job = adapter.submit(BELL_BATCH, 10, "late-cancel", seed=1)
    assert wait_final(adapter, job) is JobState.DONE
    adapter.cancel(job)
    assert adapter.status(job).state is JobState.DONE


def test_failed_job_reports_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aer, "_STORE", doubles.aer_store(doubles.broken_simulation))
    adapter = AerAdapter()
    job = adapter.submit(BELL_BATCH, 10, "fails", seed=1)
    assert wait_final(adapter, job) is JobState.FAILED
    assert "out of memory" in (adapter.status(job).message or "")
    with pytest.raises(JobFailedError, match="out of memory"):
        adapter.result(job)


def test_unknown_job_is_invalid() -> None:
    adapter = AerAdapter()
    job = adapter.submit(BELL_BATCH, 10, "known", seed=1)
    stranger = job.model_copy(update={"job_id": "aer-nope"})
    with pytest.raises(InvalidRequestError, match="unknown"):
        adapter.status(stranger)


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("shots", [0, -5, 1_000_001])
def test_shots_out_of_range_are_refused(shots: int, qloop_home: Path) -> None:
    with pytest.raises(InvalidRequestError, match="shots"):
        AerAdapter().submit(BELL_BATCH, shots, "shots", seed=1)
    assert not (qloop_home / "aer-jobs" / "shots").exists()


def test_too_many_circuits_are_refused() -> None:
    circuits = batch(*[spec("measure q -> c;\n", 1, 1, name=f"c{i}") for i in range(501)])
    with pytest.raises(InvalidRequestError, match="at most 500"):
        AerAdapter().submit(circuits, 10, "many", seed=1)


@pytest.mark.parametrize(
    ("circuit", "message"),
    [
        (CircuitSpec(name="broken", qasm=HEADER + "qreg q[1];\nfoo q[0];\n", num_qubits=1,
                     num_clbits=1), "'broken' is not valid OpenQASM 2"),
        (spec("measure q -> c;\n", 29, 29, name="wide"), "'wide' uses 29 qubits"),
        (spec("h q[0];\n", 1, 0, name="blind"), "'blind' measures nothing"),
        (CircuitSpec(name="liar", qasm=BELL, num_qubits=2, num_clbits=3), "'liar' declares 3"),
    ],
)  # fmt: skip
def test_invalid_circuits_are_refused_by_name(
    circuit: CircuitSpec, message: str, qloop_home: Path
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        AerAdapter().submit(batch(circuit), 10, "bad", seed=1)
    assert not (qloop_home / "aer-jobs" / "bad").exists()


def test_result_before_done_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aer, "_STORE", doubles.aer_store(doubles.held_simulation))
    adapter = AerAdapter()
    job = adapter.submit(BELL_BATCH, 10, "early", seed=1)
    try:
        with pytest.raises(InvalidRequestError, match="no result yet"):
            adapter.result(job)
    finally:
        adapter.cancel(job)
        doubles.release()


# --- the noisy device --------------------------------------------------------------------


def noisy(extra: DepolarizingNoise | None = None) -> AerAdapter:
    return AerAdapter("noisy", "ibm_guadalupe", extra)


def test_noisy_capabilities_follow_the_profile() -> None:
    caps = noisy().capabilities()
    profile = load_profile("ibm_guadalupe")
    assert caps.tier is Tier.NOISY_SIMULATOR
    assert caps.num_qubits == 16
    assert caps.basis_gates == profile.basis_gates
    assert caps.coupling_map == profile.coupling_map
    assert noisy().calibration() == {
        "profile": "ibm_guadalupe",
        "source": profile.source,
        "calibrated_at": profile.calibrated_at,
    }


def test_ideal_capabilities() -> None:
    caps = AerAdapter().capabilities()
    assert caps.tier is Tier.SIMULATOR and caps.coupling_map is None
    assert caps.num_qubits == 28 and caps.max_shots == 1_000_000
    assert caps.max_circuits_per_job == 500 and caps.cancellable
    assert AerAdapter().calibration() is None
    assert AerAdapter().estimate_cost(BELL_BATCH, 1000).usd == 0.0


def test_noisy_x_then_measure_errs_at_the_readout_rate() -> None:
    shots = 100_000
    counts = run(noisy(), batch(spec("x q[0];\nmeasure q -> c;\n", 1, 1)), shots, "nx").counts[0]
    expected = load_profile("ibm_guadalupe").qubits[0].readout_p0_given_1
    assert counts.get("0", 0) / shots == pytest.approx(expected, abs=0.004)


def test_noisy_refuses_more_qubits_than_the_device() -> None:
    with pytest.raises(InvalidRequestError, match="device has 16"):
        noisy().submit(batch(spec("measure q -> c;\n", 17, 17)), 10, "wide", seed=1)


def test_noisy_keeps_folded_gates() -> None:
    """h·h is the identity; transpiled without optimisation each h still costs an sx, so a
    folded circuit is noisier than the unfolded one."""
    adapter = noisy(DepolarizingNoise(one_qubit=0.05))
    shots = 20_000
    plain = run(adapter, batch(spec("x q[0];\nmeasure q -> c;\n", 1, 1)), shots, "plain")
    folded_body = "h q[0];\n" * 6 + "x q[0];\nmeasure q -> c;\n"
    folded = run(adapter, batch(spec(folded_body, 1, 1)), shots, "folded")
    assert folded.counts[0].get("0", 0) > plain.counts[0].get("0", 0) + 0.05 * shots


def test_noisy_routes_uncoupled_pairs() -> None:
    # qubits 0 and 2 are not coupled on guadalupe: the circuit is mapped, not run noiselessly.
    circuits = batch(spec("x q[0];\ncx q[0],q[2];\nmeasure q -> c;\n", 3, 3))
    counts = run(noisy(), circuits, 4000, "route").counts[0]
    assert max(counts, key=lambda k: counts[k]) == "101"


# --- registry ----------------------------------------------------------------------------


def test_registry_caches_per_choice() -> None:
    ideal = get_adapter(BackendChoice())
    assert get_adapter(BackendChoice()) is ideal
    guadalupe = BackendChoice(device="noisy", noise_profile="ibm_guadalupe")
    assert get_adapter(guadalupe) is get_adapter(guadalupe)
    assert get_adapter(guadalupe) is not ideal


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        (BackendChoice(device="foo"),
         "unknown device 'foo' for provider aer; allowed: ideal, noisy"),
        (BackendChoice(device="noisy"), "noisy needs noise_profile; available: ibm_guadalupe"),
        (BackendChoice(device="noisy", noise_profile="x"), "available: ibm_guadalupe"),
        (BackendChoice(device="ideal", noise_profile="ibm_guadalupe"), "use device noisy"),
    ],
)  # fmt: skip
def test_registry_errors_name_what_is_allowed(choice: BackendChoice, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        get_adapter(choice)
    assert message in str(caught.value)
