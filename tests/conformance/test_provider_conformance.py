"""One provider conformance suite, run against every adapter through the protocol only.

Backends: Aer ideal, Aer noisy (ibm_guadalupe), Braket `braket_sv`, Braket `braket_dm`
(ibm_guadalupe) and Braket through the QPU stand-in (Guadalupe-16, which runs the ibm_guadalupe
profile). Every circuit reaches a backend as qloop sends it: the request goes through qloop's
own preprocess and plan for that backend (ZNE off, readout off), so the batch is in the
backend's basis gates on its coupling map, clbit i measuring logical qubit i.

Tolerances, as total variation distance (TVD) from the exact ideal distribution p:
- noiseless: the mean TVD of an N-shot sample is at most ½ Σ sqrt(p(1-p)/N) (Jensen), and one
  shot moves the TVD by at most 1/N, so by McDiarmid it exceeds that mean by
  sqrt(ln(1/δ)/(2N)) with probability at most δ = 1e-6;
- noisy: a run is the ideal distribution with probability F (nothing went wrong) mixed with
  something else, so its TVD is at most 1 - F plus the shot tolerance. F is qloop's own
  estimate (calibrated gate and readout errors); it leaves out decoherence while qubits wait,
  which the noise models include, and falls short of the measured TVD by up to 1.34x on these
  circuits, hence NOISE_MARGIN = 1.5.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from qiskit.quantum_info import Statevector

from activities.experiment.plan import plan
from activities.experiment.preprocess import preprocess
from activities.experiment.prevalidate import estimated_fidelity
from activities.numerics.circuits import load_qasm2, parse_qasm, to_logical
from activities.storage import artifact_store
from activities.variational.batch_preparation import prepare_batch
from adapters import registry
from adapters.base import Adapter
from adapters.braket_aws import BraketAwsAdapter, task_client_token
from adapters.errors import (
    InvalidRequestError,
    JobFailedError,
    RejectedError,
    TransientError,
)
from adapters.profiles import load_profile
from adapters.registry import get_adapter
from schemas.execution import CircuitBatch, CircuitSpec, JobRef, JobState
from schemas.pipeline import PlanInput, PlannedBatch, PreparedCircuits, PreprocessInput
from schemas.request import BackendChoice, ExperimentRequest
from schemas.variational import BatchInput, EvaluationSpec, VqeFamily
from tests.harness import OFFLINE_QPU, QPU, LocalStack

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "qasmbench"
QASMBENCH = ("bell_n4", "deutsch_n2", "fredkin_n3", "toffoli_n3", "qft_n4")
HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
X_ON_QUBIT_0 = "x_on_qubit_0"
CIRCUITS = {
    **{name: (CORPUS / f"{name}.qasm").read_text() for name in QASMBENCH},
    X_ON_QUBIT_0: HEADER + "qreg q[3];\ncreg c[3];\nx q[0];\nmeasure q -> c;\n",
}
PROFILE = "ibm_guadalupe"
UNKNOWN_QPU = "arn:aws:braket:us-east-1::device/qpu/qloop/Nowhere-1"
SHOTS = 2000
SEED = 11
FAILURE_PROBABILITY = 1e-6
NOISE_MARGIN = 1.5
JOB_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Backend:
    id: str
    choice: BackendChoice
    noise_profile: str | None = None  # where its noise comes from; None: noiseless

    @property
    def standin(self) -> bool:
        return self.choice.device == QPU


BACKENDS = (
    Backend("aer-ideal", BackendChoice(provider="aer", device="ideal")),
    Backend(
        "aer-noisy",
        BackendChoice(provider="aer", device="noisy", noise_profile=PROFILE),
        PROFILE,
    ),
    Backend("braket-sv", BackendChoice(provider="braket", device="braket_sv")),
    Backend(
        "braket-dm",
        BackendChoice(provider="braket", device="braket_dm", noise_profile=PROFILE),
        PROFILE,
    ),
    Backend("braket-standin", BackendChoice(provider="braket", device=QPU), PROFILE),
)


@dataclass(frozen=True)
class Planned:
    """One circuit as qloop sends it to a backend, its exact ideal distribution, and how far
    from that distribution the backend's counts may be."""

    spec: CircuitSpec
    exact: dict[str, float]
    tolerance: float

    @property
    def batch(self) -> CircuitBatch:
        return CircuitBatch(circuits=[self.spec])


