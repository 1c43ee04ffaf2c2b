"""From a BackendChoice to the adapter that serves it: one instance per distinct choice."""

from __future__ import annotations

import threading
from collections.abc import Callable

from adapters.aer import AerAdapter
from adapters.base import Adapter
from adapters.braket import braket_adapter
from adapters.errors import InvalidRequestError
from schemas.request import BackendChoice


def _aer(choice: BackendChoice) -> Adapter:
    return AerAdapter(choice.device, choice.noise_profile, choice.extra_depolarizing)


def _braket(choice: BackendChoice) -> Adapter:
    return braket_adapter(choice.device, choice.noise_profile, choice.extra_depolarizing)


PROVIDERS: dict[str, Callable[[BackendChoice], Adapter]] = {"aer": _aer, "braket": _braket}

_CACHE: dict[BackendChoice, Adapter] = {}
_LOCK = threading.Lock()


def get_adapter(choice: BackendChoice) -> Adapter:
    """The adapter for `choice`; an unknown provider, device or profile is an invalid request
    whose message names what is allowed."""
    with _LOCK:
        cached = _CACHE.get(choice)
        if cached is not None:
            return cached
        factory = PROVIDERS.get(choice.provider)
        if factory is None:
            raise InvalidRequestError(
                f"unknown provider {choice.provider!r}; allowed: {', '.join(sorted(PROVIDERS))}"
            )
        adapter = factory(choice)
        _CACHE[choice] = adapter
        return adapter
