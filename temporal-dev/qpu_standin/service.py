"""The Braket operations (restJson1 shapes of botocore's braket service model) and the admin API."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from qpu_standin.config import Device, Settings, patched
from qpu_standin.devices import capabilities
from qpu_standin.errors import ApiError, validation
from qpu_standin.executor import compile_action, iso_time, parse_json_field
from qpu_standin.faults import FaultInjector
from qpu_standin.program_sets import compile_program_set, executable_count, is_program_set
from qpu_standin.results import ResultBucket, S3Unavailable
from qpu_standin.spending_limits import SpendingLimits
from qpu_standin.store import QUEUED_STATES, Task, TaskStore

QUEUE_POSITION_CAP = 2000  # Braket shows ">2000" beyond this


class Service:
    def __init__(
        self, settings: Settings, store: TaskStore, bucket: ResultBucket, limits_db: Path
    ) -> None:
        self.settings = settings
        self.store = store
        self.bucket = bucket
        self.spending_limits = SpendingLimits(limits_db, store, lambda: self.settings, self.billed)
        self.faults = FaultInjector(settings.faults)
        self._config_lock = threading.Lock()
        self._known_buckets = set(settings.buckets) | {t.bucket for t in store.all()}
        self.s3_in_sync = False  # set by the scheduler once S3 holds every stored result
        store.fill_action_metadata(lambda action: json.dumps(_action_metadata(json.loads(action))))

    # --- Braket API -------------------------------------------------------------------------

    def create_quantum_task(self, body: dict[str, Any]) -> dict[str, Any]:
        token = _required(body, "clientToken")
        if len(token) > 64:
            raise validation("clientToken must be at most 64 characters")
        request_hash = _request_hash(body)
        existing = self.store.by_token(token)
        if existing is not None:
            return {"quantumTaskArn": self._same_request(existing, request_hash).arn}
        device = self._device_for_create(_required(body, "deviceArn"))
        action = parse_json_field(body.get("action"), "action")
        device_parameters = parse_json_field(body.get("deviceParameters"), "deviceParameters")
        if is_program_set(action):
            compile_program_set(action, device_parameters, device, body.get("shots"))
            shots = int(body["shots"])  # checked: the total over the set's executables
        else:
            shots = self._checked_shots(body.get("shots"), device)
            compile_action(action, device_parameters, device)
        bucket = self._checked_bucket(_required(body, "outputS3Bucket"))
        if self.store.queue_size(device.arn) >= device.max_queued_tasks:
            raise ApiError(
                "ServiceQuotaExceededException",
                f"{device.name} already has {device.max_queued_tasks} queued tasks",
            )
        self.spending_limits.admit(device, shots, time.time())
        task = self.store.insert(
            self._new_task(
                body, token, request_hash, device, shots, action, device_parameters, bucket
            )
        )
        return {"quantumTaskArn": self._same_request(task, request_hash).arn}

    def get_quantum_task(self, arn: str, attributes: list[str]) -> dict[str, Any]:
        task = self._task(arn)
        response: dict[str, Any] = {
            "quantumTaskArn": task.arn,
            "status": task.status,
            "deviceArn": task.device_arn,
            "deviceParameters": task.device_parameters,
            "shots": task.shots,
            "outputS3Bucket": task.bucket,
            "outputS3Directory": task.directory,
            "createdAt": iso_time(task.created_at),
            "tags": json.loads(task.tags),
            "actionMetadata": json.loads(task.action_metadata or "{}"),
        }
        if task.ended_at is not None:
            response["endedAt"] = iso_time(task.ended_at)
        if task.failure_reason:
            response["failureReason"] = task.failure_reason
        if task.status == "COMPLETED":
            response["numSuccessfulShots"] = task.billed_shots
        if "QueueInfo" in attributes:
            response["queueInfo"] = self._queue_info(task)
        return response

    def cancel_quantum_task(self, arn: str) -> dict[str, Any]:
        task = self._task(arn)
        if task.status in ("COMPLETED", "FAILED"):
            raise ApiError("ConflictException", f"quantum task {arn} is {task.status}")
        if task.status in ("CANCELLING", "CANCELLED"):
            return {"quantumTaskArn": arn, "cancellationStatus": task.status}
        moved = self.store.transition(task.id, (*QUEUED_STATES, "RUNNING"), "CANCELLING")
        if not moved:  # it finished meanwhile; answer for the state it reached
            return self.cancel_quantum_task(arn)
        return {"quantumTaskArn": arn, "cancellationStatus": "CANCELLING"}

    def get_device(self, arn: str) -> dict[str, Any]:
        device = self.settings.device(arn)
        if device is None:
            raise ApiError("ResourceNotFoundException", f"device {arn} not found")
        return {
            **self._device_summary(device),
            "deviceCapabilities": capabilities(device, self.settings.poll_interval_ms),
            "deviceQueueInfo": [
                {
                    "queue": "QUANTUM_TASKS_QUEUE",
                    "queueSize": _position(self.store.queue_size(device.arn)),
                    "queuePriority": "Normal",
                },
                {"queue": "QUANTUM_TASKS_QUEUE", "queueSize": "0", "queuePriority": "Priority"},
                {"queue": "JOBS_QUEUE", "queueSize": "0"},
            ],
        }

    def search_devices(self, body: dict[str, Any]) -> dict[str, Any]:
        devices = [self._device_summary(d) for d in self.settings.devices]
        for name, values in _filters(body):
            devices = [d for d in devices if str(d.get(name)) in values]
        page, next_token = _page(devices, body)
        return {"devices": page, **({"nextToken": next_token} if next_token else {})}

    def search_quantum_tasks(self, body: dict[str, Any]) -> dict[str, Any]:
        tasks = self.store.all()
        for spec in body.get("filters") or []:
            tasks = [t for t in tasks if _task_matches(t, spec)]
        summaries = [_task_summary(t) for t in tasks]
        page, next_token = _page(summaries, body)
        return {"quantumTasks": page, **({"nextToken": next_token} if next_token else {})}

    def create_spending_limit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.spending_limits.create(body)

    def update_spending_limit(self, arn: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.spending_limits.update(arn, body)

    def delete_spending_limit(self, arn: str) -> dict[str, Any]:
        return self.spending_limits.delete(arn)

    def search_spending_limits(self, body: dict[str, Any]) -> dict[str, Any]:
        page, next_token = _page(self.spending_limits.search(body), body)
        return {"spendingLimits": page, **({"nextToken": next_token} if next_token else {})}

    # --- admin API --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        if not self.s3_in_sync:
            raise ApiError("ServiceUnavailableException", "S3 not reachable or not restored yet")
        return {"status": "ok", "devices": len(self.settings.devices)}

    def config(self) -> dict[str, Any]:
        return self.settings.model_dump(mode="json")

    def update_config(self, patch: dict[str, Any]) -> dict[str, Any]:
        with self._config_lock:
            try:
                self.settings = patched(self.settings, patch)
            except ValueError as error:
                raise validation(str(error)) from error
            self.faults.configure(self.settings.faults)
        return self.config()

    def tasks(self) -> dict[str, Any]:
        """Every task with what it bills (`billedUsd`, a decimal string of dollars)."""
        return {
            "tasks": [{**t.summary(), "billedUsd": str(self.billed(t))} for t in self.store.all()]
        }

    def billed(self, task: Task) -> Decimal:
        """What Braket bills for a QPU task: its per-task fee plus its shots at the per-shot
        price once it COMPLETED; nothing for a task that FAILED or was CANCELLED, nor for one
        that has not ended (Braket's pricing page; the SDK's cost tracker,
        braket/tracking/tracker.py, applies the same rule). A program set is one task: one
        per-task fee, and the shots of its executables that ran (adapters/prices/README.md)."""
        device = self.settings.device(task.device_arn)
        if task.status != "COMPLETED" or device is None:
            return Decimal(0)
        per_task = Decimal(str(device.price_per_task))
        return per_task + Decimal(str(device.price_per_shot)) * task.billed_shots

    def restore_results(self) -> dict[str, Any]:
        try:
            restored = self.bucket.restore(self.store, self.known_buckets())
        except S3Unavailable as error:
            raise ApiError("InternalServiceException", f"S3 unavailable: {error}") from error
        return {"restored": restored}

    def known_buckets(self) -> tuple[str, ...]:
        return tuple(sorted(self._known_buckets))

    def s3_intact(self) -> bool:
        return all(self.bucket.exists(b) for b in self.known_buckets())

    # --- helpers ----------------------------------------------------------------------------

    def _task(self, arn: str) -> Task:
        task = self.store.by_arn(arn)
        if task is None:
            raise ApiError("ResourceNotFoundException", f"quantum task {arn} not found")
        return task

    def _same_request(self, task: Task, request_hash: str) -> Task:
        if task.request_hash != request_hash:
            raise validation(
                f"clientToken {task.client_token} was already used for a different request "
                f"({task.arn})"
            )
        return task

    def _device_for_create(self, arn: str) -> Device:
        device = self.settings.device(arn)
        if device is None:
            raise validation(f"device {arn} does not exist")
        if device.status == "RETIRED":
            raise ApiError("DeviceRetiredException", f"{device.name} is retired")
        if self.faults.device_offline(device, time.time()):
            raise ApiError("DeviceOfflineException", f"{device.name} is offline")
        return device

    @staticmethod
    def _checked_shots(shots: Any, device: Device) -> int:
        if not isinstance(shots, int) or not device.min_shots <= shots <= device.max_shots:
            raise validation(
                f"shots must be between {device.min_shots} and {device.max_shots} on "
                f"{device.name}, got {shots}"
            )
        return shots

    def _checked_bucket(self, bucket: str) -> str:
        if bucket in self._known_buckets:
            return bucket
        try:
            exists = self.bucket.exists(bucket)
        except S3Unavailable as error:
            raise ApiError("InternalServiceException", f"S3 unavailable: {error}") from error
        if not exists:
            raise validation(f"Caller doesn't have access to s3://{bucket} or it doesn't exist")
        self._known_buckets.add(bucket)
        return bucket

    def _new_task(
        self,
        body: dict[str, Any],
        token: str,
        request_hash: str,
        device: Device,
        shots: int,
        action: dict[str, Any],
        device_parameters: dict[str, Any],
        bucket: str,
    ) -> dict[str, Any]:
        task_id = str(uuid.uuid4())
        now = time.time()
        return {
            "id": task_id,
            "arn": f"arn:aws:braket:{self.settings.region}:{self.settings.account_id}"
            f":quantum-task/{task_id}",
            "client_token": token,
            "request_hash": request_hash,
            "device_arn": device.arn,
            "status": "CREATED",
            "action": json.dumps(action),
            "device_parameters": json.dumps(device_parameters),
            "shots": shots,
            "bucket": bucket,
            "key_prefix": _required(body, "outputS3KeyPrefix"),
            "tags": json.dumps(body.get("tags") or {}),
            "created_at": now,
            "ready_at": now + self.faults.queue_delay(),
            "run_time": self.faults.run_time(),
            "action_metadata": json.dumps(_action_metadata(action)),
        }

    def _queue_info(self, task: Task) -> dict[str, Any]:
        info: dict[str, Any] = {"queue": "QUANTUM_TASKS_QUEUE", "queuePriority": "Normal"}
        if task.status in QUEUED_STATES:
            info["position"] = _position(self.store.queue_position(task))
        else:
            info["position"] = "None"
            info["message"] = (
                f"Task is in {task.status} status. AmazonBraket does not show queue position "
                "for this status."
            )
        return info

    def _device_summary(self, device: Device) -> dict[str, Any]:
        offline = device.status == "ONLINE" and self.faults.device_offline(device, time.time())
        return {
            "deviceArn": device.arn,
            "deviceName": device.name,
            "providerName": device.provider,
            "deviceType": "QPU",
            "deviceStatus": "OFFLINE" if offline else device.status,
        }


def _action_metadata(action: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"actionType": action["braketSchemaHeader"]["name"]}
    if is_program_set(action):
        metadata["programCount"], metadata["executableCount"] = executable_count(action)
    return metadata


def _required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value in (None, ""):
        raise validation(f"{name} is required")
    return value


def _request_hash(body: dict[str, Any]) -> str:
    """What makes two creates the same request (the token and tags do not)."""
    fields = {
        "deviceArn": body.get("deviceArn"),
        "shots": body.get("shots"),
        "outputS3Bucket": body.get("outputS3Bucket"),
        "outputS3KeyPrefix": body.get("outputS3KeyPrefix"),
        "action": _canonical(body.get("action")),
        "deviceParameters": _canonical(body.get("deviceParameters")),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _position(count: int) -> str:
    return f">{QUEUE_POSITION_CAP}" if count > QUEUE_POSITION_CAP else str(count)


def _filters(body: dict[str, Any]) -> list[tuple[str, set[str]]]:
    return [(f["name"], set(f.get("values") or [])) for f in body.get("filters") or []]


def _page(items: list[dict[str, Any]], body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    start = int(body.get("nextToken") or 0)
    size = int(body.get("maxResults") or 100)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


_TASK_FILTER_FIELDS = {"status": "status", "deviceArn": "device_arn", "quantumTaskArn": "arn"}


def _task_matches(task: Task, spec: dict[str, Any]) -> bool:
    name, values, operator = spec.get("name"), spec.get("values") or [], spec.get("operator")
    if name == "createdAt":
        stamps = [float(v) if _is_number(v) else _iso_epoch(v) for v in values]
        return _compare(task.created_at, operator, stamps)
    if name not in _TASK_FILTER_FIELDS:
        raise validation(f"unsupported filter {name!r}")
    return getattr(task, _TASK_FILTER_FIELDS[name]) in values


def _compare(value: float, operator: str | None, bounds: list[float]) -> bool:
    if operator == "BETWEEN":
        return bounds[0] <= value <= bounds[1]
    checks = {
        "LT": value < bounds[0],
        "LTE": value <= bounds[0],
        "EQUAL": value == bounds[0],
        "GT": value > bounds[0],
        "GTE": value >= bounds[0],
    }
    return checks[operator or "EQUAL"]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _iso_epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _task_summary(task: Task) -> dict[str, Any]:
    summary = {
        "quantumTaskArn": task.arn,
        "status": task.status,
        "deviceArn": task.device_arn,
        "shots": task.shots,
        "outputS3Bucket": task.bucket,
        "outputS3Directory": task.directory,
        "createdAt": iso_time(task.created_at),
        "tags": json.loads(task.tags),
    }
    if task.ended_at is not None:
        summary["endedAt"] = iso_time(task.ended_at)
    return summary
