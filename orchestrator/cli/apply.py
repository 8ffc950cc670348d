"""`orchctl apply -f` and `orchctl create -f|namespace`.

Both check every document locally first (kind, fields, types, names), then
ask the server to validate every document with a dry run, and write nothing
if any document is invalid. Only then are objects written, Namespaces
first; a server error on one object is reported and the rest still go.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from orchestrator.api.kinds import kind_info
from orchestrator.api.meta import meta
from orchestrator.cli.errors import CliError, from_server, one_line, report, report_error
from orchestrator.cli.manifests import (
    Document,
    check_metadata,
    load_documents,
    namespaces_first,
    target_namespace,
)
from orchestrator.cli.printers import resource_name
from orchestrator.cli.session import Session
from orchestrator.client.client import (
    ApiError,
    Client,
    InvalidError,
    NotFoundError,
    UnavailableError,
)

DRY_RUN_SUFFIX = {"client": " (dry run)", "server": " (server dry run)", "none": ""}


def _dry_run_mode(value: str | None) -> str:
    mode = value or "none"
    if mode not in DRY_RUN_SUFFIX:
        raise CliError(f'invalid dry-run value ({mode}). Must be "none", "server", or "client".')
    return mode


async def _preflight(
    targets: list[tuple[Document, str]], check: Callable[[Document, str], Awaitable[Any]]
) -> tuple[list[str], dict[int, Any]]:
    """Server-side validation of every document (dry run). Invalid documents are
    returned as problems; other failures (a namespace created by the same
    files, an existing object for create) are left for the real pass."""
    problems: list[str] = []
    results: dict[int, Any] = {}
    for i, (doc, ns) in enumerate(targets):
        try:
            results[i] = await check(doc, ns)
        except UnavailableError:
            raise
        except InvalidError as exc:
            problems.append(f"{doc.label}: {doc.what}: {one_line(exc.message)}")
        except ApiError as exc:
            results[i] = exc
    return problems, results


def _targets(session: Session, docs: list[Document]) -> list[tuple[Document, str]]:
    default = session.namespace
    return [
        (d, target_namespace(d, default, session.namespace_explicit))
        for d in namespaces_first(docs)
    ]


def _doc_error(doc: Document, exc: ApiError) -> str:
    return f"error: {doc.label}: {doc.what}: {one_line(exc.message)}"


async def run_apply(session: Session, args: argparse.Namespace) -> int:
    mode = _dry_run_mode(args.dry_run)
    if not args.filename:
        raise CliError("must specify one of -f and -k")
    docs = load_documents(args.filename, recursive=args.recursive)
    if not docs:
        raise CliError("no objects passed to apply")
    targets = _targets(session, docs)
    client = await session.client()
    if mode == "client":
        return await _client_dry_run(client, targets)

    async def check(doc: Document, ns: str) -> str:
        _, outcome = await client.apply(doc.data, namespace=ns, dry_run=True)
        return outcome

    problems, results = await _preflight(targets, check)
    if problems:
        for line in problems:
            report_error(line)
        return 1
    rc = 0
    batch_namespaces = {d.name for d, _ in targets if d.info.kind == "Namespace"}
    for i, (doc, ns) in enumerate(targets):
        if mode == "server":
            outcome = results.get(i)
            if isinstance(outcome, NotFoundError) and ns in batch_namespaces:
                outcome = "created"  # its namespace is in the same files
            if isinstance(outcome, ApiError):
                report(_doc_error(doc, outcome))
                rc = 1
                continue
            print(
                f"{resource_name(doc.info, doc.name)} {outcome}{DRY_RUN_SUFFIX[mode]}", flush=True
            )
            continue
        try:
            obj, outcome = await client.apply(doc.data, namespace=ns)
        except UnavailableError:
            raise
        except ApiError as exc:
            report(_doc_error(doc, exc))
            rc = 1
            continue
        print(f"{resource_name(doc.info, meta(obj).name or doc.name)} {outcome}", flush=True)
    return rc


async def _client_dry_run(client: Client, targets: list[tuple[Document, str]]) -> int:
    for doc, ns in targets:
        try:
            await client.get(doc.info.kind, doc.name, ns or None)
            outcome = "configured"
        except NotFoundError:
            outcome = "created"
        print(
            f"{resource_name(doc.info, doc.name)} {outcome}{DRY_RUN_SUFFIX['client']}", flush=True
        )
    return 0


# -- create ---------------------------------------------------------------------------------------


def _with_namespace(doc: Document, ns: str) -> Message:
    assert doc.obj is not None
    obj = type(doc.obj)()
    obj.CopyFrom(doc.obj)
    if doc.info.namespaced:
        meta(obj).namespace = ns
    return obj


async def run_create_files(session: Session, args: argparse.Namespace) -> int:
    mode = _dry_run_mode(args.dry_run)
    if not args.filename:
        raise CliError("must specify -f FILE, or what to create (`orchctl create namespace NAME`)")
    docs = load_documents(args.filename, recursive=args.recursive, need_name=False)
    if not docs:
        raise CliError("no objects passed to create")
    targets = _targets(session, docs)
    client = await session.client()
    suffix = DRY_RUN_SUFFIX[mode]
    if mode == "client":
        for doc, _ in targets:
            print(f"{resource_name(doc.info, doc.name)} created{suffix}", flush=True)
        return 0

    async def check(doc: Document, ns: str) -> Message:
        return await client.create(_with_namespace(doc, ns), dry_run=True)

    problems, _ = await _preflight(targets, check)
    if problems:
        for line in problems:
            report_error(line)
        return 1
    rc = 0
    for doc, ns in targets:
        try:
            created = await client.create(_with_namespace(doc, ns), dry_run=mode == "server")
        except UnavailableError:
            raise
        except ApiError as exc:
            report(from_server(exc, f'error when creating "{doc.source}": '))
            rc = 1
            continue
        print(f"{resource_name(doc.info, meta(created).name)} created{suffix}", flush=True)
    return rc


async def run_create_namespace(session: Session, args: argparse.Namespace) -> int:
    mode = _dry_run_mode(args.dry_run)
    info = kind_info("Namespace")
    problems = check_metadata(info, {"metadata": {"name": args.name}}, need_name=True)
    if problems:
        raise CliError(f'Namespace "{args.name}" is invalid: {problems[0]}')
    obj = info.new()
    meta(obj).name = args.name
    if mode != "client":
        client = await session.client()
        try:
            await client.create(obj, dry_run=mode == "server")
        except UnavailableError:
            raise
        except ApiError as exc:
            report(from_server(exc))
            return 1
    print(f"namespace/{args.name} created{DRY_RUN_SUFFIX[mode]}", flush=True)
    return 0
