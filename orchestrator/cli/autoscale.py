"""`orchctl autoscale deployment/NAME --min 2 --max 10 --cpu-percent 80`:
create a HorizontalPodAutoscaler for a workload, as kubectl autoscale.

The HPA is named after the workload (or --name) and points at it through
scaleTargetRef; without --cpu-percent the server's default target (80% CPU)
applies, without --min its default minimum (1).
"""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.api.kinds import kind_info
from orchestrator.cli.errors import CliError, from_server, report
from orchestrator.cli.printers import resource_name
from orchestrator.cli.resources import resolve_type
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, UnavailableError

SCALABLE = ("Deployment", "ReplicaSet", "StatefulSet")
DRY_RUN_SUFFIX = {"client": " (dry run)", "server": " (server dry run)", "none": ""}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="+", metavar="TYPE/NAME | TYPE NAME")
    p.add_argument("--min", type=int, default=-1, metavar="N", help="minimum replicas (default 1)")
    p.add_argument("--max", type=int, default=-1, metavar="N", help="maximum replicas (required)")
    p.add_argument(
        "--cpu-percent",
        type=int,
        default=-1,
        metavar="PERCENT",
        help="target average CPU use, as a percentage of the pods' requests (default 80)",
    )
    p.add_argument(
        "--name", default="", metavar="NAME", help="the HPA's name (default: the target's)"
    )
    p.add_argument(
        "--dry-run",
        nargs="?",
        const="client",
        default="none",
        metavar="none|client|server",
        help="only print what would be created (client) or have the server check it (server)",
    )


def parse_target(words: list[str]) -> tuple[str, str]:
    """(kind, name) from `deployment/web` or `deployment web`."""
    if len(words) == 1 and "/" in words[0]:
        type_text, _, name = words[0].partition("/")
    elif len(words) == 2 and "/" not in words[0]:
        type_text, name = words
    else:
        raise CliError("name the workload as TYPE/NAME or TYPE NAME, e.g. deployment/web")
    if not name:
        raise CliError(f'"{words[0]}" names no object')
    info = resolve_type(type_text)
    if info.kind not in SCALABLE:
        raise CliError(f"cannot autoscale a {info.kind}: only {', '.join(SCALABLE)} can be scaled")
    return info.kind, name


def build_hpa(
    kind: str,
    name: str,
    namespace: str,
    *,
    max_replicas: int,
    min_replicas: int = -1,
    cpu_percent: int = -1,
    hpa_name: str = "",
) -> Any:
    """The HorizontalPodAutoscaler kubectl autoscale would create."""
    if max_replicas < 1:
        raise CliError("--max=MAXPODS is required and must be at least 1")
    if min_replicas > max_replicas:
        raise CliError(f"--min ({min_replicas}) may not be more than --max ({max_replicas})")
    hpa = kind_info("HorizontalPodAutoscaler").new()
    hpa.metadata.name = hpa_name or name
    hpa.metadata.namespace = namespace
    ref = hpa.spec.scale_target_ref
    ref.kind, ref.name, ref.api_version = kind, name, kind_info(kind).api_version
    hpa.spec.max_replicas = max_replicas
    if min_replicas >= 0:
        hpa.spec.min_replicas = min_replicas
    if cpu_percent >= 0:
        metric = hpa.spec.metrics.add(type="Resource")
        metric.resource.name = "cpu"
        metric.resource.target.type = "Utilization"
        metric.resource.target.average_utilization = cpu_percent
    return hpa


async def run_autoscale(session: Session, args: argparse.Namespace) -> int:
    mode = args.dry_run or "none"
    if mode not in DRY_RUN_SUFFIX:
        raise CliError(f'invalid dry-run value ({mode}). Must be "none", "server", or "client".')
    kind, name = parse_target(list(args.target))
    namespace = session.namespace
    hpa = build_hpa(
        kind,
        name,
        namespace,
        max_replicas=args.max,
        min_replicas=args.min,
        cpu_percent=args.cpu_percent,
        hpa_name=args.name,
    )
    if mode != "client":
        client = await session.client()
        try:
            # As kubectl: the target must exist.
            await client.get(kind, name, namespace)
            await client.create(hpa, dry_run=mode == "server")
        except UnavailableError:
            raise
        except ApiError as exc:
            report(from_server(exc))
            return 1
    info = kind_info("HorizontalPodAutoscaler")
    print(f"{resource_name(info, hpa.metadata.name)} autoscaled{DRY_RUN_SUFFIX[mode]}", flush=True)
    return 0
