"""`orchctl label` and `orchctl annotate`, with kubectl's rules: `k=v` adds,
changing an existing value needs --overwrite, `k-` removes. Each object is
read, changed and written back with optimistic concurrency, retried on a
conflict."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from orchestrator.api import names
from orchestrator.api.kinds import kind_info
from orchestrator.api.meta import meta
from orchestrator.cli.errors import CliError, from_server, not_found, report, report_error
from orchestrator.cli.manifests import load_documents
from orchestrator.cli.printers import resource_name
from orchestrator.cli.resources import check_label_selector, parse_resource_args
from orchestrator.cli.session import Session
from orchestrator.client.client import (
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
    UnavailableError,
)

UPDATE_TRIES = 3


@dataclass(frozen=True)
class Mode:
    field: str  # "labels" or "annotations"
    noun: str  # "label" or "annotation"
    done: str  # "labeled" or "annotated"
    unchanged: str  # what is printed when nothing changed


LABEL = Mode("labels", "label", "labeled", "not labeled")
ANNOTATE = Mode("annotations", "annotation", "annotated", "annotated")


@dataclass
class Changes:
    set: dict[str, str]
    remove: list[str]


def is_change_arg(arg: str) -> bool:
    return "=" in arg or (arg.endswith("-") and arg != "-")


def parse_changes(specs: Sequence[str], mode: Mode) -> Changes:
    changes = Changes({}, [])
    for spec in specs:
        if "=" in spec:
            key, _, value = spec.partition("=")
            problems = names.qualified_name(key)
            if problems:
                raise CliError(f'invalid {mode.noun} spec: "{spec}": {"; ".join(problems)}')
            if mode is LABEL:
                value_problems = names.label_value(value)
                if value_problems:
                    raise CliError(f'invalid label value: "{spec}": {"; ".join(value_problems)}')
            changes.set[key] = value
        else:
            key = spec[:-1]
            problems = names.qualified_name(key)
            if problems:
                raise CliError(f'invalid {mode.noun} spec: "{spec}": {"; ".join(problems)}')
            if key not in changes.remove:
                changes.remove.append(key)
    both = sorted(set(changes.set) & set(changes.remove))
    if both:
        raise CliError(
            f'can not both modify and remove the {mode.noun} "{both[0]}" in the same command'
        )
    return changes


def apply_changes(
    current: dict[str, str], changes: Changes, overwrite: bool, mode: Mode
) -> tuple[dict[str, str], list[str]]:
    """(new map, keys asked to be removed that were not there). Raises CliError when
    a value would change without --overwrite."""
    for key, value in changes.set.items():
        if key in current and current[key] != value and not overwrite:
            raise CliError(
                f"'{key}' already has a value ({current[key]}), and --overwrite is false"
            )
    new = dict(current)
    new.update(changes.set)
    missing = []
    for key in changes.remove:
        if key in new:
            del new[key]
        else:
            missing.append(key)
    return new, missing


async def run_label(session: Session, args: argparse.Namespace) -> int:
    return await _run(session, args, LABEL)


async def run_annotate(session: Session, args: argparse.Namespace) -> int:
    return await _run(session, args, ANNOTATE)


async def _objects(
    session: Session, client: Client, args: argparse.Namespace, resource_args: list[str]
) -> tuple[list[Message], int]:
    rc = 0
    found: list[Message] = []
    if args.filename:
        if resource_args:
            raise CliError("when using -f, do not name resources as arguments")
        docs = load_documents(args.filename, recursive=args.recursive, strict=False)
        pairs = [(d.info, d.namespace or session.namespace, [d.name]) for d in docs]
    else:
        selections = parse_resource_args(resource_args, verb=args.verb)
        pairs = [(s.info, session.namespace, s.names) for s in selections]
    selector = check_label_selector(args.selector)
    for info, ns, wanted in pairs:
        if wanted:
            if selector or args.all:
                raise CliError("name cannot be provided when a selector is specified")
            for name in wanted:
                try:
                    found.append(await client.get(info.kind, name, ns))
                except NotFoundError:
                    report(not_found(info, name))
                    rc = 1
            continue
        if not (selector or args.all):
            raise CliError("resource(s) were provided, but no name was specified")
        listing = await client.list(
            info.kind, ns, label_selector=selector, all_namespaces=args.all_namespaces
        )
        found.extend(listing.items)
    return found, rc


async def _run(session: Session, args: argparse.Namespace, mode: Mode) -> int:
    resource_args = [a for a in args.args if not is_change_arg(a)]
    specs = [a for a in args.args if is_change_arg(a)]
    dry_run = args.dry_run or "none"
    if dry_run not in ("none", "client", "server"):
        raise CliError(f'invalid dry-run value ({dry_run}). Must be "none", "server", or "client".')
    if not resource_args and not args.filename:
        raise CliError(
            "one or more resources must be specified as <resource> <name> or <resource>/<name>"
        )
    if not specs and not args.list:
        raise CliError(f"at least one {mode.noun} update is required")
    changes = parse_changes(specs, mode)
    client = await session.client()
    objects, rc = await _objects(session, client, args, resource_args)
    if args.list:
        for obj in objects:
            for key, value in sorted(getattr(meta(obj), mode.field).items()):
                print(f"{key}={value}")
        return rc
    for obj in objects:
        if not await _change_one(client, obj, changes, args, mode, dry_run):
            rc = 1
    return rc


async def _change_one(
    client: Client,
    obj: Message,
    changes: Changes,
    args: argparse.Namespace,
    mode: Mode,
    dry_run: str,
) -> bool:
    kind = obj.kind  # type: ignore[attr-defined]
    info = kind_info(kind)
    m = meta(obj)
    name, ns = m.name, m.namespace
    label = resource_name(info, name)
    for attempt in range(UPDATE_TRIES):
        if attempt:
            try:
                obj = await client.get(kind, name, ns or None)
            except NotFoundError:
                report(not_found(info, name))
                return False
            m = meta(obj)
        current = dict(getattr(m, mode.field))
        try:
            new, missing = apply_changes(current, changes, args.overwrite, mode)
        except CliError as exc:
            report_error(exc.message)
            return False
        if attempt == 0:
            for key in missing:
                print(f'{mode.noun} "{key}" not found.', flush=True)
        if new == current:
            print(f"{label} {mode.unchanged}", flush=True)
            return True
        field_map = getattr(m, mode.field)
        field_map.clear()
        field_map.update(new)
        if args.resource_version:
            m.resource_version = args.resource_version
        if dry_run == "client":
            print(f"{label} {mode.done} (dry run)", flush=True)
            return True
        try:
            await client.update(obj, dry_run=dry_run == "server")
        except ConflictError as exc:
            if args.resource_version or attempt == UPDATE_TRIES - 1:
                report(from_server(exc))
                return False
            continue
        except UnavailableError:
            raise
        except ApiError as exc:
            report(from_server(exc))
            return False
        suffix = " (server dry run)" if dry_run == "server" else ""
        print(f"{label} {mode.done}{suffix}", flush=True)
        return True
    return False
