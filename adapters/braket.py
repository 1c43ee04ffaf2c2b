"""Amazon Braket as a provider: the local simulators, and real devices by ARN.

`braket_sv` and `braket_dm` run on Braket's LocalSimulator: inside the `simulate` compute
activity (`simulate_here`), or as jobs of adapters/local_jobs.py's on-disk store for histories
recorded before that. `braket_dm` takes a device
profile and runs its Braket noise model (adapters/braket_noise.py). The local simulators take no
seed, so a local job asks for the exact outcome distribution (shots=0 with a probability result)
and samples it with the job's stored seed: counts are reproducible and a restarted orphan
repeats itself, as with Aer.

A parameterized template runs as one circuit per binding, bound in Qiskit before translation
(Braket bills per task, so free parameters with task `inputs` would cost the same).

A device ARN selects the real service. A batch of n executed circuits becomes n quantum
tasks (Braket tasks hold one circuit); `JobRef.job_id` is their ARNs joined by commas (ARNs
hold no commas), so status, result and cancel need nothing but the JobRef on any worker. Task i
carries the clientToken `task_client_token(client_token, i)`, so the service itself returns the
existing task to a retried submit; the job's record in the shared database
(adapters/braket_task_records.py) spares a retry on any host even the calls. Braket counts put
the first measured qubit on the LEFT; qloop's canonical order has clbit 0 on the right: circuits
measure clbit j as the j-th measurement, so a result bitstring reversed is canonical.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import boto3
import numpy as np
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from braket.aws import AwsSession
from braket.aws.aws_quantum_task import _circuit_device_params_from_dict
from braket.circuits import Circuit, Instruction
from braket.circuits.compiler_directive import CompilerDirective
from braket.circuits.measure import Measure
from braket.circuits.serialization import (
    IRType,
    OpenQASMSerializationProperties,
    QubitReferenceType,
)
from braket.device_schema import DeviceCapabilities, GateModelParameters
from braket.devices import LocalSimulator
from braket.schema_common import BraketSchemaBase
from braket.tasks import GateModelQuantumTaskResult
from qiskit import QuantumCircuit
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit_braket_provider import to_braket
from qiskit_braket_provider.providers.target import (
    gateset_from_properties,
    native_gate_connectivity,
    native_gate_set,
)

from adapters import local_jobs
from adapters.aer import _parse, _prepare, bound_circuits, simulator_capabilities
from adapters.braket_noise import cached_noise_model
from adapters.braket_task_records import add_task, open_record
from adapters.errors import (
    InvalidRequestError,
    JobFailedError,
    ProviderError,
    RejectedError,
    TransientError,
)
from adapters.local_jobs import JobStore, NoiseChoice
from adapters.pricing import DevicePrice, estimate_cost, price_table
from adapters.profiles import available_profiles, load_profile, profile_calibration
from schemas.execution import (
    Capabilities,
    CircuitBatch,
    CircuitSpec,
    Cost,
    JobRef,
    JobResult,
    JobState,
    JobStatus,
    Pricing,
    Tier,
)
from schemas.profile import DeviceProfile
from schemas.request import DepolarizingNoise
from schemas.settings import current_settings

PROVIDER = "braket"
LOCAL_DEVICES = ("braket_sv", "braket_dm")
ARN_PREFIX = "arn:aws:braket:"
MAX_SHOTS = 1_000_000
MAX_CIRCUITS_PER_JOB = 500
MAX_CLIENT_TOKEN = 64
LOCAL_JOBS_DIR = "braket-local-jobs"
OPENQASM_ACTION = "braket.ir.openqasm.program"
RESULTS_FILE = "results.json"
STANDARD_GATES = frozenset(get_standard_gate_name_mapping())
STANDARD_GATE_QUBITS = {
    name: gate.num_qubits for name, gate in get_standard_gate_name_mapping().items()
}


TRANSIENT_CODES = frozenset({
    "ThrottlingException", "InternalServiceException", "ServiceUnavailableException",
    "TooManyRequestsException", "RequestTimeout", "RequestTimeoutException", "SlowDown",
    "NoSuchKey",  # a result object not visible yet
})  # fmt: skip
REJECTED_CODES = frozenset({
    "ServiceQuotaExceededException", "DeviceOfflineException", "DeviceRetiredException",
    "AccessDeniedException", "AccessDenied", "NoSuchBucket",  # AccessDenied: S3's spelling
})  # fmt: skip

TERMINAL_TASK_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
ACTIVE_TASK_STATES = frozenset({"RUNNING", "COMPLETED"})
# A failed batch names this many of its failed tasks (history stays small for big batches).
FAILURES_SHOWN = 3


def braket_adapter(
    device: str,
    noise_profile: str | None = None,
    extra_depolarizing: DepolarizingNoise | None = None,
) -> BraketLocalAdapter | BraketAwsAdapter:
    """The adapter for a Braket device: a local simulator by name, or a real device by ARN."""
    if device.startswith(ARN_PREFIX):
        if noise_profile is not None or extra_depolarizing is not None:
            raise InvalidRequestError(
                "a Braket device ARN takes no noise_profile or extra_depolarizing; "
                "the device is as noisy as it is"
            )
        return BraketAwsAdapter(device)
    return BraketLocalAdapter(device, noise_profile, extra_depolarizing)


def task_client_token(client_token: str, index: int) -> str:
    """The clientToken of the batch's index-th task: readable when it fits Braket's 64
    characters, else the batch token's hash, so it is deterministic either way."""
    token = f"{client_token}-{index}"
    if len(token) <= MAX_CLIENT_TOKEN:
        return token
    digest = hashlib.sha256(client_token.encode()).hexdigest()
    return f"{digest[: MAX_CLIENT_TOKEN - len(str(index)) - 1]}-{index}"


