"""The QPU stand-in (temporal-dev/qpu_standin) driven by the unmodified Amazon Braket SDK.

The stand-in and its moto S3 server are started by temporal-dev/stack.sh on free ports in a
temporary data dir; the SDK reaches them only through endpoint overrides
(AWS_ENDPOINT_URL_BRAKET / AWS_ENDPOINT_URL_S3) and dummy credentials.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from braket.aws import AwsDevice, AwsQuantumTask, AwsSession
from braket.circuits import Circuit, Observable
from braket.program_sets import ProgramSet
from braket.task_result import ProgramSetExecutableFailure
from braket.tasks import ProgramSetQuantumTaskResult

from tests.server_helpers import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = REPO_ROOT / "temporal-dev" / "stack.sh"
DEVICE = "arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16"
OFFLINE_DEVICE = "arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16-Maintenance"
BUCKET = "qloop-results"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
BASELINE_FAULTS = {
    "queue_delay_s": 0.2,
    "run_time_s": 0.1,
    "throttle_rate": 0.0,
    "error_rate": 0.0,
    "lost_response_rate": 0.0,
    "task_failure_rate": 0.0,
    "executable_failure_rate": 0.0,
    "outages": [],
}
# temporal-dev/qpu-standin.yaml's limits of Guadalupe-16.
PROGRAM_SET_LIMITS = {"max_executables": 100, "max_total_shots": 200_000}
PROGRAM_SET = "braket.ir.openqasm.program_set"
PRICE_PER_TASK = Decimal("0.30")
PRICE_PER_SHOT = Decimal("0.0009")

pytestmark = pytest.mark.integration


class Standin:
    def __init__(self, data_dir: Path) -> None:
        port, s3_port = free_ports(2)
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.s3_url = f"http://127.0.0.1:{s3_port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("QLOOP_")},
            "VENV": sys.prefix,
            "QLOOP_STACK_DATA_DIR": str(data_dir),
            "QLOOP_STANDIN_PORT": str(port),
            "QLOOP_S3_PORT": str(s3_port),
            "QLOOP_STACK_TIMEOUT": "90",
        }

    def sh(self, *args: str) -> str:
        proc = subprocess.run(
            ["bash", str(STACK), *args], env=self.env, capture_output=True, text=True, timeout=150
        )
        if proc.returncode != 0:
            pytest.fail(
                f"stack.sh {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n"
                f"{proc.stderr}\n{self.log_tail()}"
            )
        return proc.stdout

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_admin/{path}",
            data=data,
            method=("GET" if body is None else "POST"),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def tasks(self) -> list[dict[str, Any]]:
        return self.admin("tasks")["tasks"]

    def log_tail(self) -> str:
        path = self.data_dir / "qpu-standin.log"
        return path.read_text()[-3000:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    stand = Standin(tmp_path_factory.mktemp("standin-data"))
    with pytest.MonkeyPatch.context() as env:
        out = stand.sh("standin-start")
        assert f"QLOOP_BRAKET_ENDPOINT_URL={stand.url}" in out
        assert f"QLOOP_S3_ENDPOINT_URL={stand.s3_url}" in out
        env.setenv("AWS_ENDPOINT_URL_BRAKET", stand.url)
        env.setenv("AWS_ENDPOINT_URL_S3", stand.s3_url)
        env.setenv("AWS_ACCESS_KEY_ID", "qloop-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "qloop-test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("BRAKET_ENDPOINT", raising=False)
        try:
            yield stand
        finally:
            stand.sh("standin-stop")


@pytest.fixture(autouse=True)
def baseline(standin: Standin) -> None:
    standin.admin(
        "config",
        {
            "faults": BASELINE_FAULTS,
            "devices": {DEVICE: {"status": "ONLINE", "program_sets": PROGRAM_SET_LIMITS}},
        },
    )


@pytest.fixture
def session(standin: Standin) -> AwsSession:
    return AwsSession()


def _client(attempts: int = 1) -> Any:
    return boto3.client(
        "braket", config=Config(retries={"mode": "standard", "total_max_attempts": attempts})
    )


def _bell() -> Circuit:
    return Circuit().h(0).cnot(0, 1)


def _create(client: Any, token: str, *, shots: int = 100, device: str = DEVICE) -> str:
    program = {
        "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
        "source": "OPENQASM 3.0;\nqubit[2] q;\nh q[0];\ncnot q[0], q[1];\n",
    }
    response = client.create_quantum_task(
        clientToken=token,
        deviceArn=device,
        shots=shots,
        outputS3Bucket=BUCKET,
        outputS3KeyPrefix="tests",
        action=json.dumps(program),
    )
    return response["quantumTaskArn"]


def _wait(client: Any, arn: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get_quantum_task(quantumTaskArn=arn)
        if task["status"] in TERMINAL:
            return task
        time.sleep(0.1)
    pytest.fail(f"{arn} not finished within {timeout}s")


def _error_code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return error.value.response["Error"]["Code"]


def test_bell_task_queues_runs_and_returns_counts_from_s3(
    standin: Standin, session: AwsSession
) -> None:
    standin.admin("config", {"faults": {"queue_delay_s": 1.5}})
    device = AwsDevice(DEVICE, session)
    task = device.run(_bell(), (BUCKET, "bell"), shots=4000)
    # Like Braket, a new task is CREATED until the device's scheduler queues it (a tick later).
    assert task.state() in ("CREATED", "QUEUED")
    deadline = time.monotonic() + 10
    while task.state() == "CREATED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert task.state() == "QUEUED"
    assert task.queue_position().queue_position == "1"

    result = task.result()  # polls GetQuantumTask, then reads results.json from moto S3
    assert task.state() == "COMPLETED"
    assert result.measured_qubits == [0, 1]
    counts = result.measurement_counts
    assert sum(counts.values()) == 4000
    probabilities = {k: v / 4000 for k, v in counts.items()}
    tvd = 0.5 * sum(
        abs(probabilities.get(k, 0) - 0.5 * (k in ("00", "11"))) for k in {"00", "01", "10", "11"}
    )
    assert 0.005 < tvd < 0.1  # noisy (ibm_guadalupe), but a Bell pair
    assert abs(probabilities["00"] - probabilities["11"]) < 0.08
    metadata = task.metadata()
    assert metadata["outputS3Directory"] == f"bell/{task.id.rsplit('/', 1)[1]}"
    assert task.queue_position().queue_position is None


def test_bit_order_is_braket_qubit_zero_on_the_left(session: AwsSession) -> None:
    device = AwsDevice(DEVICE, session)
    result = device.run(Circuit().x(0).i(1).i(2), (BUCKET, "order"), shots=200).result()
    assert result.measured_qubits == [0, 1, 2]
    assert result.measurement_counts.most_common(1)[0][0] == "100"


def test_queue_positions_decrease_as_tasks_advance(standin: Standin) -> None:
    standin.admin("config", {"faults": {"queue_delay_s": 1.0, "run_time_s": 0.5}})
    client = _client()
    arns = [_create(client, f"pos-{uuid.uuid4()}") for _ in range(3)]

    def position(arn: str) -> str:
        task = client.get_quantum_task(quantumTaskArn=arn, additionalAttributeNames=["QueueInfo"])
        return task["queueInfo"]["position"]

    assert [position(a) for a in arns] == ["1", "2", "3"]
    queue = client.get_device(deviceArn=DEVICE)["deviceQueueInfo"][0]
    assert queue["queuePriority"] == "Normal" and int(queue["queueSize"]) >= 3
    deadline = time.monotonic() + 30
    while position(arns[2]) == "3":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert position(arns[2]) in {"1", "2", "None"}
    assert all(_wait(client, a)["status"] == "COMPLETED" for a in arns)


def test_client_token_makes_create_idempotent(standin: Standin) -> None:
    client = _client()
    token = f"idem-{uuid.uuid4()}"
    first = _create(client, token)
    second = _create(client, token)
    assert first == second
    assert [t["quantumTaskArn"] for t in standin.tasks() if t["clientToken"] == token] == [first]

    with pytest.raises(ClientError) as error:
        _create(client, token, shots=101)  # same token, different request
    assert _error_code(error) == "ValidationException"


def test_lost_reply_then_retry_with_the_same_token_creates_one_task(standin: Standin) -> None:
    standin.admin("config", {"faults": {"lost_response_rate": {"CreateQuantumTask": 1.0}}})
    client = _client()
    token = f"lost-{uuid.uuid4()}"
    with pytest.raises(ClientError) as error:
        _create(client, token)
    assert _error_code(error) == "InternalServiceException"
    standin.admin("config", {"faults": {"lost_response_rate": 0.0}})
    arn = _create(client, token)
    assert [t["quantumTaskArn"] for t in standin.tasks() if t["clientToken"] == token] == [arn]


def test_cancel_a_queued_task(standin: Standin, session: AwsSession) -> None:
    standin.admin("config", {"faults": {"queue_delay_s": 60}})
    task = AwsDevice(DEVICE, session).run(_bell(), (BUCKET, "cancel"), shots=10)
    task.cancel()
    assert _wait(_client(), task.id)["status"] == "CANCELLED"
    assert task.state() == "CANCELLED"
    assert task.result() is None
    with pytest.raises(ClientError) as error:
        _client().cancel_quantum_task(quantumTaskArn=f"{task.id}-nope")
    assert _error_code(error) == "ResourceNotFoundException"


def test_get_device_is_parsed_by_aws_device(session: AwsSession) -> None:
    device = AwsDevice(DEVICE, session)
    assert device.name == "Guadalupe-16" and device.status == "ONLINE"
    assert device.provider_name == "qloop" and device.type.value == "QPU"
    props = device.properties
    assert props.paradigm.qubitCount == 16
    assert set(props.paradigm.nativeGateSet) == {"cnot", "i", "rz", "v", "x"}
    assert props.paradigm.connectivity.connectivityGraph["1"] == ["0", "2", "4"]
    assert props.service.shotsRange == (1, 100_000)
    assert props.service.deviceCost.unit == "shot"
    assert "braket.ir.openqasm.program" in props.action
    assert props.standardized.oneQubitProperties["0"].T1.value > 0
    assert device.topology_graph.number_of_nodes() == 16

    names = {d["deviceName"] for d in _client().search_devices(filters=[])["devices"]}
    assert names == {"Guadalupe-16", "Guadalupe-16-Maintenance"}
    with pytest.raises(ValueError, match="not found"):
        AwsDevice(DEVICE.replace("Guadalupe-16", "Nope-1"), session)


def test_get_device_reports_the_calibration_epoch_and_recalibrations(
    standin: Standin, session: AwsSession
) -> None:
    def updated_at() -> datetime:
        service = AwsDevice(DEVICE, session).properties.service
        assert AwsDevice(DEVICE, session).properties.standardized is not None
        return service.updatedAt

    def midnight() -> datetime:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    # The default configuration recalibrates daily at 00:00 UTC.
    before = midnight()
    assert updated_at() in {before, midnight()}
    try:
        forced = time.time()
        standin.admin("config", {"devices": {DEVICE: {"recalibrated_at": forced}}})
        assert updated_at() == datetime.fromtimestamp(forced, UTC)
        # A one-second schedule moves the epoch on by itself.
        standin.admin("config", {"devices": {DEVICE: {"calibration_period_s": 1}}})
        first = updated_at()
        time.sleep(1.1)
        assert updated_at() > first
    finally:
        standin.admin(
            "config",
            {"devices": {DEVICE: {"recalibrated_at": None, "calibration_period_s": 86400}}},
        )


def test_offline_device_and_outage_refuse_tasks(standin: Standin, session: AwsSession) -> None:
    before = len(standin.tasks())
    with pytest.raises(ClientError) as error:
        _create(_client(), f"off-{uuid.uuid4()}", device=OFFLINE_DEVICE)
    assert _error_code(error) == "DeviceOfflineException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424

    now = time.time()
    standin.admin(
        "config",
        {
            "faults": {
                "outages": [
                    {
                        "start": now - 1,
                        "end": now + 60,
                        "kind": "device_offline",
                        "devices": [DEVICE],
                    }
                ]
            }
        },
    )
    assert AwsDevice(DEVICE, session).status == "OFFLINE"
    with pytest.raises(ClientError) as error:
        AwsDevice(DEVICE, session).run(_bell(), (BUCKET, "offline"), shots=10)
    assert _error_code(error) == "DeviceOfflineException"
    assert len(standin.tasks()) == before


def test_bad_requests_are_refused_before_any_task(standin: Standin) -> None:
    client = _client()
    before = len(standin.tasks())
    refusals = [
        lambda: _create(client, f"shots-{uuid.uuid4()}", shots=100_001),
        lambda: _create(client, f"dev-{uuid.uuid4()}", device=DEVICE.replace("16", "99")),
    ]
    expectation = Circuit().h(0).expectation(Observable.Z(), target=[0])
    refusals.append(
        lambda: AwsDevice(DEVICE, AwsSession()).run(expectation, (BUCKET, "refused"), shots=10)
    )
    for refuse in refusals:
        with pytest.raises(ClientError) as error:
            refuse()
        assert _error_code(error) == "ValidationException"
    with pytest.raises(ClientError) as error:
        _client().get_quantum_task(quantumTaskArn="arn:aws:braket:us-east-1:1:quantum-task/none")
    assert _error_code(error) == "ResourceNotFoundException"
    assert len(standin.tasks()) == before


def test_verbatim_program_keeps_physical_qubits(session: AwsSession) -> None:
    device = AwsDevice(DEVICE, session)
    verbatim = Circuit().add_verbatim_box(Circuit().x(1).cnot(1, 4))
    result = device.run(verbatim, (BUCKET, "verbatim"), shots=300).result()
    assert result.measured_qubits == [1, 4]
    assert result.measurement_counts.most_common(1)[0][0] == "11"

    not_coupled = Circuit().add_verbatim_box(Circuit().cnot(0, 15))
    with pytest.raises(ClientError) as error:
        device.run(not_coupled, (BUCKET, "verbatim"), shots=10)
    assert _error_code(error) == "ValidationException"
    assert "not connected" in error.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    "fault, code, status",
    [
        ("throttle_rate", "ThrottlingException", 429),
        ("error_rate", "InternalServiceException", 500),
    ],
)
def test_injected_api_faults(standin: Standin, fault: str, code: str, status: int) -> None:
    standin.admin("config", {"faults": {fault: 1.0}})
    for call in (
        lambda c: _create(c, f"fault-{uuid.uuid4()}"),
        lambda c: c.get_device(deviceArn=DEVICE),
    ):
        with pytest.raises(ClientError) as error:
            call(_client())
        assert _error_code(error) == code
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    standin.admin("config", {"faults": {fault: {"*": 0.0}}})
    assert _client().get_device(deviceArn=DEVICE)["deviceStatus"] == "ONLINE"


def test_injected_task_failure(standin: Standin, session: AwsSession) -> None:
    standin.admin("config", {"faults": {"task_failure_rate": 1.0}})
    task = AwsDevice(DEVICE, session).run(_bell(), (BUCKET, "fail"), shots=10)
    assert task.result() is None
    assert task.state() == "FAILED"
    assert "injected" in task.metadata()["failureReason"]


def test_restart_keeps_queued_tasks_and_results(standin: Standin, session: AwsSession) -> None:
    device = AwsDevice(DEVICE, session)
    done = device.run(_bell(), (BUCKET, "restart"), shots=500)
    done_counts = done.result().measurement_counts
    standin.admin("config", {"faults": {"queue_delay_s": 4}})
    queued = device.run(_bell(), (BUCKET, "restart"), shots=500)
    # CREATED until the scheduler's next tick queues it, as on Braket.
    deadline = time.monotonic() + 10
    while queued.state() == "CREATED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queued.state() == "QUEUED"

    # Stops moto too: S3 comes back empty and the stand-in puts stored results back.
    standin.sh("standin-restart")

    assert AwsQuantumTask(done.id, AwsSession()).result().measurement_counts == done_counts
    again = AwsQuantumTask(queued.id, AwsSession())
    assert again.state() in {"QUEUED", "RUNNING", "COMPLETED"}
    assert sum(again.result().measurement_counts.values()) == 500
    tokens = [t["clientToken"] for t in standin.tasks()]
    assert len(tokens) == len(set(tokens))


def test_a_task_cancelled_while_its_result_waits_for_s3_ends_cancelled(standin: Standin) -> None:
    """A task whose run ended while S3 did not answer keeps its result until S3 is back. A
    cancel meanwhile ends it CANCELLED and unbilled, as a task cancelled before it completed;
    it does not stay CANCELLING for good (qloop's cancel waits for the task to end)."""
    client = _client()
    arn = _running_task(standin, client, "s3-down", run_time_s=1.0)
    deadline = time.monotonic() + 30
    moto = int((standin.data_dir / "s3.pid").read_text())
    os.kill(moto, signal.SIGKILL)
    try:
        log = standin.data_dir / "qpu-standin.log"
        while f"result of {arn} not uploaded yet" not in log.read_text():
            assert time.monotonic() < deadline, "the result was never held back"
            time.sleep(0.1)
        assert client.get_quantum_task(quantumTaskArn=arn)["status"] == "RUNNING"
        client.cancel_quantum_task(quantumTaskArn=arn)
        ended = _wait(client, arn, timeout=10)
        assert ended["status"] == "CANCELLED"
        assert _billed(standin, arn) == 0
    finally:
        standin.sh("standin-restart")


def test_a_task_being_cancelled_when_the_standin_dies_ends_cancelled(standin: Standin) -> None:
    """The run of a task in CANCELLING dies with the stand-in's process; the restarted stand-in
    ends it CANCELLED (unbilled) rather than leaving it CANCELLING for good."""
    client = _client()
    arn = _running_task(standin, client, "dies-cancelling", run_time_s=120.0)
    client.cancel_quantum_task(quantumTaskArn=arn)
    assert client.get_quantum_task(quantumTaskArn=arn)["status"] == "CANCELLING"

    standin.sh("standin-restart")

    ended = _wait(_client(), arn, timeout=10)
    assert ended["status"] == "CANCELLED"
    assert _billed(standin, arn) == 0


def _running_task(standin: Standin, client: Any, name: str, *, run_time_s: float) -> str:
    """A new task that runs for `run_time_s`, once it is RUNNING."""
    standin.admin("config", {"faults": {"queue_delay_s": 0.1, "run_time_s": run_time_s}})
    arn = _create(client, f"{name}-{uuid.uuid4().hex[:8]}")
    deadline = time.monotonic() + 30
    while client.get_quantum_task(quantumTaskArn=arn)["status"] != "RUNNING":
        assert time.monotonic() < deadline, f"{arn} never ran"
        time.sleep(0.05)
    return arn


# --- program sets -------------------------------------------------------------------------------


def _program(source: str) -> dict[str, Any]:
    return {
        "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
        "source": source,
    }


def _create_program_set(client: Any, token: str, sources: list[str], shots: int) -> str:
    action = {
        "braketSchemaHeader": {"name": PROGRAM_SET, "version": "1"},
        "programs": [_program(source) for source in sources],
    }
    response = client.create_quantum_task(
        clientToken=token,
        deviceArn=DEVICE,
        shots=shots,
        outputS3Bucket=BUCKET,
        outputS3KeyPrefix="sets",
        action=json.dumps(action),
    )
    return response["quantumTaskArn"]


def _billed(standin: Standin, arn: str) -> Decimal:
    (task,) = [t for t in standin.tasks() if t["quantumTaskArn"] == arn]
    return Decimal(task["billedUsd"])


def test_a_program_set_runs_as_one_task_the_sdk_reads(
    standin: Standin, session: AwsSession
) -> None:
    device = AwsDevice(DEVICE, session)
    limits = device.properties.action[PROGRAM_SET]
    assert (limits.maximumExecutables, limits.maximumTotalShots) == (100, 200_000)
    circuits = [Circuit().x(0).i(1), Circuit().i(0).x(1), Circuit().x(0).x(1)]
    task = device.run(ProgramSet(circuits), (BUCKET, "set"), shots=900)

    result = task.result()
    assert isinstance(result, ProgramSetQuantumTaskResult)
    assert [entry[0].counts.most_common(1)[0][0] for entry in result] == ["10", "01", "11"]
    assert [sum(entry[0].counts.values()) for entry in result] == [300, 300, 300]
    metadata = task.metadata()
    assert metadata["actionMetadata"] == {
        "actionType": PROGRAM_SET,
        "programCount": 3,
        "executableCount": 3,
    }
    assert metadata["shots"] == 900 and metadata["numSuccessfulShots"] == 900
    # One per-task fee for the three circuits.
    assert _billed(standin, task.id) == PRICE_PER_TASK + PRICE_PER_SHOT * 900


def test_an_executable_that_fails_leaves_the_others_and_is_not_billed(
    standin: Standin, session: AwsSession
) -> None:
    # Seed 0 draws 0.84, 0.76, 0.42, 0.26, 0.51, 0.40: the 3rd, 4th and 6th executables fail.
    standin.admin("config", {"faults": {"seed": 0, "executable_failure_rate": 0.5}})
    circuits = [Circuit().x(0).i(1) for _ in range(6)]
    task = AwsDevice(DEVICE, session).run(ProgramSet(circuits), (BUCKET, "partly"), shots=600)

    result = task.result()
    failed = [
        i for i, entry in enumerate(result) if isinstance(entry[0], ProgramSetExecutableFailure)
    ]
    assert failed == [2, 3, 5]
    assert result.task_metadata.totalFailedExecutables == 3
    assert result.task_metadata.successfulShots == 300
    assert all(sum(result[i][0].counts.values()) == 100 for i in (0, 1, 4))
    assert task.state() == "COMPLETED" and task.metadata()["numSuccessfulShots"] == 300
    assert _billed(standin, task.id) == PRICE_PER_TASK + PRICE_PER_SHOT * 300


def test_every_executable_failing_fails_the_task_unbilled(standin: Standin) -> None:
    standin.admin("config", {"faults": {"executable_failure_rate": 1.0}})
    client = _client()
    arn = _create_program_set(client, f"allfail-{uuid.uuid4()}", ["qubit[1] q; x q[0];"] * 2, 20)
    task = _wait(client, arn)
    assert task["status"] == "FAILED" and "every executable failed" in task["failureReason"]
    assert _billed(standin, arn) == 0


def test_an_invalid_program_set_is_refused_whole_with_each_failure(standin: Standin) -> None:
    client = _client()
    before = len(standin.tasks())
    fine = "qubit[2] q; h q[0]; cnot q[0], q[1];"
    too_wide = "qubit[20] q; x q[19];"
    with pytest.raises(ClientError) as error:
        _create_program_set(client, f"bad-{uuid.uuid4()}", [fine, too_wide, fine], 30)
    assert _error_code(error) == "ValidationException"
    response = error.value.response
    assert response["reason"] == "ProgramSetValidationFailed"
    (failure,) = response["programSetValidationFailures"]
    assert failure["programIndex"] == 1 and "20 qubits" in failure["errors"][0]

    refusals = {
        "executables": ([fine] * 101, 101 * 10),
        "a multiple": ([fine] * 3, 31),
        "between 1 and 200000": ([fine] * 3, 300_000),
    }
    for expected, (sources, shots) in refusals.items():
        with pytest.raises(ClientError, match=expected) as error:
            _create_program_set(client, f"limit-{uuid.uuid4()}", sources, shots)
        assert _error_code(error) == "ValidationException"
    assert len(standin.tasks()) == before


def test_a_device_without_program_sets_refuses_them(standin: Standin, session: AwsSession) -> None:
    standin.admin("config", {"devices": {DEVICE: {"program_sets": None}}})
    assert PROGRAM_SET not in AwsDevice(DEVICE, session).properties.action
    with pytest.raises(ClientError, match="does not run program sets"):
        _create_program_set(_client(), f"none-{uuid.uuid4()}", ["qubit[1] q; x q[0];"], 10)


def test_a_database_of_an_older_standin_gets_its_action_metadata(
    standin: Standin, session: AwsSession
) -> None:
    """Tasks stored before the stand-in kept GetQuantumTask's actionMetadata on each task get it
    when the stand-in starts on their database."""
    circuits = [Circuit().x(0).i(1), Circuit().i(0).x(1)]
    task = AwsDevice(DEVICE, session).run(ProgramSet(circuits), (BUCKET, "older"), shots=200)
    task.result()
    standin.sh("standin-stop")
    try:
        with sqlite3.connect(standin.data_dir / "qpu-standin.db") as database:
            database.execute("ALTER TABLE tasks DROP COLUMN action_metadata")
    finally:
        standin.sh("standin-start")
    assert AwsQuantumTask(task.id, AwsSession()).metadata()["actionMetadata"] == {
        "actionType": PROGRAM_SET,
        "programCount": 2,
        "executableCount": 2,
    }


def test_program_set_results_survive_a_restart(standin: Standin, session: AwsSession) -> None:
    circuits = [Circuit().x(0).i(1), Circuit().i(0).x(1)]
    task = AwsDevice(DEVICE, session).run(ProgramSet(circuits), (BUCKET, "kept"), shots=200)
    counts = [entry[0].counts for entry in task.result()]
    # Stops moto too: S3 comes back empty and the stand-in puts every file of the set back.
    standin.sh("standin-restart")
    again = AwsQuantumTask(task.id, AwsSession()).result()
    assert [entry[0].counts for entry in again] == counts
