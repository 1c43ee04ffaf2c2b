"""Classified provider errors: the class decides whether qloop retries, falls back or gives up."""

from __future__ import annotations

from schemas.execution import ErrorClass


class ProviderError(Exception):
    error_class: ErrorClass

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientError(ProviderError):
    """Throttling, timeouts, 5xx: retry with backoff."""

    error_class = ErrorClass.TRANSIENT


class RejectedError(ProviderError):
    """Quota exhausted, device offline: do not retry here, take a fallback."""

    error_class = ErrorClass.REJECTED


class SpendingLimitError(RejectedError):
    """The provider's own spending limit on the device refused the task (Braket's per-device
    limit, which `qloop budget set --provider-backstop` sets): the device takes nothing that
    costs more until the limit is raised or spend is released."""


class InvalidRequestError(ProviderError):
    """The circuit or the options cannot run on this device: never retry."""

    error_class = ErrorClass.INVALID


class JobFailedError(ProviderError):
    """The provider ran the job and says it failed."""

    error_class = ErrorClass.JOB_FAILED
