"""Pods on a real local cluster: real dockerd per node, real agents."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from typing import Any

import docker
import pytest

from agent.runtime.types import LABEL_POD_UID
from orchestrator.api import codec
from orchestrator.client.client import Client, NotFoundError
from tests.e2e.conftest import LocalCluster, wait_for

pytestmark = pytest.mark.e2e


def pod(name: str, ns: str, node: str, containers: list[dict[str, Any]], **spec: Any) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {
                "nodeName": node,
                "containers": containers,
                "terminationGracePeriodSeconds": 5,
                **spec,
            },
        }
    )


def sleeper(name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "command": ["sleep", "3600"], **extra}


async def running(client: Client, name: str, ns: str) -> Any:
    p = await client.get("Pod", name, ns)
    return p if p.status.phase == "Running" and p.status.pod_ip else None


async def ready(client: Client, name: str, ns: str) -> bool:
    p = await client.get("Pod", name, ns)
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)


def orchctl(
    cluster: LocalCluster, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def containers_of(cluster: LocalCluster, index: int, uid: str) -> list[Any]:
    dc = docker.DockerClient(base_url=cluster.docker_host(index), timeout=30)
    try:
        return list(dc.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"}))
    finally:
        dc.close()


async def test_nodes_registered_and_ready(local_cluster: LocalCluster, client: Client) -> None:
    nodes = (await client.list("Node")).items
    names = {n.metadata.name for n in nodes}
    for i in range(1, local_cluster.layout.nodes + 1):
        assert local_cluster.node_name(i) in names
    for n in nodes:
        assert n.spec.pod_cidr, f"{n.metadata.name} has no pod CIDR"
        assert any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)


async def test_pods_on_named_node_reach_each_other(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    node = local_cluster.node_name(1)
    web = pod(
        "web",
        namespace,
        node,
        [
            {
                "name": "web",
                "image": "busybox:1.36",
                "command": [
                    "sh",
                    "-c",
                    "mkdir -p /www && echo hello-from-web > /www/index.html && "
                    "exec httpd -f -p 8080 -h /www",
                ],
            }
        ],
    )
    await client.create(web)
    await client.create(pod("probe", namespace, node, [sleeper()]))
    web_pod = await wait_for(lambda: running(client, "web", namespace), what="web running")
    await wait_for(lambda: running(client, "probe", namespace), what="probe running")
    assert web_pod.spec.node_name == node
    assert web_pod.status.host_ip == local_cluster.layout.node(1).ip

    async def fetched() -> bool:
        out = orchctl(
            local_cluster,
            "exec",
            "-n",
            namespace,
            "probe",
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            f"http://{web_pod.status.pod_ip}:8080/",
        )
        return out.returncode == 0 and "hello-from-web" in out.stdout

    await wait_for(fetched, timeout=30, what="probe to fetch from web by pod IP")


async def test_logs_and_exec(local_cluster: LocalCluster, client: Client, namespace: str) -> None:
    await client.create(
        pod(
            "talker",
            namespace,
            local_cluster.node_name(2),
            [
                {
                    "name": "talker",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "echo first-line; echo second-line; sleep 3600"],
                }
            ],
        )
    )
    await wait_for(lambda: running(client, "talker", namespace), what="talker running")

    async def logged() -> bool:
        out = orchctl(local_cluster, "logs", "-n", namespace, "talker")
        return "first-line" in out.stdout and "second-line" in out.stdout

    await wait_for(logged, timeout=30, what="logs")
    tail = orchctl(local_cluster, "logs", "-n", namespace, "talker", "--tail", "1")
    assert tail.stdout.strip() == "second-line"
    ok = orchctl(
        local_cluster, "exec", "-n", namespace, "talker", "--", "sh", "-c", "echo $HOSTNAME; exit 4"
    )
    assert ok.returncode == 4
    assert ok.stdout.strip() == "talker"


async def test_killed_container_restarts_with_backoff(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(
        pod(
            "crasher",
            namespace,
            local_cluster.node_name(1),
            [
                {
                    "name": "crasher",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "sleep 1; exit 1"],
                }
            ],
        )
    )

    async def backing_off() -> Any:
        p = await client.get("Pod", "crasher", namespace)
        st = p.status.container_statuses
        if st and st[0].restart_count >= 2:
            return p
        return None

    p = await wait_for(backing_off, timeout=90, what="two restarts")
    seen_backoff = False

    async def crashloop() -> bool:
        nonlocal seen_backoff
        q = await client.get("Pod", "crasher", namespace)
        w = q.status.container_statuses[0].state.waiting
        seen_backoff = seen_backoff or w.reason == "CrashLoopBackOff"
        return seen_backoff

    await wait_for(crashloop, timeout=60, interval=0.3, what="CrashLoopBackOff")
    last = p.status.container_statuses[0].last_state.terminated
    assert last.exit_code == 1 and last.reason == "Error"


async def test_failing_liveness_restarts_and_readiness_flips(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # Liveness checks a file the container deletes after a few seconds.
    await client.create(
        pod(
            "unhealthy",
            namespace,
            local_cluster.node_name(2),
            [
                {
                    "name": "app",
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "touch /tmp/alive; sleep 4; rm /tmp/alive; sleep 3600"],
                    "livenessProbe": {
                        "exec": {"command": ["cat", "/tmp/alive"]},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ],
        )
    )

    async def restarted() -> bool:
        p = await client.get("Pod", "unhealthy", namespace)
        st = p.status.container_statuses
        return bool(st) and st[0].restart_count >= 1

    await wait_for(restarted, timeout=60, what="liveness restart")

    # Readiness follows a file we create and remove with exec.
    await client.create(
        pod(
            "gated",
            namespace,
            local_cluster.node_name(1),
            [
                sleeper(
                    readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}
                )
            ],
        )
    )
    await wait_for(lambda: running(client, "gated", namespace), what="gated running")
    assert not await ready(client, "gated", namespace)
    orchctl(local_cluster, "exec", "-n", namespace, "gated", "--", "touch", "/tmp/ready")
    await wait_for(lambda: ready(client, "gated", namespace), timeout=30, what="Ready=True")
    orchctl(local_cluster, "exec", "-n", namespace, "gated", "--", "rm", "/tmp/ready")

    async def not_ready() -> bool:
        return not await ready(client, "gated", namespace)

    await wait_for(not_ready, timeout=30, what="Ready=False")


async def test_configmap_and_secret_as_env_and_files(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": namespace},
                "data": {"COLOR": "blue", "app.conf": "level=1\n"},
            }
        )
    )
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "namespace": namespace},
                "data": {"password": base64.b64encode(b"hunter2").decode()},
            }
        )
    )
    await client.create(
        pod(
            "configured",
            namespace,
            local_cluster.node_name(1),
            [
                sleeper(
                    env=[
                        {
                            "name": "COLOR",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "COLOR"}},
                        },
                        {
                            "name": "PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                    ],
                    volumeMounts=[
                        {"name": "conf", "mountPath": "/etc/app"},
                        {"name": "secret", "mountPath": "/etc/secret", "readOnly": True},
                    ],
                )
            ],
            volumes=[
                {"name": "conf", "configMap": {"name": "settings"}},
                {"name": "secret", "secret": {"secretName": "creds"}},
            ],
        )
    )
    await wait_for(lambda: running(client, "configured", namespace), what="configured running")
    env = orchctl(local_cluster, "exec", "-n", namespace, "configured", "--", "env").stdout
    assert "COLOR=blue" in env and "PASSWORD=hunter2" in env
    out = orchctl(
        local_cluster,
        "exec",
        "-n",
        namespace,
        "configured",
        "--",
        "cat",
        "/etc/app/app.conf",
        "/etc/secret/password",
    ).stdout
    assert out == "level=1\nhunter2"

    cm = await client.get("ConfigMap", "settings", namespace)
    cm.data["app.conf"] = "level=2\n"
    await client.update(cm)

    async def refreshed() -> bool:
        r = orchctl(
            local_cluster, "exec", "-n", namespace, "configured", "--", "cat", "/etc/app/app.conf"
        )
        return r.stdout == "level=2\n"

    await wait_for(refreshed, timeout=75, interval=2, what="ConfigMap update in the file")


async def test_graceful_deletion_runs_prestop_and_respects_grace(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    # preStop writes to a hostPath, so the evidence outlives the pod.
    marker_dir = f"/tmp/orch-e2e-{namespace}"
    await client.create(
        pod(
            "graceful",
            namespace,
            local_cluster.node_name(2),
            [
                {
                    "name": "app",
                    "image": "busybox:1.36",
                    # Ignores SIGTERM: only SIGKILL at the end of the grace period stops it.
                    "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
                    "lifecycle": {
                        "preStop": {
                            "exec": {"command": ["sh", "-c", "date +%s > /evidence/prestop"]}
                        }
                    },
                    "volumeMounts": [{"name": "evidence", "mountPath": "/evidence"}],
                }
            ],
            volumes=[
                {"name": "evidence", "hostPath": {"path": marker_dir, "type": "DirectoryOrCreate"}}
            ],
            terminationGracePeriodSeconds=4,
        )
    )
    await wait_for(lambda: running(client, "graceful", namespace), what="graceful running")
    loop = asyncio.get_running_loop()
    started = loop.time()
    _obj, deleted = await client.delete("Pod", "graceful", namespace)
    assert not deleted  # held for the agent's graceful stop

    async def gone() -> bool:
        try:
            await client.get("Pod", "graceful", namespace)
            return False
        except NotFoundError:
            return True

    await wait_for(gone, timeout=40, interval=0.2, what="pod removed")
    elapsed = loop.time() - started
    assert elapsed >= 3.5, f"removed after {elapsed:.1f}s: the grace period was not respected"
    assert os.path.exists(os.path.join(marker_dir, "prestop")), "preStop did not run"


async def test_agent_restart_creates_no_duplicates(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    node = local_cluster.layout.node(1)
    created = await client.create(pod("steady", namespace, node.name, [sleeper()]))
    await wait_for(lambda: running(client, "steady", namespace), what="steady running")
    before = {c.id for c in containers_of(local_cluster, 1, created.metadata.uid)}
    assert len(before) == 2  # sandbox + app
    from deploy.local import cluster

    await asyncio.to_thread(
        cluster.restart_agent, local_cluster.name, 1, config_path=local_cluster.config_path
    )
    # Give the restarted agent time to adopt and resync.
    await asyncio.sleep(8)
    await wait_for(lambda: running(client, "steady", namespace), what="steady still running")
    after = {c.id for c in containers_of(local_cluster, 1, created.metadata.uid)}
    assert after == before
    p = await client.get("Pod", "steady", namespace)
    assert p.status.container_statuses[0].restart_count == 0


async def test_local_pv_data_survives_pod_deletion(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    path = f"/tmp/orch-e2e-pv-{namespace}"
    pv_name = f"pv-{namespace}"
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv_name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": path},
                    "claimRef": {"namespace": namespace, "name": "data"},
                },
            }
        )
    )
    await client.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mounts = [{"name": "data", "mountPath": "/data"}]
    node = local_cluster.node_name(1)
    await client.create(
        pod("writer", namespace, node, [sleeper(volumeMounts=mounts)], volumes=volumes)
    )
    await wait_for(lambda: running(client, "writer", namespace), what="writer running")
    w = orchctl(
        local_cluster,
        "exec",
        "-n",
        namespace,
        "writer",
        "--",
        "sh",
        "-c",
        "echo persisted > /data/file",
    )
    assert w.returncode == 0, w.stderr
    d = orchctl(local_cluster, "delete", "pod", "writer", "-n", namespace, "--timeout", "60s")
    assert d.returncode == 0, d.stderr
    await client.create(
        pod("reader", namespace, node, [sleeper(volumeMounts=mounts)], volumes=volumes)
    )
    await wait_for(lambda: running(client, "reader", namespace), what="reader running")
    r = orchctl(local_cluster, "exec", "-n", namespace, "reader", "--", "cat", "/data/file")
    assert r.stdout == "persisted\n"
    await client.delete("PersistentVolume", pv_name)


async def waiting_reason(client: Client, name: str, ns: str) -> str:
    p = await client.get("Pod", name, ns)
    st = p.status.container_statuses
    if not st:
        return ""
    return str(
        st[0].state.waiting.reason
        or st[0].state.terminated.reason
        or st[0].last_state.terminated.reason
    )


@pytest.mark.parametrize(
    ("case", "container", "extra", "reasons"),
    [
        (
            "no-such-image",
            {"image": "nonexistent/never:1"},
            {},
            {"ErrImagePull", "ImagePullBackOff"},
        ),
        (
            "no-such-command",
            {"command": ["/no/such/binary"]},
            {},
            {"ContainerCannotRun", "CreateContainerError", "StartError", "CrashLoopBackOff"},
        ),
        (
            "missing-key",
            {
                "env": [
                    {
                        "name": "X",
                        "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "nope"}},
                    }
                ]
            },
            {},
            {"CreateContainerConfigError"},
        ),
    ],
)
async def test_bad_input_shows_as_a_clear_reason(
    local_cluster: LocalCluster,
    client: Client,
    namespace: str,
    case: str,
    container: dict[str, Any],
    extra: dict[str, Any],
    reasons: set[str],
) -> None:
    spec = sleeper(**container)
    await client.create(pod(case, namespace, local_cluster.node_name(2), [spec], **extra))

    async def reason() -> str:
        r = await waiting_reason(client, case, namespace)
        return r if r in reasons else ""

    await wait_for(reason, timeout=60, what=f"one of {sorted(reasons)}")
    # The agent is still fine: a good pod next to it runs.
    await client.create(pod(f"{case}-ok", namespace, local_cluster.node_name(2), [sleeper()]))
    await wait_for(lambda: running(client, f"{case}-ok", namespace), what="neighbour running")


async def test_missing_host_path_is_reported(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    await client.create(
        pod(
            "nohost",
            namespace,
            local_cluster.node_name(1),
            [sleeper(volumeMounts=[{"name": "h", "mountPath": "/h"}])],
            volumes=[
                {"name": "h", "hostPath": {"path": "/no/such/dir/orch-e2e", "type": "Directory"}}
            ],
        )
    )

    async def reported() -> bool:
        events = (
            await client.list("Event", namespace, field_selector="involvedObject.name=nohost")
        ).items
        p = await client.get("Pod", "nohost", namespace)
        return p.status.phase == "Pending" and any(
            "/no/such/dir/orch-e2e" in e.message for e in events
        )

    await wait_for(reported, timeout=60, what="an event naming the missing hostPath")
