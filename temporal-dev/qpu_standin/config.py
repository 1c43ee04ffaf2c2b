"""Configuration: a YAML file, then QLOOP_STANDIN_* environment overrides, then run-time patches.

Rates (throttling, 5xx, lost replies) are either one number for every Braket operation or a map
from operation name to rate with "*" as the default. Durations are seconds, either a number or
a [low, high] range sampled uniformly. Outage windows take epoch seconds or ISO 8601 times.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "qpu-standin.yaml"

OPERATIONS = (
    "CreateQuantumTask",
    "GetQuantumTask",
    "CancelQuantumTask",
    "GetDevice",
    "SearchDevices",
    "SearchQuantumTasks",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_range(value: Any) -> Any:
    if isinstance(value, int | float):
        return (value, value)
    if isinstance(value, str):
        return tuple(float(part) for part in value.split(","))
    return value


def _as_rates(value: Any) -> Any:
    if isinstance(value, int | float | str):
        return {"*": float(value)}
    return value


def _as_epoch(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    if isinstance(value, datetime):
        return value.timestamp()
    return value


class Outage(_Strict):
    """During [start, end): `device_offline` takes devices offline (no new tasks, queue paused);
    `unavailable` answers every Braket call with 503 while queued tasks keep running."""

    start: float
    end: float
    kind: Literal["device_offline", "unavailable"] = "device_offline"
    devices: tuple[str, ...] = ()  # ARNs or names; empty means every device

    _epoch_start = field_validator("start", "end", mode="before")(_as_epoch)

    def covers(self, now: float, device: Device | None = None) -> bool:
        if not self.start <= now < self.end:
            return False
        return (
            device is None
            or not self.devices
            or bool({device.arn, device.name} & set(self.devices))
        )


class Faults(_Strict):
    seed: int = 0
    queue_delay_s: tuple[float, float] = (0.0, 0.0)
    run_time_s: tuple[float, float] = (0.0, 0.0)
    throttle_rate: dict[str, float] = Field(default_factory=lambda: {"*": 0.0})
    error_rate: dict[str, float] = Field(default_factory=lambda: {"*": 0.0})
    # The call takes effect but the caller gets a 500: what an idempotent client must survive.
    lost_response_rate: dict[str, float] = Field(default_factory=lambda: {"*": 0.0})
    task_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # Executables of a program set that fail on their own (the task still completes, billed for
    # the shots of the executables that ran).
    executable_failure_rate: float = Field(default=0.0, ge=0, le=1)
    outages: tuple[Outage, ...] = ()

    _ranges = field_validator("queue_delay_s", "run_time_s", mode="before")(_as_range)
    _rates = field_validator("throttle_rate", "error_rate", "lost_response_rate", mode="before")(
        _as_rates
    )

    @field_validator("queue_delay_s", "run_time_s")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"want 0 <= low <= high, got {list(value)}")
        return value

    @field_validator("throttle_rate", "error_rate", "lost_response_rate")
    @classmethod
    def _known_operations(cls, value: dict[str, float]) -> dict[str, float]:
        for operation, rate in value.items():
            if operation != "*" and operation not in OPERATIONS:
                raise ValueError(f"unknown operation {operation!r}; known: {', '.join(OPERATIONS)}")
            if not 0 <= rate <= 1:
                raise ValueError(f"rate for {operation} must be in [0, 1], got {rate}")
        return value


class ProgramSetLimits(_Strict):
    """What the device's braket.ir.openqasm.program_set action allows (GetDevice reports it as
    OpenQASMProgramSetDeviceActionProperties)."""

    max_executables: int = Field(ge=1)
    max_total_shots: int = Field(ge=1)
    min_total_shots: int | None = Field(default=None, ge=1)


class Device(_Strict):
    name: str
    arn: str
    provider: str = "qloop"
    profile: str | None = None  # qloop device profile (noise model); None is a noiseless device
    status: Literal["ONLINE", "OFFLINE", "RETIRED"] = "ONLINE"
    qubit_count: int | None = None  # from the profile when not given
    native_gates: tuple[str, ...] | None = None
    # None: the profile's coupling map; (): fully connected.
    connectivity: tuple[tuple[int, int], ...] | None = None
    min_shots: int = 1
    max_shots: int = 100_000
    concurrency: int = Field(default=1, ge=1)
    max_queued_tasks: int = Field(default=100_000, ge=1)
    price_per_task: float = 0.30
    price_per_shot: float = 0.00145
    program_sets: ProgramSetLimits | None = None  # None: one program per task only
    # Calibration epochs (qpu_standin/calibration.py): recalibrated at every multiple of the
    # period since the Unix epoch (None: never on a schedule), and at `recalibrated_at` (epoch
    # seconds or ISO 8601; POST /_admin/config sets it to force a recalibration).
    calibration_period_s: float | None = Field(default=None, gt=0)
    recalibrated_at: float | None = None

    _recalibrated_epoch = field_validator("recalibrated_at", mode="before")(_as_epoch)

    @model_validator(mode="after")
    def _has_size(self) -> Device:
        if self.profile is None and self.qubit_count is None:
            raise ValueError(f"device {self.name}: give a profile or a qubit_count")
        return self


class Settings(_Strict):
    region: str = "us-east-1"
    account_id: str = "123456789012"
    poll_interval_ms: int = 1000
    buckets: tuple[str, ...] = ()  # created in S3 at start and after S3 lost its state
    devices: tuple[Device, ...]
    faults: Faults = Faults()

    def device(self, arn: str) -> Device | None:
        return next((d for d in self.devices if d.arn == arn), None)


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """The YAML file (QLOOP_STANDIN_CONFIG or the bundled default) with env overrides applied."""
    env = dict(os.environ if env is None else env)
    path = path or Path(env.get("QLOOP_STANDIN_CONFIG") or DEFAULT_CONFIG)
    raw = yaml.safe_load(path.read_text()) or {}
    return Settings.model_validate(_with_env(raw, env))


_FAULT_ENV = {
    "QLOOP_STANDIN_SEED": "seed",
    "QLOOP_STANDIN_QUEUE_DELAY": "queue_delay_s",
    "QLOOP_STANDIN_RUN_TIME": "run_time_s",
    "QLOOP_STANDIN_THROTTLE_RATE": "throttle_rate",
    "QLOOP_STANDIN_ERROR_RATE": "error_rate",
    "QLOOP_STANDIN_LOST_RESPONSE_RATE": "lost_response_rate",
    "QLOOP_STANDIN_TASK_FAILURE_RATE": "task_failure_rate",
    "QLOOP_STANDIN_EXECUTABLE_FAILURE_RATE": "executable_failure_rate",
}


def _with_env(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    faults = dict(raw.get("faults") or {})
    faults.update({key: env[var] for var, key in _FAULT_ENV.items() if env.get(var)})
    buckets = list(raw.get("buckets") or [])
    if env.get("QLOOP_BRAKET_S3_BUCKET"):
        buckets.append(env["QLOOP_BRAKET_S3_BUCKET"])
    return {**raw, "faults": faults, "buckets": tuple(dict.fromkeys(buckets))}


def patched(settings: Settings, patch: dict[str, Any]) -> Settings:
    """`settings` with a run-time patch: {"faults": {...}, "devices": {arn or name: {...}}}."""
    unknown = set(patch) - {"faults", "devices"}
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; want 'faults' and/or 'devices'")
    faults = {**settings.faults.model_dump(), **(patch.get("faults") or {})}
    device_patches = dict(patch.get("devices") or {})
    devices = []
    for device in settings.devices:
        changes = (
            device_patches.pop(device.arn, None) or device_patches.pop(device.name, None) or {}
        )
        devices.append({**device.model_dump(), **changes})
    if device_patches:
        raise ValueError(f"unknown devices {sorted(device_patches)}")
    return Settings.model_validate({**settings.model_dump(), "faults": faults, "devices": devices})
