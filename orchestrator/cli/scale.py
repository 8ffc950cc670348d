"""`orchctl scale TYPE/NAME --replicas N`: set spec.replicas of a Deployment,
ReplicaSet or StatefulSet, as kubectl does.

`--current-replicas` (and `--resource-version`) are preconditions: the
object is read, checked and written back at the version that was checked, so
a concurrent change makes the precondition be checked again, never skipped.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from orchestrator.api.kinds import KindInfo
from orchestrator.cli.errors import CliError, not_found, report
from orchestrator.cli.printers import resource_name
from orchestrator.cli.resources import parse_resource_args
from orchestrator.cli.session import Session
from orchestrator.client.client import Client, ConflictError, NotFoundError

SCALABLE = ("Deployment", "ReplicaSet", "StatefulSet")
UPDATE_TRIES = 5


@dataclass(frozen=True)
class Preconditions:
    current_replicas: int = -1  # -1: no precondition
    resource_version: str = ""

    def check(self, replicas: int, resource_version: str) -> None:
        """Raise CliError with kubectl's wording when a precondition fails."""
        if self.current_replicas >= 0 and replicas != self.current_replicas:
            raise CliError(f"Expected replicas to be {self.current_replicas}, was {replicas}")
        if self.resource_version and resource_version != self.resource_version:
            raise CliError(
                f"Expected resource version to be {self.resource_version}, was {resource_version}"
            )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("resources", nargs="*", metavar="TYPE NAME | TYPE/NAME")
    p.add_argument(
        "--replicas", type=int, default=None, metavar="N", help="the new number of replicas"
    )
    p.add_argument(
        "--current-replicas",
        type=int,
        default=-1,
        metavar="N",
        help="only scale if the object has this many replicas now",
    )
    p.add_argument(
        "--resource-version",
        default="",
        metavar="RV",
        help="only scale if the object is still at this resourceVersion",
    )


def targets(resource_args: list[str]) -> list[tuple[KindInfo, str]]:
    """(kind, name) pairs to scale; every kind must have replicas."""
    selections = parse_resource_args(resource_args, verb="scale")
    pairs: list[tuple[KindInfo, str]] = []
    for sel in selections:
        if sel.info.kind not in SCALABLE:
            raise CliError(
                f"cannot scale {sel.info.resource}: only deployments, replicasets and "
                "statefulsets have replicas"
            )
        if not sel.names:
            raise CliError("resource(s) were provided, but no name was specified")
        pairs.extend((sel.info, name) for name in sel.names)
    return pairs


async def run_scale(session: Session, args: argparse.Namespace) -> int:
    if args.replicas is None or args.replicas < 0:
        raise CliError(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        )
    pairs = targets(args.resources)
    pre = Preconditions(args.current_replicas, args.resource_version)
    client = await session.client()
    rc = 0
    for info, name in pairs:
        try:
            await scale_one(client, info, name, session.namespace, args.replicas, pre)
        except NotFoundError:
            report(not_found(info, name))
            rc = 1
            continue
        print(f"{resource_name(info, name)} scaled", flush=True)
    return rc


async def scale_one(
    client: Client, info: KindInfo, name: str, namespace: str, replicas: int, pre: Preconditions
) -> None:
    for attempt in range(UPDATE_TRIES):
        obj = await client.get(info.kind, name, namespace)
        pre.check(obj.spec.replicas, obj.metadata.resource_version)
        if obj.spec.HasField("replicas") and obj.spec.replicas == replicas:
            return
        obj.spec.replicas = replicas
        try:
            await client.update(obj)
            return
        except ConflictError:
            # Changed since read: read again and re-check the preconditions,
            # unless the caller pinned a version (then the conflict is the answer).
            if pre.resource_version or attempt == UPDATE_TRIES - 1:
                raise
