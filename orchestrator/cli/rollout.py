"""`orchctl rollout status|history|undo|pause|resume|restart`, as kubectl's.

Deployments keep their history in ReplicaSets (the revision annotation on
each); StatefulSets and DaemonSets in ControllerRevisions (spec.template in
`data`, the number in `revision`). Undo copies the chosen revision's pod
template back into the object; the controller then rolls it out as a new
revision. The decisions (status lines, which revision, what to write) are
plain functions; the verbs read, decide, write.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from orchestrator.api.kinds import KindInfo
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.cli import describe, printers, tabwriter
from orchestrator.cli.errors import CliError, from_server, report
from orchestrator.cli.printers import resource_name
from orchestrator.cli.resources import parse_resource_args
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, Client, ConflictError, GoneError, NotFoundError

REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
TIMED_OUT = "ProgressDeadlineExceeded"
# Annotations of a ReplicaSet that are the controller's bookkeeping: an undo
# does not copy them back onto the Deployment (kubectl's annotationsToSkip).
_SKIPPED_ON_UNDO = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
UPDATE_TRIES = 5


class RolloutFailed(CliError):
    """The rollout cannot finish (its progress deadline passed, say)."""


# -- status lines (pure) --------------------------------------------------------------------


def _condition(obj: Any, type_: str) -> Any | None:
    for cond in obj.status.conditions:
        if cond.type == type_:
            return cond
    return None


def deployment_status(d: Any, revision: int = 0) -> tuple[str, bool]:
    """kubectl's DeploymentStatusViewer: (message, done); RolloutFailed when it cannot finish."""
    name = d.metadata.name
    if revision > 0:
        current = int(d.metadata.annotations.get(REVISION, "0") or "0")
        if current != revision:
            raise RolloutFailed(
                f"desired revision ({revision}) is different from the running revision ({current})"
            )
    if d.metadata.generation > d.status.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    cond = _condition(d, "Progressing")
    if cond is not None and cond.reason == TIMED_OUT:
        raise RolloutFailed(f'deployment "{name}" exceeded its progress deadline')
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    s = d.status
    if s.updated_replicas < want:
        return (
            f'Waiting for deployment "{name}" rollout to finish: {s.updated_replicas} out of '
            f"{want} new replicas have been updated...",
            False,
        )
    if s.replicas > s.updated_replicas:
        return (
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{s.replicas - s.updated_replicas} old replicas are pending termination...",
            False,
        )
    if s.available_replicas < s.updated_replicas:
        return (
            f'Waiting for deployment "{name}" rollout to finish: {s.available_replicas} of '
            f"{s.updated_replicas} updated replicas are available...",
            False,
        )
    return f'deployment "{name}" successfully rolled out', True


def statefulset_status(sts: Any) -> tuple[str, bool]:
    if sts.spec.update_strategy.type not in ("", "RollingUpdate"):
        raise RolloutFailed("rollout status is only available for RollingUpdate strategy type")
    s = sts.status
    if s.observed_generation == 0 or sts.metadata.generation > s.observed_generation:
        return "Waiting for statefulset spec update to be observed...", False
    want = sts.spec.replicas if sts.spec.HasField("replicas") else 1
    if s.ready_replicas < want:
        return f"Waiting for {want - s.ready_replicas} pods to be ready...", False
    rolling = sts.spec.update_strategy.rolling_update
    if rolling.HasField("partition") and rolling.partition > 0:
        target = want - rolling.partition
        if s.updated_replicas < target:
            return (
                "Waiting for partitioned roll out to finish: "
                f"{s.updated_replicas} out of {target} new pods have been updated...",
                False,
            )
        return (
            f"partitioned roll out complete: {s.updated_replicas} new pods have been updated...",
            True,
        )
    if s.update_revision != s.current_revision:
        return (
            f"waiting for statefulset rolling update to complete {s.updated_replicas} pods "
            f"at revision {s.update_revision}...",
            False,
        )
    return (
        f"statefulset rolling update complete {s.current_replicas} pods at revision "
        f"{s.current_revision}...",
        True,
    )


def daemonset_status(ds: Any) -> tuple[str, bool]:
    if ds.spec.update_strategy.type not in ("", "RollingUpdate"):
        raise RolloutFailed("rollout status is only available for RollingUpdate strategy type")
    name = ds.metadata.name
    s = ds.status
    if ds.metadata.generation > s.observed_generation:
        return "Waiting for daemon set spec update to be observed...", False
    if s.updated_number_scheduled < s.desired_number_scheduled:
        return (
            f'Waiting for daemon set "{name}" rollout to finish: {s.updated_number_scheduled} '
            f"out of {s.desired_number_scheduled} new pods have been updated...",
            False,
        )
    if s.number_available < s.desired_number_scheduled:
        return (
            f'Waiting for daemon set "{name}" rollout to finish: {s.number_available} of '
            f"{s.desired_number_scheduled} updated pods are available...",
            False,
        )
    return f'daemon set "{name}" successfully rolled out', True


