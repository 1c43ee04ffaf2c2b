"""Tasks for the compute pool's tests. Children import what they run by name, so these live in
an importable module rather than inside a test."""

from __future__ import annotations

import os
import time
from pathlib import Path

from adapters import errors as provider_errors


class Unpicklable(Exception):
    def __init__(self, message: str, extra: int) -> None:
        super().__init__(message)  # pickling restores args only, so unpickling fails
        self.extra = extra


def square(value: int) -> int:
    return value * value


def environment(name: str) -> tuple[str | None, str]:
    return os.environ.get(name), os.getcwd()


def pid(_: object) -> int:
    return os.getpid()


def hog_memory(step_mb: int) -> None:
    """Touches memory step by step, as a circuit that unrolls without end would."""
    blocks = []
    while True:
        blocks.append(bytearray(step_mb << 20))
        time.sleep(0.005)


def allocate_at_once(gigabytes: int) -> int:
    return len(bytearray(gigabytes << 30))


def spin(_: object) -> None:
    while True:
        pass


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def abort(_: object) -> None:
    os.abort()


def refuse(message: str) -> None:
    raise ValueError(message)


def provider_refuses(error_class: str) -> None:
    """Raises the provider error of that class, as an adapter asked during CPU work would."""
    raise getattr(provider_errors, error_class)(f"the device said no ({error_class})")


def refuse_unpicklably(message: str) -> None:
    raise Unpicklable(message, 7)


def touch_then_spin(path: str) -> None:
    """Says where it runs (the file holds its pid), then never ends."""
    Path(path).write_text(str(os.getpid()))
    while True:
        time.sleep(0.01)
