"""hostNetwork/hostPID/hostIPC, activeDeadlineSeconds, termination messages and
downwardAPI/projected volumes: the kubelet against the real control plane and
a private dockerd (the harness of tests/node/test_kubelet.py).

The private dockerd runs in this process' namespaces, so "the node" here is
the test process itself: a hostNetwork pod must share its network namespace.
"""

# The fixtures `dockerd` and `h` come from test_kubelet.py; tests take them as
# parameters of the same names.
# ruff: noqa: F811

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.types import ContainerState
from tests.node.test_kubelet import (  # noqa: F401  (fixtures)
    IMAGE,
    SLEEPER,
    Harness,
    dockerd,
    h,
    running,
    until,
)
from tests.support.dockerd import dockerd_available

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(dockerd_available() is not None, reason=dockerd_available() or ""),
    pytest.mark.timeout(120),
]


def interfaces(proc_net_dev: str) -> set[str]:
    """Interface names from /proc/net/dev (the reader's network namespace)."""
    return {line.split(":", 1)[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line}


async def test_host_network_pid_and_ipc_pods_share_the_nodes_namespaces(h: Harness) -> None:
    await h.start_kubelet()
    await h.pod(
        "hostnet",
        {
            "name": "app",
            "image": IMAGE,
            "command": SLEEPER,
            "ports": [{"containerPort": 18080, "hostPort": 18080}],
            "env": [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        },
        hostNetwork=True,
        hostPID=True,
        hostIPC=True,
    )
    await h.pod("podnet", {"name": "app", "image": IMAGE, "command": SLEEPER})
    pod = await h.wait_pod("hostnet", running, what="Running")
    assert pod.status.pod_ip == "192.0.2.11" == pod.status.host_ip
    assert pod.metadata.uid not in h.network.netns, "the network plugin was not called"

    for ns in ("net", "ipc", "pid"):
        inside = (await h.exec(pod, ["readlink", f"/proc/self/ns/{ns}"])).strip()
        assert inside == os.readlink(f"/proc/self/ns/{ns}"), f"{ns} namespace"
    node_ifaces = interfaces(Path("/proc/net/dev").read_text())
    assert interfaces(await h.exec(pod, ["cat", "/proc/net/dev"])) == node_ifaces
    assert (await h.exec(pod, ["hostname"])).strip() == socket.gethostname()
    assert (await h.exec(pod, ["sh", "-c", "echo $MY_IP"])).strip() == "192.0.2.11"
    hosts = await h.exec(pod, ["cat", "/etc/hosts"])
    assert hosts.startswith("# Kubernetes-managed hosts file (host network).")
    assert Path("/etc/hosts").read_text().strip() in hosts

    # An ordinary pod keeps namespaces of its own.
    other = await h.wait_pod("podnet", running, what="Running")
    assert other.status.pod_ip.startswith("10.244.9.")
    inside = (await h.exec(other, ["readlink", "/proc/self/ns/net"])).strip()
    assert inside != os.readlink("/proc/self/ns/net")
    assert (await h.exec(other, ["hostname"])).strip() == "podnet"

    await h.client.delete("Pod", "hostnet", h.ns)

    async def gone() -> bool:
        return not [
            p for p in (await h.client.list("Pod", h.ns)).items if p.metadata.name == "hostnet"
        ]

    await until(gone, 20)
    assert pod.metadata.uid not in h.network.teardowns, "no network teardown either"


async def test_active_deadline_fails_a_running_pod(h: Harness) -> None:
    await h.start_kubelet()
    await h.pod(
        "deadline",
        {"name": "app", "image": IMAGE, "command": SLEEPER},
        activeDeadlineSeconds=3,
    )
    pod = await h.wait_pod("deadline", running, what="Running")
    started = pod.status.start_time

    def failed_and_killed(p: Any) -> bool:
        return p.status.phase == "Failed" and all(
            cs.state.HasField("terminated") for cs in p.status.container_statuses
        )

    pod = await h.wait_pod("deadline", failed_and_killed, 20, "Failed by the deadline")
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.message == "Pod was active on the node longer than the specified deadline"
    assert pod.status.start_time == started
    term = pod.status.container_statuses[0].state.terminated
    assert term.finished_at, "the container was killed"
    uid = pod.metadata.uid
    assert not [
        c for c in await h.runtime.list_containers(uid) if c.state == ContainerState.RUNNING
    ]
    assert any(e.reason == "DeadlineExceeded" for e in await h.events())


async def test_termination_messages_from_file_and_logs(h: Harness) -> None:
    await h.start_kubelet()
    await h.pod(
        "msgs",
        {
            "name": "file",
            "image": IMAGE,
            "command": ["sh", "-c", "printf 'all done' > /dev/termination-log"],
        },
        {
            "name": "custom",
            "image": IMAGE,
            "command": ["sh", "-c", "echo 'as user 1000' > /tmp/why; exit 4"],
            "terminationMessagePath": "/tmp/why",
            "securityContext": {"runAsUser": 1000},
        },
        {
            "name": "logs",
            "image": IMAGE,
            "command": ["sh", "-c", "seq 1 100; echo fatal: no config; exit 2"],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
        restartPolicy="Never",
    )

    def all_done(p: Any) -> bool:
        return bool(p.status.container_statuses) and all(
            cs.state.HasField("terminated") for cs in p.status.container_statuses
        )

    pod = await h.wait_pod("msgs", all_done, 30, "every container terminated")
    term = {cs.name: cs.state.terminated for cs in pod.status.container_statuses}
    assert (term["file"].exit_code, term["file"].message) == (0, "all done")
    assert (term["custom"].exit_code, term["custom"].message) == (4, "as user 1000\n")
    logs = term["logs"].message
    assert term["logs"].exit_code == 2
    assert logs.endswith("100\nfatal: no config\n") and logs.startswith("22\n"), logs
    assert pod.status.phase == "Failed"


async def test_downward_api_and_projected_volumes(h: Harness) -> None:
    await h.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"mode": "fast"},
        }
    )
    await h.start_kubelet()
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dw", "labels": {"app": "web"}, "annotations": {"owner": "ops"}},
        "spec": {
            "nodeName": h.node,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "app",
                    "image": IMAGE,
                    "command": SLEEPER,
                    "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}},
                    "volumeMounts": [
                        {"name": "info", "mountPath": "/etc/podinfo"},
                        {"name": "all", "mountPath": "/etc/all"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "info",
                    "downwardAPI": {
                        "items": [
                            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {
                                "path": "annotations",
                                "fieldRef": {"fieldPath": "metadata.annotations"},
                            },
                            {
                                "path": "cpu",
                                "mode": 0o400,
                                "resourceFieldRef": {
                                    "containerName": "app",
                                    "resource": "limits.cpu",
                                    "divisor": "1m",
                                },
                            },
                            {
                                "path": "mem",
                                "resourceFieldRef": {
                                    "containerName": "app",
                                    "resource": "limits.memory",
                                    "divisor": "1Mi",
                                },
                            },
                        ]
                    },
                },
                {
                    "name": "all",
                    "projected": {
                        "sources": [
                            {"configMap": {"name": "cfg"}},
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "ns",
                                            "fieldRef": {"fieldPath": "metadata.namespace"},
                                        }
                                    ]
                                }
                            },
                            {"serviceAccountToken": {"path": "token"}},
                        ]
                    },
                },
            ],
        },
    }
    await h.apply(manifest)
    pod = await h.wait_pod("dw", running, what="Running")

    async def cat(path: str) -> str:
        return await h.exec(pod, ["cat", path])

    assert await cat("/etc/podinfo/name") == "dw"
    assert await cat("/etc/podinfo/labels") == 'app="web"'
    # `apply` adds its last-applied annotation: one line per annotation, sorted.
    annotations = (await cat("/etc/podinfo/annotations")).splitlines()
    assert 'owner="ops"' in annotations and annotations == sorted(annotations)
    assert await cat("/etc/podinfo/cpu") == "250"
    assert await cat("/etc/podinfo/mem") == "32"
    assert (await h.exec(pod, ["stat", "-L", "-c", "%a", "/etc/podinfo/cpu"])).strip() == "400"
    assert await cat("/etc/all/mode") == "fast"
    assert await cat("/etc/all/ns") == h.ns
    listing = await h.exec(pod, ["ls", "/etc/all"])
    assert "token" not in listing.split()
    events = await h.events()
    assert any(
        e.reason == "UnsupportedVolumeSource" and "serviceAccountToken" in e.message for e in events
    )

    # New labels reach the running container's file (atomically, via ..data).
    manifest["metadata"]["labels"] = {"app": "web", "tier": "front"}
    await h.apply(manifest)

    async def relabelled() -> bool:
        return await cat("/etc/podinfo/labels") == 'app="web"\ntier="front"'

    await until(relabelled, 20)
    again = await h.get("dw")
    assert again.status.container_statuses[0].restart_count == 0
