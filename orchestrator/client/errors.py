"""The API's errors as the client raises them: one class per gRPC status a
caller handles differently."""

from __future__ import annotations

import grpc


class ApiError(Exception):
    """An error the apiserver returned, with its gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFoundError(ApiError):
    pass


class AlreadyExistsError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class InvalidError(ApiError):
    pass


class ForbiddenError(ApiError):
    pass


class UnauthenticatedError(ApiError):
    pass


class GoneError(ApiError):
    """The watch's resourceVersion is too old: list again."""


class UnavailableError(ApiError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidError,
    grpc.StatusCode.PERMISSION_DENIED: ForbiddenError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.OUT_OF_RANGE: GoneError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


def from_status(code: grpc.StatusCode, details: str) -> ApiError:
    return _BY_CODE.get(code, ApiError)(code, details or code.name)


def translate_error(exc: grpc.aio.AioRpcError) -> ApiError:
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and "handshake" in details.lower():
        details = f"TLS handshake with the apiserver failed: {details}"
    return from_status(code, details)
