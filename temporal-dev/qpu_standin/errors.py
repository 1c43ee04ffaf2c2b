"""Braket API errors as the service sends them: HTTP status plus x-amzn-ErrorType code."""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 402,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "UnknownOperationException": 404,
    "ConflictException": 409,
    "DeviceRetiredException": 410,
    "DeviceOfflineException": 424,
    "ThrottlingException": 429,
    "InternalServiceException": 500,
    "ServiceUnavailableException": 503,
}


class ApiError(Exception):
    """An error response; botocore turns it into ClientError with `code`."""

    def __init__(self, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = STATUS_BY_CODE[code]
        self.fields = fields  # more members of the error shape, e.g. a ValidationException's

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.fields}


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)
