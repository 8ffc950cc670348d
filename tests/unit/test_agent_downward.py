"""downwardAPI and projected volumes, and the downward API's rendering."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.pods.downward import ConfigError, field_value, format_map, go_quote, resource_value
from agent.pods.testing import FakeClient, FakeMounter, make_pod
from agent.volumes import DATA_DIR, VolumeError, VolumeManager
from orchestrator.api.codec import from_dict
from orchestrator.api.pb import core_v1_pb2 as core

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pod_with(volumes: list[dict[str, Any]], **meta: Any) -> Any:
    return make_pod(
        {
            "metadata": {"name": "dw", **meta},
            "spec": {
                "serviceAccountName": "robot",
                "volumes": volumes,
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:1.36",
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "128Mi"},
                            "requests": {"cpu": "250m", "memory": "64Mi"},
                        },
                    },
                    {"name": "side", "image": "busybox:1.36"},
                ],
            },
        },
        uid="uid-dw",
    )


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def manager(tmp_path: Path, client: FakeClient) -> VolumeManager:
    return VolumeManager(
        tmp_path / "root", client, mounter=FakeMounter(), node_cpus=4, node_memory=8 << 30
    )


def test_go_quoting_and_map_format_match_the_kubelets() -> None:
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("x\ny\tz\x01") == '"x\\ny\\tz\\x01"'
    assert go_quote("héllo") == '"héllo"', "printable unicode is kept"
    assert format_map({"b": "2", "a": "1"}) == 'a="1"\nb="2"'
    assert format_map({}) == ""


def test_field_and_resource_values() -> None:
    pod = pod_with([], labels={"app": "web"}, annotations={"note": 'say "hi"'})
    assert field_value(pod, "metadata.labels", "", "") == 'app="web"'
    assert field_value(pod, "metadata.annotations", "", "") == 'note="say \\"hi\\""'
    assert field_value(pod, "metadata.labels['app']", "", "") == "web"
    assert field_value(pod, "status.podIP", "10.244.9.7", "192.0.2.11") == "10.244.9.7"
    with pytest.raises(ConfigError, match=r"metadata\.generation"):
        field_value(pod, "metadata.generation", "", "")

    app = pod.spec.containers[0]

    def ref(resource: str, divisor: str = "", container: str = "") -> Any:
        return core.ResourceFieldSelector(
            resource=resource, divisor=divisor, container_name=container
        )

    assert resource_value(pod, app, ref("limits.cpu", "1m"), 4, 1 << 30) == "500"
    assert resource_value(pod, app, ref("limits.cpu"), 4, 1 << 30) == "1", "rounded up"
    assert resource_value(pod, app, ref("requests.memory", "1Mi"), 4, 1 << 30) == "64"
    # An unset limit is the node's capacity, an unset request 0.
    assert resource_value(pod, None, ref("limits.memory", "1Gi", "side"), 4, 2 << 30) == "2"
    assert resource_value(pod, None, ref("requests.cpu", "", "side"), 4, 1 << 30) == "0"
    with pytest.raises(ConfigError, match='no container named "nope"'):
        resource_value(pod, None, ref("limits.cpu", "", "nope"), 4, 1 << 30)
    with pytest.raises(ConfigError, match="invalid divisor"):
        resource_value(pod, app, ref("limits.cpu", "0"), 4, 1 << 30)


async def test_downward_api_volume_files_modes_and_label_updates(
    manager: VolumeManager,
) -> None:
    volumes = [
        {
            "name": "info",
            "downwardAPI": {
                "defaultMode": 0o600,
                "items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}},
                    {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "meta/annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                    {"path": "node", "fieldRef": {"fieldPath": "spec.nodeName"}},
                    {"path": "sa", "fieldRef": {"fieldPath": "spec.serviceAccountName"}},
                    {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
                    {"path": "host", "fieldRef": {"fieldPath": "status.hostIP"}},
                    {
                        "path": "cpu_limit",
                        "mode": 0o644,
                        "resourceFieldRef": {
                            "containerName": "app",
                            "resource": "limits.cpu",
                            "divisor": "1m",
                        },
                    },
                    {
                        "path": "mem_request",
                        "resourceFieldRef": {
                            "containerName": "app",
                            "resource": "requests.memory",
                            "divisor": "1Mi",
                        },
                    },
                ],
            },
        }
    ]
    pod = pod_with(volumes, labels={"app": "web", "tier": "front"}, annotations={"a": "1"})
    out = await manager.setup(pod, pod_ip="10.244.9.5", host_ip="192.0.2.11")
    src = out["info"]
    assert src.read_only and not src.warnings
    d = Path(src.host_path)
    got = {
        p: (d / p).read_text()
        for p in ("name", "ns", "uid", "labels", "meta/annotations", "node", "sa", "ip", "host")
    }
    assert got == {
        "name": "dw",
        "ns": "default",
        "uid": "uid-dw",
        "labels": 'app="web"\ntier="front"',
        "meta/annotations": 'a="1"',
        "node": "node-1",
        "sa": "robot",
        "ip": "10.244.9.5",
        "host": "192.0.2.11",
    }
    assert (d / "cpu_limit").read_text() == "500"
    assert (d / "mem_request").read_text() == "64"
    assert mode(d / "name") == 0o600 and mode(d / "cpu_limit") == 0o644
    assert os.readlink(d / "labels") == f"{DATA_DIR}/labels"
    first = os.readlink(d / DATA_DIR)

    # New labels: the files are swapped in atomically through ..data.
    pod.metadata.labels["tier"] = "back"
    del pod.metadata.annotations["a"]
    await manager.setup(pod, pod_ip="10.244.9.5", host_ip="192.0.2.11")
    assert (d / "labels").read_text() == 'app="web"\ntier="back"'
    assert (d / "meta/annotations").read_text() == ""
    assert os.readlink(d / DATA_DIR) != first
    assert not (d / first).exists(), "the old generation is removed"

    # Unchanged pod: nothing is rewritten.
    second = os.readlink(d / DATA_DIR)
    await manager.setup(pod, pod_ip="10.244.9.5", host_ip="192.0.2.11")
    assert os.readlink(d / DATA_DIR) == second


async def test_downward_api_item_errors_name_the_volume_and_item(
    manager: VolumeManager,
) -> None:
    pod = pod_with(
        [
            {
                "name": "info",
                "downwardAPI": {
                    "items": [
                        {
                            "path": "x",
                            "resourceFieldRef": {
                                "containerName": "ghost",
                                "resource": "limits.cpu",
                            },
                        }
                    ]
                },
            }
        ]
    )
    with pytest.raises(VolumeError) as err:
        await manager.setup(pod)
    assert 'volume "info"' in err.value.message and 'item "x"' in err.value.message
    assert "ghost" in err.value.message

    bad_path = pod_with(
        [
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "../escape", "fieldRef": {"fieldPath": "metadata.name"}}]
                },
            }
        ]
    )
    with pytest.raises(VolumeError, match="invalid path"):
        await manager.setup(bad_path)


async def test_projected_volume_merges_sources_and_skips_tokens(
    manager: VolumeManager, client: FakeClient
) -> None:
    client.put(
        from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "default"},
                "data": {"ca.crt": "CERT", "other": "x"},
            }
        )
    )
    client.put(
        from_dict(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "sec", "namespace": "default"},
                "stringData": {"password": "pw"},
            }
        )
    )
    pod = pod_with(
        [
            {
                "name": "all",
                "projected": {
                    "defaultMode": 0o640,
                    "sources": [
                        {"configMap": {"name": "cfg", "items": [{"key": "ca.crt", "path": "ca"}]}},
                        {
                            "secret": {
                                "name": "sec",
                                "items": [{"key": "password", "path": "creds/pw", "mode": 0o400}],
                            }
                        },
                        {"secret": {"name": "absent", "optional": True}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                                ]
                            }
                        },
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    ],
                },
            }
        ],
        labels={"app": "web"},
    )
    src = (await manager.setup(pod))["all"]
    d = Path(src.host_path)
    assert (d / "ca").read_text() == "CERT"
    assert not (d / "other").exists(), "items select keys"
    assert (d / "creds/pw").read_text() == "pw"
    assert mode(d / "creds/pw") == 0o400 and mode(d / "ca") == 0o640
    assert (d / "labels").read_text() == 'app="web"'
    assert not (d / "token").exists()
    assert len(src.warnings) == 1
    assert "serviceAccountToken" in src.warnings[0] and "TokenRequest" in src.warnings[0]

    missing = pod_with([{"name": "all", "projected": {"sources": [{"configMap": {"name": "no"}}]}}])
    with pytest.raises(VolumeError, match='configmap "no" not found'):
        await manager.setup(missing)
