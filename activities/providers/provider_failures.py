"""A provider error as it crosses an activity boundary: its class becomes the ApplicationError
type, so retry policies retry transient errors and workflows fall back from rejected backends,
whether the error came from a provider call or from a CPU stage that asked the provider (a
device's properties while planning)."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from adapters.errors import ProviderError
from schemas import error_types
from schemas.execution import ErrorClass

ERROR_TYPES = {
    ErrorClass.TRANSIENT: error_types.TRANSIENT,
    ErrorClass.REJECTED: error_types.REJECTED,
    ErrorClass.INVALID: error_types.INVALID_REQUEST,
    ErrorClass.JOB_FAILED: error_types.JOB_FAILED,
}


def as_application_error(error: ProviderError) -> ApplicationError:
    return ApplicationError(
        error.message,
        type=ERROR_TYPES[error.error_class],
        non_retryable=error.error_class is not ErrorClass.TRANSIENT,
    )
