"""Workloads on a real local cluster: pods without a nodeName, placed by the real
scheduler, run by real agents on real dockerd, and kept in shape by the workload
controllers (Deployment, ReplicaSet, DaemonSet, Job, CronJob, StatefulSet with
local PersistentVolumes, HPA)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from agent.runtime.types import LABEL_CONTAINER_NAME, LABEL_POD_UID
from orchestrator.api import codec
from orchestrator.client.client import Client, ConflictError
from tests.e2e.conftest import LocalCluster, wait_for
from tests.e2e.test_pods import orchctl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

IMAGE = "busybox:1.36"  # deploy/local/images.py: the only image (also :latest) nodes have
# The image ships /var/www/index.html; httpd answers the readiness probe.
HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
SETTLE = 120.0


# -- manifests --------------------------------------------------------------------------


def web_container(version: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "image": IMAGE,
        "command": HTTPD,
        "env": [{"name": "VERSION", "value": version}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        **extra,
    }


def template(app: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, **spec},
    }


def deployment(
    name: str, ns: str, replicas: int, containers: list[dict[str, Any]], **spec: Any
) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": template(name, containers),
                **spec,
            },
        }
    )


# -- observations -----------------------------------------------------------------------


def is_ready(p: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


def is_up(p: Any) -> bool:
    """Running and Ready, and not on its way out."""
    return not p.metadata.deletion_timestamp and p.status.phase == "Running" and is_ready(p)


async def pods_of(client: Client, ns: str, app: str) -> list[Any]:
    return list((await client.list("Pod", ns, label_selector=f"app={app}")).items)


def summary(pods: list[Any]) -> list[tuple[str, str, str, bool, bool]]:
    """What a timeout message shows: name, node, phase, ready, terminating."""
    return [
        (
            p.metadata.name,
            p.spec.node_name,
            p.status.phase,
            is_ready(p),
            bool(p.metadata.deletion_timestamp),
        )
        for p in pods
    ]


async def converged(
    client: Client, ns: str, app: str, n: int, timeout: float = SETTLE
) -> list[Any]:
    """Wait until app has exactly n pods, all Running and Ready, none terminating."""
    last: list[Any] = []

    async def check() -> list[Any] | None:
        nonlocal last
        last = await pods_of(client, ns, app)
        return last if len(last) == n and all(is_up(p) for p in last) else None

    try:
        return list(await wait_for(check, timeout=timeout, what=f"{n} {app} pods up"))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\npods: {summary(last)}") from None


def node_index(cluster: LocalCluster, node_name: str) -> int:
    for i in range(1, cluster.layout.nodes + 1):
        if cluster.node_name(i) == node_name:
            return i
    raise AssertionError(f"{node_name} is not a node of {cluster.name}")


def env_of(p: Any, container: str = "web") -> dict[str, str]:
    c = next(c for c in p.spec.containers if c.name == container)
    return {e.name: e.value for e in c.env}


async def update_spec(client: Client, kind: str, name: str, ns: str, change: Any) -> Any:
    """Get, change, update: again on a conflict (the controller writes status)."""
    for _ in range(10):
        obj = await client.get(kind, name, ns)
        change(obj)
        try:
            return await client.update(obj)
        except ConflictError:
            continue
    raise AssertionError(f"could not update {kind} {name}: conflicts every time")


def ok(result: Any) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}\n{result.stderr}"
    return str(result.stdout)


async def aorchctl(cluster: LocalCluster, *args: str, timeout: float = 60) -> str:
    """orchctl off the event loop (so a background sampler keeps sampling); its stdout."""
    return ok(await asyncio.to_thread(orchctl, cluster, *args, timeout=timeout))


class ReadySampler:
    """How many of app's pods are up (Running, Ready, not terminating), sampled
    every `interval` seconds in the background; the lowest count and what the
    pods looked like then."""

    def __init__(self, client: Client, ns: str, app: str, interval: float = 0.3) -> None:
        self.client, self.ns, self.app, self.interval = client, ns, app, interval
        self.samples = 0
        self.errors: list[str] = []
        self.lowest: int | None = None
        self.lowest_pods: list[Any] = []

    async def _run(self) -> None:
        while True:
            try:
                pods = await pods_of(self.client, self.ns, self.app)
            except Exception as exc:  # a slow apiserver: note it, keep sampling
                self.errors.append(repr(exc))
            else:
                self.samples += 1
                up = sum(1 for p in pods if is_up(p))
                if self.lowest is None or up < self.lowest:
                    self.lowest, self.lowest_pods = up, summary(pods)
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReadySampler]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def assert_at_least(self, floor: int, what: str) -> None:
        assert self.samples >= 3, f"{what}: only {self.samples} samples ({self.errors[-3:]})"
        assert self.lowest is not None and self.lowest >= floor, (
            f"{what}: {self.lowest} pods up at one point, below {floor}: {self.lowest_pods}"
        )


# -- tests ------------------------------------------------------------------------------


async def test_deployment_spreads_heals_and_scales(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    nodes = {local_cluster.node_name(i) for i in range(1, local_cluster.layout.nodes + 1)}
    t0 = time.monotonic()
    await client.create(deployment("web", namespace, 6, [web_container()]))
    pods = await converged(client, namespace, "web", 6)
    timings = {"6 replicas up": time.monotonic() - t0}
    # The scheduler placed them (no nodeName in the template) and spread them.
    placed = {p.spec.node_name for p in pods}
    assert placed == nodes, f"not spread over every node: {summary(pods)}"
    status = ok(
        orchctl(
            local_cluster,
            "rollout",
            "status",
            "deployment/web",
            "-n",
            namespace,
            "--timeout",
            "120s",
            timeout=150,
        )
    )
    assert 'deployment "web" successfully rolled out' in status, status
    d = await client.get("Deployment", "web", namespace)
    assert (d.status.replicas, d.status.ready_replicas, d.status.available_replicas) == (6, 6, 6)

    # A deleted pod is replaced by a new one.
    victim = pods[0].metadata.name
    t1 = time.monotonic()
    await client.delete("Pod", victim, namespace)

    async def replaced() -> list[Any] | None:
        now = await pods_of(client, namespace, "web")
        up = [p for p in now if is_up(p)]
        return up if len(up) == 6 and victim not in {p.metadata.name for p in up} else None

    await wait_for(replaced, timeout=SETTLE, what=f"a Running replacement for {victim}")
    timings["replacement up"] = time.monotonic() - t1

    # A container killed behind the agent's back is restarted in the same pod.
    target = (await converged(client, namespace, "web", 6))[0]
    uid = target.metadata.uid
    index = node_index(local_cluster, target.spec.node_name)
    dc = docker.DockerClient(base_url=local_cluster.docker_host(index), timeout=30)
    try:
        found = dc.containers.list(
            filters={"label": [f"{LABEL_POD_UID}={uid}", f"{LABEL_CONTAINER_NAME}=web"]}
        )
        assert len(found) == 1, f"expected one running web container of {uid}: {found}"
        found[0].kill()
    finally:
        dc.close()
    t2 = time.monotonic()

    async def restarted() -> Any:
        p = await client.get("Pod", target.metadata.name, namespace)
        st = p.status.container_statuses
        return p if st and st[0].restart_count >= 1 and is_up(p) else None

    again = await wait_for(restarted, timeout=60, what="the killed container restarted")
    timings["container restarted"] = time.monotonic() - t2
    assert again.metadata.uid == uid, "the same pod, not a replacement"
    assert again.status.container_statuses[0].container_id != (
        target.status.container_statuses[0].container_id
    )

    # orchctl scale up and down; the pod count follows.
    for replicas in (10, 2):
        t3 = time.monotonic()
        out = ok(
            orchctl(
                local_cluster, "scale", "deployment/web", "-n", namespace, f"--replicas={replicas}"
            )
        )
        assert "scaled" in out, out
        await converged(client, namespace, "web", replicas)
        d = await client.get("Deployment", "web", namespace)
        assert d.spec.replicas == replicas
        assert d.status.ready_replicas == replicas, d.status
        timings[f"scaled to {replicas}"] = time.monotonic() - t3
    print("deployment timings:", {k: round(v, 1) for k, v in timings.items()})


async def test_rolling_update_keeps_availability_and_undo(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    replicas, max_unavailable = 3, 1

    async def status() -> str:
        return await aorchctl(
            local_cluster,
            "rollout",
            "status",
            "deployment/roll",
            "-n",
            namespace,
            "--timeout",
            "120s",
            timeout=150,
        )

    def set_version(version: str) -> Any:
        def change(d: Any) -> None:
            d.spec.template.spec.containers[0].env[0].value = version

        return change

    async def replica_sets() -> list[Any]:
        return list((await client.list("ReplicaSet", namespace, label_selector="app=roll")).items)

    # Two pods at a time (one extra, one down) keeps the rollout short but rolling.
    strategy = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": max_unavailable},
    }
    await client.create(
        deployment("roll", namespace, replicas, [web_container("v1")], strategy=strategy)
    )
    first = await converged(client, namespace, "roll", replicas)
    await status()
    (rs1,) = await replica_sets()
    hash1 = rs1.metadata.labels["pod-template-hash"]
    assert rs1.metadata.annotations["deployment.kubernetes.io/revision"] == "1"

    # Readiness gates availability: while the pods are replaced, never fewer
    # than replicas - maxUnavailable of them are up.
    floor = replicas - max_unavailable
    t0 = time.monotonic()
    async with ReadySampler(client, namespace, "roll").running() as sampler:
        await update_spec(client, "Deployment", "roll", namespace, set_version("v2"))
        out = await status()
        assert 'deployment "roll" successfully rolled out' in out, out
        second = await converged(client, namespace, "roll", replicas)
    rolled = time.monotonic() - t0
    sampler.assert_at_least(floor, "rolling update v1 -> v2")
    update_seen = f"{sampler.samples} samples, lowest {sampler.lowest} up"
    assert not {p.metadata.name for p in first} & {p.metadata.name for p in second}
    assert all(env_of(p)["VERSION"] == "v2" for p in second), summary(second)
    hashes = {p.metadata.labels["pod-template-hash"] for p in second}
    assert len(hashes) == 1 and hash1 not in hashes, hashes
    sets = {rs.metadata.labels["pod-template-hash"]: rs for rs in await replica_sets()}
    assert set(sets) == {hash1, *hashes}, "a new ReplicaSet beside the old one"
    assert sets[hash1].spec.replicas == 0 and sets[next(iter(hashes))].spec.replicas == replicas
    # The container really runs the new template.
    env = await aorchctl(
        local_cluster, "exec", "-n", namespace, second[0].metadata.name, "--", "env"
    )
    assert "VERSION=v2" in env, env

    history = await aorchctl(
        local_cluster, "rollout", "history", "deployment/roll", "-n", namespace
    )
    rows = [line.split()[0] for line in history.splitlines()[1:] if line.strip()]
    assert "REVISION" in history and rows[-2:] == ["1", "2"], history

    t1 = time.monotonic()
    async with ReadySampler(client, namespace, "roll").running() as sampler:
        await aorchctl(local_cluster, "rollout", "undo", "deployment/roll", "-n", namespace)
        await status()
        third = await converged(client, namespace, "roll", replicas)
    undone = time.monotonic() - t1
    sampler.assert_at_least(floor, "rollout undo v2 -> v1")
    assert all(env_of(p)["VERSION"] == "v1" for p in third), summary(third)
    assert not {p.metadata.name for p in second} & {p.metadata.name for p in third}
    # Undo brings the first ReplicaSet back as revision 3, as Kubernetes does.
    assert {p.metadata.labels["pod-template-hash"] for p in third} == {hash1}
    d = await client.get("Deployment", "roll", namespace)
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert len(await replica_sets()) == 2
    print(
        f"rollout timings: update {rolled:.1f}s ({update_seen}), "
        f"undo {undone:.1f}s ({sampler.samples} samples, lowest {sampler.lowest} up); "
        f"floor {floor}"
    )


async def test_unschedulable_pod_says_why(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    n = local_cluster.layout.nodes
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "huge", "namespace": namespace},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "command": ["sleep", "3600"],
                            "resources": {"requests": {"cpu": "1000"}},
                        }
                    ]
                },
            }
        )
    )
    reason = f"0/{n} nodes are available: {n} Insufficient cpu."

    async def unschedulable() -> Any:
        p = await client.get("Pod", "huge", namespace)
        cond = next((c for c in p.status.conditions if c.type == "PodScheduled"), None)
        ok_ = cond is not None and cond.status == "False" and cond.reason == "Unschedulable"
        return p if ok_ else None

    p = await wait_for(unschedulable, timeout=30, what="PodScheduled=False Unschedulable")
    cond = next(c for c in p.status.conditions if c.type == "PodScheduled")
    assert reason in cond.message, cond.message
    assert p.status.phase == "Pending" and not p.spec.node_name

    async def described() -> str | None:
        out = orchctl(local_cluster, "describe", "pod", "huge", "-n", namespace)
        text = out.stdout
        return text if out.returncode == 0 and "FailedScheduling" in text else None

    text = await wait_for(described, timeout=30, what="a FailedScheduling event in describe")
    assert reason in text, text
    assert "Pending" in text, text


async def test_daemonset_runs_one_pod_per_node(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    n = local_cluster.layout.nodes
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "ds", "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": {"app": "ds"}},
                    "template": template(
                        "ds", [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}]
                    ),
                },
            }
        )
    )

    async def all_ready() -> Any:
        ds = await client.get("DaemonSet", "ds", namespace)
        st = ds.status
        done = st.desired_number_scheduled == n and st.number_ready == n
        return ds if done and st.observed_generation >= ds.metadata.generation else None

    await wait_for(all_ready, timeout=SETTLE, what=f"DaemonSet ds ready on {n} nodes")
    pods = await converged(client, namespace, "ds", n, timeout=30)
    nodes = sorted(p.spec.node_name for p in pods)
    assert nodes == sorted(local_cluster.node_name(i) for i in range(1, n + 1)), summary(pods)


async def test_job_runs_to_completion(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "work", "namespace": namespace},
                "spec": {
                    "completions": 5,
                    "parallelism": 2,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "work",
                                    "image": IMAGE,
                                    # Long enough to be seen running two at a time.
                                    "command": ["sh", "-c", "sleep 1; echo done"],
                                }
                            ],
                        }
                    },
                },
            }
        )
    )
    most_active = 0

    async def complete() -> Any:
        nonlocal most_active
        job = await client.get("Job", "work", namespace)
        most_active = max(most_active, job.status.active)
        cond = next((c for c in job.status.conditions if c.type == "Complete"), None)
        return job if cond is not None and cond.status == "True" else None

    job = await wait_for(complete, timeout=SETTLE, interval=0.3, what="Job work Complete")
    assert job.status.succeeded == 5 and not job.status.failed, job.status
    assert most_active == 2, f"parallelism 2, but at most {most_active} pods were active at once"
    pods = (await client.list("Pod", namespace, label_selector="job-name=work")).items
    assert len(pods) == 5 and all(p.status.phase == "Succeeded" for p in pods), summary(pods)
    logs = ok(orchctl(local_cluster, "logs", "-n", namespace, pods[0].metadata.name))
    assert logs.strip() == "done", logs


async def test_cronjob_fires_on_the_minute(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "tick", "namespace": namespace},
                "spec": {
                    "schedule": "* * * * *",
                    # A slow run is not joined by the next minute's.
                    "concurrencyPolicy": "Forbid",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "terminationGracePeriodSeconds": 2,
                                    "containers": [
                                        {
                                            "name": "tick",
                                            "image": IMAGE,
                                            "command": ["sh", "-c", "echo tick"],
                                        }
                                    ],
                                }
                            }
                        }
                    },
                },
            }
        )
    )
    t0 = time.monotonic()

    async def fired() -> Any:
        cj = await client.get("CronJob", "tick", namespace)
        return cj if cj.status.last_schedule_time else None

    # The controller wakes at the minute: at most 60 s, plus a little.
    cj = await wait_for(fired, timeout=70, interval=0.5, what="CronJob tick to fire")
    fired_after = time.monotonic() - t0
    scheduled = datetime.fromisoformat(cj.status.last_schedule_time.replace("Z", "+00:00"))
    assert scheduled.second == 0, cj.status.last_schedule_time
    name = f"tick-{int(scheduled.timestamp()) // 60}"
    assert name in {ref.name for ref in cj.status.active} or cj.status.last_successful_time, (
        cj.status
    )

    async def complete() -> Any:
        job = await client.get("Job", name, namespace)
        cond = next((c for c in job.status.conditions if c.type == "Complete"), None)
        return job if cond is not None and cond.status == "True" else None

    job = await wait_for(complete, timeout=60, what=f"Job {name} Complete")
    completed_after = time.monotonic() - t0
    (owner,) = job.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("CronJob", "tick", cj.metadata.uid)
    assert job.status.succeeded == 1, job.status
    pods = (await client.list("Pod", namespace, label_selector=f"job-name={name}")).items
    assert len(pods) == 1 and pods[0].status.phase == "Succeeded", summary(pods)
    logs = await aorchctl(local_cluster, "logs", "-n", namespace, pods[0].metadata.name)
    assert logs.strip() == "tick", logs
    # No more minutes: the CronJob and its Jobs go now rather than with the namespace.
    await client.delete("CronJob", "tick", namespace)
    print(
        f"cronjob: fired {fired_after:.1f}s after creation ({cj.status.last_schedule_time}), "
        f"{name} complete after {completed_after:.1f}s"
    )


async def test_statefulset_ordered_stable_names_and_storage(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    replicas = 3
    # Every volume and every pod on one node: the pods are pinned by a nodeSelector
    # rather than by volume-aware scheduling of the volumes' nodeAffinity.
    node_layout = local_cluster.layout.node(2)
    node = local_cluster.node_name(2)
    root = node_layout.dir / f"pv-{namespace}"
    storage_class = f"e2e-local-{namespace}"
    pvs = [f"{namespace}-data-db-{i}" for i in range(replicas)]
    try:
        for i, pv in enumerate(pvs):
            await client.create(
                codec.from_dict(
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolume",
                        "metadata": {"name": pv},
                        "spec": {
                            "capacity": {"storage": "1Gi"},
                            "accessModes": ["ReadWriteOnce"],
                            "storageClassName": storage_class,
                            "persistentVolumeReclaimPolicy": "Retain",
                            "local": {"path": str(root / f"data-db-{i}")},
                            "nodeAffinity": {
                                "required": {
                                    "nodeSelectorTerms": [
                                        {
                                            "matchExpressions": [
                                                {
                                                    "key": "kubernetes.io/hostname",
                                                    "operator": "In",
                                                    "values": [node],
                                                }
                                            ]
                                        }
                                    ]
                                }
                            },
                            # One volume per ordinal: pre-bound to that ordinal's claim.
                            "claimRef": {"namespace": namespace, "name": f"data-db-{i}"},
                        },
                    }
                )
            )
        await _statefulset_with_storage(local_cluster, client, namespace, node, root, storage_class)

        # Take it down in order, so no claim loses its volume under a running pod:
        # the set and its pods, then the claims (kept by the set: Retain), which
        # releases the volumes (Retain: kept, Released), then the volumes.
        await client.delete("StatefulSet", "db", namespace)
        await wait_for(lambda: _none_left(client, namespace), timeout=60, what="the db pods gone")
        for i in range(replicas):
            await client.delete("PersistentVolumeClaim", f"data-db-{i}", namespace)

        async def released() -> bool:
            phases = [(await client.get("PersistentVolume", pv)).status.phase for pv in pvs]
            return phases == ["Released"] * replicas

        await wait_for(released, timeout=30, what="the volumes Released")
    finally:
        for pv in pvs:
            with contextlib.suppress(Exception):
                await client.delete("PersistentVolume", pv)
        shutil.rmtree(root, ignore_errors=True)


async def _none_left(client: Client, ns: str) -> bool:
    return not await pods_of(client, ns, "db")


async def _statefulset_with_storage(
    cluster: LocalCluster, client: Client, ns: str, node: str, root: Path, storage_class: str
) -> None:
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "db", "namespace": ns},
                "spec": {
                    "clusterIP": "None",
                    "selector": {"app": "db"},
                    "ports": [{"name": "http", "port": 8080}],
                },
            }
        )
    )
    mounts = [{"name": "data", "mountPath": "/data"}]
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "db", "namespace": ns},
                "spec": {
                    "serviceName": "db",
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": template(
                        "db",
                        [web_container(volumeMounts=mounts)],
                        nodeSelector={"kubernetes.io/hostname": node},
                    ),
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "storageClassName": storage_class,
                                "resources": {"requests": {"storage": "1Gi"}},
                            },
                        }
                    ],
                },
            }
        )
    )
    names = ["db-0", "db-1", "db-2"]
    # OrderedReady: db-N is created only once db-0..db-(N-1) are Running and Ready.
    # Each listing is one snapshot, so whenever db-N shows up its elders must be up.
    seen_early: list[Any] = []
    t0 = time.monotonic()

    async def all_up() -> list[Any] | None:
        pods = {p.metadata.name: p for p in await pods_of(client, ns, "db")}
        for i, name in enumerate(names):
            elders = names[:i]
            if name in pods and not all(e in pods and is_up(pods[e]) for e in elders):
                seen_early.append(summary(list(pods.values())))
        ready = len(pods) == 3 and all(is_up(p) for p in pods.values())
        return list(pods.values()) if ready else None

    pods = await wait_for(all_up, timeout=SETTLE, interval=0.3, what="db-0, db-1, db-2 up")
    started = time.monotonic() - t0
    assert not seen_early, f"a pod existed before its elders were Ready: {seen_early[0]}"
    assert sorted(p.metadata.name for p in pods) == names
    for p in pods:
        assert p.spec.node_name == node, summary(pods)
        assert (p.spec.hostname, p.spec.subdomain) == (p.metadata.name, "db")
    sts = await client.get("StatefulSet", "db", ns)
    assert sts.status.ready_replicas == 3, sts.status

    # Each pod has its own claim, bound to its ordinal's local volume.
    claims = {}
    for name in names:
        pvc = await client.get("PersistentVolumeClaim", f"data-{name}", ns)
        assert pvc.status.phase == "Bound" and pvc.spec.volume_name == f"{ns}-data-{name}", (
            pvc.spec,
            pvc.status,
        )
        claims[name] = pvc
        pod = next(p for p in pods if p.metadata.name == name)
        vol = next(v for v in pod.spec.volumes if v.name == "data")
        assert vol.persistent_volume_claim.claim_name == f"data-{name}"

    # db-1 writes into its volume, is deleted, and comes back under the same name
    # with the same claim and the file.
    out = await aorchctl(
        cluster, "exec", "-n", ns, "db-1", "--", "sh", "-c", "hostname > /data/owner; sync"
    )
    assert out == "", out
    assert (root / "data-db-1" / "owner").read_text() == "db-1\n", "not in db-1's local volume"
    old = next(p for p in pods if p.metadata.name == "db-1")
    t1 = time.monotonic()
    await client.delete("Pod", "db-1", ns)

    async def back() -> Any:
        p = await client.get("Pod", "db-1", ns)
        return p if p.metadata.uid != old.metadata.uid and is_up(p) else None

    again = await wait_for(back, timeout=SETTLE, interval=0.3, what="db-1 recreated and up")
    returned = time.monotonic() - t1
    assert again.spec.node_name == node
    vol = next(v for v in again.spec.volumes if v.name == "data")
    assert vol.persistent_volume_claim.claim_name == "data-db-1"
    pvc = await client.get("PersistentVolumeClaim", "data-db-1", ns)
    assert pvc.metadata.uid == claims["db-1"].metadata.uid, "the same claim, not a new one"
    assert pvc.spec.volume_name == f"{ns}-data-db-1"
    out = await aorchctl(cluster, "exec", "-n", ns, "db-1", "--", "cat", "/data/owner")
    assert out == "db-1\n", out
    # The neighbours' volumes are their own.
    out = await aorchctl(cluster, "exec", "-n", ns, "db-0", "--", "ls", "/data")
    assert out.strip() == "", out
    print(f"statefulset: 3 pods up in {started:.1f}s, db-1 back in {returned:.1f}s")


async def test_hpa_scales_a_busy_deployment_up_and_down(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # A busy loop capped at 200m against a 100m request: 200% of the request, four
    # times the 50% target, so one HPA step asks for 4 replicas and gets the max, 3.
    # The cap keeps the test from taking a whole core of a small CI machine. The
    # loop ends (and the pod idles) once /tmp/idle exists.
    burner = {
        "name": "burn",
        "image": IMAGE,
        "command": ["sh", "-c", "while [ ! -e /tmp/idle ]; do :; done; exec sleep 3600"],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}},
    }
    await client.create(deployment("burn", namespace, 1, [burner]))
    await converged(client, namespace, "burn", 1)
    t0 = time.monotonic()
    out = await aorchctl(
        local_cluster,
        "autoscale",
        "deployment/burn",
        "-n",
        namespace,
        "--min",
        "1",
        "--max",
        "3",
        "--cpu-percent",
        "50",
    )
    assert "autoscaled" in out, out
    hpa = None

    async def replicas_are(n: int) -> Any:
        nonlocal hpa
        hpa = await client.get("HorizontalPodAutoscaler", "burn", namespace)
        d = await client.get("Deployment", "burn", namespace)
        return d if d.spec.replicas == n else None

    try:
        await wait_for(
            lambda: replicas_are(3), timeout=100, interval=1, what="the HPA to scale burn to 3"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nHPA status: {hpa.status if hpa else None}") from None
    scaled = time.monotonic() - t0
    pods = await converged(client, namespace, "burn", 3)
    hpa = await client.get("HorizontalPodAutoscaler", "burn", namespace)
    assert hpa.status.desired_replicas == 3, hpa.status
    (metric,) = hpa.status.current_metrics
    assert metric.resource.current.average_utilization > 50, metric

    # Down again as soon as the load is gone: no stabilization window, and all
    # the surplus may go at once.
    def quick_scale_down(h: Any) -> None:
        down: Any = codec.from_dict(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "spec": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                        }
                    }
                },
            }
        )
        h.spec.behavior.CopyFrom(down.spec.behavior)

    await update_spec(client, "HorizontalPodAutoscaler", "burn", namespace, quick_scale_down)
    for p in pods:
        await aorchctl(
            local_cluster, "exec", "-n", namespace, p.metadata.name, "--", "touch", "/tmp/idle"
        )
    t1 = time.monotonic()
    try:
        await wait_for(
            lambda: replicas_are(1), timeout=90, interval=1, what="the HPA to scale burn to 1"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nHPA status: {hpa.status if hpa else None}") from None
    idled = time.monotonic() - t1
    await converged(client, namespace, "burn", 1)
    hpa = await client.get("HorizontalPodAutoscaler", "burn", namespace)
    assert hpa.status.desired_replicas == 1, hpa.status
    (metric,) = hpa.status.current_metrics
    assert metric.resource.current.average_utilization < 50, metric
    # Stop the pods at once rather than with the namespace.
    await client.delete("HorizontalPodAutoscaler", "burn", namespace)
    await client.delete("Deployment", "burn", namespace)
    print(f"hpa: 1 -> 3 {scaled:.1f}s after `orchctl autoscale`, 3 -> 1 {idled:.1f}s after idling")
