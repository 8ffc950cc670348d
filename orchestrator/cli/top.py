"""`orchctl top pods|nodes`: current CPU and memory use, as kubectl top.

    orchctl top pods [NAME] [-n NS | -A] [-l SEL] [--containers] [--sort-by cpu|memory]
    orchctl top nodes [NAME] [-l SEL] [--sort-by cpu|memory]

The numbers come from the apiserver's metrics API (apiserver/metrics.py),
which asks every node's agent; they are averages over the agents' last
sample window (about 10 s). CPU is shown in millicores, memory (the working
set) in MiB, and for nodes as a percentage of what is allocatable, as
kubectl prints them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.api.quantity import QuantityError, cpu_millis, memory_bytes
from orchestrator.cli import tabwriter
from orchestrator.cli.errors import CliError
from orchestrator.cli.session import Session
from orchestrator.client.client import NotFoundError

MIB = 1024 * 1024
UNKNOWN = "<unknown>"


def add_parsers(
    parent: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    parser_class: type[argparse.ArgumentParser],
) -> None:
    sub = parent.add_subparsers(dest="what", metavar="pods|nodes", parser_class=parser_class)
    p = sub.add_parser(
        "pods",
        aliases=["pod", "po"],
        parents=[common],
        help="CPU and memory use of pods",
    )
    p.add_argument("name", nargs="?", default="", metavar="NAME")
    p.add_argument("-l", "--selector", default="", metavar="SEL", help="label selector")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="across every namespace")
    p.add_argument("--containers", action="store_true", help="one line per container")
    _common_flags(p)
    p.set_defaults(func=run_top_pods)
    p = sub.add_parser(
        "nodes",
        aliases=["node", "no"],
        parents=[common],
        help="CPU and memory use of nodes",
    )
    p.add_argument("name", nargs="?", default="", metavar="NAME")
    p.add_argument("-l", "--selector", default="", metavar="SEL", help="label selector")
    _common_flags(p)
    p.set_defaults(func=run_top_nodes)


def _common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sort-by", default="", choices=("", "cpu", "memory"), help="sort by cpu or memory"
    )
    p.add_argument("--no-headers", action="store_true", help="print the table without headers")


# -- formatting (pure) -------------------------------------------------------------------


def cpu_text(millicores: int) -> str:
    return f"{millicores}m"


def memory_text(n: int) -> str:
    return f"{n // MIB}Mi"


def percent(used: int, allocatable: int) -> str:
    return f"{used * 100 // allocatable}%" if allocatable > 0 else UNKNOWN


def _pod_totals(item: Any) -> tuple[int, int]:
    return (
        sum(c.cpu_millicores for c in item.containers),
        sum(c.memory_working_set_bytes for c in item.containers),
    )


def _sorted(items: Sequence[Any], sort_by: str, totals: Any) -> list[Any]:
    if sort_by == "cpu":
        return sorted(items, key=lambda i: -totals(i)[0])
    if sort_by == "memory":
        return sorted(items, key=lambda i: -totals(i)[1])
    return list(items)


def pod_rows(
    items: Sequence[Any],
    *,
    all_namespaces: bool = False,
    containers: bool = False,
    sort_by: str = "",
    headers: bool = True,
) -> list[list[str]]:
    """kubectl top pod's table over PodMetrics messages."""
    head = ["NAMESPACE"] if all_namespaces else []
    head += ["POD", "NAME"] if containers else ["NAME"]
    head += ["CPU(cores)", "MEMORY(bytes)"]
    rows = [head] if headers else []
    for item in _sorted(items, sort_by, _pod_totals):
        lead = [item.namespace] if all_namespaces else []
        if containers:
            for c in sorted(item.containers, key=lambda c: c.name):
                rows.append(
                    [
                        *lead,
                        item.name,
                        c.name,
                        cpu_text(c.cpu_millicores),
                        memory_text(c.memory_working_set_bytes),
                    ]
                )
        else:
            cpu, memory = _pod_totals(item)
            rows.append([*lead, item.name, cpu_text(cpu), memory_text(memory)])
    return rows


def _allocatable(node: Any, resource: str) -> int:
    quantity = node.status.allocatable.get(resource) or node.status.capacity.get(resource)
    if not quantity:
        return 0
    try:
        return cpu_millis(quantity) if resource == "cpu" else memory_bytes(quantity)
    except QuantityError:
        return 0


def node_rows(
    nodes: Sequence[Any],
    metrics: Mapping[str, Any],
    *,
    sort_by: str = "",
    headers: bool = True,
) -> list[list[str]]:
    """kubectl top node's table: nodes without metrics are shown as <unknown>, last."""

    def totals(node: Any) -> tuple[int, int]:
        m = metrics.get(node.metadata.name)
        return (m.cpu_millicores, m.memory_working_set_bytes) if m is not None else (-1, -1)

    rows = [["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]] if headers else []
    ordered = _sorted(sorted(nodes, key=lambda n: n.metadata.name), sort_by, totals)
    known = [n for n in ordered if n.metadata.name in metrics]
    missing = [n for n in ordered if n.metadata.name not in metrics]
    for node in known:
        m = metrics[node.metadata.name]
        rows.append(
            [
                node.metadata.name,
                cpu_text(m.cpu_millicores),
                percent(m.cpu_millicores, _allocatable(node, "cpu")),
                memory_text(m.memory_working_set_bytes),
                percent(m.memory_working_set_bytes, _allocatable(node, "memory")),
            ]
        )
    for node in missing:
        rows.append([node.metadata.name, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN])
    return rows


def _print(rows: list[list[str]]) -> None:
    for line in tabwriter.table(rows):
        print(line)


# -- the commands ---------------------------------------------------------------------------


async def run_top_pods(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    namespace = session.namespace
    if args.name and args.all_namespaces:
        raise CliError("a resource cannot be retrieved by name across all namespaces")
    try:
        items = await client.pod_metrics(
            namespace,
            name=args.name,
            label_selector=args.selector,
            all_namespaces=args.all_namespaces,
        )
    except NotFoundError:
        raise CliError(f"Metrics not available for pod {namespace}/{args.name}") from None
    if not items:
        where = "" if args.all_namespaces else f" in {namespace} namespace"
        raise CliError(f"Metrics not available for pods{where} (none found, or none sampled yet)")
    _print(
        pod_rows(
            items,
            all_namespaces=args.all_namespaces,
            containers=args.containers,
            sort_by=args.sort_by,
            headers=not args.no_headers,
        )
    )
    return 0


async def run_top_nodes(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    if args.name:
        nodes = [await client.get("Node", args.name)]
    else:
        nodes = list((await client.list("Node", label_selector=args.selector)).items)
    try:
        items = await client.node_metrics(args.name, label_selector=args.selector)
    except NotFoundError:
        raise CliError(f"metrics not available yet for node {args.name}") from None
    if not items:
        raise CliError("metrics not available yet")
    metrics = {m.name: m for m in items}
    _print(node_rows(nodes, metrics, sort_by=args.sort_by, headers=not args.no_headers))
    return 0