@dataclass(frozen=True)
class Run:
    planned: dict[str, Planned]
    counts: dict[str, dict[str, int]]


# --- distributions and tolerances ---------------------------------------------------------------


def exact_distribution(qasm: str) -> dict[str, float]:
    logical = to_logical(parse_qasm(qasm))
    return {k: p for k, p in Statevector(logical).probabilities_dict().items() if p > 1e-12}


def shot_tolerance(exact: dict[str, float], shots: int) -> float:
    mean = 0.5 * sum(math.sqrt(p * (1 - p) / shots) for p in exact.values())
    return mean + math.sqrt(math.log(1 / FAILURE_PROBABILITY) / (2 * shots))


def tvd(exact: dict[str, float], counts: dict[str, int]) -> float:
    shots = sum(counts.values())
    keys = exact.keys() | counts.keys()
    return 0.5 * sum(abs(exact.get(k, 0.0) - counts.get(k, 0) / shots) for k in keys)


# --- qloop's path from a request to a batch -------------------------------------------------------


def request_for(qasm: str, choice: BackendChoice) -> ExperimentRequest:
    width = to_logical(parse_qasm(qasm)).num_qubits
    return ExperimentRequest.model_validate(
        {
            "name": "conformance",
            "problem": {
                "kind": "qasm",
                "qasm": qasm,
                "observable": {"kind": "bitstring_probability", "bitstrings": ["0" * width]},
            },
            "execution": {"shots": SHOTS, "seed": SEED, "backend": choice.model_dump()},
            "mitigation": {"zne": None, "readout": False},
        }
    )


def plan_circuit(backend: Backend, name: str, qasm: str) -> Planned:
    request = request_for(qasm, backend.choice)
    experiment_id = f"{backend.id}-{name}-{uuid.uuid4().hex[:8]}"
    prepared = preprocess(PreprocessInput(experiment_id=experiment_id, request=request))
    planned = plan(PlanInput(experiment_id=experiment_id, request=request, prepared=prepared))
    (spec,) = artifact_store.read_model(planned.batch_uri, PlannedBatch).batch.circuits
    exact = exact_distribution(qasm)
    tolerance = shot_tolerance(exact, SHOTS)
    if backend.noise_profile is not None:
        measured = artifact_store.read_model(
            prepared.artifact_uri, PreparedCircuits
        ).measured_physical_qubits
        fidelity = estimated_fidelity(
            load_qasm2(spec.qasm), measured, load_profile(backend.noise_profile)
        )
        tolerance += NOISE_MARGIN * (1 - fidelity)
    return Planned(spec, exact, tolerance)


def wait_final(adapter: Adapter, job: JobRef) -> JobState:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (state := adapter.status(job).state).is_final:
        assert time.monotonic() < deadline, f"job {job.job_id} still {state}"
        time.sleep(0.05)
    return state


def run_to_completion(adapter: Adapter, batch: CircuitBatch, token: str) -> list[dict[str, int]]:
    job = adapter.submit(batch, SHOTS, token, SEED)
    assert wait_final(adapter, job) is JobState.DONE, adapter.status(job).message
    return adapter.result(job).counts


def token() -> str:
    return f"conformance-{uuid.uuid4().hex[:16]}"


