"""Fault injection from one seeded RNG, so a run with the same seed and calls is reproducible."""

from __future__ import annotations

import random
import threading

from qpu_standin.config import Device, Faults
from qpu_standin.errors import ApiError


class FaultInjector:
    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self.configure(faults)

    def configure(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def before_call(self, operation: str, now: float) -> ApiError | None:
        """The error a Braket call fails with before it takes effect, if any."""
        if any(o.kind == "unavailable" and o.covers(now) for o in self.faults.outages):
            return ApiError("ServiceUnavailableException", "injected outage window")
        if self._draw(_rate(self.faults.throttle_rate, operation)):
            return ApiError("ThrottlingException", "Rate exceeded (injected)")
        if self._draw(_rate(self.faults.error_rate, operation)):
            return ApiError("InternalServiceException", "injected internal error")
        return None

    def lose_response(self, operation: str) -> bool:
        return self._draw(_rate(self.faults.lost_response_rate, operation))

    def task_fails(self) -> bool:
        return self._draw(self.faults.task_failure_rate)

    def executable_fails(self) -> bool:
        return self._draw(self.faults.executable_failure_rate)

    def queue_delay(self) -> float:
        return self._uniform(self.faults.queue_delay_s)

    def run_time(self) -> float:
        return self._uniform(self.faults.run_time_s)

    def seed_for(self, sequence: int) -> int:
        """A simulation seed per task: reproducible for a seed, different between tasks."""
        return (self.faults.seed * 1_000_003 + sequence) % 2**31

    def device_offline(self, device: Device, now: float) -> bool:
        if device.status != "ONLINE":
            return True
        return any(
            o.kind == "device_offline" and o.covers(now, device) for o in self.faults.outages
        )

    def _draw(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def _uniform(self, bounds: tuple[float, float]) -> float:
        low, high = bounds
        if low == high:
            return low
        with self._lock:
            return self._rng.uniform(low, high)


def _rate(rates: dict[str, float], operation: str) -> float:
    return rates.get(operation, rates.get("*", 0.0))
