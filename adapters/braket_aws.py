"""Real Braket devices by ARN (or the local stand-in of the Braket API), through plain boto3.

A batch of n executed circuits becomes quantum tasks of one circuit each, or program sets of
several where the device runs them (adapters/program_sets.py), each sent as the program
compiled for the device where compute runs (adapters/braket_programs.py, stored with the
batch); a program set's `shots` is the total over its circuits. So this module, which the
orchestration role uses to submit, poll, fetch and cancel, imports neither a circuit library
nor the Braket SDK and its simulators. `JobRef.job_id` is the tasks' ARNs joined by commas
(ARNs hold no commas), so status, result and cancel need nothing but the JobRef on any worker.
Task i carries the clientToken `task_client_token(client_token, i)`, so the service itself
returns the existing task to a retried submit; the job's record in the shared database
(adapters/braket_task_records.py) spares a retry on any host even the calls. Results are read
from S3 as adapters/braket_result_files.py says. A program-set task whose executables partly
failed completes, billed for the executables that ran: the job counts as failed, and its bill
is what Braket bills (GetQuantumTask's numSuccessfulShots).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from adapters.braket_device import BraketDevice
from adapters.braket_errors import aws_errors
from adapters.braket_result_files import (
    ExecutableResult,
    canonical_counts,
    is_program_set_result,
    program_set_results,
)
from adapters.braket_task_records import add_task, open_record
from adapters.errors import InvalidRequestError, JobFailedError, RejectedError
from adapters.pricing import DevicePrice, estimate_cost, price_table
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    Cost,
    JobRef,
    JobResult,
    JobState,
    JobStatus,
    Pricing,
    ProviderProgram,
)
from schemas.settings import current_settings

PROVIDER = "braket"
MAX_CLIENT_TOKEN = 64
RESULTS_FILE = "results.json"
TERMINAL_TASK_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
ACTIVE_TASK_STATES = frozenset({"RUNNING", "COMPLETED"})
# A failed batch names this many of its failed tasks (history stays small for big batches).
FAILURES_SHOWN = 3


def task_client_token(client_token: str, index: int) -> str:
    """The clientToken of the batch's index-th task: readable when it fits Braket's 64
    characters, else the batch token's hash, so it is deterministic either way."""
    token = f"{client_token}-{index}"
    if len(token) <= MAX_CLIENT_TOKEN:
        return token
    digest = hashlib.sha256(client_token.encode()).hexdigest()
    return f"{digest[: MAX_CLIENT_TOKEN - len(str(index)) - 1]}-{index}"


