"""API errors: each a distinct gRPC status with a message a person can act on."""

from __future__ import annotations

import grpc

from orchestrator.api.codec import FieldError


class ApiError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(ApiError):
    """Optimistic concurrency failed: re-read the object and try again."""

    code = grpc.StatusCode.ABORTED


class Invalid(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, what: str, errors: list[FieldError]) -> None:
        detail = "; ".join(str(e) for e in errors)
        super().__init__(f"{what} is invalid: {detail}")
        self.errors = errors


class BadRequest(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Forbidden(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Gone(ApiError):
    """The requested resourceVersion is older than the history kept: relist."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE
