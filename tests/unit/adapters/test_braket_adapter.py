"""The Braket adapter: real LocalSimulator and qiskit-braket-provider; botocore's Stubber on a
real braket client where AWS itself would answer."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from adapters import braket_local, local_jobs
from adapters.aer import AerAdapter
from adapters.braket_aws import BraketAwsAdapter, result_counts, task_client_token
from adapters.braket_errors import classify
from adapters.braket_local import BraketLocalAdapter
from adapters.errors import (
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    RejectedError,
    TransientError,
)
from adapters.pricing import price_table
from adapters.registry import get_adapter
from schemas.execution import CircuitBatch, CircuitSpec, JobRef, JobResult, JobState, Tier
from schemas.request import BackendChoice, DepolarizingNoise

HEADER = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
BELL_BODY = "h q[0];\ncx q[0],q[1];\nmeasure q -> c;\n"
GHZ_BODY = "h q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n"
FORTE = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"


def spec(body: str, qubits: int, name: str = "c0") -> CircuitSpec:
    qasm = HEADER + f"qreg q[{qubits}];\ncreg c[{qubits}];\n" + body
    return CircuitSpec(name=name, qasm=qasm, num_qubits=qubits, num_clbits=qubits)


def batch(*specs: CircuitSpec) -> CircuitBatch:
    return CircuitBatch(circuits=list(specs))


def wait_final(adapter: Any, job: JobRef, timeout: float = 120.0) -> JobState:
    deadline = time.monotonic() + timeout
    while True:
        state = adapter.status(job).state
        if state.is_final or time.monotonic() > deadline:
            return state
        time.sleep(0.01)


def run(adapter: Any, circuits: CircuitBatch, shots: int, token: str) -> JobResult:
    job = adapter.submit(circuits, shots, token, seed=11)
    assert wait_final(adapter, job) is JobState.DONE
    result: JobResult = adapter.result(job)
    return result


# --- local simulators ----------------------------------------------------------------------


def test_bell_and_ghz_distributions_on_braket_sv() -> None:
    shots = 4000
    result = run(BraketLocalAdapter(), batch(spec(BELL_BODY, 2), spec(GHZ_BODY, 3)), shots, "sv")
    bell, ghz = result.counts
    assert set(bell) == {"00", "11"} and set(ghz) == {"000", "111"}
    assert bell["00"] / shots == pytest.approx(0.5, abs=0.05)
    assert ghz["000"] / shots == pytest.approx(0.5, abs=0.05)
    assert result.shots == shots and result.cost_usd == 0.0


def test_canonical_bit_order_is_the_same_as_aer() -> None:
    """X on qubit 0 of 3 reads "001"; an asymmetric 4-qubit pattern pins every position."""
    circuits = batch(
        spec("x q[0];\nmeasure q -> c;\n", 3, name="x0"),
        spec("x q[1];\nx q[3];\nmeasure q -> c;\n", 4, name="x13"),
    )
    braket_counts = run(BraketLocalAdapter(), circuits, 50, "order").counts
    assert braket_counts == [{"001": 50}, {"1010": 50}]
    assert run(AerAdapter(), circuits, 50, "order").counts == braket_counts


def test_measurements_into_permuted_clbits_keep_clbit_order() -> None:
    qasm = HEADER + "qreg q[3];\ncreg c[3];\nx q[2];\n"
    qasm += "measure q[2] -> c[0];\nmeasure q[0] -> c[1];\nmeasure q[1] -> c[2];\n"
    circuits = batch(CircuitSpec(name="perm", qasm=qasm, num_qubits=3, num_clbits=3))
    assert run(BraketLocalAdapter(), circuits, 20, "perm").counts == [{"001": 20}]


def test_same_seed_same_counts() -> None:
    adapter = BraketLocalAdapter()
    circuits = batch(spec(GHZ_BODY, 3))
    assert run(adapter, circuits, 500, "s1").counts == run(adapter, circuits, 500, "s2").counts


def test_braket_dm_noise_matches_aer_noisy_on_the_same_profile() -> None:
    """GHZ-3 on ibm_guadalupe: the Braket noise model has the very channels of the Aer one,
    on the same layout, so their error rates (~7 %) differ only by sampling: with 20,000 shots
    each, the difference has a standard deviation of about 0.0026; 0.012 is 4.5 of them."""
    shots = 20_000
    circuits = batch(spec(GHZ_BODY, 3))
    dm = run(BraketLocalAdapter("braket_dm", "ibm_guadalupe"), circuits, shots, "dm").counts[0]
    aer = run(AerAdapter("noisy", "ibm_guadalupe"), circuits, shots, "aer").counts[0]

    def error_rate(counts: dict[str, int]) -> float:
        return 1 - (counts.get("000", 0) + counts.get("111", 0)) / shots

    assert 0.02 < error_rate(dm) < 0.2
    assert error_rate(dm) == pytest.approx(error_rate(aer), abs=0.012)


def test_braket_dm_readout_error_is_asymmetric_like_the_profile() -> None:
    """X then measure on qubit 0: reads 0 with P(0|1) plus the X gate's small error."""
    shots = 100_000
    adapter = BraketLocalAdapter("braket_dm", "ibm_guadalupe")
    counts = run(adapter, batch(spec("x q[0];\nmeasure q -> c;\n", 1)), shots, "ro").counts[0]
    assert counts.get("0", 0) / shots == pytest.approx(0.0214, abs=0.004)


def test_extra_depolarizing_makes_braket_dm_noisier() -> None:
    shots = 20_000
    circuits = batch(spec(GHZ_BODY, 3))
    plain = BraketLocalAdapter("braket_dm", "ibm_guadalupe")
    extra = BraketLocalAdapter("braket_dm", "ibm_guadalupe", DepolarizingNoise(two_qubit=0.1))
    good = run(plain, circuits, shots, "plain").counts[0]
    bad = run(extra, circuits, shots, "extra").counts[0]
    assert bad["000"] + bad["111"] < good["000"] + good["111"] - 0.05 * shots


def test_local_capabilities() -> None:
    sv = BraketLocalAdapter().capabilities()
    assert sv.provider == "braket" and sv.tier is Tier.SIMULATOR and sv.num_qubits == 26
    dm = BraketLocalAdapter("braket_dm", "ibm_guadalupe").capabilities()
    assert dm.tier is Tier.NOISY_SIMULATOR and dm.num_qubits == 13
    assert dm.basis_gates == ["cx", "id", "rz", "sx", "x"] and dm.coupling_map
    assert BraketLocalAdapter().estimate_cost(batch(spec(BELL_BODY, 2)), 100).usd == 0.0


def test_same_token_is_the_same_local_job(qloop_home: Path) -> None:
    adapter = BraketLocalAdapter()
    first = adapter.submit(batch(spec(BELL_BODY, 2)), 100, "tok", seed=1)
    assert adapter.submit(batch(spec(BELL_BODY, 2)), 100, "tok", seed=1) == first
    assert wait_final(adapter, first) is JobState.DONE
    assert BraketLocalAdapter().submit(batch(spec(BELL_BODY, 2)), 100, "tok", seed=1) == first
    assert [p.name for p in (qloop_home / "braket-local-jobs").iterdir()] == ["tok"]
    with pytest.raises(InvalidRequestError, match="already used"):
        adapter.submit(batch(spec(GHZ_BODY, 3)), 100, "tok", seed=1)


