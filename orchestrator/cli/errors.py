"""How orchctl reports failures: one line on stderr, kubectl's wording, exit 1."""

from __future__ import annotations

import sys

import grpc

from orchestrator.api.kinds import KindInfo
from orchestrator.client.client import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)


class CliError(Exception):
    """A failure to report as `error: <message>`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def reason(exc: ApiError) -> str:
    """kubectl's StatusReason for an API error, as in `Error from server (NotFound)`."""
    if isinstance(exc, NotFoundError):
        return "NotFound"
    if isinstance(exc, AlreadyExistsError):
        return "AlreadyExists"
    if isinstance(exc, ConflictError):
        return "Conflict"
    if isinstance(exc, InvalidError):
        if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return "RequestEntityTooLarge"
        return "Invalid"
    if isinstance(exc, ForbiddenError):
        return "Forbidden"
    if isinstance(exc, UnauthenticatedError):
        return "Unauthorized"
    if isinstance(exc, GoneError):
        return "Expired"
    if isinstance(exc, UnavailableError):
        return "ServiceUnavailable"
    return "InternalError"


def one_line(text: str) -> str:
    return " ".join(text.split())


def from_server(exc: ApiError, context: str = "") -> str:
    """`Error from server (Reason): <context><message>`."""
    return f"Error from server ({reason(exc)}): {context}{one_line(exc.message)}"


def not_found(info: KindInfo, name: str) -> str:
    """kubectl's text for a missing object: `Error from server (NotFound): pods "x" not found`."""
    return f'Error from server (NotFound): {info.resource} "{name}" not found'


def unreachable(server: str, exc: ApiError) -> str:
    return f"error: cannot reach the apiserver at {server}: {one_line(exc.message)}"


def report(line: str) -> None:
    """Print one error line on stderr."""
    print(line, file=sys.stderr, flush=True)


def report_error(message: str) -> None:
    report(f"error: {one_line(message)}")


def warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr, flush=True)