def canonical_bits(braket_bits: str) -> str:
    return braket_bits[::-1]


# --- circuits ----------------------------------------------------------------------------------


def clbit_qubits(circuit: QuantumCircuit, name: str) -> list[int]:
    """The qubit measured into each clbit, in clbit order; each clbit exactly once."""
    measured: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name != "measure":
            continue
        clbit = circuit.find_bit(inst.clbits[0]).index
        if clbit in measured:
            raise InvalidRequestError(f"circuit {name!r} measures into clbit {clbit} twice")
        measured[clbit] = circuit.find_bit(inst.qubits[0]).index
    missing = sorted(set(range(circuit.num_clbits)) - set(measured))
    if missing:
        raise InvalidRequestError(f"circuit {name!r} never measures clbits {missing}")
    return [measured[clbit] for clbit in range(circuit.num_clbits)]


def translate(circuit: QuantumCircuit, name: str, basis: set[str] | None = None) -> Circuit:
    """Through qiskit-braket-provider at optimization_level 0, so ZNE folds survive."""
    try:
        with warnings.catch_warnings():
            # Dropped barriers and global phase do not change any count.
            warnings.simplefilter("ignore", UserWarning)
            return to_braket(circuit, basis_gates=basis, optimization_level=0)
    except Exception as exc:
        message = f"circuit {name!r} cannot be translated to Braket: {exc}"
        raise InvalidRequestError(message) from exc


def _gate_names(circuit: Circuit) -> set[str]:
    return {
        inst.operator.name.lower()
        for inst in circuit.instructions
        if not isinstance(inst.operator, Measure | CompilerDirective)
    }


def _without_measurements(circuit: Circuit) -> Circuit:
    kept = [inst for inst in circuit.instructions if not isinstance(inst.operator, Measure)]
    return Circuit(kept)


# --- local simulators ------------------------------------------------------------------------


