"""`orchctl get`: tables, `-o wide|yaml|json|name`, selectors, `-A`, `-w`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo
from orchestrator.cli import printers, tabwriter
from orchestrator.cli.errors import CliError, not_found, report
from orchestrator.cli.manifests import load_documents
from orchestrator.cli.resources import (
    Selection,
    check_field_selector,
    check_label_selector,
    parse_resource_args,
)
from orchestrator.cli.session import Session
from orchestrator.client.client import Client, GoneError, NotFoundError

OUTPUTS = ("", "wide", "yaml", "json", "name")


@dataclass
class Group:
    info: KindInfo
    items: list[Message]
    named: bool  # asked for by name (one object prints as itself in -o yaml)


def check_output(value: str | None) -> str:
    out = value or ""
    if out not in OUTPUTS:
        raise CliError(
            f'unable to match a printer suitable for the output format "{out}", '
            "allowed formats are: json,name,wide,yaml"
        )
    return out


def no_resources_message(session: Session, infos: list[KindInfo], all_namespaces: bool) -> str:
    if all_namespaces or not any(i.namespaced for i in infos):
        return "No resources found"
    return f"No resources found in {session.namespace} namespace."


def _selections(session: Session, args: argparse.Namespace) -> list[tuple[Selection, str]]:
    """(selection, namespace) pairs from `TYPE NAME...` or `-f FILE`."""
    if args.filename:
        if args.resources:
            raise CliError("when using -f, do not name resources as arguments")
        docs = load_documents(args.filename, recursive=args.recursive, strict=False)
        return [(Selection(d.info, [d.name]), d.namespace or session.namespace) for d in docs]
    return [(s, session.namespace) for s in parse_resource_args(args.resources)]


async def run_get(session: Session, args: argparse.Namespace) -> int:
    output = check_output(args.output)
    label_selector = check_label_selector(args.selector or "")
    pairs = _selections(session, args)
    if label_selector and any(s.names for s, _ in pairs):
        raise CliError("name cannot be provided when a selector is specified")
    client = await session.client()
    if args.watch or args.watch_only:
        if len(pairs) != 1:
            raise CliError("you may only specify a single resource type")
        return await _watch(session, client, pairs[0][0], pairs[0][1], args, output, label_selector)
    rc = 0
    groups: list[Group] = []
    for sel, ns in pairs:
        if sel.names:
            items = []
            for name in sel.names:
                try:
                    items.append(await client.get(sel.info.kind, name, ns))
                except NotFoundError:
                    report(not_found(sel.info, name))
                    rc = 1
            _merge(groups, Group(sel.info, items, True))
        else:
            field_selector = check_field_selector(args.field_selector or "", sel.info)
            result = await client.list(
                sel.info.kind,
                ns,
                label_selector=label_selector,
                field_selector=field_selector,
                all_namespaces=args.all_namespaces,
            )
            _merge(groups, Group(sel.info, list(result.items), False))
    print_groups(session, groups, args, output, rc)
    return rc


def _merge(groups: list[Group], group: Group) -> None:
    if groups and groups[-1].info == group.info and groups[-1].named == group.named:
        groups[-1].items.extend(group.items)
    else:
        groups.append(group)


def table_options(
    args: argparse.Namespace, output: str, with_kind: bool, watch_events: bool = False
) -> printers.TableOptions:
    return printers.TableOptions(
        wide=output == "wide",
        all_namespaces=bool(args.all_namespaces),
        show_labels=bool(args.show_labels),
        no_headers=bool(args.no_headers),
        with_kind=with_kind,
        label_columns=tuple(_label_columns(args)),
        watch_events=watch_events,
    )


def _label_columns(args: argparse.Namespace) -> list[str]:
    keys: list[str] = []
    for value in args.label_columns or []:
        keys.extend(k.strip() for k in value.split(",") if k.strip())
    return keys


def print_groups(
    session: Session, groups: list[Group], args: argparse.Namespace, output: str, rc: int
) -> None:
    items = [i for g in groups for i in g.items]
    if output in ("yaml", "json"):
        single = len(groups) == 1 and groups[0].named and len(groups[0].items) == 1
        if not items and any(g.named for g in groups):
            return
        sys.stdout.write(printers.render_objects(items, output, as_list=not single))
        return
    if output == "name":
        for g in groups:
            sys.stdout.write(printers.render_names(g.items, g.info))
        return
    if not items:
        if rc == 0:
            report(
                no_resources_message(session, [g.info for g in groups], bool(args.all_namespaces))
            )
        return
    with_kind = len({g.info.kind for g in groups}) > 1
    now = printers.utcnow()
    first = True
    for g in groups:
        if not g.items:
            continue
        if not first:
            sys.stdout.write("\n")
        first = False
        sys.stdout.write(
            printers.render_table(g.items, g.info, table_options(args, output, with_kind), now)
        )
    sys.stdout.flush()


# -- watch ----------------------------------------------------------------------------------


class WatchPrinter:
    """Prints the first listing, then one row (or document) per event."""

    def __init__(self, info: KindInfo, args: argparse.Namespace, output: str) -> None:
        self.info = info
        self.output = output
        self.events = bool(args.output_watch_events)
        self.opts = table_options(args, output, False, self.events)
        self.table = tabwriter.RememberingTable()
        self.header_done = bool(args.no_headers)
        self.documents = 0

    def rows(self, events: list[tuple[str, Message]]) -> None:
        if not events:
            return
        if self.output in ("yaml", "json"):
            for type_, obj in events:
                doc: dict[str, Any] = printers.as_dict(obj)
                if self.events:
                    doc = {"type": type_, "object": doc}
                if self.output == "yaml":
                    if self.documents:
                        sys.stdout.write("---\n")
                    sys.stdout.write(printers.render_yaml(doc))
                else:
                    sys.stdout.write(json.dumps(doc, indent=4, ensure_ascii=False) + "\n")
                self.documents += 1
        elif self.output == "name":
            for type_, obj in events:
                prefix = f"{type_} " if self.events else ""
                sys.stdout.write(prefix + printers.render_names([obj], self.info))
        else:
            now = printers.utcnow()
            rows = []
            if not self.header_done:
                rows.append(printers.table_header(self.info, self.opts))
                self.header_done = True
            rows.extend(
                printers.table_row(obj, self.info, self.opts, now, type_) for type_, obj in events
            )
            for line in self.table.format(rows):
                sys.stdout.write(line + "\n")
        sys.stdout.flush()


async def _watch(
    session: Session,
    client: Client,
    sel: Selection,
    ns: str,
    args: argparse.Namespace,
    output: str,
    label_selector: str,
) -> int:
    info = sel.info
    field_selector = check_field_selector(args.field_selector or "", info)
    if len(sel.names) > 1:
        raise CliError(
            "watch is only supported on individual resources and resource "
            "collections, but 2 resources were found"
        )
    if sel.names:
        name_term = f"metadata.name={sel.names[0]}"
        field_selector = f"{field_selector},{name_term}" if field_selector else name_term
    printer = WatchPrinter(info, args, output)

    async def follow() -> None:
        listing = await client.list(
            info.kind,
            ns,
            label_selector=label_selector,
            field_selector=field_selector,
            all_namespaces=args.all_namespaces,
        )
        if not args.watch_only:
            if sel.names and not listing.items:
                report(not_found(info, sel.names[0]))
                raise _WatchFailed()
            if not listing.items and output not in ("yaml", "json", "name"):
                report(no_resources_message(session, [info], bool(args.all_namespaces)))
            printer.rows([("ADDED", o) for o in listing.items])
        rv = listing.resource_version
        while True:
            try:
                async for ev in client.watch(
                    info.kind,
                    ns,
                    resource_version=rv,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    all_namespaces=args.all_namespaces,
                    allow_bookmarks=True,
                ):
                    rv = ev.resource_version or rv
                    if ev.type == "BOOKMARK" or ev.object is None:
                        continue
                    printer.rows([(ev.type, ev.object)])
            except GoneError:
                listing = await client.list(
                    info.kind,
                    ns,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    all_namespaces=args.all_namespaces,
                )
                rv = listing.resource_version
            # The server closed the stream: watch again from where we were.

    try:
        if args.watch_timeout:
            await asyncio.wait_for(follow(), timeout=args.watch_timeout)
        else:
            await follow()
    except TimeoutError:
        return 0
    except _WatchFailed:
        return 1
    return 0


class _WatchFailed(Exception):
    pass
