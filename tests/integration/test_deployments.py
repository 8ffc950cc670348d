"""ReplicaSets and Deployments against a real control plane.

No scheduler or node agents run here: pods stay Pending until the test plays
the kubelet and marks them Running and Ready, which is how these tests drive
rollouts one step at a time.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api.meta import now_rfc3339
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, InvalidError, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TIMEOUT = 15.0
HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"


# -- helpers ----------------------------------------------------------------------------------


async def new_namespace(c: Client, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    ns = core.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    await c.create(ns)
    return name


def deployment(
    name: str, replicas: int = 3, image: str = "busybox:1.36", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
            **spec,
        },
    }


def replicaset(name: str, replicas: int = 3) -> dict[str, Any]:
    manifest = deployment(name, replicas)
    manifest["kind"] = "ReplicaSet"
    return manifest


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def pods_of(c: Client, ns: str, selector: str) -> list[Any]:
    listed = await c.list("Pod", ns, label_selector=selector)
    return [p for p in listed.items if not p.metadata.deletion_timestamp]


async def mark_ready(c: Client, pod: Any, ready: bool = True) -> None:
    """Play the kubelet: the pod runs and its Ready condition is set."""
    for _ in range(5):
        live = await c.get("Pod", pod.metadata.name, pod.metadata.namespace)
        live.status.phase = "Running"
        del live.status.conditions[:]
        live.status.conditions.add(
            type="Ready",
            status="True" if ready else "False",
            last_transition_time=now_rfc3339(),
        )
        try:
            await c.update_status(live)
            return
        except Exception:  # a conflict with the controller adopting it: re-read
            await asyncio.sleep(0.05)
    raise AssertionError(f"could not mark pod {pod.metadata.name} ready")


async def mark_all_ready(c: Client, ns: str, selector: str) -> int:
    count = 0
    for pod in await pods_of(c, ns, selector):
        if not any(
            cond.type == "Ready" and cond.status == "True" for cond in pod.status.conditions
        ):
            await mark_ready(c, pod)
            count += 1
    return count


async def replicasets_of(c: Client, ns: str, name: str) -> list[Any]:
    listed = await c.list("ReplicaSet", ns, label_selector=f"app={name}")
    return sorted(listed.items, key=lambda rs: int(rs.metadata.annotations.get(REVISION, "0")))


def condition(obj: Any, type_: str) -> Any | None:
    for cond in obj.status.conditions:
        if cond.type == type_:
            return cond
    return None


def must_condition(obj: Any, type_: str) -> Any:
    cond = condition(obj, type_)
    assert cond is not None, f"{obj.metadata.name} has no {type_} condition: {obj.status}"
    return cond


async def rolled_out(c: Client, ns: str, name: str) -> Any:
    d = await c.get("Deployment", name, ns)
    want = d.spec.replicas
    s = d.status
    if (
        s.observed_generation >= d.metadata.generation
        and s.updated_replicas == want
        and s.replicas == want
        and s.available_replicas == want
    ):
        return d
    return None


async def drive_rollout(c: Client, ns: str, name: str, timeout: float = 30.0) -> Any:
    """Mark pods ready as the controller creates them until the rollout is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await mark_all_ready(c, ns, f"app={name}")
        done = await rolled_out(c, ns, name)
        if done:
            return done
        await asyncio.sleep(0.1)
    d = await c.get("Deployment", name, ns)
    raise AssertionError(f"deployment {name} did not finish rolling out: {d.status}")


