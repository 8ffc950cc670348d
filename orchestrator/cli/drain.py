"""`orchctl cordon`, `uncordon` and `drain`, with kubectl's rules and wording.

drain = cordon, then evict (delete with the pod's grace period) every pod on
the node, then wait until they are gone. Which pods may go is decided by
`plan_drain`, a pure function, with kubectl's filters in kubectl's order:

- DaemonSet pods: their controller would put them straight back, so they
  are an error unless --ignore-daemonsets (then skipped with a warning); a
  pod whose DaemonSet is gone is deleted with --force.
- Mirror (static) pods: skipped silently; the agent owns them.
- Pods with emptyDir volumes: their data is lost, so only with
  --delete-emptydir-data.
- Pods no controller manages: nothing recreates them, so only with --force.
- Finished pods (Succeeded, Failed) always go.

Without an Eviction subresource (and PodDisruptionBudgets), evicting is a
delete with the pod's grace period. A pod on a dead node stays Terminating
until its agent confirms, so a drain of a dead node waits for --timeout;
--skip-wait-for-delete-timeout leaves out pods that have been terminating for
that long already, as kubectl's flag does.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.kinds import kind_info
from orchestrator.api.meta import meta, parse_rfc3339
from orchestrator.cli.errors import not_found, report, report_error, warn
from orchestrator.cli.resources import check_label_selector
from orchestrator.cli.session import Session
from orchestrator.client.client import Client, ConflictError, NotFoundError

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
UPDATE_TRIES = 5
POLL_INTERVAL = 0.2

DAEMONSET_FATAL = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"
DAEMONSET_WARNING = "ignoring DaemonSet-managed Pods"
LOCAL_STORAGE_FATAL = "Pods with local storage (use --delete-emptydir-data to override)"
LOCAL_STORAGE_WARNING = "deleting Pods with local storage"
UNMANAGED_FATAL = "Pods that declare no controller (use --force to override)"
UNMANAGED_WARNING = "deleting Pods that declare no controller"
ORPHANED_DAEMONSET_WARNING = "deleting Pods whose DaemonSet is gone"
ORPHANED_DAEMONSET_FATAL = "Pods whose DaemonSet is gone (use --force to override)"


@dataclass(frozen=True)
class DrainOptions:
    ignore_daemonsets: bool = False
    delete_emptydir_data: bool = False
    force: bool = False
    skip_wait_for_delete_timeout: int = 0  # seconds; 0: never skip


@dataclass
class DrainPlan:
    evict: list[Any] = field(default_factory=list)
    # reason -> "namespace/name" of the pods it concerns, in pod order
    warnings: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def error_message(self) -> str:
        return "; ".join(
            f"cannot delete {reason}: {', '.join(pods)}" for reason, pods in self.errors.items()
        )


def _pod_id(pod: Any) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _controller(pod: Any) -> Any | None:
    for ref in pod.metadata.owner_references:
        if ref.HasField("controller") and ref.controller:
            return ref
    return None


def _finished(pod: Any) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def _long_terminating(pod: Any, skip_after: int, now: datetime) -> bool:
    ts = pod.metadata.deletion_timestamp
    if not skip_after or not ts:
        return False
    try:
        return (now - parse_rfc3339(ts)).total_seconds() > skip_after
    except ValueError:
        return False


def plan_drain(
    pods: Iterable[Any],
    options: DrainOptions,
    *,
    missing_daemonsets: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    now: datetime | None = None,
) -> DrainPlan:
    """Which of the node's pods to evict, what to warn about, what forbids the
    drain. missing_daemonsets: (namespace, name) of DaemonSets found gone."""
    now = now or datetime.now(UTC)
    plan = DrainPlan()

    def note(table: dict[str, list[str]], reason: str, pod: Any) -> None:
        table.setdefault(reason, []).append(_pod_id(pod))

    for pod in pods:
        if _long_terminating(pod, options.skip_wait_for_delete_timeout, now):
            continue
        ref = _controller(pod)
        if ref is not None and ref.kind == "DaemonSet" and not _finished(pod):
            if (pod.metadata.namespace, ref.name) in missing_daemonsets:
                if options.force:
                    note(plan.warnings, ORPHANED_DAEMONSET_WARNING, pod)
                    plan.evict.append(pod)
                else:
                    note(plan.errors, ORPHANED_DAEMONSET_FATAL, pod)
                continue
            if options.ignore_daemonsets:
                note(plan.warnings, DAEMONSET_WARNING, pod)
            else:
                note(plan.errors, DAEMONSET_FATAL, pod)
            continue
        if MIRROR_ANNOTATION in pod.metadata.annotations:
            continue
        if not _finished(pod) and any(v.HasField("empty_dir") for v in pod.spec.volumes):
            if not options.delete_emptydir_data:
                note(plan.errors, LOCAL_STORAGE_FATAL, pod)
                continue
            note(plan.warnings, LOCAL_STORAGE_WARNING, pod)
        if ref is None and not _finished(pod):
            if not options.force:
                note(plan.errors, UNMANAGED_FATAL, pod)
                continue
            note(plan.warnings, UNMANAGED_WARNING, pod)
        plan.evict.append(pod)
    return plan


# -- cordon / uncordon ----------------------------------------------------------------


async def set_unschedulable(client: Client, name: str, unschedulable: bool) -> bool:
    """Set spec.unschedulable; False when it already was so. Retries conflicts:
    the agent and controllers write Nodes all the time."""
    for attempt in range(UPDATE_TRIES):
        node = await client.get("Node", name)
        if bool(node.spec.unschedulable) == unschedulable:
            return False
        node.spec.unschedulable = unschedulable
        try:
            await client.update(node)
            return True
        except ConflictError:
            if attempt == UPDATE_TRIES - 1:
                raise
    return False


async def _cordon_each(session: Session, names: Sequence[str], unschedulable: bool) -> int:
    client = await session.client()
    info = kind_info("Node")
    rc = 0
    done, same = (
        ("cordoned", "already cordoned") if unschedulable else ("uncordoned", "already uncordoned")
    )
    for name in names:
        try:
            changed = await set_unschedulable(client, name, unschedulable)
        except NotFoundError:
            report(not_found(info, name))
            rc = 1
            continue
        print(f"node/{name} {done if changed else same}", flush=True)
    return rc


async def run_cordon(session: Session, args: argparse.Namespace) -> int:
    return await _cordon_each(session, args.nodes, True)


async def run_uncordon(session: Session, args: argparse.Namespace) -> int:
    return await _cordon_each(session, args.nodes, False)


# -- drain ------------------------------------------------------------------------------


async def _missing_daemonsets(client: Client, pods: Iterable[Any]) -> set[tuple[str, str]]:
    missing: set[tuple[str, str]] = set()
    checked: set[tuple[str, str]] = set()
    for pod in pods:
        ref = _controller(pod)
        if ref is None or ref.kind != "DaemonSet":
            continue
        key = (pod.metadata.namespace, ref.name)
        if key in checked:
            continue
        checked.add(key)
        try:
            ds = await client.get("DaemonSet", ref.name, pod.metadata.namespace)
            if ds.metadata.uid != ref.uid:
                missing.add(key)
        except NotFoundError:
            missing.add(key)
    return missing


def _print_warnings(plan: DrainPlan) -> None:
    for reason, pods in plan.warnings.items():
        warn(f"{reason}: {', '.join(pods)}")


async def _wait_gone(client: Client, pods: list[Any], timeout: float) -> list[Any]:
    """Wait until each pod is gone (or replaced by another of that name);
    print `pod/x evicted` as each goes. Returns those still there at timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout > 0 else None
    left = list(pods)
    while left:
        still = []
        for pod in left:
            m = meta(pod)
            try:
                current = await client.get("Pod", m.name, m.namespace)
            except NotFoundError:
                current = None
            if current is None or meta(current).uid != m.uid:
                print(f"pod/{m.name} evicted", flush=True)
                continue
            still.append(pod)
        left = still
        if not left or (deadline is not None and loop.time() >= deadline):
            break
        await asyncio.sleep(POLL_INTERVAL)
    return left


