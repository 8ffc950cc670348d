"""Workloads on a real local cluster: pods without a nodeName, placed by the real
scheduler, run by real agents on real dockerd, and kept in shape by the workload
controllers (Deployment, ReplicaSet, DaemonSet, Job, StatefulSet, HPA)."""

from __future__ import annotations

import time
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

    # orchctl scale down and up again; the pod count follows.
    for replicas in (2, 4):
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
    print("deployment timings:", {k: round(v, 1) for k, v in timings.items()})


async def test_rolling_update_history_and_undo(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    def status() -> str:
        return ok(
            orchctl(
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
        )

    def set_version(version: str) -> Any:
        def change(d: Any) -> None:
            d.spec.template.spec.containers[0].env[0].value = version

        return change

    async def replica_sets() -> list[Any]:
        return list((await client.list("ReplicaSet", namespace, label_selector="app=roll")).items)

    # Two pods at a time (one extra, one down) keeps the rollout short but rolling.
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    await client.create(deployment("roll", namespace, 3, [web_container("v1")], strategy=strategy))
    first = await converged(client, namespace, "roll", 3)
    status()
    (rs1,) = await replica_sets()
    hash1 = rs1.metadata.labels["pod-template-hash"]
    assert rs1.metadata.annotations["deployment.kubernetes.io/revision"] == "1"

    t0 = time.monotonic()
    await update_spec(client, "Deployment", "roll", namespace, set_version("v2"))
    out = status()
    assert 'deployment "roll" successfully rolled out' in out, out
    second = await converged(client, namespace, "roll", 3)
    rolled = time.monotonic() - t0
    assert not {p.metadata.name for p in first} & {p.metadata.name for p in second}
    assert all(env_of(p)["VERSION"] == "v2" for p in second), summary(second)
    hashes = {p.metadata.labels["pod-template-hash"] for p in second}
    assert len(hashes) == 1 and hash1 not in hashes, hashes
    sets = {rs.metadata.labels["pod-template-hash"]: rs for rs in await replica_sets()}
    assert set(sets) == {hash1, *hashes}, "a new ReplicaSet beside the old one"
    assert sets[hash1].spec.replicas == 0 and sets[next(iter(hashes))].spec.replicas == 3
    # The container really runs the new template.
    env = ok(orchctl(local_cluster, "exec", "-n", namespace, second[0].metadata.name, "--", "env"))
    assert "VERSION=v2" in env, env

    history = ok(orchctl(local_cluster, "rollout", "history", "deployment/roll", "-n", namespace))
    rows = [line.split()[0] for line in history.splitlines()[1:] if line.strip()]
    assert "REVISION" in history and rows[-2:] == ["1", "2"], history

    t1 = time.monotonic()
    ok(orchctl(local_cluster, "rollout", "undo", "deployment/roll", "-n", namespace))
    status()
    third = await converged(client, namespace, "roll", 3)
    undone = time.monotonic() - t1
    assert all(env_of(p)["VERSION"] == "v1" for p in third), summary(third)
    # Undo brings the first ReplicaSet back as revision 3, as Kubernetes does.
    assert {p.metadata.labels["pod-template-hash"] for p in third} == {hash1}
    d = await client.get("Deployment", "roll", namespace)
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert len(await replica_sets()) == 2
    print(f"rollout timings: update {rolled:.1f}s, undo {undone:.1f}s")


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
                    "completions": 3,
                    "parallelism": 2,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {
                                    "name": "work",
                                    "image": IMAGE,
                                    "command": ["sh", "-c", "echo done"],
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
    assert job.status.succeeded == 3 and not job.status.failed, job.status
    assert most_active <= 2, f"parallelism 2, but {most_active} pods were active at once"
    pods = (await client.list("Pod", namespace, label_selector="job-name=work")).items
    assert len(pods) == 3 and all(p.status.phase == "Succeeded" for p in pods), summary(pods)
    logs = ok(orchctl(local_cluster, "logs", "-n", namespace, pods[0].metadata.name))
    assert logs.strip() == "done", logs


async def test_statefulset_starts_pods_in_order_with_stable_names(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "clusterIP": "None",
                    "selector": {"app": "sts"},
                    "ports": [{"name": "http", "port": 8080}],
                },
            }
        )
    )
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "serviceName": "web",
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "sts"}},
                    "template": template("sts", [web_container()]),
                },
            }
        )
    )
    # OrderedReady: web-1 is created only once web-0 is Running and Ready. Each
    # listing is one snapshot, so whenever web-1 shows up web-0 must already be up.
    seen_early: list[Any] = []

    async def both_up() -> list[Any] | None:
        pods = {p.metadata.name: p for p in await pods_of(client, namespace, "sts")}
        if "web-1" in pods and not ("web-0" in pods and is_up(pods["web-0"])):
            seen_early.append(summary(list(pods.values())))
        ready = len(pods) == 2 and all(is_up(p) for p in pods.values())
        return list(pods.values()) if ready else None

    pods = await wait_for(both_up, timeout=SETTLE, interval=0.3, what="web-0 and web-1 up")
    assert not seen_early, f"web-1 existed before web-0 was Ready: {seen_early[0]}"
    assert sorted(p.metadata.name for p in pods) == ["web-0", "web-1"]
    for p in pods:
        assert (p.spec.hostname, p.spec.subdomain) == (p.metadata.name, "web")
        out = ok(orchctl(local_cluster, "exec", "-n", namespace, p.metadata.name, "--", "hostname"))
        assert out.strip() == p.metadata.name
    sts = await client.get("StatefulSet", "web", namespace)
    assert sts.status.ready_replicas == 2, sts.status


async def test_hpa_scales_a_busy_deployment_up(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # A busy loop capped at 200m against a 100m request: 200% of the request, four
    # times the 50% target, so one HPA step asks for 4 replicas and gets the max, 3.
    # The cap keeps the test from taking a whole core of a small CI machine.
    burner = {
        "name": "burn",
        "image": IMAGE,
        "command": ["sh", "-c", "while :; do :; done"],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}},
    }
    await client.create(deployment("burn", namespace, 1, [burner]))
    await converged(client, namespace, "burn", 1)
    t0 = time.monotonic()
    out = ok(
        orchctl(
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
    )
    assert "autoscaled" in out, out
    hpa = None

    async def scaled_up() -> Any:
        nonlocal hpa
        hpa = await client.get("HorizontalPodAutoscaler", "burn", namespace)
        d = await client.get("Deployment", "burn", namespace)
        return d if d.spec.replicas == 3 else None

    try:
        await wait_for(scaled_up, timeout=100, interval=1, what="the HPA to scale burn to 3")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nHPA status: {hpa.status if hpa else None}") from None
    scaled = time.monotonic() - t0
    await converged(client, namespace, "burn", 3)
    hpa = await client.get("HorizontalPodAutoscaler", "burn", namespace)
    assert hpa.status.desired_replicas == 3, hpa.status
    (metric,) = hpa.status.current_metrics
    assert metric.resource.current.average_utilization > 50, metric
    # Stop burning CPU at once rather than with the namespace.
    await client.delete("HorizontalPodAutoscaler", "burn", namespace)
    await client.delete("Deployment", "burn", namespace)
    print(f"hpa: scaled 1 -> 3 {scaled:.1f}s after `orchctl autoscale`")