def test_cancel_before_it_runs_and_orphans_restart() -> None:
    adapter = BraketLocalAdapter()
    request = adapter._new_request(batch(spec(BELL_BODY, 2)), 100, "orphan", 3)
    braket_local._LOCAL_STORE.create(braket_local._LOCAL_STORE.job_dir("orphan"), request)
    job = local_jobs.job_ref(request)  # a submitter that died before simulating
    assert wait_final(adapter, job) is JobState.DONE  # restarted by status
    cancelled = adapter._new_request(batch(spec(BELL_BODY, 2)), 100, "cancel-me", 3)
    braket_local._LOCAL_STORE.create(braket_local._LOCAL_STORE.job_dir("cancel-me"), cancelled)
    job = local_jobs.job_ref(cancelled)
    adapter.cancel(job)
    assert adapter.status(job).state is JobState.CANCELLED
    with pytest.raises(JobFailedError, match="cancelled"):
        adapter.result(job)


@pytest.mark.parametrize(
    ("adapter", "circuits", "shots", "message"),
    [
        (BraketLocalAdapter(), batch(spec(BELL_BODY, 2)), 0, "shots must be between"),
        (BraketLocalAdapter("braket_dm"), batch(spec("measure q -> c;\n", 14)), 10,
         "takes at most 13"),
        (BraketLocalAdapter(), batch(spec("h q[0];\nmeasure q[0] -> c[0];\n", 2)), 10,
         "never measures clbits [1]"),
    ],
)  # fmt: skip
def test_local_refusals_leave_no_job(
    adapter: BraketLocalAdapter, circuits: CircuitBatch, shots: int, message: str, qloop_home: Path
) -> None:
    with pytest.raises(InvalidRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        adapter.submit(circuits, shots, "refused", seed=1)
    assert not (qloop_home / "braket-local-jobs" / "refused").exists()


# --- choosing a Braket backend -------------------------------------------------------------


def test_registry_serves_braket_choices() -> None:
    assert BackendChoice(provider="braket").device == "braket_sv"
    assert isinstance(get_adapter(BackendChoice(provider="braket")), BraketLocalAdapter)
    dm = BackendChoice(provider="braket", device="braket_dm", noise_profile="ibm_guadalupe")
    assert isinstance(get_adapter(dm), BraketLocalAdapter)
    forte = BackendChoice(provider="braket", device=FORTE)
    assert isinstance(get_adapter(forte), BraketAwsAdapter)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"device": "ideal"}, "allowed: braket_sv, braket_dm or a Braket device ARN"),
        ({"device": "arn:aws:s3:::bucket"}, "is not a Braket device ARN"),
        ({"device": "braket_sv", "noise_profile": "ibm_guadalupe"}, "apply to braket_dm only"),
        ({"device": FORTE, "extra_depolarizing": {"one_qubit": 0.1}}, "apply to braket_dm only"),
    ],
)
def test_invalid_braket_choices_name_what_is_allowed(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackendChoice(provider="braket", **fields)


# --- real devices through the Braket API (Stubber) -------------------------------------------

TASK = "arn:aws:braket:us-east-1:123456789012:quantum-task/"
BUCKET, PREFIX = "qloop-results", "experiments"


def capabilities_json(
    status_ops: list[str],
    qubits: int = 4,
    max_shots: int = 10_000,
    native: tuple[str, ...] = ("gpi", "gpi2", "ms"),
) -> str:
    return json.dumps({
        "braketSchemaHeader": {
            "name": "braket.device_schema.ionq.ionq_device_capabilities", "version": "1"},
        "service": {
            "braketSchemaHeader": {
                "name": "braket.device_schema.device_service_properties", "version": "1"},
            "executionWindows": [
                {"executionDay": "Everyday", "windowStartHour": "00:00", "windowEndHour": "23:59"}
            ],
            "shotsRange": [1, max_shots],
            "updatedAt": "2026-11-01T00:00:00",
        },
        "action": {
            "braket.ir.openqasm.program": {
                "actionType": "braket.ir.openqasm.program",
                "version": ["1"],
                "supportedOperations": status_ops,
                "supportedResultTypes": [],
            }
        },
        "paradigm": {
            "braketSchemaHeader": {
                "name": "braket.device_schema.gate_model_qpu_paradigm_properties",
                "version": "1"},
            "qubitCount": qubits,
            "nativeGateSet": list(native),
            "connectivity": {"fullyConnected": True, "connectivityGraph": {}},
        },
        "deviceParameters": {},
    })  # fmt: skip


IONQ_OPS = ["x", "y", "z", "h", "cnot", "rx", "ry", "rz", "s", "si", "t", "ti", "v", "vi"]


def device_response(status: str = "ONLINE", **kwargs: Any) -> dict[str, Any]:
    return {
        "deviceArn": FORTE,
        "deviceName": "Forte 1",
        "providerName": "IonQ",
        "deviceType": "QPU",
        "deviceStatus": status,
        "deviceCapabilities": capabilities_json(kwargs.pop("ops", IONQ_OPS), **kwargs),
    }


def task_response(arn: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "quantumTaskArn": arn,
        "status": status,
        "deviceArn": FORTE,
        "deviceParameters": "{}",
        "shots": 1000,
        "outputS3Bucket": BUCKET,
        "outputS3Directory": f"{PREFIX}/{arn.rsplit('/', 1)[1]}",
        "createdAt": datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        **extra,
    }


class Aws:
    """A real braket and s3 client with Stubbers, and every CreateQuantumTask's parameters."""

    def __init__(self) -> None:
        session = boto3.Session(
            region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )
        config = Config(retries={"mode": "standard", "max_attempts": 1})
        self.braket_client = session.client("braket", config=config)
        self.s3_client = session.client("s3", config=config)
        self.braket = Stubber(self.braket_client)
        self.s3 = Stubber(self.s3_client)
        self.created: list[dict[str, Any]] = []
        self.braket_client.meta.events.register(
            "provide-client-params.braket.CreateQuantumTask",
            lambda params, **_: self.created.append(dict(params)),
        )
        self.braket.activate()
        self.s3.activate()

    def adapter(self) -> BraketAwsAdapter:
        return BraketAwsAdapter(FORTE, braket_client=self.braket_client, s3_client=self.s3_client)

    def get_device(self, **kwargs: Any) -> None:
        self.braket.add_response("get_device", device_response(**kwargs), {"deviceArn": FORTE})

    def create(self, token: str, index: int, tags: dict[str, str] | None = None) -> None:
        expected: dict[str, Any] = {
            "deviceArn": FORTE,
            "action": ANY,
            "deviceParameters": ANY,
            "shots": 1000,
            "outputS3Bucket": BUCKET,
            "outputS3KeyPrefix": PREFIX,
            "clientToken": task_client_token(token, index),
            **({"tags": tags} if tags else {}),
        }
        response = {"quantumTaskArn": f"{TASK}t{index}"}
        self.braket.add_response("create_quantum_task", response, expected)

    def get_task(self, arn: str, status: str, **extra: Any) -> None:
        expected = {"quantumTaskArn": arn, "additionalAttributeNames": ["QueueInfo"]}
        self.braket.add_response("get_quantum_task", task_response(arn, status, **extra), expected)

    def done(self) -> None:
        self.braket.assert_no_pending_responses()
        self.s3.assert_no_pending_responses()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Aws:
    monkeypatch.setenv("QLOOP_BRAKET_S3_BUCKET", BUCKET)
    monkeypatch.setenv("QLOOP_BRAKET_S3_PREFIX", PREFIX)
    return Aws()


def submitted(
    aws: Aws, token: str = "qloop-abc", circuits: int = 2, tags: dict[str, str] | None = None
) -> JobRef:
    aws.get_device()
    for index in range(circuits):
        aws.create(token, index, tags)
    specs = [spec(BELL_BODY, 2, name=f"c{i}") for i in range(circuits)]
    return aws.adapter().submit(batch(*specs), 1000, token, seed=5, tags=tags)


def test_every_task_carries_the_submissions_tags(aws: Aws) -> None:
    tags = {"qloop:account": "lab", "qloop:workflow-id": "exp-1", "qloop:token": "qloop-abc"}
    submitted(aws, circuits=2, tags=tags)
    aws.done()
    assert [created["tags"] for created in aws.created] == [tags, tags]


def test_braket_bills_completed_tasks_per_task_and_shot_and_nothing_else(aws: Aws) -> None:
    def task(status: str, shots: int = 1000) -> dict[str, Any]:
        found = {"quantumTaskArn": f"{TASK}{status}", "status": status, "shots": shots}
        # GetQuantumTask says how many shots of a completed task succeeded.
        return found | ({"numSuccessfulShots": shots} if status == "COMPLETED" else {})

    adapter = aws.adapter()
    price = price_table().price_for(FORTE)
    assert adapter.bill([task("COMPLETED"), task("QUEUED")]) is None
    assert adapter.bill([task("COMPLETED"), task("CANCELLING")]) is None
    bill = adapter.bill(
        [task("COMPLETED"), task("FAILED"), task("CANCELLED"), task("COMPLETED", 10)]
    )
    assert bill is not None
    assert bill.usd == pytest.approx(float(price.task_cost(1000) + price.task_cost(10)))
    assert "2 of 4 tasks completed" in bill.detail
    nothing = adapter.bill([task("FAILED"), task("CANCELLED")])
    assert nothing is not None and nothing.usd == 0.0


def test_a_batch_is_one_task_per_circuit_with_deterministic_tokens(aws: Aws) -> None:
    job = submitted(aws, circuits=3)
    aws.done()
    assert job.job_id == f"{TASK}t0,{TASK}t1,{TASK}t2" and job.device == FORTE
    assert [c["clientToken"] for c in aws.created] == ["qloop-abc-0", "qloop-abc-1", "qloop-abc-2"]
    first = aws.created[0]
    assert first["shots"] == 1000 and first["outputS3Bucket"] == BUCKET
    assert first["outputS3KeyPrefix"] == PREFIX
    parameters = json.loads(first["deviceParameters"])
    assert parameters["paradigmParameters"] == {
        "braketSchemaHeader": {
            "name": "braket.device_schema.gate_model_parameters",
            "version": "1",
        },
        "qubitCount": 2,
        "disableQubitRewiring": True,
    }
    action = json.loads(first["action"])
    assert action["braketSchemaHeader"]["name"] == "braket.ir.openqasm.program"
    assert "h $0;\ncnot $0, $1;" in action["source"]  # physical qubits, no rewiring
    assert "b[0] = measure $0;\nb[1] = measure $1;" in action["source"]


def test_circuits_in_native_gates_run_verbatim(aws: Aws) -> None:
    aws.get_device(native=("h", "cnot"))
    aws.create("native", 0)
    aws.adapter().submit(batch(spec(BELL_BODY, 2)), 1000, "native", seed=1)
    source = json.loads(aws.created[0]["action"])["source"]
    assert "#pragma braket verbatim\nbox{\nh $0;\ncnot $0, $1;\n}" in source
    assert json.loads(aws.created[0]["deviceParameters"])["paradigmParameters"][
        "disableQubitRewiring"
    ]


def test_a_second_submit_with_the_same_token_creates_nothing(aws: Aws) -> None:
    first = submitted(aws)
    aws.get_device()  # compiling the circuits again reads the device
    again = aws.adapter().submit(
        batch(spec(BELL_BODY, 2, name="c0"), spec(BELL_BODY, 2, name="c1")), 1000, "qloop-abc", 5
    )
    assert again == first and len(aws.created) == 2
    aws.done()
    aws.get_device()
    with pytest.raises(InvalidRequestError, match="already used"):
        aws.adapter().submit(batch(spec(GHZ_BODY, 3)), 1000, "qloop-abc", 5)


def test_programs_compiled_once_are_submitted_without_a_circuit_library(aws: Aws) -> None:
    """What the orchestration role does: send the programs plan stored. A retry of a complete
    submit makes no call at all; the first call checks the device is online."""
    aws.get_device()
    circuits = batch(spec(BELL_BODY, 2, name="c0"), spec(BELL_BODY, 2, name="c1"))
    programs = aws.adapter().compile(circuits, 1000)
    assert [program.name for program in programs] == ["c0", "c1"]
    assert all("OPENQASM 3" in json.loads(p.action)["source"] for p in programs)
    aws.done()
    aws.get_device()
    aws.create("compiled", 0)
    aws.create("compiled", 1)
    first = aws.adapter().submit_programs(programs, 1000, "compiled")
    again = aws.adapter().submit_programs(programs, 1000, "compiled")
    aws.done()
    assert again == first and first.job_id == f"{TASK}t0,{TASK}t1"
    assert [c["action"] for c in aws.created] == [p.action for p in programs]


def test_submitting_to_an_offline_device_creates_no_task(aws: Aws) -> None:
    aws.get_device()
    programs = aws.adapter().compile(batch(spec(BELL_BODY, 2)), 1000)
    aws.get_device(status="OFFLINE")
    with pytest.raises(RejectedError, match="OFFLINE"):
        aws.adapter().submit_programs(programs, 1000, "offline")
    aws.done()
    assert aws.created == []


def test_a_submit_that_died_halfway_creates_only_the_rest_on_any_host(
    aws: Aws, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry runs on another host (another QLOOP_HOME, the same shared database)."""
    aws.get_device()
    aws.create("half", 0)
    aws.braket.add_client_error("create_quantum_task", "ThrottlingException", http_status_code=400)
    circuits = batch(spec(BELL_BODY, 2, name="c0"), spec(BELL_BODY, 2, name="c1"))
    with pytest.raises(TransientError, match="ThrottlingException"):
        aws.adapter().submit(circuits, 1000, "half", seed=5)
    other_host = tmp_path / "other-host"
    other_host.mkdir()
    monkeypatch.setenv("QLOOP_HOME", str(other_host))
    aws.get_device()
    aws.create("half", 1)
    job = aws.adapter().submit(circuits, 1000, "half", seed=5)
    aws.done()
    assert job.job_id == f"{TASK}t0,{TASK}t1"
    # The throttled call and its retry carry the same token: the service dedups either way.
    assert [c["clientToken"] for c in aws.created] == ["half-0", "half-1", "half-1"]


def test_long_tokens_are_hashed_to_64_characters() -> None:
    token = task_client_token("x" * 80, 12)
    assert len(token) == 64 and token.endswith("-12")
    assert token == task_client_token("x" * 80, 12) != task_client_token("x" * 80, 13)


def test_status_aggregates_tasks_with_queue_position(aws: Aws) -> None:
    job = submitted(aws)
    adapter = aws.adapter()
    queue = {"queue": "QUANTUM_TASKS_QUEUE", "position": "7", "queuePriority": "Normal"}
    aws.get_task(f"{TASK}t0", "QUEUED", queueInfo=queue)
    aws.get_task(f"{TASK}t1", "QUEUED", queueInfo={**queue, "position": ">2000"})
    status = adapter.status(job)
    assert status.state is JobState.QUEUED and status.queue_position == 2001
    aws.get_task(f"{TASK}t0", "COMPLETED")
    aws.get_task(f"{TASK}t1", "RUNNING")
    assert adapter.status(job).state is JobState.RUNNING
    aws.get_task(f"{TASK}t1", "FAILED", failureReason="device calibration failed")
    failed = adapter.status(job)  # t0 is final and not asked again
    assert failed.state is JobState.FAILED and "device calibration failed" in (failed.message or "")
    with pytest.raises(JobFailedError, match="device calibration failed"):
        adapter.result(job)
    aws.done()


def result_body(bits: list[list[int]], qubits: list[int]) -> dict[str, Any]:
    """The results.json the SDK reads from S3 (GateModelTaskResult v1)."""
    source = "OPENQASM 3.0;\nbit[2] b;\nx $0;\nb[0] = measure $0;\nb[1] = measure $1;"
    body = json.dumps({
            "braketSchemaHeader": {"name": "braket.task_result.gate_model_task_result",
                                   "version": "1"},
            "measurements": bits,
            "measuredQubits": qubits,
            "taskMetadata": {
                "braketSchemaHeader": {"name": "braket.task_result.task_metadata",
                                       "version": "1"},
                "id": f"{TASK}t0", "shots": len(bits), "deviceId": FORTE},
            "additionalMetadata": {"action": {
                "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
                "source": source}},
    }).encode()  # fmt: skip
    return {"Body": StreamingBody(io.BytesIO(body), len(body))}


def test_result_counts_are_canonical_and_priced(aws: Aws) -> None:
    job = submitted(aws, circuits=1)
    aws.get_task(f"{TASK}t0", "COMPLETED", endedAt=datetime(2026, 11, 22, 10, 1, tzinfo=UTC))
    # Braket: first measured qubit (clbit 0) on the LEFT; canonical: clbit 0 on the right.
    aws.s3.add_response(
        "get_object",
        result_body([[1, 0]] * 3 + [[1, 1]], [0, 1]),
        {"Bucket": BUCKET, "Key": f"{PREFIX}/t0/results.json"},
    )
    result = aws.adapter().result(job)
    aws.done()
    assert result.counts == [{"01": 3, "11": 1}]
    assert result.shots == 1000 and result.duration_seconds == 60.0
    assert result.cost_usd == 80.30  # $0.30 per task + 1,000 shots x $0.08


def test_results_are_read_as_the_braket_sdk_reads_them() -> None:
    """Per-shot measurements, else probabilities times the shots (as the SDK's
    GateModelQuantumTaskResult does); the simulator's execution time when it reports one."""
    measured = {
        "measurements": [[1, 0], [1, 0], [0, 0]],
        "measuredQubits": [0, 1],
        "additionalMetadata": {"simulatorMetadata": {"executionDuration": 1500}},
    }
    assert result_counts(measured, "arn") == ({"01": 2, "00": 1}, 1.5)
    probabilities = {
        "measurementProbabilities": {"10": 0.25, "00": 0.7498, "11": 0.0002},
        "taskMetadata": {"shots": 1000},
    }
    counts, duration = result_counts(probabilities, "arn")
    assert (counts, duration) == ({"01": 250, "00": 750}, None)
    with pytest.raises(InvalidRequestError, match="holds no measurements"):
        result_counts({"taskMetadata": {"shots": 10}}, "arn:task")


def test_cancel_cancels_every_unfinished_task(aws: Aws) -> None:
    job = submitted(aws)
    aws.get_task(f"{TASK}t0", "COMPLETED")
    aws.get_task(f"{TASK}t1", "QUEUED")
    aws.braket.add_response(
        "cancel_quantum_task",
        {"quantumTaskArn": f"{TASK}t1", "cancellationStatus": "CANCELLING"},
        {"quantumTaskArn": f"{TASK}t1"},
    )
    adapter = aws.adapter()
    adapter.cancel(job)
    aws.get_task(f"{TASK}t1", "CANCELLED")
    assert adapter.status(job).state is JobState.CANCELLED
    aws.done()


def test_capabilities_from_get_device_are_cached(aws: Aws) -> None:
    aws.get_device()
    adapter = aws.adapter()
    caps = adapter.capabilities()
    assert adapter.capabilities() == caps
    aws.done()
    assert caps.tier is Tier.QPU and caps.num_qubits == 4 and caps.max_shots == 10_000
    assert {"cx", "h", "rz", "sx", "measure"} <= set(caps.basis_gates)
    assert caps.coupling_map is None and caps.pricing.per_shot_usd == 0.08
    # Calibration is asked fresh: a device recalibrates while a worker runs.
    aws.get_device()
    assert adapter.calibration() is None
    aws.done()
    assert adapter.estimate_cost(batch(spec(BELL_BODY, 2)), 1000).usd == 80.30


@pytest.mark.parametrize(
    ("device", "circuit", "shots", "error", "message"),
    [
        ({"status": "OFFLINE"}, spec(BELL_BODY, 2), 1000, RejectedError, "is OFFLINE"),
        ({"status": "RETIRED"}, spec(BELL_BODY, 2), 1000, RejectedError, "is RETIRED"),
        ({}, spec(BELL_BODY, 2), 10_001, InvalidRequestError, "between 1 and 10000"),
        ({"qubits": 2}, spec(GHZ_BODY, 3), 1000, InvalidRequestError, "uses 3 qubits"),
        ({"ops": ["x", "rz"]}, spec(BELL_BODY, 2), 1000, InvalidRequestError, "cannot be"),
    ],
)
def test_refused_batches_create_no_task(
    aws: Aws,
    device: dict[str, Any],
    circuit: CircuitSpec,
    shots: int,
    error: type[ProviderError],
    message: str,
) -> None:
    aws.get_device(**device)
    with pytest.raises(error, match=message):
        aws.adapter().submit(batch(circuit), shots, "refused", seed=1)
    aws.done()
    assert aws.created == []


def test_unknown_device_arn_is_invalid(aws: Aws) -> None:
    aws.braket.add_client_error(
        "get_device", "ResourceNotFoundException", "no such device", http_status_code=404
    )
    with pytest.raises(InvalidRequestError, match="ResourceNotFoundException"):
        aws.adapter().submit(batch(spec(BELL_BODY, 2)), 1000, "unknown", seed=1)
    assert aws.created == []


def client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "CreateQuantumTask")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("ThrottlingException", 429), TransientError),
        (client_error("InternalServiceException", 500), TransientError),
        (client_error("SomethingNew", 503), TransientError),
        (EndpointConnectionError(endpoint_url="http://localhost:1"), TransientError),
        (client_error("ServiceQuotaExceededException", 402), RejectedError),
        (client_error("DeviceOfflineException", 424), RejectedError),
        (client_error("DeviceRetiredException", 410), RejectedError),
        (client_error("AccessDeniedException", 403), RejectedError),
        (NoCredentialsError(), RejectedError),
        (client_error("ValidationException", 400), InvalidRequestError),
        (client_error("ResourceNotFoundException", 404), InvalidRequestError),
    ],
)
def test_error_classification(error: Exception, expected: type[ProviderError]) -> None:
    assert type(classify(error, "CreateQuantumTask")) is expected


# --- what the stand-in does not emulate: IAM and S3 access (README "QPU stand-in") ----------


def test_access_denied_at_create_is_rejected(aws: Aws) -> None:
    aws.get_device()
    aws.braket.add_client_error(
        "create_quantum_task",
        service_error_code="AccessDeniedException",
        service_message="User is not authorized to perform: braket:CreateQuantumTask",
        http_status_code=403,
    )
    with pytest.raises(RejectedError, match="AccessDeniedException"):
        aws.adapter().submit(batch(spec(BELL_BODY, 2)), 1000, "denied", seed=1)
    aws.done()


def test_results_bucket_access_denied_is_rejected(aws: Aws) -> None:
    job = submitted(aws, token="bucket", circuits=1)
    arn = f"{TASK}t0"
    aws.get_task(arn, "COMPLETED")
    aws.s3.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(RejectedError):
        aws.adapter().result(job)
    aws.done()