async def run_drain(session: Session, args: argparse.Namespace) -> int:
    options = DrainOptions(
        ignore_daemonsets=args.ignore_daemonsets,
        delete_emptydir_data=args.delete_emptydir_data,
        force=args.force,
        skip_wait_for_delete_timeout=args.skip_wait_for_delete_timeout,
    )
    selector = check_label_selector(args.pod_selector)
    client = await session.client()
    name = args.node
    try:
        changed = await set_unschedulable(client, name, True)
    except NotFoundError:
        report(not_found(kind_info("Node"), name))
        return 1
    print(f"node/{name} {'cordoned' if changed else 'already cordoned'}", flush=True)
    listing = await client.list(
        "Pod",
        all_namespaces=True,
        field_selector=f"spec.nodeName={name}",
        label_selector=selector,
    )
    pods = listing.items
    plan = plan_drain(pods, options, missing_daemonsets=await _missing_daemonsets(client, pods))
    if plan.errors:
        report_error(f'unable to drain node "{name}" due to error: {plan.error_message()}')
        return 1
    _print_warnings(plan)
    evicting: list[Any] = []
    for pod in plan.evict:
        m = meta(pod)
        print(f"evicting pod {m.namespace}/{m.name}", flush=True)
        try:
            await client.delete(
                "Pod",
                m.name,
                m.namespace,
                grace_period=None if args.grace_period < 0 else args.grace_period,
                precondition_uid=m.uid,
            )
        except NotFoundError:
            print(f"pod/{m.name} evicted", flush=True)
            continue
        except ConflictError:
            continue  # replaced by a new pod of that name meanwhile: not this one
        evicting.append(pod)
    left = await _wait_gone(client, evicting, args.timeout)
    if left:
        waiting = ", ".join(
            f'error when waiting for pod "{meta(p).name}" in namespace "{meta(p).namespace}" '
            f"to terminate: global timeout reached: {_seconds(args.timeout)}"
            for p in left
        )
        report_error(f'unable to drain node "{name}" due to error: {waiting}')
        return 1
    print(f"node/{name} drained", flush=True)
    return 0


