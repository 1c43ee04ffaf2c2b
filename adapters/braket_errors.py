"""Braket and S3 errors as qloop's error classes: throttling, 5xx and lost connections are
transient; quota, offline or retired devices, denied access and a task over the device's
spending limit are rejected; everything else is an invalid request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from adapters.errors import (
    InvalidRequestError,
    ProviderError,
    RejectedError,
    SpendingLimitError,
    TransientError,
)

TRANSIENT_CODES = frozenset({
    "ThrottlingException", "InternalServiceException", "ServiceUnavailableException",
    "TooManyRequestsException", "RequestTimeout", "RequestTimeoutException", "SlowDown",
    "NoSuchKey",  # a result object not visible yet
})  # fmt: skip
REJECTED_CODES = frozenset({
    "ServiceQuotaExceededException", "DeviceOfflineException", "DeviceRetiredException",
    "AccessDeniedException", "AccessDenied", "NoSuchBucket",  # AccessDenied: S3's spelling
})  # fmt: skip
# Braket answers a task over a device's spending limit with a plain ValidationException (its
# ValidationExceptionReason names program sets only): the message is what tells it apart.
SPENDING_LIMIT_WORDS = "spending limit"


def classify(error: Exception, action: str) -> ProviderError:
    """A boto or Braket error as qloop's error class: throttling, 5xx and lost connections are
    transient; quota, offline or retired devices, denied access and a task the device's
    spending limit refuses are rejected; everything else (ValidationException,
    ResourceNotFoundException, other 4xx) is invalid."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        http = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = error.response.get("Error", {}).get("Message")
        message = f"Braket {action} failed: {code}: {detail}"
        if code in TRANSIENT_CODES or http >= 500:
            return TransientError(message)
        if code in REJECTED_CODES:
            return RejectedError(message)
        if action == "CreateQuantumTask" and _over_spending_limit(code, detail):
            return SpendingLimitError(
                f"Braket {action} refused by the provider's spending limit on the device (the "
                f"provider-side budget backstop): {detail}"
            )
        return InvalidRequestError(message)
    if isinstance(error, ConnectionError | HTTPClientError):
        return TransientError(f"Braket {action}: cannot reach the service: {error}")
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return RejectedError(f"Braket {action}: no usable AWS credentials: {error}")
    return InvalidRequestError(f"Braket {action} failed: {type(error).__name__}: {error}")


def _over_spending_limit(code: str, detail: object) -> bool:
    return code == "ValidationException" and SPENDING_LIMIT_WORDS in str(detail).lower()


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise classify(error, action) from error