def wider_than(num_qubits: int) -> CircuitBatch:
    """A circuit that touches one qubit more than the device has."""
    width = num_qubits + 1
    qasm = HEADER + f"qreg q[{width}];\ncreg c[{width}];\nx q;\nmeasure q -> c;\n"
    spec = CircuitSpec(name="too-wide", qasm=qasm, num_qubits=width, num_clbits=width)
    return CircuitBatch(circuits=[spec])


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Only the QPU stand-in (and its S3) of the local stack, on free ports."""
    stack = LocalStack(tmp_path_factory.mktemp("conformance"), task_queue="conformance")
    try:
        stack.sh("standin-start")
        with pytest.MonkeyPatch.context() as env:
            for line in stack.sh("standin-env").splitlines():
                key, _, value = line.partition("=")
                env.setenv(key, value)
            env.delenv("AWS_PROFILE", raising=False)
            # The registry keeps one adapter per choice, with the endpoints of its first use.
            env.setattr(registry, "_CACHE", {})
            stack.set_faults()
            yield stack
    finally:
        stack.sh("standin-stop")


@pytest.fixture
def standin(standin_stack: LocalStack) -> LocalStack:
    """The stand-in with no faults and short queues, whatever the last test left."""
    standin_stack.set_faults()
    return standin_stack


@pytest.fixture(scope="module", params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    if chosen.standin:
        request.getfixturevalue("standin_stack").set_faults()
    return chosen


@pytest.fixture
def adapter(backend: Backend, request: pytest.FixtureRequest) -> Adapter:
    if backend.standin:
        request.getfixturevalue("standin")
    return get_adapter(backend.choice)


@pytest.fixture(scope="module")
def run(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Every circuit planned for the backend and run in one batch, once per backend."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("QLOOP_HOME", str(tmp_path_factory.mktemp(f"run-{backend.id}")))
        planned = {name: plan_circuit(backend, name, qasm) for name, qasm in CIRCUITS.items()}
        batch = CircuitBatch(circuits=[p.spec for p in planned.values()])
        counts = run_to_completion(get_adapter(backend.choice), batch, token())
    return Run(planned, dict(zip(planned, counts, strict=True)))


@pytest.fixture
def jobs_created(
    backend: Backend, qloop_home: Path, request: pytest.FixtureRequest
) -> Callable[[], int]:
    """How many jobs exist: tasks the stand-in accepted, or local jobs in QLOOP_HOME."""
    if backend.standin:
        stack: LocalStack = request.getfixturevalue("standin")
        return lambda: len(stack.tasks())
    return lambda: sum(1 for _ in qloop_home.rglob("request.json"))


# --- every backend ------------------------------------------------------------------------------


@pytest.mark.parametrize("circuit", list(CIRCUITS))
def test_distribution_agrees_with_the_ideal(backend: Backend, run: Run, circuit: str) -> None:
    planned, counts = run.planned[circuit], run.counts[circuit]
    assert sum(counts.values()) == SHOTS
    distance = tvd(planned.exact, counts)
    assert distance <= planned.tolerance, (
        f"{circuit} on {backend.id}: TVD {distance:.3f} > tolerance {planned.tolerance:.3f}"
    )


def test_bit_order_is_canonical(backend: Backend, run: Run) -> None:
    """X on qubit 0 of 3 reads "001": clbit 0 is the rightmost character everywhere."""
    counts = run.counts[X_ON_QUBIT_0]
    assert max(counts, key=counts.__getitem__) == "001", counts
    if backend.noise_profile is None:
        assert counts == {"001": SHOTS}


def test_submit_is_idempotent_on_the_token(
    backend: Backend, adapter: Adapter, run: Run, request: pytest.FixtureRequest
) -> None:
    names = (X_ON_QUBIT_0, "deutsch_n2")
    batch = CircuitBatch(circuits=[run.planned[name].spec for name in names])
    same = token()
    first = adapter.submit(batch, SHOTS, same, SEED)
    second = adapter.submit(batch, SHOTS, same, SEED)
    assert second.job_id == first.job_id
    assert second.client_token == same
    if backend.standin:
        per_token = request.getfixturevalue("standin").tasks_per_token()
        mine = {t: n for t, n in per_token.items() if t.startswith(same)}
        # The stand-in runs program sets: both circuits are one task.
        assert len(first.part_ids) == 1
        assert mine == {task_client_token(same, 0): 1}


def test_a_token_reused_for_another_job_is_invalid(adapter: Adapter, run: Run) -> None:
    batch, same = run.planned[X_ON_QUBIT_0].batch, token()
    adapter.submit(batch, SHOTS, same, SEED)
    with pytest.raises(InvalidRequestError, match="already used"):
        adapter.submit(batch, SHOTS + 1, same, SEED)


def test_cancel_of_a_finished_job_changes_nothing(adapter: Adapter, run: Run) -> None:
    job = adapter.submit(run.planned[X_ON_QUBIT_0].batch, SHOTS, token(), SEED)
    assert wait_final(adapter, job) is JobState.DONE
    adapter.cancel(job)
    assert adapter.status(job).state is JobState.DONE
    assert sum(adapter.result(job).counts[0].values()) == SHOTS


def test_cancel_of_a_pending_job(
    backend: Backend, adapter: Adapter, run: Run, request: pytest.FixtureRequest
) -> None:
    """The stand-in holds the task in its queue, so cancel must win. A local job may already
    have finished when cancel arrives; the job store then keeps its result (done)."""
    if backend.standin:
        request.getfixturevalue("standin").set_faults(queue_delay_s=60)
    job = adapter.submit(run.planned[X_ON_QUBIT_0].batch, SHOTS, token(), SEED)
    if backend.standin:
        assert adapter.status(job).state is JobState.QUEUED
    adapter.cancel(job)
    state = wait_final(adapter, job)
    allowed = {JobState.CANCELLED} if backend.standin else {JobState.CANCELLED, JobState.DONE}
    assert state in allowed
    adapter.cancel(job)  # cancelling again is harmless
    assert adapter.status(job).state is state
    if state is JobState.CANCELLED:
        with pytest.raises(JobFailedError, match="cancel"):
            adapter.result(job)


def test_shots_above_the_maximum_are_invalid_before_any_job(
    adapter: Adapter, run: Run, jobs_created: Callable[[], int]
) -> None:
    before = jobs_created()
    too_many = adapter.capabilities().max_shots + 1
    with pytest.raises(InvalidRequestError, match="shots"):
        adapter.submit(run.planned[X_ON_QUBIT_0].batch, too_many, token(), SEED)
    assert jobs_created() == before


def test_a_batch_wider_than_the_device_is_invalid_before_any_job(
    adapter: Adapter, jobs_created: Callable[[], int]
) -> None:
    before = jobs_created()
    with pytest.raises(InvalidRequestError, match="qubits"):
        adapter.submit(wider_than(adapter.capabilities().num_qubits), SHOTS, token(), SEED)
    assert jobs_created() == before


def test_a_template_runs_once_per_binding_in_binding_order(
    backend: Backend, adapter: Adapter, request: pytest.FixtureRequest
) -> None:
    """A parameterized batch as prepare_batch builds it for the backend: a two-qubit
    hardware-efficient template (RY layer, CNOT, RY layer) at four points whose ideal outputs
    are four different basis states. Each binding is one result, in binding order, with the
    most frequent outcome that basis state (all shots when noiseless); remote hardware gets one
    task per binding."""
    family = VqeFamily.model_validate(
        {"hamiltonian": {"terms": [{"pauli": "ZI"}, {"pauli": "IZ"}]}, "ansatz": {"reps": 1}}
    )
    pi = math.pi
    points = {"00": [0, 0, 0, 0], "11": [pi, 0, 0, 0], "10": [0, 0, 0, pi], "01": [0, 0, pi, 0]}
    evaluation = EvaluationSpec(backend=backend.choice, shots=SHOTS, seed=SEED)
    batch = BatchInput(
        owner_id="conformance",
        label=backend.id,
        family=family,
        points=list(points.values()),
        evaluation=evaluation,
    )
    prepared = prepare_batch(batch)
    planned = artifact_store.read_model(prepared.batch_uri, PlannedBatch).batch
    assert prepared.num_circuits == planned.num_executions == len(points)
    same = token()
    counts = run_to_completion(adapter, planned, same)
    assert len(counts) == len(points)
    for expected, found in zip(points, counts, strict=True):
        assert max(found, key=found.__getitem__) == expected, (expected, found)
        if backend.noise_profile is None:
            assert found == {expected: SHOTS}
    if backend.standin:
        per_token = request.getfixturevalue("standin").tasks_per_token()
        mine = {t: n for t, n in per_token.items() if t.startswith(same)}
        assert mine == {task_client_token(same, 0): 1}
        assert prepared.cost_estimate.usd == pytest.approx(0.30 + len(points) * SHOTS * 0.0009)


# --- the stand-in only: what only remote hardware can do ---------------------------------------


def standin_batch() -> CircuitBatch:
    return plan_circuit(BACKENDS[-1], X_ON_QUBIT_0, CIRCUITS[X_ON_QUBIT_0]).batch


def test_the_same_token_from_another_machine_finds_the_same_task(
    standin: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's clientToken, not qloop's record of the job (in the shared database, here
    another machine's own), makes a retried submit safe."""
    batch, same = standin_batch(), token()
    first = get_adapter(BackendChoice(provider="braket", device=QPU)).submit(
        batch, SHOTS, same, SEED
    )
    monkeypatch.setenv("QLOOP_HOME", str(tmp_path / "another-machine"))
    second = BraketAwsAdapter(QPU).submit(batch, SHOTS, same, SEED)
    assert second.job_id == first.job_id
    assert {t: n for t, n in standin.tasks_per_token().items() if t.startswith(same)} == {
        task_client_token(same, 0): 1
    }