def _seconds(value: float) -> str:
    return f"{value:g}s"


# -- arguments --------------------------------------------------------------------------


def add_cordon_arguments(p: argparse.ArgumentParser) -> None:
    """For `cordon` and `uncordon`."""
    p.add_argument("nodes", nargs="+", metavar="NODE")


def add_drain_arguments(p: argparse.ArgumentParser, duration: Callable[[str], float]) -> None:
    """For `drain`; duration parses --timeout values such as 30s or 2m."""
    p.add_argument("node", metavar="NODE")
    p.add_argument(
        "--ignore-daemonsets",
        action="store_true",
        help="skip DaemonSet-managed pods instead of refusing to drain",
    )
    p.add_argument(
        "--delete-emptydir-data",
        "--delete-local-data",
        dest="delete_emptydir_data",
        action="store_true",
        help="evict pods with emptyDir volumes too (their data is lost)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="evict pods no controller manages too (nothing recreates them)",
    )
    p.add_argument(
        "--grace-period",
        type=int,
        default=-1,
        metavar="N",
        help="seconds each pod gets to stop (-1: its own terminationGracePeriodSeconds)",
    )
    p.add_argument(
        "--timeout",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="give up waiting after this long, e.g. 5m (default 0: wait for ever)",
    )
    p.add_argument(
        "--pod-selector",
        default="",
        metavar="SEL",
        help="only evict pods matching this label selector",
    )
    p.add_argument(
        "--skip-wait-for-delete-timeout",
        type=int,
        default=0,
        metavar="SECONDS",
        help="leave out pods already terminating for longer than this (0: never)",
    )