def braket_client(region: str | None) -> Any:
    """A Braket client for `region` (None: boto3's default) from boto3's standard credential
    chain, at QLOOP_BRAKET_ENDPOINT_URL when set."""
    # One retry layer, the workflow's: retries stay visible in its history.
    return boto3.Session(region_name=region).client(
        "braket",
        endpoint_url=current_settings().braket_endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def search_quantum_tasks(since: datetime, region: str | None = None) -> list[dict[str, Any]]:
    """Every quantum task of the account created since `since`, as SearchQuantumTasks lists
    them (status, device, shots, tags), page by page."""
    client = braket_client(region)
    filters = [{"name": "createdAt", "operator": "GTE", "values": [since.isoformat()]}]
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        with aws_errors("SearchQuantumTasks"):
            page = client.search_quantum_tasks(
                filters=filters, maxResults=100, **({"nextToken": token} if token else {})
            )
        found.extend(page.get("quantumTasks", []))
        token = page.get("nextToken") or ""
        if not token:
            return found


class BraketAwsAdapter:
    """The Adapter protocol (and ProgramCompiler) on a real Braket device.

    AWS credentials and region come from boto3's standard chain (the ARN's region wins);
    QLOOP_BRAKET_ENDPOINT_URL and QLOOP_S3_ENDPOINT_URL override the endpoints; results go to
    s3://$QLOOP_BRAKET_S3_BUCKET/$QLOOP_BRAKET_S3_PREFIX. Pass `braket_client` and `s3_client`
    to use clients of your own.
    """

    def __init__(self, device_arn: str, braket_client: Any = None, s3_client: Any = None) -> None:
        self.device = device_arn
        self._given_braket = braket_client
        self._given_s3 = s3_client
        self._known_device: BraketDevice | None = None
        self._final_tasks: dict[str, dict[str, Any]] = {}

    @cached_property
    def _region(self) -> str | None:
        return self.device.split(":")[3] or None

    @cached_property
    def _braket(self) -> Any:
        if self._given_braket is not None:
            return self._given_braket
        return braket_client(self._region)

    @cached_property
    def _s3(self) -> Any:
        if self._given_s3 is not None:
            return self._given_s3
        session = boto3.Session(region_name=self._region)
        return session.client("s3", endpoint_url=current_settings().s3_endpoint_url)

    # --- protocol ----------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        # Imported here: only the compute role asks (preprocess), and the Braket SDK and
        # qiskit-braket-provider it needs are what the orchestration role must not load.
        from adapters.braket_programs import device_capabilities

        return device_capabilities(self._device(), self._pricing())

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return estimate_cost(self._price(), batch, shots, self._device().program_set_limits)

    def calibration(self) -> dict[str, str] | None:
        # Fresh, not the device capabilities() cached: a device recalibrates while a worker
        # runs, and `updated_at` is the calibration epoch results are cached under.
        device = self._device(refresh=True)
        standardized = getattr(device.properties, "standardized", None)
        if standardized is None:
            return None
        return {
            "device_arn": self.device,
            "source": "Braket GetDevice deviceCapabilities.standardized",
            "updated_at": str(device.properties.service.updatedAt),
            "standardized": standardized.json(),
        }

    def compile(self, batch: CircuitBatch, shots: int) -> list[ProviderProgram]:
        """The batch's programs, checked against a fresh GetDevice (compute role only; see
        `capabilities`)."""
        from adapters.braket_programs import compile_programs

        return compile_programs(self._online_device(), batch, shots)

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        """Compiles and submits, for callers that hold circuits only (hardware cannot be
        seeded: `seed` is not used)."""
        programs = self.compile(batch, shots)
        return self._submitted(programs, shots, client_token, tags, device_checked=True)

    def submit_programs(
        self,
        programs: list[ProviderProgram],
        shots: int,
        client_token: str,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        return self._submitted(programs, shots, client_token, tags, device_checked=False)

    def status(self, job: JobRef) -> JobStatus:
        tasks = [self._task(arn) for arn in self._arns(job)]
        return _aggregate(tasks)

    def result(self, job: JobRef) -> JobResult:
        tasks = [self._task(arn) for arn in self._arns(job)]
        status = _aggregate(tasks)
        # Where only executables of program sets failed, their results say which and why.
        executables_failed = all(task["status"] == "COMPLETED" for task in tasks)
        if status.state is JobState.CANCELLED or (
            status.state is JobState.FAILED and not executables_failed
        ):
            raise JobFailedError(f"Braket job {job.client_token} {status.state}: {status.message}")
        if status.state not in (JobState.DONE, JobState.FAILED):
            raise InvalidRequestError(
                f"Braket job {job.client_token} has no result yet; poll status until it is done"
            )
        results = [self._task_results(task) for task in tasks]
        executables = [executable for found, _ in results for executable in found]
        failed = [i for i, executable in enumerate(executables) if executable.failure is not None]
        if failed:
            shown = "; ".join(f"circuit {i}: {executables[i].failure}" for i in failed[:3])
            raise JobFailedError(
                f"Braket job {job.client_token}: {len(failed)} of {len(executables)} circuits "
                f"failed: {shown}"
            )
        price = self._price_or_none()
        cost = (
            0.0
            if price is None
            else float(
                sum(
                    price.task_cost(_billed_shots(task), duration)
                    for task, (_, duration) in zip(tasks, results, strict=True)
                )
            )
        )
        return JobResult(
            counts=[executable.counts or {} for executable in executables],
            shots=_shots_per_circuit(tasks[0]),
            duration_seconds=_wall_time(tasks),
            cost_usd=round(cost, 6),
        )

    def cancel(self, job: JobRef) -> None:
        for arn in self._arns(job):
            if self._task(arn)["status"] in TERMINAL_TASK_STATES:
                continue
            try:
                with aws_errors("CancelQuantumTask"):
                    self._braket.cancel_quantum_task(quantumTaskArn=arn)
            except InvalidRequestError:
                # The task reached a final state between the status read and the cancel
                # (Braket answers ConflictException): nothing is left to cancel.
                if self._task(arn)["status"] not in TERMINAL_TASK_STATES:
                    raise

    def billed(self, job: JobRef) -> Cost | None:
        return self.bill([self._task(arn) for arn in self._arns(job)])

    def bill(self, tasks: list[dict[str, Any]]) -> Cost | None:
        """What Braket bills for these tasks of this device (GetQuantumTask answers or
        SearchQuantumTasks summaries): completed ones per task and per shot (per minute of
        execution on a managed simulator), failed and cancelled ones nothing; None while one has
        not ended."""
        if any(task["status"] not in TERMINAL_TASK_STATES for task in tasks):
            return None
        completed = [task for task in tasks if task["status"] == "COMPLETED"]
        price = self._price_or_none()
        if price is None or not completed:
            return Cost(usd=0.0, detail=f"no completed task of {len(tasks)}: nothing billed")
        # A search summary does not say how many shots succeeded; GetQuantumTask does.
        completed = [
            task if "numSuccessfulShots" in task else self._task(task["quantumTaskArn"])
            for task in completed
        ]
        durations = [
            self._task_results(task)[1] if price.per_minute_usd else None for task in completed
        ]
        total = sum(
            price.task_cost(_billed_shots(task), duration)
            for task, duration in zip(completed, durations, strict=True)
        )
        return Cost(
            usd=round(float(total), 6),
            detail=f"{len(completed)} of {len(tasks)} tasks completed and billed",
        )

    def describe_task(self, arn: str) -> dict[str, Any]:
        """GetQuantumTask of one task (a final answer is kept: it never changes)."""
        return self._task(arn)

    def task_counts(self, task: dict[str, Any]) -> list[dict[str, int] | None]:
        """A COMPLETED task's counts per circuit in qloop's bit order (None for an executable
        of a program set that failed)."""
        found, _ = self._task_results(task)
        return [executable.counts if executable.failure is None else None for executable in found]

    def cancel_tasks(self, arns: list[str]) -> None:
        """Cancels those of these tasks that have not ended."""
        self.cancel(
            JobRef(
                provider=PROVIDER,
                device=self.device,
                job_id=",".join(arns),
                client_token="reconciler",
                submitted_at=datetime.now(UTC),
            )
        )

    # --- submission ----------------------------------------------------------------------------

    def _submitted(
        self,
        programs: list[ProviderProgram],
        shots: int,
        client_token: str,
        tags: Mapping[str, str] | None,
        device_checked: bool,
    ) -> JobRef:
        """Creates the tasks the job's record lacks, once the device is known to be online."""
        record = open_record(client_token, self._fingerprint(programs, shots), self.device)
        if len(record.task_arns) < len(programs):
            if not device_checked:
                self._online_device()
            for index in range(len(record.task_arns), len(programs)):
                token = task_client_token(client_token, index)
                arn = self._create(programs[index], shots, token, dict(tags or {}))
                record = add_task(record, arn)
        return JobRef(
            provider=PROVIDER,
            device=record.device,
            job_id=",".join(record.task_arns),
            client_token=record.client_token,
            submitted_at=record.submitted_at,
        )

    def _fingerprint(self, programs: list[ProviderProgram], shots: int) -> str:
        identity = {
            "device": self.device,
            "programs": [program.model_dump() for program in programs],
            "shots": shots,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _online_device(self) -> BraketDevice:
        device = self._device(refresh=True)
        if device.status != "ONLINE":
            raise RejectedError(f"Braket device {self.device} is {device.status}")
        return device

    def _create(
        self, program: ProviderProgram, shots: int, token: str, tags: dict[str, str]
    ) -> str:
        configured = current_settings()
        bucket = configured.braket_s3_bucket
        if bucket is None:
            raise RejectedError(
                "set QLOOP_BRAKET_S3_BUCKET to the S3 bucket Braket writes results to"
            )
        with aws_errors("CreateQuantumTask"):
            response = self._braket.create_quantum_task(
                deviceArn=self.device,
                action=program.action,
                deviceParameters=program.device_parameters,
                shots=shots * program.executables,
                outputS3Bucket=bucket,
                outputS3KeyPrefix=configured.braket_s3_prefix,
                clientToken=token,
                **({"tags": tags} if tags else {}),
            )
        arn: str = response["quantumTaskArn"]
        return arn

    # --- devices and tasks -----------------------------------------------------------------------

    def _device(self, refresh: bool = False) -> BraketDevice:
        if self._known_device is None or refresh:
            with aws_errors("GetDevice"):
                response = self._braket.get_device(deviceArn=self.device)
            self._known_device = BraketDevice.from_get_device(response)
        return self._known_device

    def _task(self, arn: str) -> dict[str, Any]:
        """GetQuantumTask, except for a task already seen in a final state: that never changes."""
        known = self._final_tasks.get(arn)
        if known is not None:
            return known
        with aws_errors("GetQuantumTask"):
            task = self._braket.get_quantum_task(
                quantumTaskArn=arn, additionalAttributeNames=["QueueInfo"]
            )
        if task["status"] in TERMINAL_TASK_STATES:
            self._final_tasks[arn] = task
        return task

    def _task_results(self, task: dict[str, Any]) -> tuple[list[ExecutableResult], float | None]:
        """The task's circuits, in order, and a simulator's execution time (None on a QPU)."""
        arn = task["quantumTaskArn"]
        key = f"{task['outputS3Directory']}/{RESULTS_FILE}"
        document = self._read_json(task["outputS3Bucket"], key)
        if not is_program_set_result(document):
            counts, duration = result_counts(document, arn)
            return [ExecutableResult(counts=counts)], duration
        bucket, folder = document.get("s3Location") or (
            task["outputS3Bucket"],
            task["outputS3Directory"],
        )
        found = program_set_results(
            document,
            lambda key: self._read_json(bucket, f"{folder}/{key}"),
            _shots_per_circuit(task),
            arn,
        )
        return found, None

    def _read_json(self, bucket: str, key: str) -> dict[str, Any]:
        with aws_errors("GetObject"):
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        document: dict[str, Any] = json.loads(body)
        return document

    def _arns(self, job: JobRef) -> list[str]:
        if job.provider != PROVIDER or job.device != self.device:
            raise InvalidRequestError(
                f"job {job.client_token!r} belongs to {job.provider}/{job.device}, "
                f"not to {PROVIDER}/{self.device}"
            )
        return job.part_ids

    def _price(self) -> DevicePrice:
        return price_table().price_for(self.device)

    def _price_or_none(self) -> DevicePrice | None:
        try:
            return self._price()
        except InvalidRequestError:
            return None

    def _pricing(self) -> Pricing:
        price = self._price_or_none()
        if price is None:
            return Pricing(source=f"no published price for {self.device}")
        return price_table().pricing(price)


def result_counts(result: dict[str, Any], arn: str) -> tuple[dict[str, int], float | None]:
    """Canonical counts and the simulator's execution time (None on a QPU) of a gate-model task
    result (braket.task_result.GateModelTaskResult)."""
    shots = int((result.get("taskMetadata") or {}).get("shots") or 0)
    counts = canonical_counts(result, shots, arn)
    simulator = (result.get("additionalMetadata") or {}).get("simulatorMetadata")
    duration = None if not simulator else float(simulator["executionDuration"]) / 1000
    return counts, duration


def _aggregate(tasks: list[dict[str, Any]]) -> JobStatus:
    """A batch is as far as its slowest task; any failure or cancellation ends it, and so does
    a program set that completed with executables that failed."""
    states = [task["status"] for task in tasks]
    failed = [task for task in tasks if task["status"] == "FAILED" or _failed_executables(task)]
    if failed:
        shown = failed[:FAILURES_SHOWN]
        reasons = "; ".join(f"{t['quantumTaskArn']}: {_failure_reason(t)}" for t in shown)
        more = f"; and {len(failed) - len(shown)} more" if len(failed) > len(shown) else ""
        return JobStatus(
            state=JobState.FAILED,
            message=f"{len(failed)} of {len(tasks)} tasks failed: {reasons}{more}",
        )
    if any(state in ("CANCELLING", "CANCELLED") for state in states):
        return JobStatus(state=JobState.CANCELLED, message="tasks were cancelled")
    if all(state == "COMPLETED" for state in states):
        return JobStatus(state=JobState.DONE)
    done = sum(state == "COMPLETED" for state in states)
    progress = f"{done} of {len(states)} tasks completed"
    if any(state in ACTIVE_TASK_STATES for state in states):
        return JobStatus(state=JobState.RUNNING, message=progress)
    positions = [_queue_position(task) for task in tasks]
    known = [p for p in positions if p is not None]
    return JobStatus(
        state=JobState.QUEUED, queue_position=max(known) if known else None, message=progress
    )


def _shots_per_circuit(task: dict[str, Any]) -> int:
    executables = int((task.get("actionMetadata") or {}).get("executableCount") or 1)
    return int(task["shots"]) // executables


def _billed_shots(task: dict[str, Any]) -> int:
    """What Braket bills a completed task for: the shots of its executables that ran."""
    return int(task.get("numSuccessfulShots", task["shots"]))


def _failed_executables(task: dict[str, Any]) -> int:
    if task["status"] != "COMPLETED":
        return 0
    missing = int(task["shots"]) - _billed_shots(task)
    return missing // _shots_per_circuit(task)


def _failure_reason(task: dict[str, Any]) -> str:
    if task["status"] == "FAILED":
        return str(task.get("failureReason", "?"))
    executables = (task.get("actionMetadata") or {}).get("executableCount")
    return (
        f"{_failed_executables(task)} of {executables} executables of the program set failed "
        f"(their reasons are in s3://{task['outputS3Bucket']}/{task['outputS3Directory']})"
    )


def _queue_position(task: dict[str, Any]) -> int | None:
    """As AwsQuantumTask.queue_position() reads GetQuantumTask's queueInfo; Braket reports
    positions beyond 2000 as '>2000', counted here as 2001."""
    position = (task.get("queueInfo") or {}).get("position")
    if position in (None, "None"):
        return None
    text = str(position)
    return int(text.lstrip(">")) + (1 if text.startswith(">") else 0)


def _wall_time(tasks: list[dict[str, Any]]) -> float | None:
    created = [t["createdAt"] for t in tasks if isinstance(t.get("createdAt"), datetime)]
    ended = [t["endedAt"] for t in tasks if isinstance(t.get("endedAt"), datetime)]
    if not created or len(ended) != len(tasks):
        return None
    return (max(ended) - min(created)).total_seconds()
