"""`orchctl delete`: by name, label selector, file or --all, with grace periods,
cascading policy and waiting until the objects are really gone."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from orchestrator.api.kinds import KindInfo
from orchestrator.api.meta import meta
from orchestrator.cli.errors import CliError, from_server, not_found, report, warn
from orchestrator.cli.get import no_resources_message
from orchestrator.cli.manifests import load_documents
from orchestrator.cli.printers import quoted_name
from orchestrator.cli.resources import (
    check_field_selector,
    check_label_selector,
    parse_resource_args,
)
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, Client, NotFoundError, UnavailableError

CASCADE = {
    "background": "Background",
    "true": "Background",
    "foreground": "Foreground",
    "orphan": "Orphan",
    "false": "Orphan",
}
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Target:
    info: KindInfo
    namespace: str  # "" for cluster-scoped kinds
    name: str


def propagation(value: str) -> str:
    try:
        return CASCADE[value.lower()]
    except KeyError:
        raise CliError(
            f'invalid cascade value ({value}). Must be "background", "foreground", or "orphan".'
        ) from None


def grace_period(args: argparse.Namespace) -> int | None:
    """kubectl's rules: --now is 1; 0 without --force becomes 1; --force alone is 0."""
    grace = args.grace_period
    if args.now:
        if grace >= 0:
            raise CliError("--now and --grace-period cannot be specified together")
        grace = 1
    if grace == 0 and not args.force:
        grace = 1
    if args.force and grace < 0:
        grace = 0
    if args.force and grace == 0:
        warn(
            "Immediate deletion does not wait for confirmation that the running resource has "
            "been terminated. The resource may continue to run on the cluster indefinitely."
        )
    return None if grace < 0 else grace


async def _targets(
    session: Session, client: Client, args: argparse.Namespace
) -> tuple[list[Target], list[KindInfo], bool]:
    """(objects to delete, kinds asked for, whether they were chosen by a query)."""
    if args.filename:
        if args.resources:
            raise CliError("when using -f, do not name resources as arguments")
        docs = load_documents(args.filename, recursive=args.recursive, strict=False)
        return (
            [
                Target(
                    d.info, d.namespace or session.namespace if d.info.namespaced else "", d.name
                )
                for d in docs
            ],
            [d.info for d in docs],
            False,
        )
    selections = parse_resource_args(args.resources, verb="delete")
    label_selector = check_label_selector(args.selector)
    by_query = bool(label_selector or args.all or args.field_selector)
    ns = session.namespace
    targets: list[Target] = []
    for sel in selections:
        if sel.names:
            if by_query:
                raise CliError(
                    "name cannot be provided when a selector is specified"
                    if label_selector
                    else "names cannot be provided when --all is specified"
                )
            targets.extend(
                Target(sel.info, ns if sel.info.namespaced else "", n) for n in sel.names
            )
            continue
        if not by_query:
            raise CliError(
                "resource(s) were provided, but no name was specified; use "
                "--all to delete every object of a type, or -l to pick by label"
            )
        field_selector = check_field_selector(args.field_selector, sel.info)
        listing = await client.list(
            sel.info.kind,
            ns,
            label_selector=label_selector,
            field_selector=field_selector,
            all_namespaces=args.all_namespaces,
        )
        for obj in listing.items:
            m = meta(obj)
            targets.append(Target(sel.info, m.namespace if sel.info.namespaced else "", m.name))
    return targets, [s.info for s in selections], by_query


async def run_delete(session: Session, args: argparse.Namespace) -> int:
    policy = propagation(args.cascade)
    grace = grace_period(args)
    dry_run = args.dry_run or "none"
    if dry_run not in ("none", "client", "server"):
        raise CliError(f'invalid dry-run value ({dry_run}). Must be "none", "server", or "client".')
    if not args.filename and not args.resources:
        raise CliError("You must provide one or more resources by argument or filename.")
    client = await session.client()
    targets, infos, by_query = await _targets(session, client, args)
    if not targets:
        if by_query:
            report(no_resources_message(session, infos, bool(args.all_namespaces)))
        return 0
    wait = args.wait and not (args.force and grace == 0) and dry_run == "none"
    rc = 0
    pending: list[tuple[Target, str]] = []
    suffix = {"none": "", "client": " (dry run)", "server": " (server dry run)"}[dry_run]
    for t in targets:
        if dry_run == "client":
            print(f"{quoted_name(t.info, t.name)} deleted{suffix}", flush=True)
            continue
        try:
            obj, gone = await client.delete(
                t.info.kind,
                t.name,
                t.namespace or None,
                grace_period=grace,
                propagation=policy,
                dry_run=dry_run == "server",
            )
        except NotFoundError:
            if not args.ignore_not_found:
                report(not_found(t.info, t.name))
                rc = 1
            continue
        except UnavailableError:
            raise
        except ApiError as exc:
            report(from_server(exc))
            rc = 1
            continue
        print(f"{quoted_name(t.info, t.name)} deleted{suffix}", flush=True)
        if not gone and wait:
            pending.append((t, meta(obj).uid))
    if pending and not await _wait_gone(client, pending, args.timeout):
        rc = 1
    return rc


async def _wait_gone(client: Client, pending: list[tuple[Target, str]], timeout: float) -> bool:
    """Poll until every object is gone (or replaced by a new one with another uid)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    left = list(pending)
    while left:
        still = []
        for t, uid in left:
            try:
                obj = await client.get(t.info.kind, t.name, t.namespace or None)
            except NotFoundError:
                continue
            if uid and meta(obj).uid != uid:
                continue
            still.append((t, uid))
        left = still
        if not left:
            return True
        if loop.time() >= deadline:
            for t, _ in left:
                report(f"error: timed out waiting for the condition on {t.info.resource}/{t.name}")
            return False
        await asyncio.sleep(POLL_INTERVAL)
    return True
