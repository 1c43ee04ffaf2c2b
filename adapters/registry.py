"""From a BackendChoice to the adapter that serves it: one instance per distinct choice.

Each adapter's module is imported when a choice first needs it: a simulator (Aer, Braket's
LocalSimulator) loads only in a process that simulates, never in the orchestration role, which
talks to remote devices alone (adapters/braket_aws.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from adapters.base import Adapter
from adapters.braket_device import ARN_PREFIX
from adapters.errors import InvalidRequestError
from schemas.request import BackendChoice


def _aer(choice: BackendChoice) -> Adapter:
    from adapters.aer import AerAdapter

    return AerAdapter(choice.device, choice.noise_profile, choice.extra_depolarizing)


def _braket(choice: BackendChoice) -> Adapter:
    """A local simulator by name, or a real device by ARN."""
    if not choice.device.startswith(ARN_PREFIX):
        from adapters.braket_local import BraketLocalAdapter

        return BraketLocalAdapter(choice.device, choice.noise_profile, choice.extra_depolarizing)
    if choice.noise_profile is not None or choice.extra_depolarizing is not None:
        raise InvalidRequestError(
            "a Braket device ARN takes no noise_profile or extra_depolarizing; "
            "the device is as noisy as it is"
        )
    from adapters.braket_aws import BraketAwsAdapter

    return BraketAwsAdapter(choice.device)


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
