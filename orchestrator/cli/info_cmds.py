"""`orchctl version` and `orchctl api-resources`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from orchestrator import __version__
from orchestrator.api.kinds import all_kinds
from orchestrator.cli import tabwriter
from orchestrator.cli.errors import CliError
from orchestrator.cli.printers import render_yaml
from orchestrator.cli.session import Session


async def run_version(session: Session, args: argparse.Namespace) -> int:
    if args.output not in ("", "yaml", "json"):
        raise CliError(f'--output must be "yaml" or "json", not "{args.output}"')
    client_info = {"gitVersion": f"v{__version__}"}
    if args.client:
        server_info: dict[str, Any] | None = None
    else:
        if not args.output:
            # Like kubectl: the client's version even when the server cannot be reached.
            print(f"Client Version: v{__version__}", flush=True)
        client = await session.client()
        resp = await client.version()
        server_info = {
            "gitVersion": f"v{resp.version}",
            "store": resp.store,
            "user": resp.user,
            "groups": list(resp.groups),
        }
    if args.output:
        doc: dict[str, Any] = {"clientVersion": client_info}
        if server_info is not None:
            doc["serverVersion"] = server_info
        print(
            json.dumps(doc, indent=2) if args.output == "json" else render_yaml(doc),
            end="\n" if args.output == "json" else "",
        )
        return 0
    if server_info is None:
        print(f"Client Version: v{__version__}")
        return 0
    print(f"Server Version: {server_info['gitVersion']}")
    print(f"Server Store: {server_info['store']}")
    groups = ", ".join(server_info["groups"]) or "<none>"
    print(f"Authenticated As: {server_info['user']} (groups: {groups})")
    return 0


async def run_api_resources(session: Session, args: argparse.Namespace) -> int:
    if args.output not in ("", "wide", "name"):
        raise CliError(f'--output must be "wide" or "name", not "{args.output}"')
    infos = sorted(all_kinds(), key=lambda i: (i.group, i.plural))
    if args.namespaced is not None:
        infos = [i for i in infos if i.namespaced == args.namespaced]
    if args.output == "name":
        for info in infos:
            print(info.resource)
        return 0
    rows = [] if args.no_headers else [["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]]
    for info in infos:
        rows.append(
            [
                info.plural,
                ",".join(info.short_names),
                info.api_version,
                "true" if info.namespaced else "false",
                info.kind,
            ]
        )
    for line in tabwriter.table(rows):
        print(line)
    return 0