class BraketLocalAdapter:
    """The Adapter protocol on Braket's LocalSimulator: `braket_sv`, or `braket_dm` with an
    optional device profile (its Braket noise model) and extra depolarizing noise."""

    def __init__(
        self,
        device: str = "braket_sv",
        noise_profile: str | None = None,
        extra_depolarizing: DepolarizingNoise | None = None,
    ) -> None:
        self.device = device
        self._noise = NoiseChoice(noise_profile, extra_depolarizing)
        self._profile = _check_local_device(device, noise_profile, extra_depolarizing)

    @cached_property
    def _max_qubits(self) -> int:
        qubits = int(LocalSimulator(self.device).properties.paradigm.qubitCount)
        return qubits if self._profile is None else min(qubits, self._profile.num_qubits)

    def capabilities(self) -> Capabilities:
        profile = self._profile
        return simulator_capabilities(PROVIDER, self.device, profile, self._max_qubits)

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return Cost(usd=0.0, detail="Braket local simulator")

    def calibration(self) -> dict[str, str] | None:
        return profile_calibration(self._profile)

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        _check_batch(batch, shots, (1, MAX_SHOTS))
        request = self._new_request(batch, shots, client_token, seed)
        return _LOCAL_STORE.submit(request)

    def status(self, job: JobRef) -> JobStatus:
        return _LOCAL_STORE.status(*self._job(job))

    def result(self, job: JobRef) -> JobResult:
        job_dir, _ = self._job(job)
        return _LOCAL_STORE.result(job_dir, job.job_id)

    def cancel(self, job: JobRef) -> None:
        job_dir, _ = self._job(job)
        _LOCAL_STORE.cancel(job_dir)

    def billed(self, job: JobRef) -> Cost | None:
        return local_jobs.free_once_ended(self.status(job))

    def simulate_here(self, batch: CircuitBatch, shots: int, seed: int) -> JobResult:
        _check_batch(batch, shots, (1, MAX_SHOTS))
        request = self._new_request(batch, shots, "here", seed)
        return JobResult.model_validate(_simulate_local(request))

    def _new_request(
        self, batch: CircuitBatch, shots: int, token: str, seed: int | None
    ) -> dict[str, Any]:
        return local_jobs.new_job_request(
            "braket-local", PROVIDER, self.device, self._noise, batch, shots, token, seed
        )

    def _job(self, job: JobRef) -> tuple[Any, dict[str, Any]]:
        return local_jobs.owned_job(_LOCAL_STORE, job, PROVIDER, self.device, self._noise)


@dataclass(frozen=True)
class _LocalProgram:
    """A circuit ready for the local simulator: noise applied, measurements replaced by the
    probability of the measured qubits in ascending order. The local simulators get the order
    of an unsorted probability target wrong (for [3, 5, 2] they answer as for [5, 3, 2]), and a
    layout on a coupling map measures in any order, so `axes` puts the sorted result into
    canonical order: axis j of the canonical tensor (clbit n-1-j) is axis axes[j] of the
    simulator's."""

    circuit: Circuit
    axes: tuple[int, ...]

    @property
    def num_clbits(self) -> int:
        return len(self.axes)

    def canonical(self, probabilities: np.ndarray) -> np.ndarray:
        tensor = probabilities.reshape([2] * self.num_clbits)
        return tensor.transpose(self.axes).reshape(-1)


def _check_local_device(
    device: str, noise_profile: str | None, extra: DepolarizingNoise | None
) -> DeviceProfile | None:
    if device not in LOCAL_DEVICES:
        raise InvalidRequestError(
            f"unknown device {device!r} for provider braket; allowed: "
            f"{', '.join(LOCAL_DEVICES)} or a device ARN ({ARN_PREFIX}...)"
        )
    if device == "braket_sv" and (noise_profile is not None or extra is not None):
        raise InvalidRequestError(
            "braket_sv takes no noise_profile or extra_depolarizing; use device braket_dm"
        )
    if noise_profile is None:
        if extra is not None:
            raise InvalidRequestError(
                "extra_depolarizing adds to a device profile; give noise_profile too "
                f"(available: {', '.join(available_profiles())})"
            )
        return None
    return load_profile(noise_profile)


def _local_programs(request: dict[str, Any]) -> list[_LocalProgram]:
    noise = NoiseChoice.from_request(request)
    profile = None if noise.profile is None else load_profile(noise.profile)
    max_qubits = int(LocalSimulator(request["device"]).properties.paradigm.qubitCount)
    batch = CircuitBatch.model_validate(request["batch"])
    programs: list[_LocalProgram] = []
    for spec in batch.circuits:
        template = _prepare(spec, profile)
        measured = clbit_qubits(template, spec.name)
        for row, circuit in enumerate(bound_circuits(spec, template)):
            name = _execution_name(spec, row)
            programs.append(_local_program(name, circuit, measured, noise, max_qubits))
    return programs


