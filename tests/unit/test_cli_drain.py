"""orchctl drain's planning (kubectl's filters, in kubectl's order) and the
cordon/drain verbs against an in-memory API."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.cli import drain, main
from orchestrator.client.client import ConflictError, NotFoundError

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def pod(
    name: str,
    *,
    owner: str = "ReplicaSet",
    phase: str = "Running",
    empty_dir: bool = False,
    mirror: bool = False,
    deleting_since: float | None = None,
) -> core.Pod:
    p = core.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = "default"
    p.metadata.uid = f"uid-{name}"
    p.spec.node_name = "n1"
    if owner:
        p.metadata.owner_references.add(
            api_version="apps/v1",
            kind=owner,
            name=f"{owner.lower()}-1",
            uid="owner-uid",
            controller=True,
        )
    if empty_dir:
        p.spec.volumes.add(name="scratch").empty_dir.SetInParent()
    if mirror:
        p.metadata.annotations[drain.MIRROR_ANNOTATION] = "hash"
    if deleting_since is not None:
        p.metadata.deletion_timestamp = (NOW - timedelta(seconds=deleting_since)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    p.status.phase = phase
    return p


def names(pods: list[Any]) -> list[str]:
    return [p.metadata.name for p in pods]


def test_managed_pods_are_evicted_and_mirror_pods_skipped_silently() -> None:
    plan = drain.plan_drain(
        [pod("web"), pod("static", owner="", mirror=True)], drain.DrainOptions()
    )
    assert names(plan.evict) == ["web"]
    assert plan.warnings == {} and plan.errors == {}


def test_daemonset_pods_are_an_error_unless_ignored() -> None:
    pods = [pod("web"), pod("proxy", owner="DaemonSet")]
    plan = drain.plan_drain(pods, drain.DrainOptions())
    assert plan.error_message() == (
        "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/proxy"
    )
    plan = drain.plan_drain(pods, drain.DrainOptions(ignore_daemonsets=True))
    assert names(plan.evict) == ["web"]
    assert plan.warnings == {"ignoring DaemonSet-managed Pods": ["default/proxy"]}
    # A finished DaemonSet pod simply goes.
    done = drain.plan_drain(
        [pod("proxy", owner="DaemonSet", phase="Succeeded")], drain.DrainOptions()
    )
    assert names(done.evict) == ["proxy"]


def test_pods_of_a_vanished_daemonset_need_force() -> None:
    pods = [pod("proxy", owner="DaemonSet")]
    gone = {("default", "daemonset-1")}
    plan = drain.plan_drain(
        pods, drain.DrainOptions(ignore_daemonsets=True), missing_daemonsets=gone
    )
    assert plan.errors and not plan.evict
    plan = drain.plan_drain(pods, drain.DrainOptions(force=True), missing_daemonsets=gone)
    assert names(plan.evict) == ["proxy"]


def test_emptydir_pods_need_delete_emptydir_data() -> None:
    pods = [pod("cache", empty_dir=True)]
    plan = drain.plan_drain(pods, drain.DrainOptions())
    assert plan.error_message() == (
        "cannot delete Pods with local storage (use --delete-emptydir-data to override): "
        "default/cache"
    )
    plan = drain.plan_drain(pods, drain.DrainOptions(delete_emptydir_data=True))
    assert names(plan.evict) == ["cache"]
    assert plan.warnings == {"deleting Pods with local storage": ["default/cache"]}


def test_unmanaged_pods_need_force_unless_finished() -> None:
    pods = [pod("bare", owner=""), pod("done", owner="", phase="Failed")]
    plan = drain.plan_drain(pods, drain.DrainOptions())
    assert plan.errors == {drain.UNMANAGED_FATAL: ["default/bare"]}
    assert names(plan.evict) == ["done"]
    plan = drain.plan_drain(pods, drain.DrainOptions(force=True))
    assert names(plan.evict) == ["bare", "done"]
    assert plan.warnings == {drain.UNMANAGED_WARNING: ["default/bare"]}


def test_every_problem_is_reported_at_once() -> None:
    pods = [pod("bare", owner=""), pod("proxy", owner="DaemonSet"), pod("cache", empty_dir=True)]
    msg = drain.plan_drain(pods, drain.DrainOptions()).error_message()
    assert "DaemonSet-managed" in msg and "local storage" in msg and "no controller" in msg


def test_long_terminating_pods_can_be_skipped() -> None:
    pods = [pod("stuck", deleting_since=600), pod("fresh", deleting_since=5)]
    opts = drain.DrainOptions(skip_wait_for_delete_timeout=60)
    assert names(drain.plan_drain(pods, opts, now=NOW).evict) == ["fresh"]
    assert names(drain.plan_drain(pods, drain.DrainOptions(), now=NOW).evict) == ["stuck", "fresh"]


# -- the verbs ----------------------------------------------------------------------------


class FakeApi:
    def __init__(self, node: core.Node, pods: list[core.Pod], conflicts: int = 0) -> None:
        self.node = node
        self.pods = {p.metadata.name: p for p in pods}
        self.conflicts = conflicts
        self.deleted: list[tuple[str, int | None]] = []

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        if kind == "Node":
            if name != self.node.metadata.name:
                raise NotFoundError(grpc.StatusCode.NOT_FOUND, f'nodes "{name}" not found')
            copy = core.Node()
            copy.CopyFrom(self.node)
            return copy
        if kind == "Pod" and name in self.pods:
            return self.pods[name]
        if kind == "DaemonSet" and name == "daemonset-1":
            ds = apps.DaemonSet(api_version="apps/v1", kind="DaemonSet")
            ds.metadata.name, ds.metadata.uid = name, "owner-uid"
            return ds
        raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"{kind} {name} not found")

    async def update(self, obj: Any) -> Any:
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError(grpc.StatusCode.ABORTED, "modified")
        self.node.CopyFrom(obj)
        return obj

    async def list(self, kind: str, namespace: Any = None, **kw: Any) -> Any:
        assert kw["field_selector"] == "spec.nodeName=n1" and kw["all_namespaces"]
        return argparse.Namespace(items=list(self.pods.values()))

    async def delete(self, kind: str, name: str, namespace: Any = None, **kw: Any) -> Any:
        self.deleted.append((name, kw.get("grace_period")))
        return self.pods.pop(name), True


class FakeSession:
    def __init__(self, api: FakeApi) -> None:
        self.api = api

    async def client(self) -> FakeApi:
        return self.api


def node() -> core.Node:
    n = core.Node(api_version="v1", kind="Node")
    n.metadata.name = "n1"
    return n


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="verb")
    drain.add_cordon_arguments(sub.add_parser("cordon"))
    drain.add_cordon_arguments(sub.add_parser("uncordon"))
    drain.add_drain_arguments(sub.add_parser("drain"), main._duration_seconds)
    return parser.parse_args(argv)


async def test_cordon_and_uncordon_retry_conflicts_and_say_what_they_did(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = FakeApi(node(), [], conflicts=2)
    session: Any = FakeSession(api)
    assert await drain.run_cordon(session, parse(["cordon", "n1"])) == 0
    assert api.node.spec.unschedulable
    assert await drain.run_cordon(session, parse(["cordon", "n1"])) == 0
    assert await drain.run_uncordon(session, parse(["uncordon", "n1"])) == 0
    assert not api.node.spec.unschedulable
    assert await drain.run_cordon(session, parse(["cordon", "nope"])) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "node/n1 cordoned",
        "node/n1 already cordoned",
        "node/n1 uncordoned",
    ]
    assert err.strip() == 'Error from server (NotFound): nodes "nope" not found'


async def test_drain_cordons_evicts_waits_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(node(), [pod("web-1"), pod("web-2"), pod("proxy", owner="DaemonSet")])
    session: Any = FakeSession(api)
    args = parse(["drain", "n1", "--ignore-daemonsets", "--grace-period", "5", "--timeout", "10s"])
    assert await drain.run_drain(session, args) == 0
    assert api.node.spec.unschedulable
    assert api.deleted == [("web-1", 5), ("web-2", 5)]
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "node/n1 cordoned",
        "evicting pod default/web-1",
        "evicting pod default/web-2",
        "pod/web-1 evicted",
        "pod/web-2 evicted",
        "node/n1 drained",
    ]
    assert err.strip() == "Warning: ignoring DaemonSet-managed Pods: default/proxy"


async def test_drain_refuses_and_evicts_nothing_when_a_pod_may_not_go(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = FakeApi(node(), [pod("web"), pod("bare", owner="")])
    session: Any = FakeSession(api)
    assert await drain.run_drain(session, parse(["drain", "n1"])) == 1
    assert api.deleted == []
    assert api.node.spec.unschedulable  # kubectl leaves it cordoned too
    _, err = capsys.readouterr()
    assert err.strip() == (
        'error: unable to drain node "n1" due to error: cannot delete Pods that declare no '
        "controller (use --force to override): default/bare"
    )