def status_of(obj: Any, revision: int = 0) -> tuple[str, bool]:
    if obj.kind == "Deployment":
        return deployment_status(obj, revision)
    if revision > 0:
        raise CliError("--revision is only supported for deployments")
    if obj.kind == "StatefulSet":
        return statefulset_status(obj)
    return daemonset_status(obj)


def progress_of(obj: Any) -> tuple[int, int]:
    """(replicas done, replicas wanted) for a progress bar: updated and available."""
    st = obj.status
    if obj.kind == "Deployment":
        want = obj.spec.replicas if obj.spec.HasField("replicas") else 1
        done = min(st.updated_replicas, st.available_replicas)
    elif obj.kind == "StatefulSet":
        want = obj.spec.replicas if obj.spec.HasField("replicas") else 1
        done = min(st.updated_replicas or st.current_replicas, st.ready_replicas)
    else:
        want = st.desired_number_scheduled
        done = min(st.updated_number_scheduled, st.number_available)
    return max(0, min(done, want)), max(want, 0)


class LineReporter:
    """kubectl's output: one line whenever the status message changes."""

    def __init__(self) -> None:
        self.last = ""

    def update(self, message: str, obj: Any) -> None:
        if message != self.last:
            print(message, flush=True)
            self.last = message

    def close(self) -> None:
        pass


class BarReporter:
    """On a terminal: a live bar of updated, available replicas under the message."""

    def __init__(self, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            transient=True,
        )
        self.task = self.progress.add_task(label, total=None)
        self.progress.start()
        self.last = ""

    def update(self, message: str, obj: Any) -> None:
        done, want = progress_of(obj)
        self.progress.update(self.task, description=message, completed=done, total=want)
        self.last = message

    def close(self) -> None:
        self.progress.stop()
        if self.last:
            print(self.last, flush=True)  # the final state stays on screen


# -- history and undo (pure) ----------------------------------------------------------------


def _revision(obj: Any) -> int:
    """A ReplicaSet's revision annotation or a ControllerRevision's number."""
    if obj.kind == "ControllerRevision":
        return int(obj.revision)
    try:
        return int(obj.metadata.annotations.get(REVISION, "0") or "0")
    except ValueError:
        return 0


def history(revisions: Sequence[Any]) -> list[tuple[int, str]]:
    """(revision, change cause) in revision order; unnumbered objects are left out."""
    rows = {}
    for obj in revisions:
        number = _revision(obj)
        if number > 0:
            rows[number] = obj.metadata.annotations.get(CHANGE_CAUSE, "") or "<none>"
    return sorted(rows.items())


def find_revision(name: str, revisions: Sequence[Any], to_revision: int) -> Any:
    """The object holding to_revision; with 0, the one before the newest
    (kubectl's deploymentRevision)."""
    numbered = [(n, obj) for obj in revisions if (n := _revision(obj)) > 0]
    if to_revision > 0:
        for number, obj in numbered:
            if number == to_revision:
                return obj
        raise CliError(f"unable to find specified revision {to_revision} in history")
    numbered.sort(key=lambda pair: pair[0])
    if len(numbered) < 2:
        raise CliError(f'no rollout history found for "{name}"')
    return numbered[-2][1]


def template_of(revision_obj: Any) -> Any:
    """The pod template a ReplicaSet or ControllerRevision records, without the
    pod-template-hash label (which is the controller's, not the user's)."""
    template = core.PodTemplateSpec()
    if revision_obj.kind == "ControllerRevision":
        data = json_format.MessageToDict(revision_obj.data)
        raw = (data.get("spec") or {}).get("template") or {}
        json_format.ParseDict(_with_ints(raw), template, ignore_unknown_fields=True)
    else:
        template.CopyFrom(revision_obj.spec.template)
    template.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return template