def _execution_name(spec: CircuitSpec, row: int) -> str:
    return f"{spec.name}[{row}]" if spec.parameters else spec.name


def _local_program(
    name: str, circuit: QuantumCircuit, measured: list[int], noise: NoiseChoice, max_qubits: int
) -> _LocalProgram:
    program = translate(circuit, name)
    if program.qubit_count > max_qubits:
        raise InvalidRequestError(
            f"circuit {name!r} acts on {program.qubit_count} qubits; the simulator "
            f"takes at most {max_qubits}"
        )
    if noise.profile is not None:
        program = cached_noise_model(noise.profile, noise.extra).apply(program)
    exact = _without_measurements(program)
    for qubit in sorted(set(measured) - set(exact.qubits)):
        # The simulator allocates only qubits that an instruction touches; added after the
        # noise model, this identity carries no noise.
        exact.i(qubit)
    target = sorted(measured)
    axes = tuple(target.index(qubit) for qubit in reversed(measured))
    return _LocalProgram(exact.probability(target=target), axes)


def _validate_local(request: dict[str, Any]) -> None:
    _local_programs(request)


def _simulate_local(request: dict[str, Any]) -> dict[str, Any]:
    programs = _local_programs(request)
    simulator = LocalSimulator(request["device"])
    rng = np.random.default_rng(request["seed"])
    started = datetime.now(UTC)
    counts = []
    for program in programs:
        result = simulator.run(program.circuit, shots=0).result()
        values = np.asarray(result.values[0])
        probabilities = program.canonical(values)
        counts.append(_sample(probabilities, request["shots"], program.num_clbits, rng))
    return {
        "counts": counts,
        "shots": request["shots"],
        "duration_seconds": (datetime.now(UTC) - started).total_seconds(),
    }


def _sample(
    probabilities: np.ndarray, shots: int, num_clbits: int, rng: np.random.Generator
) -> dict[str, int]:
    clipped = np.clip(probabilities.real, 0.0, None)  # exact zeros come back as -1e-17
    drawn = rng.multinomial(shots, clipped / clipped.sum())
    return {format(int(i), f"0{num_clbits}b"): int(drawn[i]) for i in np.flatnonzero(drawn)}


# Each simulation runs alone in its child process: numba's default threading layer, which the
# local simulators' parallel kernels use, aborts a process that enters them from two threads.
_LOCAL_STORE = JobStore(LOCAL_JOBS_DIR, simulate=_simulate_local, validate=_validate_local)


# --- real devices ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Device:
    """What GetDevice says about a device."""

    arn: str
    status: str
    is_qpu: bool
    properties: DeviceCapabilities

    @property
    def supported_gates(self) -> set[str]:
        return {op.lower() for op in self.properties.action[OPENQASM_ACTION].supportedOperations}

    @property
    def native_gates(self) -> set[str]:
        if not self.is_qpu:
            return set()
        return {gate.lower() for gate in self.properties.paradigm.nativeGateSet}

    @property
    def qubit_count(self) -> int:
        return int(self.properties.paradigm.qubitCount)

    @property
    def shots_range(self) -> tuple[int, int]:
        low, high = self.properties.service.shotsRange
        return int(low), int(high)


@dataclass(frozen=True)
class _Task:
    """One circuit of a batch, ready for CreateQuantumTask."""

    action: str
    device_parameters: str


