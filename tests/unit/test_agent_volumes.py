"""Pod volumes in temporary directories, with a fake API client and mount(8)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.pods.testing import FakeClient, FakeMounter, make_pod
from agent.volumes import DATA_DIR, VolumeError, VolumeManager, write_atomic
from orchestrator.api.codec import from_dict

pytestmark = pytest.mark.unit


def is_dir(path: str | Path) -> bool:
    return Path(path).is_dir()


def obj(manifest: dict[str, Any]) -> Any:
    return from_dict(manifest)


def configmap(name: str, data: dict[str, str]) -> Any:
    return obj(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": data,
        }
    )


def pod_with(volumes: list[dict[str, Any]]) -> Any:
    return make_pod(
        {
            "metadata": {"name": "v"},
            "spec": {"volumes": volumes, "containers": [{"name": "a", "image": "busybox:1.36"}]},
        }
    )


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def manager(tmp_path: Path, client: FakeClient) -> VolumeManager:
    return VolumeManager(tmp_path / "root", client, mounter=FakeMounter())


def test_atomic_writer_swaps_data_dir(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (target / "a").read_text() == "1"
    assert (target / "dir" / "b").read_text() == "2"
    assert os.readlink(target / "a") == f"{DATA_DIR}/a"
    first = (target / DATA_DIR).resolve()
    assert not write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert write_atomic(target, {"a": (b"changed", 0o644)})
    assert (target / "a").read_text() == "changed"
    assert not (target / "dir").exists(), "stale keys disappear"
    assert not first.exists(), "the previous timestamped dir is removed"
    assert oct((target / "a").stat().st_mode & 0o777) == oct(0o644)


async def test_configmap_volume_with_items_and_modes(
    manager: VolumeManager, client: FakeClient
) -> None:
    client.put(configmap("cfg", {"k1": "v1", "k2": "v2"}))
    pod = pod_with(
        [
            {
                "name": "c",
                "configMap": {
                    "name": "cfg",
                    "defaultMode": 0o600,
                    "items": [{"key": "k1", "path": "sub/one.txt", "mode": 0o640}],
                },
            }
        ]
    )
    sources = await manager.setup(pod)
    path = Path(sources["c"].host_path)
    assert sources["c"].read_only
    assert (path / "sub" / "one.txt").read_text() == "v1"
    assert ((path / "sub" / "one.txt").stat().st_mode & 0o777) == 0o640
    assert not (path / "k2").exists()

    # An update reaches the files on the next setup (the worker's resync).
    client.put(configmap("cfg", {"k1": "new"}))
    await manager.setup(pod)
    assert (path / "sub" / "one.txt").read_text() == "new"


async def test_missing_configmap_key_and_object(manager: VolumeManager, client: FakeClient) -> None:
    client.put(configmap("cfg", {"k1": "v1"}))
    pod = pod_with(
        [{"name": "c", "configMap": {"name": "cfg", "items": [{"key": "nope", "path": "x"}]}}]
    )
    with pytest.raises(VolumeError, match='configuration key "nope" not found in ConfigMap "cfg"'):
        await manager.setup(pod)
    with pytest.raises(VolumeError, match='configmap "other" not found'):
        await manager.setup(pod_with([{"name": "c", "configMap": {"name": "other"}}]))
    sources = await manager.setup(
        pod_with([{"name": "c", "configMap": {"name": "other", "optional": True}}])
    )
    assert is_dir(sources["c"].host_path)


async def test_secret_volume(manager: VolumeManager, client: FakeClient) -> None:
    client.put(
        obj(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": "default"},
                "data": {"password": "aHVudGVyMg=="},
            }
        )
    )
    sources = await manager.setup(pod_with([{"name": "s", "secret": {"secretName": "s"}}]))
    assert (Path(sources["s"].host_path) / "password").read_bytes() == b"hunter2"


async def test_empty_dir_and_memory_medium(tmp_path: Path, client: FakeClient) -> None:
    mounter = FakeMounter()
    manager = VolumeManager(tmp_path / "root", client, mounter=mounter)
    pod = pod_with(
        [
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ]
    )
    sources = await manager.setup(pod)
    scratch = Path(sources["scratch"].host_path)
    assert is_dir(scratch) and scratch.parent.name == "volumes"
    assert mounter.mounted == {sources["mem"].host_path: 16 * 1024 * 1024}
    (scratch / "file").write_text("x")
    await manager.teardown(pod.metadata.uid)
    assert not manager.pod_dir(pod.metadata.uid).exists()
    assert mounter.mounted == {}


async def test_host_path_types(manager: VolumeManager, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(VolumeError, match="does not exist"):
        await manager.setup(
            pod_with([{"name": "h", "hostPath": {"path": str(missing), "type": "Directory"}}])
        )
    await manager.setup(
        pod_with([{"name": "h", "hostPath": {"path": str(missing), "type": "DirectoryOrCreate"}}])
    )
    assert missing.is_dir()
    f = tmp_path / "f" / "file.txt"
    await manager.setup(
        pod_with([{"name": "h", "hostPath": {"path": str(f), "type": "FileOrCreate"}}])
    )
    assert f.is_file()
    with pytest.raises(VolumeError, match="is not a file"):
        await manager.setup(
            pod_with([{"name": "h", "hostPath": {"path": str(missing), "type": "File"}}])
        )
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        await manager.setup(
            pod_with([{"name": "h", "hostPath": {"path": str(sock_path), "type": "Socket"}}])
        )
    with pytest.raises(VolumeError, match="is not a socket"):
        await manager.setup(
            pod_with([{"name": "h", "hostPath": {"path": str(f), "type": "Socket"}}])
        )


async def test_pvc_bound_to_local_pv(
    manager: VolumeManager, client: FakeClient, tmp_path: Path
) -> None:
    data_dir = tmp_path / "pv-data"
    client.put(
        obj(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "pv1"},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "local": {"path": str(data_dir)},
                    "claimRef": {"namespace": "default", "name": "claim"},
                },
            }
        )
    )
    client.put(
        obj(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "claim", "namespace": "default"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "volumeName": "pv1",
                },
            }
        )
    )
    pod = pod_with([{"name": "data", "persistentVolumeClaim": {"claimName": "claim"}}])
    sources = await manager.setup(pod)
    assert sources["data"].host_path == str(data_dir)
    assert data_dir.is_dir()
    (data_dir / "keep").write_text("x")
    await manager.teardown(pod.metadata.uid)
    assert (data_dir / "keep").read_text() == "x", "PV data survives the pod"


async def test_unbound_pvc_waits(manager: VolumeManager, client: FakeClient) -> None:
    client.put(
        obj(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "claim", "namespace": "default"},
                "spec": {"resources": {"requests": {"storage": "1Gi"}}},
            }
        )
    )
    with pytest.raises(VolumeError, match="unbound PVC"):
        await manager.setup(
            pod_with([{"name": "d", "persistentVolumeClaim": {"claimName": "claim"}}])
        )