def orchctl(cp: ControlPlane, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        env=cp.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- ReplicaSets ----------------------------------------------------------------------------


async def test_replicaset_scales_heals_and_adopts(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "rs")
        await c.apply(replicaset("web", 3), namespace=ns)
        await wait_for(lambda: _count(c, ns, "app=web", 3), "3 pods")

        # Self-healing: a deleted pod is replaced.
        victim = (await pods_of(c, ns, "app=web"))[0]
        await c.delete("Pod", victim.metadata.name, ns)
        pods = await wait_for(lambda: _count(c, ns, "app=web", 3), "a replacement pod")
        assert victim.metadata.name not in {p.metadata.name for p in pods}

        # Status follows what the pods report.
        for pod in pods[:2]:
            await mark_ready(c, pod)

        async def status_ready() -> Any:
            rs = await c.get("ReplicaSet", "web", ns)
            s = rs.status
            ok = s.replicas == 3 and s.ready_replicas == 2 and s.available_replicas == 2
            return rs if ok and s.fully_labeled_replicas == 3 else None

        rs = await wait_for(status_ready, "status 3/2/2")
        assert rs.status.observed_generation == rs.metadata.generation

        # Scale down: the not-ready pod goes first.
        not_ready = next(p for p in pods[2:])
        rs.spec.replicas = 2
        await c.update(rs)
        pods = await wait_for(lambda: _count(c, ns, "app=web", 2), "2 pods")
        assert not_ready.metadata.name not in {p.metadata.name for p in pods}

        # An orphan with matching labels is adopted instead of creating more;
        # an owned pod relabelled away is released and replaced.
        orphan = core.Pod(api_version="v1", kind="Pod")
        orphan.metadata.name = "stray"
        orphan.metadata.namespace = ns
        orphan.metadata.labels["app"] = "adopt"
        orphan.spec.containers.add(name="main", image="busybox:1.36")
        await c.create(orphan)
        await c.apply(replicaset("adopt", 3), namespace=ns)
        rs = await c.get("ReplicaSet", "adopt", ns)

        async def adopted() -> Any:
            pod = await c.get("Pod", "stray", ns)
            refs = [r for r in pod.metadata.owner_references if r.controller]
            return refs and refs[0].uid == rs.metadata.uid

        await wait_for(adopted, "the stray pod to be adopted")
        await wait_for(lambda: _count(c, ns, "app=adopt", 3), "3 pods with the adopted one")
        await asyncio.sleep(0.5)
        assert len(await pods_of(c, ns, "app=adopt")) == 3

        mine = await c.get("Pod", "stray", ns)
        mine.metadata.labels["app"] = "other"
        await c.update(mine)
        # The relabelled pod leaves the selector at once; the controller may
        # already have replaced it (a race the test does not try to win).
        selected = [p.metadata.name for p in await pods_of(c, ns, "app=adopt")]
        assert "stray" not in selected and len(selected) in (2, 3), selected

        async def released() -> Any:
            pod = await c.get("Pod", "stray", ns)
            return not pod.metadata.owner_references

        await wait_for(released, "the relabelled pod to be released")
        await wait_for(lambda: _count(c, ns, "app=adopt", 3), "a pod replacing the released one")


async def _count(c: Client, ns: str, selector: str, n: int) -> list[Any] | None:
    pods = await pods_of(c, ns, selector)
    return pods if len(pods) == n else None


async def test_replicaset_min_ready_seconds(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "rsmin")
        manifest = replicaset("slow", 1)
        manifest["spec"]["minReadySeconds"] = 2
        await c.apply(manifest, namespace=ns)
        pods = await wait_for(lambda: _count(c, ns, "app=slow", 1), "1 pod")
        await mark_ready(c, pods[0])

        async def ready_not_available() -> Any:
            s = (await c.get("ReplicaSet", "slow", ns)).status
            return s.ready_replicas == 1 and s.available_replicas == 0

        await wait_for(ready_not_available, "ready but not yet available")

        async def available() -> Any:
            return (await c.get("ReplicaSet", "slow", ns)).status.available_replicas == 1

        await wait_for(available, "available after minReadySeconds", timeout=10)


async def test_replicaset_failure_condition_when_pods_cannot_be_created(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "rsfail")
        # Pods that admission refuses (the apiserver does not enforce
        # ResourceQuota yet; a missing PriorityClass is refused at pod creation).
        manifest = replicaset("big", 3)
        manifest["spec"]["template"]["spec"]["priorityClassName"] = "no-such-class"
        await c.apply(manifest, namespace=ns)

        async def failed() -> Any:
            rs = await c.get("ReplicaSet", "big", ns)
            return condition(rs, "ReplicaFailure")

        cond = await wait_for(failed, "a ReplicaFailure condition")
        assert cond.status == "True" and cond.reason == "FailedCreate"
        assert 'no PriorityClass with name "no-such-class"' in cond.message
        assert await pods_of(c, ns, "app=big") == []
        events = (await c.list("Event", ns)).items
        assert any(e.reason == "FailedCreate" and e.type == "Warning" for e in events)

        # Fixed template: the condition goes once pods can be created.
        manifest["spec"]["template"]["spec"].pop("priorityClassName")
        await c.apply(manifest, namespace=ns)

        async def recovered() -> Any:
            rs = await c.get("ReplicaSet", "big", ns)
            return condition(rs, "ReplicaFailure") is None and rs.status.replicas == 3

        await wait_for(recovered, "pods created and the condition gone", timeout=30)


# -- Deployments -------------------------------------------------------------------------------


async def test_deployment_creates_hashed_replicaset_and_becomes_available(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "dep")
        await c.apply(deployment("web", 3), namespace=ns)
        rss = await wait_for(lambda: replicasets_of(c, ns, "web"), "a ReplicaSet")
        assert len(rss) == 1
        rs = rss[0]
        pod_hash = rs.spec.template.metadata.labels[HASH]
        assert rs.metadata.name == f"web-{pod_hash}"
        assert rs.spec.selector.match_labels[HASH] == pod_hash
        assert rs.metadata.annotations[REVISION] == "1"
        assert rs.spec.replicas == 3
        d = await drive_rollout(c, ns, "web")
        assert d.metadata.annotations[REVISION] == "1"
        assert must_condition(d, "Available").status == "True"

        async def progressed() -> Any:
            d = await c.get("Deployment", "web", ns)
            cond = condition(d, "Progressing")
            return cond is not None and cond.reason == "NewReplicaSetAvailable"

        await wait_for(progressed, "Progressing=NewReplicaSetAvailable")
        pods = await pods_of(c, ns, "app=web")
        assert all(p.metadata.labels[HASH] == pod_hash for p in pods)


async def test_rolling_update_step_by_step(control_plane: ControlPlane) -> None:
    """4 replicas, maxSurge 1, maxUnavailable 0: never more than 5 pods, never
    fewer than 4 available, one new pod at a time."""
    async with control_plane.client() as c:
        ns = await new_namespace(c, "roll")
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        await c.apply(deployment("web", 4, strategy=strategy), namespace=ns)
        await drive_rollout(c, ns, "web")

        await c.apply(deployment("web", 4, image="busybox:1.37", strategy=strategy), namespace=ns)

        async def two_rss() -> Any:
            rss = await replicasets_of(c, ns, "web")
            return rss if len(rss) == 2 else None

        old, new = await wait_for(two_rss, "a second ReplicaSet")
        assert new.metadata.annotations[REVISION] == "2"
        steps = 0
        while True:
            await asyncio.sleep(0.3)  # let the controllers act on the last step
            pods = await pods_of(c, ns, "app=web")
            assert len(pods) <= 5, f"surge exceeded: {len(pods)} pods"
            ready = [
                p
                for p in pods
                if any(x.type == "Ready" and x.status == "True" for x in p.status.conditions)
            ]
            assert len(ready) >= 4, f"only {len(ready)} pods available"
            if await rolled_out(c, ns, "web"):
                break
            waiting = [p for p in pods if p not in ready]
            assert len(waiting) <= 1, "more than one new pod at a time"
            for pod in waiting:
                await mark_ready(c, pod)
            steps += 1
            assert steps < 30, "rollout did not finish"
        old = await c.get("ReplicaSet", old.metadata.name, ns)
        assert old.spec.replicas == 0
        pods = await pods_of(c, ns, "app=web")
        assert {p.spec.containers[0].image for p in pods} == {"busybox:1.37"}


async def test_recreate_removes_old_pods_before_new_ones(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "recreate")
        await c.apply(deployment("db", 2, strategy={"type": "Recreate"}), namespace=ns)
        await drive_rollout(c, ns, "db")
        await c.apply(
            deployment("db", 2, image="busybox:1.37", strategy={"type": "Recreate"}), namespace=ns
        )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            # Deleting pods included: a new pod while an old one still stops is wrong.
            listed = (await c.list("Pod", ns, label_selector="app=db")).items
            images = {p.spec.containers[0].image for p in listed}
            assert images != {"busybox:1.36", "busybox:1.37"}, "old and new pods at once"
            if images == {"busybox:1.37"}:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the new pods never came")
        await drive_rollout(c, ns, "db")


async def test_recreate_waits_for_terminating_pods(control_plane: ControlPlane) -> None:
    """Old pods on a node stop gracefully: the new ones wait until they are gone."""
    async with control_plane.client() as c:
        ns = await new_namespace(c, "recreate-wait")
        await c.apply(deployment("db", 2, strategy={"type": "Recreate"}), namespace=ns)
        await drive_rollout(c, ns, "db")
        for pod in await pods_of(c, ns, "app=db"):
            pod.spec.node_name = "node-gone"  # bound: deletion now waits for its agent
            await c.update(pod)
        await c.apply(
            deployment("db", 2, image="busybox:1.37", strategy={"type": "Recreate"}), namespace=ns
        )

        async def terminating() -> Any:
            listed = (await c.list("Pod", ns, label_selector="app=db")).items
            return (
                len(listed) == 2 and all(p.metadata.deletion_timestamp for p in listed) and listed
            )

        old = await wait_for(terminating, "the old pods to be terminating")
        await asyncio.sleep(1.5)
        listed = (await c.list("Pod", ns, label_selector="app=db")).items
        assert {p.metadata.name for p in listed} == {p.metadata.name for p in old}
        for pod in old:  # the node agent confirms they stopped
            await c.delete("Pod", pod.metadata.name, ns, grace_period=0)
        d = await drive_rollout(c, ns, "db")
        assert d.spec.template.spec.containers[0].image == "busybox:1.37"


async def test_undo_pause_resume_restart_history_with_orchctl(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "undo")
        await c.apply(deployment("web", 2), namespace=ns)
        await drive_rollout(c, ns, "web")
        await c.apply(deployment("web", 2, image="busybox:1.37"), namespace=ns)
        await drive_rollout(c, ns, "web")
        await c.apply(deployment("web", 2, image="busybox:1.38"), namespace=ns)
        await drive_rollout(c, ns, "web")

        out = orchctl(control_plane, "-n", ns, "rollout", "history", "deployment/web")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith("deployment.apps/web")
        assert [line.split()[0] for line in lines[2:] if line.strip()] == ["1", "2", "3"]

        out = orchctl(control_plane, "-n", ns, "rollout", "history", "deploy/web", "--revision=1")
        assert out.returncode == 0, out.stderr
        assert "busybox:1.36" in out.stdout and "revision #1" in out.stdout

        # Undo to revision 1: its template comes back as revision 4.
        out = orchctl(
            control_plane, "-n", ns, "rollout", "undo", "deployment/web", "--to-revision=1"
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "deployment.apps/web rolled back"
        d = await drive_rollout(c, ns, "web")
        assert d.spec.template.spec.containers[0].image == "busybox:1.36"
        assert d.metadata.annotations[REVISION] == "4"
        rss = await replicasets_of(c, ns, "web")
        assert rss[-1].spec.template.spec.containers[0].image == "busybox:1.36"
        assert rss[-1].metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"

        out = orchctl(
            control_plane, "-n", ns, "rollout", "undo", "deployment/web", "--to-revision=9"
        )
        assert out.returncode == 1
        assert "unable to find specified revision 9 in history" in out.stderr

        # Plain undo goes back to the previous revision (3: busybox:1.38).
        out = orchctl(control_plane, "-n", ns, "rollout", "undo", "deployment/web")
        assert out.returncode == 0, out.stderr
        d = await drive_rollout(c, ns, "web")
        assert d.spec.template.spec.containers[0].image == "busybox:1.38"

        # Paused: a template change makes no new ReplicaSet; scaling still works.
        out = orchctl(control_plane, "-n", ns, "rollout", "pause", "deployment/web")
        assert out.returncode == 0 and out.stdout.strip() == "deployment.apps/web paused"
        out = orchctl(control_plane, "-n", ns, "rollout", "pause", "deployment/web")
        assert out.returncode == 1 and "is already paused" in out.stderr
        before = {rs.metadata.name for rs in await replicasets_of(c, ns, "web")}
        await c.apply(deployment("web", 3, image="busybox:1.39"), namespace=ns)

        async def scaled_while_paused() -> Any:
            return len(await pods_of(c, ns, "app=web")) == 3

        await wait_for(scaled_while_paused, "3 pods while paused")
        assert {rs.metadata.name for rs in await replicasets_of(c, ns, "web")} == before
        d = await c.get("Deployment", "web", ns)
        assert must_condition(d, "Progressing").reason == "DeploymentPaused"
        out = orchctl(control_plane, "-n", ns, "rollout", "undo", "deployment/web")
        assert out.returncode == 1 and "paused" in out.stderr

        out = orchctl(control_plane, "-n", ns, "rollout", "resume", "deployment/web")
        assert out.returncode == 0 and out.stdout.strip() == "deployment.apps/web resumed"
        d = await drive_rollout(c, ns, "web")
        assert d.spec.template.spec.containers[0].image == "busybox:1.39"

        # Restart: same spec, new pods (a new ReplicaSet from the annotation).
        out = orchctl(control_plane, "-n", ns, "rollout", "restart", "deployment/web")
        assert out.returncode == 0 and out.stdout.strip() == "deployment.apps/web restarted"
        d = await c.get("Deployment", "web", ns)
        assert "kubectl.kubernetes.io/restartedAt" in d.spec.template.metadata.annotations
        await drive_rollout(c, ns, "web")
        out = orchctl(
            control_plane, "-n", ns, "rollout", "status", "deployment/web", "--timeout=10s"
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith('deployment "web" successfully rolled out')


async def test_rollout_status_follows_until_done(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "status")
        await c.apply(deployment("web", 2), namespace=ns)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=30s",
            env=control_plane.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.0)
        await drive_rollout(c, ns, "web")
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()
        text = stdout.decode()
        assert 'Waiting for deployment "web" rollout to finish' in text
        assert text.strip().endswith('deployment "web" successfully rolled out')

        # --timeout on a rollout that cannot finish.
        await c.apply(deployment("web", 2, image="busybox:1.37"), namespace=ns)
        out = orchctl(
            control_plane, "-n", ns, "rollout", "status", "deployment/web", "--timeout=2s"
        )
        assert out.returncode == 1
        assert "timed out waiting for the condition" in out.stderr


async def test_progress_deadline_exceeded(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "deadline")
        await c.apply(deployment("stuck", 2, progressDeadlineSeconds=2), namespace=ns)

        async def timed_out() -> Any:
            d = await c.get("Deployment", "stuck", ns)
            cond = condition(d, "Progressing")
            return cond if cond is not None and cond.status == "False" else None

        cond = await wait_for(timed_out, "Progressing=False", timeout=20)
        assert cond.reason == "ProgressDeadlineExceeded"
        assert "has timed out progressing" in cond.message
        out = orchctl(control_plane, "-n", ns, "rollout", "status", "deployment/stuck")
        assert out.returncode == 1
        assert 'deployment "stuck" exceeded its progress deadline' in out.stderr


async def test_scale_with_orchctl_and_proportional_scaling(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "scale")
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
        await c.apply(deployment("web", 10, strategy=strategy), namespace=ns)
        await drive_rollout(c, ns, "web")

        # A rollout that stalls: new pods never become ready.
        await c.apply(deployment("web", 10, image="busybox:1.37", strategy=strategy), namespace=ns)

        async def stalled() -> Any:
            rss = await replicasets_of(c, ns, "web")
            if len(rss) != 2:
                return None
            old, new = rss
            return (old.spec.replicas, new.spec.replicas) == (8, 5) and rss

        await wait_for(stalled, "old 8 + new 5 (surge 3, unavailable 2)")

        out = orchctl(control_plane, "-n", ns, "scale", "deployment/web", "--replicas=15")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "deployment.apps/web scaled"

        async def proportional() -> Any:
            old, new = await replicasets_of(c, ns, "web")
            return (old.spec.replicas, new.spec.replicas) == (11, 7) or None

        # 5 more (plus 1 more surge) shared 8:5 -> +3 old, +2 new, total 18 = 15 + 3.
        await wait_for(proportional, "the increase shared in proportion")

        out = orchctl(
            control_plane,
            "-n",
            ns,
            "scale",
            "deploy",
            "web",
            "--replicas=4",
            "--current-replicas=3",
        )
        assert out.returncode == 1
        assert "Expected replicas to be 3, was 15" in out.stderr


async def test_bad_deployments_are_rejected_clearly(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "bad")
        mismatch = deployment("web")
        mismatch["spec"]["selector"] = {"matchLabels": {"app": "other"}}
        with pytest.raises(InvalidError) as info:
            await c.apply(mismatch, namespace=ns)
        assert "spec.template.metadata.labels" in info.value.message
        assert "selector does not match template labels" in info.value.message

        with pytest.raises(InvalidError, match=r"spec\.replicas: Invalid value: -1"):
            await c.apply(deployment("web", -1), namespace=ns)
        zero = deployment(
            "web",
            strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0},
            },
        )
        with pytest.raises(InvalidError, match="may not be 0 when `maxSurge` is 0"):
            await c.apply(zero, namespace=ns)
        late = deployment("web", minReadySeconds=30, progressDeadlineSeconds=10)
        with pytest.raises(InvalidError, match="must be greater than minReadySeconds"):
            await c.apply(late, namespace=ns)
        bad_surge = deployment(
            "web", strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "ten"}}
        )
        with pytest.raises(InvalidError, match=r"spec\.strategy\.rollingUpdate\.maxSurge"):
            await c.apply(bad_surge, namespace=ns)
        with pytest.raises(NotFoundError):
            await c.get("Deployment", "web", ns)
        out = orchctl(control_plane, "-n", ns, "scale", "deployment/nope", "--replicas=2")
        assert out.returncode == 1
        assert 'deployments.apps "nope" not found' in out.stderr
