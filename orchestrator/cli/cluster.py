"""`orchctl cluster up|down|list`: a kind-like local cluster of real nodes on this host
(deploy/local): a LAN in a network namespace, the control plane in another, and
per node a namespace with its own dockerd and an agent that joined with a token."""

from __future__ import annotations

import argparse
import asyncio
import sys

from orchestrator.cli import tabwriter
from orchestrator.cli.errors import CliError
from orchestrator.cli.session import Session

# deploy.local is imported by the commands, not here: every orchctl run builds this
# parser, and the rest of orchctl must work where the local-cluster code is absent.
DEFAULT_NAME = "local"
DEFAULT_NODES = 3


def add_parsers(
    parent: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    parser_class: type[argparse.ArgumentParser],
) -> None:
    sub = parent.add_subparsers(dest="what", metavar="ACTION", parser_class=parser_class)
    p = sub.add_parser(
        "up",
        parents=[common],
        help="Create or repair a local cluster and add a context for it",
        description="Create (or repair: it is idempotent) a local cluster: the control plane, "
        "a registry and N nodes, each with its own dockerd and agent. Writes a context NAME "
        "into the configuration file and makes it current.",
    )
    p.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default local)")
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        metavar="N",
        help=f"number of nodes (default {DEFAULT_NODES}; an existing cluster grows, "
        "or retires its last nodes)",
    )
    p.add_argument(
        "--subnet",
        default=None,
        metavar="CIDR",
        help="the cluster LAN, a /24 (default 192.0.2.0/24, or the next free test range)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the nodes to register (default 120)",
    )
    p.add_argument("--no-wait", action="store_true", help="do not wait for the nodes to register")
    p.set_defaults(func=run_up)
    p = sub.add_parser(
        "down",
        aliases=["delete"],
        parents=[common],
        help="Remove a local cluster and everything it made",
    )
    p.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default local)")
    p.set_defaults(func=run_down)
    p = sub.add_parser("list", aliases=["ls"], parents=[common], help="List local clusters")
    p.add_argument("--no-headers", action="store_true")
    p.set_defaults(func=run_list)


async def run_up(session: Session, args: argparse.Namespace) -> int:
    from deploy.local import cluster as local
    from deploy.local import procs, progress
    from deploy.local.layout import LayoutError
    from deploy.local.state import StateError

    reporter = progress.for_stream(sys.stderr)
    try:
        result = await asyncio.to_thread(
            local.up,
            args.name,
            args.nodes,
            subnet=args.subnet,
            config_path=session.config_path,
            wait_for_nodes=not args.no_wait,
            timeout=args.wait,
            reporter=reporter,
        )
    except (local.ClusterError, LayoutError, StateError) as exc:
        raise CliError(str(exc)) from None
    lay = result.layout
    if not result.created and not result.changed:
        print(f'Cluster "{lay.name}" is already running; nothing to do.')
    elif result.created:
        print(f'Cluster "{lay.name}" is up with {lay.nodes} node(s).')
    else:
        print(f'Cluster "{lay.name}" repaired: {", ".join(result.changed)}.')
    print(f"  API server: {lay.api_server}   registry: {lay.registry}   LAN: {lay.subnet}")
    print(f'  context "{lay.context}" in {result.config_path} (now current)')
    for st in result.nodes:
        if st.error:
            continue
        print(f"  node {st.name} ({st.ip}): {'Ready' if st.ready else 'registered'}")
    if result.failed:
        print(
            f"error: the agent of {len(result.failed)} node(s) failed; the rest of the "
            "cluster runs:",
            file=sys.stderr,
        )
        for st in result.failed:
            print(f"  {st.name}: {st.error}; log: {st.log}", file=sys.stderr)
            for line in procs.log_tail(st.log, 5).splitlines():
                print(f"    | {line}", file=sys.stderr)
        return 1
    print(f"Try: orchctl --context {lay.context} get nodes -o wide")
    return 0


async def run_down(session: Session, args: argparse.Namespace) -> int:
    from deploy.local import cluster as local
    from deploy.local import progress
    from deploy.local.layout import LayoutError
    from deploy.local.state import StateError

    reporter = progress.for_stream(sys.stderr)
    try:
        found = await asyncio.to_thread(
            local.down, args.name, reporter=reporter, config_path=session.config_path
        )
    except (local.ClusterError, LayoutError, StateError) as exc:
        raise CliError(str(exc)) from None
    if found:
        print(f'Cluster "{args.name}" removed.')
    else:
        print(f'No cluster "{args.name}" found; nothing to remove.')
    return 0


async def run_list(session: Session, args: argparse.Namespace) -> int:
    from deploy.local import cluster as local

    rows = [] if args.no_headers else [["NAME", "NODES", "STATUS", "API SERVER"]]
    for s in await asyncio.to_thread(local.list_clusters):
        rows.append([s.name, str(s.nodes) if s.nodes else "-", s.status, s.api_server or "-"])
    for line in tabwriter.table(rows):
        print(line)
    return 0