def test_an_offline_device_is_rejected_before_any_task(standin: LocalStack) -> None:
    batch, before = standin_batch(), len(standin.tasks())
    offline = get_adapter(BackendChoice(provider="braket", device=OFFLINE_QPU))
    with pytest.raises(RejectedError, match="OFFLINE"):
        offline.submit(batch, SHOTS, token(), SEED)
    assert len(standin.tasks()) == before


def test_an_unknown_device_arn_is_invalid(standin: LocalStack) -> None:
    batch, before = standin_batch(), len(standin.tasks())
    unknown = get_adapter(BackendChoice(provider="braket", device=UNKNOWN_QPU))
    with pytest.raises(InvalidRequestError, match="ResourceNotFound"):
        unknown.capabilities()
    with pytest.raises(InvalidRequestError, match="ResourceNotFound"):
        unknown.submit(batch, SHOTS, token(), SEED)
    assert len(standin.tasks()) == before


def test_throttling_is_transient(standin: LocalStack) -> None:
    adapter = get_adapter(BackendChoice(provider="braket", device=QPU))
    batch = standin_batch()
    job = adapter.submit(batch, SHOTS, token(), SEED)
    before = len(standin.tasks())
    standin.set_faults(throttle_rate=1.0)
    with pytest.raises(TransientError, match="Throttling"):
        adapter.submit(batch, SHOTS, token(), SEED)
    with pytest.raises(TransientError, match="Throttling"):
        adapter.status(job)
    standin.set_faults()
    assert len(standin.tasks()) == before
    assert wait_final(adapter, job) is JobState.DONE


