"""`orchctl rollout` and `orchctl scale` without a server: status lines,
revision choice, undo, restart, preconditions, parsing, and following a
rollout over a fake watch."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.cli import main, rollout, scale
from orchestrator.cli.errors import CliError
from orchestrator.client.client import WatchEvent

pytestmark = pytest.mark.unit


def deployment(
    spec_replicas: int = 3, generation: int = 2, observed: int = 2, **status: int
) -> Any:
    d = apps.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name = "web"
    d.metadata.namespace = "demo"
    d.metadata.uid = "d-uid"
    d.metadata.generation = generation
    d.metadata.resource_version = "1"
    d.spec.replicas = spec_replicas
    d.spec.template.metadata.labels["app"] = "web"
    d.spec.template.spec.containers.add(name="main", image="web:3")
    d.status.observed_generation = observed
    for key, value in status.items():
        setattr(d.status, key, value)
    return d


def replicaset(name: str, revision: int, image: str, cause: str = "") -> Any:
    rs = apps.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name = name
    rs.metadata.annotations[rollout.REVISION] = str(revision)
    if cause:
        rs.metadata.annotations[rollout.CHANGE_CAUSE] = cause
    rs.metadata.annotations["deployment.kubernetes.io/desired-replicas"] = "3"
    rs.spec.template.metadata.labels.update({"app": "web", "pod-template-hash": name})
    rs.spec.template.spec.containers.add(name="main", image=image)
    return rs


# -- status lines ------------------------------------------------------------------------------


def test_deployment_status_lines_follow_kubectl() -> None:
    assert rollout.deployment_status(deployment(generation=3, observed=2)) == (
        "Waiting for deployment spec update to be observed...",
        False,
    )
    assert rollout.deployment_status(deployment(updated_replicas=1, replicas=3)) == (
        'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been '
        "updated...",
        False,
    )
    assert rollout.deployment_status(deployment(updated_replicas=3, replicas=4)) == (
        'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...',
        False,
    )
    assert rollout.deployment_status(
        deployment(updated_replicas=3, replicas=3, available_replicas=1)
    ) == (
        'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...',
        False,
    )
    assert rollout.deployment_status(
        deployment(updated_replicas=3, replicas=3, available_replicas=3)
    ) == ('deployment "web" successfully rolled out', True)


def test_deployment_status_fails_on_deadline_and_wrong_revision() -> None:
    d = deployment(updated_replicas=1, replicas=3)
    d.status.conditions.add(type="Progressing", status="False", reason="ProgressDeadlineExceeded")
    with pytest.raises(
        rollout.RolloutFailed, match='deployment "web" exceeded its progress deadline'
    ):
        rollout.deployment_status(d)
    d = deployment(updated_replicas=3, replicas=3, available_replicas=3)
    d.metadata.annotations[rollout.REVISION] = "2"
    assert rollout.deployment_status(d, revision=2)[1]
    with pytest.raises(rollout.RolloutFailed, match=r"desired revision \(5\) is different"):
        rollout.deployment_status(d, revision=5)


def test_statefulset_and_daemonset_status_lines() -> None:
    sts = apps.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.generation = 1
    sts.spec.replicas = 3
    sts.spec.update_strategy.type = "RollingUpdate"
    assert rollout.status_of(sts)[0] == "Waiting for statefulset spec update to be observed..."
    sts.status.observed_generation = 1
    sts.status.ready_replicas = 1
    assert rollout.status_of(sts)[0] == "Waiting for 2 pods to be ready..."
    sts.status.ready_replicas = 3
    sts.status.updated_replicas = 1
    sts.status.current_revision, sts.status.update_revision = "web-a", "web-b"
    assert rollout.status_of(sts) == (
        "waiting for statefulset rolling update to complete 1 pods at revision web-b...",
        False,
    )
    sts.status.current_revision = "web-b"
    sts.status.current_replicas = 3
    assert rollout.status_of(sts) == (
        "statefulset rolling update complete 3 pods at revision web-b...",
        True,
    )
    sts.spec.update_strategy.type = "OnDelete"
    with pytest.raises(rollout.RolloutFailed, match="only available for RollingUpdate"):
        rollout.status_of(sts)

    ds = apps.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name = "agent"
    ds.metadata.generation = 1
    ds.status.observed_generation = 1
    ds.status.desired_number_scheduled = 2
    ds.status.updated_number_scheduled = 2
    ds.status.number_available = 1
    assert rollout.status_of(ds) == (
        'Waiting for daemon set "agent" rollout to finish: 1 of 2 updated pods are available...',
        False,
    )
    ds.status.number_available = 2
    assert rollout.status_of(ds) == ('daemon set "agent" successfully rolled out', True)


# -- history and undo ------------------------------------------------------------------------------


def test_history_rows_and_revision_choice() -> None:
    rss = [
        replicaset("c", 3, "web:3"),
        replicaset("a", 1, "web:1", cause="first"),
        replicaset("b", 2, "web:2"),
    ]
    assert rollout.history(rss) == [(1, "first"), (2, "<none>"), (3, "<none>")]
    assert rollout.find_revision("web", rss, 0).metadata.name == "b"  # the previous one
    assert rollout.find_revision("web", rss, 1).metadata.name == "a"
    with pytest.raises(CliError, match="unable to find specified revision 7 in history"):
        rollout.find_revision("web", rss, 7)
    with pytest.raises(CliError, match='no rollout history found for "web"'):
        rollout.find_revision("web", rss[:1], 0)


def test_undo_copies_the_template_without_the_hash_label() -> None:
    d = deployment()
    d.metadata.annotations["keep"] = "me"
    target = replicaset("a", 1, "web:1", cause="first")
    assert rollout.apply_undo(d, target)
    assert d.spec.template.spec.containers[0].image == "web:1"
    assert dict(d.spec.template.metadata.labels) == {"app": "web"}
    # The revision's change-cause comes along; the controller's bookkeeping does not.
    assert d.metadata.annotations[rollout.CHANGE_CAUSE] == "first"
    assert rollout.REVISION not in d.metadata.annotations
    assert "deployment.kubernetes.io/desired-replicas" not in d.metadata.annotations
    assert d.metadata.annotations["keep"] == "me"
    assert not rollout.apply_undo(d, target)  # already there: skipped


def test_undo_from_a_controller_revision() -> None:
    sts = apps.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.spec.template.spec.containers.add(name="db", image="db:2")
    cr = apps.ControllerRevision(api_version="apps/v1", kind="ControllerRevision", revision=1)
    cr.data.update(
        {
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {
                        "containers": [
                            {"name": "db", "image": "db:1", "ports": [{"containerPort": 5432}]}
                        ]
                    },
                }
            }
        }
    )
    assert rollout.history([cr]) == [(1, "<none>")]
    assert rollout.apply_undo(sts, cr)
    container = sts.spec.template.spec.containers[0]
    assert (container.image, container.ports[0].container_port) == ("db:1", 5432)


def test_restart_stamps_the_template_and_refuses_paused_deployments() -> None:
    d = deployment()
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    rollout.restart(d, now)
    assert d.spec.template.metadata.annotations[rollout.RESTARTED_AT] == "2024-05-01T12:00:00Z"
    d.spec.paused = True
    with pytest.raises(CliError, match="can't restart paused deployment"):
        rollout.restart(d, now)


# -- scale --------------------------------------------------------------------------------------


def test_scale_preconditions_and_targets() -> None:
    scale.Preconditions().check(3, "10")
    scale.Preconditions(current_replicas=3).check(3, "10")
    with pytest.raises(CliError, match="Expected replicas to be 2, was 3"):
        scale.Preconditions(current_replicas=2).check(3, "10")
    with pytest.raises(CliError, match="Expected resource version to be 9, was 10"):
        scale.Preconditions(resource_version="9").check(3, "10")
    pairs = scale.targets(["deploy/web", "deploy/api"])
    assert [(i.kind, n) for i, n in pairs] == [("Deployment", "web"), ("Deployment", "api")]
    assert [(i.kind, n) for i, n in scale.targets(["rs", "x"])] == [("ReplicaSet", "x")]
    with pytest.raises(CliError, match="cannot scale configmaps"):
        scale.targets(["configmap/x"])
    with pytest.raises(CliError, match="no name was specified"):
        scale.targets(["deployments"])


# -- parsing ---------------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return main.parse(main.build_parser(), list(argv))


def test_rollout_and_scale_parse_like_kubectl() -> None:
    args = parse("rollout", "status", "deployment/web", "--timeout=2m", "-n", "demo")
    assert (args.what, args.resources, args.timeout, args.namespace) == (
        "status",
        ["deployment/web"],
        120.0,
        "demo",
    )
    assert args.watch is True
    assert parse("rollout", "status", "deploy/web", "--watch=false").watch is False
    args = parse("rollout", "undo", "deploy", "web", "--to-revision", "2")
    assert (args.resources, args.to_revision) == (["deploy", "web"], 2)
    args = parse("scale", "--replicas=4", "deployment", "web", "--current-replicas", "3")
    assert (args.resources, args.replicas, args.current_replicas) == (["deployment", "web"], 4, 3)


# -- following a rollout ---------------------------------------------------------------------------


class FakeClient:
    """Serves one object and then a watch that delivers the given versions."""

    def __init__(self, first: Any, changes: list[Any]) -> None:
        self.first = first
        self.changes = list(changes)
        self.watches = 0

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        return self.first

    async def watch(
        self, kind: str, namespace: str | None = None, **kw: Any
    ) -> AsyncIterator[WatchEvent]:
        self.watches += 1
        assert kw["field_selector"] == "metadata.name=web"
        while self.changes:
            obj = self.changes.pop(0)
            yield WatchEvent("MODIFIED", obj, obj.metadata.resource_version)


async def test_follow_prints_each_new_line_until_done(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [
        deployment(updated_replicas=1, replicas=3),
        deployment(updated_replicas=1, replicas=3),  # no news: not printed again
        deployment(updated_replicas=3, replicas=3, available_replicas=2),
        deployment(updated_replicas=3, replicas=3, available_replicas=3),
    ]
    client = FakeClient(steps[0], steps[1:])
    await rollout.follow(client, kind_info("Deployment"), steps[0], 0, None)  # type: ignore[arg-type]
    assert capsys.readouterr().out.splitlines() == [
        'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been '
        "updated...",
        'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...',
        'deployment "web" successfully rolled out',
    ]


async def test_follow_gives_up_at_the_deadline() -> None:
    stuck = deployment(updated_replicas=1, replicas=3)
    client = FakeClient(stuck, [])
    with pytest.raises(CliError, match="timed out waiting for the condition"):
        await rollout.follow(client, kind_info("Deployment"), stuck, 0, 0.0)  # type: ignore[arg-type]


async def test_follow_stops_when_the_deadline_is_exceeded() -> None:
    failing = deployment(updated_replicas=1, replicas=3)
    failing.status.conditions.add(
        type="Progressing", status="False", reason="ProgressDeadlineExceeded"
    )
    client = FakeClient(deployment(updated_replicas=1, replicas=3), [failing])
    with pytest.raises(rollout.RolloutFailed, match="exceeded its progress deadline"):
        await rollout.follow(client, kind_info("Deployment"), client.first, 0, None)  # type: ignore[arg-type]


def test_progress_counts_updated_replicas_that_are_available() -> None:
    assert rollout.progress_of(
        deployment(updated_replicas=3, replicas=4, available_replicas=2)
    ) == (
        2,
        3,
    )
    assert rollout.progress_of(
        deployment(updated_replicas=3, replicas=3, available_replicas=3)
    ) == (3, 3)


async def test_follow_with_a_bar_ends_on_the_final_line(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [
        deployment(updated_replicas=1, replicas=3),
        deployment(updated_replicas=3, replicas=3, available_replicas=3),
    ]
    client = FakeClient(steps[0], steps[1:])
    bar = rollout.BarReporter("deployment.apps/web")
    try:
        await rollout.follow(client, kind_info("Deployment"), steps[0], 0, None, bar)  # type: ignore[arg-type]
        task = bar.progress.tasks[0]
        assert (task.completed, task.total) == (3, 3)
    finally:
        bar.close()
    assert capsys.readouterr().out.splitlines()[-1] == 'deployment "web" successfully rolled out'