def braket_session(region: str | None) -> AwsSession:
    """A Braket session for `region` (None: boto3's default) from boto3's standard credential
    chain, at QLOOP_BRAKET_ENDPOINT_URL when set."""
    boto_session = boto3.Session(region_name=region)
    # One retry layer, the workflow's: retries stay visible in its history.
    client = boto_session.client(
        "braket",
        endpoint_url=current_settings().braket_endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    return AwsSession(boto_session=boto_session, braket_client=client)


def search_quantum_tasks(since: datetime, region: str | None = None) -> list[dict[str, Any]]:
    """Every quantum task of the account created since `since`, as SearchQuantumTasks lists
    them (status, device, shots, tags), page by page."""
    client = braket_session(region).braket_client
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
    """The Adapter protocol on a real Braket device (or the local stand-in of the Braket API).

    AWS credentials and region come from boto3's standard chain (the ARN's region wins);
    QLOOP_BRAKET_ENDPOINT_URL and QLOOP_S3_ENDPOINT_URL override the endpoints; results go to
    s3://$QLOOP_BRAKET_S3_BUCKET/$QLOOP_BRAKET_S3_PREFIX. Pass `aws_session` and `s3_client`
    to use clients of your own.
    """

    def __init__(
        self, device_arn: str, aws_session: AwsSession | None = None, s3_client: Any = None
    ) -> None:
        self.device = device_arn
        self._given_session = aws_session
        self._given_s3 = s3_client
        self._known_device: _Device | None = None
        self._final_tasks: dict[str, dict[str, Any]] = {}

    @cached_property
    def _aws(self) -> AwsSession:
        if self._given_session is not None:
            return self._given_session
        return braket_session(self.device.split(":")[3] or None)

    @cached_property
    def _s3(self) -> Any:
        if self._given_s3 is not None:
            return self._given_s3
        return self._aws.boto_session.client("s3", endpoint_url=current_settings().s3_endpoint_url)

    # --- protocol ----------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        device = self._device()
        # A QPU is targeted in its native gates (on its coupling map), so folded ZNE circuits
        # reach it as they are. Where Qiskit cannot express those (IonQ's gpi/ms), or on a
        # simulator, the supported operations serve, without gates on three or more qubits,
        # which Qiskit's transpiler cannot route on a coupling map.
        native = native_gate_set(device.properties) & STANDARD_GATES if device.is_qpu else set()
        gates = native or {
            gate
            for gate in gateset_from_properties(device.properties.action[OPENQASM_ACTION])
            if gate in STANDARD_GATES and STANDARD_GATE_QUBITS[gate] <= 2
        }
        connectivity = native_gate_connectivity(device.properties) if device.is_qpu else None
        return Capabilities(
            provider=PROVIDER,
            device=self.device,
            tier=Tier.QPU if device.is_qpu else Tier.SIMULATOR,
            num_qubits=device.qubit_count,
            basis_gates=[*sorted((gates & STANDARD_GATES) - {"global_phase"}), "measure"],
            coupling_map=None if connectivity is None else [tuple(e) for e in connectivity],
            max_shots=device.shots_range[1],
            max_circuits_per_job=MAX_CIRCUITS_PER_JOB,
            cancellable=True,
            pricing=self._pricing(),
            status=device.status,
        )

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return estimate_cost(self._price(), batch, shots)

    def calibration(self) -> dict[str, str] | None:
        device = self._device()
        standardized = getattr(device.properties, "standardized", None)
        if standardized is None:
            return None
        return {
            "device_arn": self.device,
            "source": "Braket GetDevice deviceCapabilities.standardized",
            "updated_at": str(device.properties.service.updatedAt),
            "standardized": standardized.json(),
        }

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        record = open_record(client_token, self._fingerprint(batch, shots), self.device)
        if len(record.task_arns) < batch.num_executions:
            tasks = self._validated_tasks(batch, shots)
            for index in range(len(record.task_arns), len(tasks)):
                token = task_client_token(client_token, index)
                arn = self._create(tasks[index], shots, token, dict(tags or {}))
                record = add_task(record, arn)
        return JobRef(
            provider=PROVIDER,
            device=record.device,
            job_id=",".join(record.task_arns),
            client_token=record.client_token,
            submitted_at=record.submitted_at,
        )

    def status(self, job: JobRef) -> JobStatus:
        tasks = [self._task(arn) for arn in self._arns(job)]
        return _aggregate(tasks)

    def result(self, job: JobRef) -> JobResult:
        tasks = [self._task(arn) for arn in self._arns(job)]
        status = _aggregate(tasks)
        if status.state in (JobState.FAILED, JobState.CANCELLED):
            raise JobFailedError(f"Braket job {job.client_token} {status.state}: {status.message}")
        if status.state is not JobState.DONE:
            raise InvalidRequestError(
                f"Braket job {job.client_token} has no result yet; poll status until it is done"
            )
        results = [self._task_result(task) for task in tasks]
        shots = int(tasks[0]["shots"])
        price = self._price_or_none()
        cost = 0.0 if price is None else float(sum(price.task_cost(shots, d) for _, d in results))
        return JobResult(
            counts=[counts for counts, _ in results],
            shots=shots,
            duration_seconds=_wall_time(tasks),
            cost_usd=round(cost, 6),
        )

    def cancel(self, job: JobRef) -> None:
        for arn in self._arns(job):
            if self._task(arn)["status"] in TERMINAL_TASK_STATES:
                continue
            try:
                with aws_errors("CancelQuantumTask"):
                    self._aws.cancel_quantum_task(arn)
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
        durations = [
            self._task_result(task)[1] if price.per_minute_usd else None for task in completed
        ]
        total = sum(
            price.task_cost(int(task["shots"]), duration)
            for task, duration in zip(completed, durations, strict=True)
        )
        return Cost(
            usd=round(float(total), 6),
            detail=f"{len(completed)} of {len(tasks)} tasks completed and billed",
        )

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

    def _fingerprint(self, batch: CircuitBatch, shots: int) -> str:
        # Hardware cannot be seeded, so the seed is not part of a task's identity.
        identity = {"device": self.device, "batch": batch.identity(), "shots": shots}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _validated_tasks(self, batch: CircuitBatch, shots: int) -> list[_Task]:
        """Every circuit checked against a fresh GetDevice before the first task is created."""
        device = self._device(refresh=True)
        if device.status != "ONLINE":
            raise RejectedError(f"Braket device {self.device} is {device.status}")
        _check_batch(batch, shots, device.shots_range)
        return [task for spec in batch.circuits for task in self._tasks_for(spec, device)]

    def _tasks_for(self, spec: CircuitSpec, device: _Device) -> list[_Task]:
        """One task per executed circuit of the spec, checked once on the template."""
        template = _parse(spec)
        if template.num_clbits != spec.num_clbits:
            raise InvalidRequestError(
                f"circuit {spec.name!r} declares {spec.num_clbits} clbits but its QASM has "
                f"{template.num_clbits}"
            )
        clbit_qubits(template, spec.name)
        return [
            self._task_for(_execution_name(spec, row), circuit, device)
            for row, circuit in enumerate(bound_circuits(spec, template))
        ]

    def _task_for(self, name: str, circuit: QuantumCircuit, device: _Device) -> _Task:
        gateset = gateset_from_properties(device.properties.action[OPENQASM_ACTION])
        program = translate(circuit, name, gateset - {"global_phase"})
        _check_program(name, program, device)
        # Native gates on a QPU go in a verbatim box, so the provider's compiler cannot undo a
        # fold; qubit rewiring is off so qloop's layout stays.
        verbatim = bool(device.native_gates) and _gate_names(program) <= device.native_gates
        if verbatim:
            program = _in_verbatim_box(program)
        properties = (
            OpenQASMSerializationProperties(qubit_reference_type=QubitReferenceType.PHYSICAL)
            if device.is_qpu
            else None
        )
        action = program.to_ir(IRType.OPENQASM, serialization_properties=properties)
        paradigm = GateModelParameters(
            qubitCount=program.qubit_count, disableQubitRewiring=device.is_qpu
        )
        parameters = _circuit_device_params_from_dict({}, self.device, paradigm)
        return _Task(action.json(), parameters.json(exclude_none=True))

    def _create(self, task: _Task, shots: int, token: str, tags: dict[str, str]) -> str:
        configured = current_settings()
        bucket = configured.braket_s3_bucket
        if bucket is None:
            raise RejectedError(
                "set QLOOP_BRAKET_S3_BUCKET to the S3 bucket Braket writes results to"
            )
        with aws_errors("CreateQuantumTask"):
            return self._aws.create_quantum_task(
                deviceArn=self.device,
                action=task.action,
                deviceParameters=task.device_parameters,
                shots=shots,
                outputS3Bucket=bucket,
                outputS3KeyPrefix=configured.braket_s3_prefix,
                clientToken=token,
                **({"tags": tags} if tags else {}),
            )

    # --- devices and tasks -----------------------------------------------------------------------

    def _device(self, refresh: bool = False) -> _Device:
        if self._known_device is None or refresh:
            with aws_errors("GetDevice"):
                response = self._aws.get_device(self.device)
            self._known_device = _Device(
                arn=self.device,
                status=response["deviceStatus"],
                is_qpu=response["deviceType"] == "QPU",
                properties=BraketSchemaBase.parse_raw_schema(response["deviceCapabilities"]),
            )
        return self._known_device

    def _task(self, arn: str) -> dict[str, Any]:
        """GetQuantumTask, except for a task already seen in a final state: that never changes."""
        known = self._final_tasks.get(arn)
        if known is not None:
            return known
        with aws_errors("GetQuantumTask"):
            task = self._aws.get_quantum_task(arn)
        if task["status"] in TERMINAL_TASK_STATES:
            self._final_tasks[arn] = task
        return task

    def _task_result(self, task: dict[str, Any]) -> tuple[dict[str, int], float | None]:
        key = f"{task['outputS3Directory']}/{RESULTS_FILE}"
        with aws_errors("GetObject"):
            body = self._s3.get_object(Bucket=task["outputS3Bucket"], Key=key)["Body"].read()
        result = GateModelQuantumTaskResult.from_string(body.decode())
        counts: dict[str, int] = {}
        for bits, count in result.measurement_counts.items():
            canonical = canonical_bits(bits)
            counts[canonical] = counts.get(canonical, 0) + int(count)
        simulator = getattr(result.additional_metadata, "simulatorMetadata", None)
        duration = None if simulator is None else simulator.executionDuration / 1000
        return counts, duration

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


def _check_batch(batch: CircuitBatch, shots: int, shots_range: tuple[int, int]) -> None:
    low, high = max(1, shots_range[0]), shots_range[1]
    if not low <= shots <= high:
        raise InvalidRequestError(f"shots must be between {low} and {high}, got {shots}")
    if batch.num_executions > MAX_CIRCUITS_PER_JOB:
        raise InvalidRequestError(
            f"a job holds at most {MAX_CIRCUITS_PER_JOB} circuits (every binding of a template "
            f"counts), got {batch.num_executions}"
        )


def _check_program(name: str, program: Circuit, device: _Device) -> None:
    if program.qubit_count > device.qubit_count:
        raise InvalidRequestError(
            f"circuit {name!r} uses {program.qubit_count} qubits; {device.arn} has "
            f"{device.qubit_count}"
        )
    unsupported = _gate_names(program) - device.supported_gates
    if unsupported:
        raise InvalidRequestError(
            f"circuit {name!r} needs gates {sorted(unsupported)} that {device.arn} does not "
            f"support; supported: {sorted(device.supported_gates)}"
        )


def _in_verbatim_box(program: Circuit) -> Circuit:
    boxed = Circuit().add_verbatim_box(_without_measurements(program))
    for inst in program.instructions:
        if isinstance(inst.operator, Measure):
            boxed.add_instruction(Instruction(inst.operator, inst.target))
    return boxed


def _aggregate(tasks: list[dict[str, Any]]) -> JobStatus:
    """A batch is as far as its slowest task; any failure or cancellation ends it."""
    states = [task["status"] for task in tasks]
    failed = [task for task in tasks if task["status"] == "FAILED"]
    if failed:
        shown = failed[:FAILURES_SHOWN]
        reasons = "; ".join(f"{t['quantumTaskArn']}: {t.get('failureReason', '?')}" for t in shown)
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


# --- errors ------------------------------------------------------------------------------------


def classify(error: Exception, action: str) -> ProviderError:
    """A boto or Braket error as qloop's error class: throttling, 5xx and lost connections are
    transient; quota, offline or retired devices and denied access are rejected; everything
    else (ValidationException, ResourceNotFoundException, other 4xx) is invalid."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        http = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = error.response.get("Error", {}).get("Message")
        message = f"Braket {action} failed: {code}: {detail}"
        if code in TRANSIENT_CODES or http >= 500:
            return TransientError(message)
        if code in REJECTED_CODES:
            return RejectedError(message)
        return InvalidRequestError(message)
    if isinstance(error, ConnectionError | HTTPClientError):
        return TransientError(f"Braket {action}: cannot reach the service: {error}")
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return RejectedError(f"Braket {action}: no usable AWS credentials: {error}")
    return InvalidRequestError(f"Braket {action} failed: {type(error).__name__}: {error}")


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise classify(error, action) from error