# --- the stand-in's program sets ----------------------------------------------------------------

STANDIN_PROGRAM_SETS = {"max_executables": 100, "max_total_shots": 200_000}


@pytest.fixture
def program_set_limits(standin: LocalStack) -> Iterator[Callable[[dict[str, int] | None], None]]:
    """Sets the stand-in QPU's program-set limits (None: it runs none); put back afterwards."""

    def set_limits(limits: dict[str, int] | None) -> None:
        standin.admin("config", {"devices": {QPU: {"program_sets": limits}}})

    yield set_limits
    set_limits(STANDIN_PROGRAM_SETS)


def basis_state_batch(states: list[str]) -> CircuitBatch:
    """One planned circuit per 3-qubit basis state (clbit 0 on the right), in that order."""
    specs = []
    for state in states:
        flips = "".join(f"x q[{i}];\n" for i, bit in enumerate(reversed(state)) if bit == "1")
        qasm = HEADER + f"qreg q[3];\ncreg c[3];\n{flips}measure q -> c;\n"
        specs.append(plan_circuit(BACKENDS[-1], f"state-{state}", qasm).spec)
    return CircuitBatch(circuits=specs)


def standin_billed(standin: LocalStack, job: JobRef) -> Decimal:
    mine = set(job.part_ids)
    return sum(
        (Decimal(t["billedUsd"]) for t in standin.tasks() if t["quantumTaskArn"] in mine),
        Decimal(0),
    )