def _with_ints(value: Any) -> Any:
    # google.protobuf.Struct keeps every number as a float; integer fields
    # of the template would not parse as 80.0.
    if isinstance(value, dict):
        return {k: _with_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def apply_undo(obj: Any, revision_obj: Any) -> bool:
    """Put revision_obj's template into obj; False when it is already there."""
    template = template_of(revision_obj)
    current = core.PodTemplateSpec()
    current.CopyFrom(obj.spec.template)
    current.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    if current == template:
        return False
    obj.spec.template.CopyFrom(template)
    if revision_obj.kind == "ReplicaSet":
        # kubectl carries the revision's annotations (its change-cause) along.
        for key, value in revision_obj.metadata.annotations.items():
            if key not in _SKIPPED_ON_UNDO:
                obj.metadata.annotations[key] = value
    return True


def restart(obj: Any, now: datetime) -> None:
    if obj.kind == "Deployment" and obj.spec.paused:
        raise CliError("can't restart paused deployment (run rollout resume first)")
    obj.spec.template.metadata.annotations[RESTARTED_AT] = now.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


# -- parsers ------------------------------------------------------------------------------


def add_parsers(
    parent: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    parser_class: type[argparse.ArgumentParser],
    duration: Any,
) -> None:
    sub = parent.add_subparsers(dest="what", metavar="ACTION", parser_class=parser_class)

    def action(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.add_argument("resources", nargs="+", metavar="TYPE/NAME | TYPE NAME")
        p.set_defaults(func=func)
        return p

    p = action("status", "Follow a rollout until it is done", run_status)
    p.add_argument(
        "-w",
        "--watch",
        default=True,
        type=lambda v: v.lower() in ("true", "1", "yes"),
        nargs="?",
        const=True,
        metavar="true|false",
        help="follow the rollout until it finishes (default true)",
    )
    p.add_argument(
        "--timeout",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="give up after this long, e.g. 5m (default: never)",
    )
    p.add_argument(
        "--revision", type=int, default=0, metavar="N", help="require this revision to be rolling"
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="a live progress bar (auto: on a terminal) or kubectl's lines",
    )
    p = action("history", "List the revisions of a rollout", run_history)
    p.add_argument("--revision", type=int, default=0, metavar="N", help="show one revision")
    p = action("undo", "Go back to an earlier revision", run_undo)
    p.add_argument(
        "--to-revision", type=int, default=0, metavar="N", help="the revision (default: previous)"
    )
    action("pause", "Stop rolling out template changes", run_pause)
    action("resume", "Roll out template changes again", run_resume)
    action("restart", "Replace every pod, one rollout step at a time", run_restart)


def _targets(args: argparse.Namespace) -> list[tuple[KindInfo, str]]:
    pairs: list[tuple[KindInfo, str]] = []
    for sel in parse_resource_args(args.resources, verb=f"rollout {args.what}"):
        if sel.info.kind not in ROLLOUT_KINDS:
            raise CliError(
                f"{sel.info.resource} is not supported: rollout works on deployments, "
                "statefulsets and daemonsets"
            )
        if not sel.names:
            raise CliError("resource(s) were provided, but no name was specified")
        pairs.extend((sel.info, name) for name in sel.names)
    return pairs


async def _get(client: Client, info: KindInfo, name: str, ns: str) -> Any:
    try:
        return await client.get(info.kind, name, ns)
    except NotFoundError as exc:
        # kubectl's wording: `deployments.apps "web" not found`.
        raise NotFoundError(exc.code, f'{info.resource} "{name}" not found') from None


async def revisions_of(client: Client, obj: Any) -> list[Any]:
    """The objects holding obj's history: its ReplicaSets or ControllerRevisions."""
    kind = "ReplicaSet" if obj.kind == "Deployment" else "ControllerRevision"
    listed = await client.list(kind, obj.metadata.namespace)
    uid = obj.metadata.uid
    return [
        item
        for item in listed.items
        if any(r.controller and r.uid == uid for r in item.metadata.owner_references)
    ]


# -- verbs -------------------------------------------------------------------------------------


async def run_status(session: Session, args: argparse.Namespace) -> int:
    pairs = _targets(args)
    if len(pairs) != 1:
        raise CliError("rollout status takes exactly one resource")
    info, name = pairs[0]
    client = await session.client()
    obj = await _get(client, info, name, session.namespace)
    if not args.watch:
        message, _ = status_of(obj, args.revision)
        print(message, flush=True)
        return 0
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    bar = args.progress == "bar" or (args.progress == "auto" and sys.stdout.isatty())
    reporter = BarReporter(resource_name(info, name)) if bar else LineReporter()
    try:
        await follow(client, info, obj, args.revision, deadline, reporter)
    finally:
        reporter.close()
    return 0


async def follow(
    client: Client,
    info: KindInfo,
    obj: Any,
    revision: int,
    deadline: float | None,
    reporter: LineReporter | BarReporter | None = None,
) -> None:
    """Report each change of the status until done; a watch on the one object
    wakes it, and a watch that ends is resumed."""
    reporter = reporter or LineReporter()
    name, ns = obj.metadata.name, obj.metadata.namespace
    while True:
        message, done = status_of(obj, revision)
        reporter.update(message, obj)
        if done:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise CliError("timed out waiting for the condition")
        try:
            obj = await asyncio.wait_for(
                _next_change(client, info, name, ns, obj.metadata.resource_version),
                timeout=remaining,
            )
        except TimeoutError:
            raise CliError("timed out waiting for the condition") from None


async def _next_change(client: Client, info: KindInfo, name: str, ns: str, rv: str) -> Any:
    """The object once it changes after rv (re-read if the watch cannot resume)."""
    try:
        async for ev in client.watch(
            info.kind, ns, resource_version=rv, field_selector=f"metadata.name={name}"
        ):
            if ev.type == "DELETED":
                raise CliError(f"object has been deleted: {resource_name(info, name)}")
            if ev.object is not None:
                return ev.object
    except GoneError:
        pass
    await asyncio.sleep(0.5)
    return await _get(client, info, name, ns)


async def run_history(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    for info, name in _targets(args):
        obj = await _get(client, info, name, session.namespace)
        revisions = await revisions_of(client, obj)
        label = resource_name(info, name)
        if args.revision > 0:
            chosen = find_revision(name, revisions, args.revision)
            print(f"{label} with revision #{args.revision}")
            print("Pod Template:")
            w = describe.Writer()
            describe.pod_template(w, 1, printers.as_dict(template_of(chosen)))
            print(w.render(), end="")
            continue
        print(f"{label} ")
        rows = [("REVISION", "CHANGE-CAUSE")]
        rows.extend((str(number), cause) for number, cause in history(revisions))
        for line in tabwriter.table(rows, minwidth=0, padding=2):
            print(line)
        print()
    return 0


async def _update(
    client: Client, info: KindInfo, name: str, ns: str, change: Any
) -> tuple[Any, bool]:
    """Read, change (change(obj) -> bool: anything to write?), write; again on conflict."""
    for attempt in range(UPDATE_TRIES):
        obj = await _get(client, info, name, ns)
        if not change(obj):
            return obj, False
        try:
            return await client.update(obj), True
        except ConflictError:
            if attempt == UPDATE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


async def run_undo(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    rc = 0
    for info, name in _targets(args):
        ns = session.namespace
        obj = await _get(client, info, name, ns)
        if obj.kind == "Deployment" and obj.spec.paused:
            raise CliError(
                "you cannot rollback a paused deployment; resume it first with "
                f"'orchctl rollout resume deployment/{name}' and try again"
            )
        chosen = find_revision(name, await revisions_of(client, obj), args.to_revision)
        number = _revision(chosen)
        try:
            _, changed = await _update(
                client, info, name, ns, lambda o, chosen=chosen: apply_undo(o, chosen)
            )
        except ApiError as exc:
            report(from_server(exc))
            rc = 1
            continue
        label = resource_name(info, name)
        if changed:
            print(f"{label} rolled back", flush=True)
        else:
            print(
                f"{label} skipped rollback (current template already matches revision {number})",
                flush=True,
            )
    return rc


async def _set_paused(session: Session, args: argparse.Namespace, paused: bool) -> int:
    client = await session.client()
    rc = 0
    verb = "paused" if paused else "resumed"
    for info, name in _targets(args):
        if info.kind != "Deployment":
            report(
                f'error: {info.resource} "{name}" {"pausing" if paused else "resuming"} '
                "is not supported"
            )
            rc = 1
            continue

        def change(obj: Any) -> bool:
            if obj.spec.paused == paused:
                return False
            obj.spec.paused = paused
            return True

        _, changed = await _update(client, info, name, session.namespace, change)
        if not changed:
            state = "already paused" if paused else "not paused"
            report(f'error: {info.resource} "{name}" is {state}')
            rc = 1
            continue
        print(f"{resource_name(info, name)} {verb}", flush=True)
    return rc


async def run_pause(session: Session, args: argparse.Namespace) -> int:
    return await _set_paused(session, args, True)


async def run_resume(session: Session, args: argparse.Namespace) -> int:
    return await _set_paused(session, args, False)


async def run_restart(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    now = datetime.now(UTC)
    for info, name in _targets(args):

        def change(obj: Any) -> bool:
            restart(obj, now)
            return True

        await _update(client, info, name, session.namespace, change)
        print(f"{resource_name(info, name)} restarted", flush=True)
    return 0
