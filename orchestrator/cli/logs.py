"""`orchctl logs POD [CONTAINER] [-c C] [-f] [--tail N] [--since 5m] [--timestamps] [-p]`.

As kubectl: the container's stdout and stderr, interleaved as written, on
stdout. The apiserver fetches them from the agent of the pod's node.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from orchestrator.api.kinds import kind_info
from orchestrator.cli.errors import CliError, from_server, not_found, one_line, report
from orchestrator.cli.resources import resolve_type
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, Client, NotFoundError, UnavailableError
from orchestrator.client.streams import (
    ContainerChoiceError,
    choose_container,
    parse_since,
    pod_logs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pod", metavar="POD", help="the pod, as NAME or pod/NAME")
    p.add_argument("container_arg", nargs="?", default="", metavar="CONTAINER")
    p.add_argument("-c", "--container", default="", metavar="NAME", help="the container")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep streaming new lines as they are written"
    )
    p.add_argument(
        "--tail",
        type=int,
        default=-1,
        metavar="N",
        help="only the last N lines (default -1: every line)",
    )
    p.add_argument(
        "--since",
        default="",
        metavar="DURATION",
        help="only lines newer than this, e.g. 10s, 5m, 1h",
    )
    p.add_argument(
        "--timestamps", action="store_true", help="prefix each line with its RFC 3339 time"
    )
    p.add_argument(
        "-p",
        "--previous",
        action="store_true",
        help="the previous instance of the container (before its last restart)",
    )


def pod_name(ref: str) -> str:
    """`NAME` or `pod/NAME` (pods/, po/ too)."""
    if "/" not in ref:
        return ref
    type_name, _, name = ref.partition("/")
    info = resolve_type(type_name)
    if info.kind != "Pod":
        raise CliError(f"only pods have logs and exec here, not {info.resource} ({ref})")
    if not name:
        raise CliError(f'"{ref}" names no pod')
    return name


def stream_error(exc: ApiError) -> str:
    """kubectl's wording for errors of logs/exec: the apiserver's checks are
    BadRequest; an unreachable agent is a bare server error."""
    if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
        return f"Error from server (BadRequest): {one_line(exc.message)}"
    if exc.code == grpc.StatusCode.INTERNAL:
        return f"Error from server: {one_line(exc.message)}"
    return from_server(exc)


class PodNotFound(Exception):
    """Reported (kubectl's wording) already: exit 1."""


async def get_pod(client: Client, namespace: str, name: str) -> Any:
    try:
        return await client.get("Pod", name, namespace)
    except NotFoundError:
        report(not_found(kind_info("Pod"), name))
        raise PodNotFound(name) from None


def pick_container(pod: Any, requested: str) -> str:
    """Choose as kubectl does, before streaming: a clear error for a pod of
    several containers. (The apiserver applies the same rule.)"""
    try:
        return choose_container(pod, requested)
    except ContainerChoiceError as exc:
        raise CliError(str(exc)) from None


async def run_logs(session: Session, args: argparse.Namespace) -> int:
    name = pod_name(args.pod)
    if args.container and args.container_arg and args.container != args.container_arg:
        raise CliError("only one of -c or an inline container name is allowed")
    requested = args.container or args.container_arg
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    tail = args.tail if args.tail >= 0 else None
    client = await session.client()
    namespace = session.namespace
    try:
        pod = await get_pod(client, namespace, name)
    except PodNotFound:
        return 1
    container = pick_container(pod, requested)
    out = sys.stdout.buffer
    try:
        async for data in pod_logs(
            client,
            namespace,
            name,
            container=container,
            follow=args.follow,
            tail_lines=tail,
            since_seconds=since,
            timestamps=args.timestamps,
            previous=args.previous,
        ):
            out.write(data)
            out.flush()
    except UnavailableError:
        raise
    except ApiError as exc:
        report(stream_error(exc))
        return 1
    return 0