@pytest.mark.parametrize(
    ("limits", "tasks"),
    [(STANDIN_PROGRAM_SETS, 1), ({"max_executables": 2, "max_total_shots": 200_000}, 3), (None, 5)],
    ids=["one-program-set", "split-at-the-limit", "no-program-sets"],
)
def test_a_batch_is_as_few_tasks_as_the_device_allows_and_costs_what_is_billed(
    standin: LocalStack,
    program_set_limits: Callable[[dict[str, int] | None], None],
    limits: dict[str, int] | None,
    tasks: int,
) -> None:
    program_set_limits(limits)
    states = ["001", "010", "011", "100", "101"]
    batch = basis_state_batch(states)
    adapter = get_adapter(BackendChoice(provider="braket", device=QPU))
    job = adapter.submit(batch, SHOTS, token(), SEED)
    assert len(job.part_ids) == tasks
    assert wait_final(adapter, job) is JobState.DONE, adapter.status(job).message
    result = adapter.result(job)
    assert [max(found, key=found.__getitem__) for found in result.counts] == states
    assert all(sum(found.values()) == SHOTS for found in result.counts) and result.shots == SHOTS
    billed = standin_billed(standin, job)
    assert billed == Decimal("0.30") * tasks + Decimal("0.0009") * SHOTS * len(states)
    assert Decimal(str(adapter.estimate_cost(batch, SHOTS).usd)) == billed
    assert Decimal(str(result.cost_usd)) == billed
    cost = adapter.billed(job)
    assert cost is not None and Decimal(str(cost.usd)) == billed


def test_failed_executables_fail_the_job_and_cost_what_is_billed(standin: LocalStack) -> None:
    """Seed 0 draws 0.84, 0.76, 0.42, 0.26, 0.51, 0.40: at a rate of 0.5 the 3rd, 4th and
    6th circuits of the set fail, the others run; Braket bills the task for theirs."""
    batch = basis_state_batch(["001"] * 6)
    adapter = get_adapter(BackendChoice(provider="braket", device=QPU))
    standin.set_faults(seed=0, executable_failure_rate=0.5)
    job = adapter.submit(batch, SHOTS, token(), SEED)
    assert wait_final(adapter, job) is JobState.FAILED
    assert "3 of 6 executables of the program set failed" in (adapter.status(job).message or "")
    with pytest.raises(JobFailedError, match="3 of 6 circuits failed: circuit 2: injected"):
        adapter.result(job)
    billed = standin_billed(standin, job)
    assert billed == Decimal("0.30") + Decimal("0.0009") * SHOTS * 3
    cost = adapter.billed(job)
    assert cost is not None and Decimal(str(cost.usd)) == billed
