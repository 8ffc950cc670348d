"""The control plane on a real etcd: the API works, survives a restart, and
several apiservers over one etcd see each other's writes."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, ConflictError, NotFoundError
from orchestrator.client.config import ConfigFile
from tests.support.controlplane import ControlPlane, free_port_pair
from tests.support.etcd import EtcdProcess

pytestmark = pytest.mark.integration


def namespace(name: str) -> Any:
    return codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def config_map(name: str, ns: str, value: str = "") -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"value": value or name},
        }
    )


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdProcess]:
    with EtcdProcess() as proc:
        yield proc


def etcd_control_plane(data_dir: Path, etcd: EtcdProcess, prefix: str) -> ControlPlane:
    return ControlPlane(data_dir, store="etcd", etcd_endpoints=etcd.client_url, etcd_prefix=prefix)


@pytest.fixture
async def started(tmp_path: Path, etcd: EtcdProcess) -> AsyncIterator[ControlPlane]:
    cp = etcd_control_plane(tmp_path / "cp", etcd, f"/t-{uuid.uuid4().hex[:8]}/")
    await asyncio.to_thread(cp.start)
    try:
        yield cp
    finally:
        await asyncio.to_thread(cp.stop)


async def test_api_on_etcd_works_and_survives_a_restart(started: ControlPlane) -> None:
    cp = started
    async with cp.client() as c:
        v = await c.version()
        assert v.store == "etcd"
        names = {n.metadata.name for n in (await c.list("Namespace")).items}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names

        await c.create(namespace("etcd"))
        listed = await c.list("ConfigMap", "etcd")
        events: list[tuple[str, str]] = []
        all_seen = asyncio.Event()

        async def watch() -> None:
            async for ev in c.watch("ConfigMap", "etcd", resource_version=listed.resource_version):
                events.append((ev.type, ev.object.metadata.name))
                if ev.type == "DELETED":
                    all_seen.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            a = await c.create(config_map("a", "etcd"))
            await c.create(config_map("b", "etcd"))
            got = await c.get("ConfigMap", "a", "etcd")
            assert got.metadata.uid == a.metadata.uid
            got.data["value"] = "changed"
            updated = await c.update(got)
            assert int(updated.metadata.resource_version) > int(a.metadata.resource_version)
            with pytest.raises(ConflictError):
                await c.update(a)  # stale resourceVersion
            await c.create(config_map("doomed", "etcd"))
            _, deleted = await c.delete("ConfigMap", "doomed", "etcd")
            assert deleted
            async with asyncio.timeout(10):
                await all_seen.wait()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert events == [
            ("ADDED", "a"),
            ("ADDED", "b"),
            ("MODIFIED", "a"),
            ("ADDED", "doomed"),
            ("DELETED", "doomed"),
        ]
        before = {cm.metadata.name: cm for cm in (await c.list("ConfigMap", "etcd")).items}
        assert set(before) == {"a", "b"}

    await asyncio.to_thread(cp.stop)
    await asyncio.to_thread(cp.start)

    async with cp.client() as c:
        after = {cm.metadata.name: cm for cm in (await c.list("ConfigMap", "etcd")).items}
        assert set(after) == {"a", "b"}
        assert after["a"].data["value"] == "changed"
        for name in ("a", "b"):
            assert after[name].metadata.uid == before[name].metadata.uid
            assert after[name].metadata.resource_version == before[name].metadata.resource_version
        with pytest.raises(NotFoundError):
            await c.get("ConfigMap", "doomed", "etcd")
        # Still writable, and revisions keep counting up from where they were.
        new = await c.create(config_map("c", "etcd"))
        assert int(new.metadata.resource_version) > int(after["a"].metadata.resource_version)


async def test_two_apiservers_on_one_etcd_see_each_others_writes(
    tmp_path: Path, etcd: EtcdProcess
) -> None:
    first = etcd_control_plane(tmp_path / "one", etcd, f"/t-{uuid.uuid4().hex[:8]}/")
    await asyncio.to_thread(first.start)
    # The second apiserver is the same cluster: same PKI, config and store.
    shutil.copytree(
        first.data_dir, tmp_path / "two", ignore=shutil.ignore_patterns("serve.log", "store")
    )
    second = ControlPlane(tmp_path / "two", port=free_port_pair(), init=False)
    conf = ConfigFile.load(second.admin_conf)
    for cluster in conf.data["clusters"]:
        cluster["cluster"]["server"] = f"127.0.0.1:{second.port}"
    conf.save()
    try:
        await asyncio.to_thread(second.start)
        async with first.client() as one, second.client() as two:
            assert (await two.version()).store == "etcd"
            await one.create(namespace("shared"))

            async def visible(client: Client, name: str) -> Any:
                async with asyncio.timeout(5):
                    while True:
                        try:
                            return await client.get("ConfigMap", name, "shared")
                        except NotFoundError:
                            await asyncio.sleep(0.05)

            written = await one.create(config_map("from-one", "shared"))
            seen = await visible(two, "from-one")
            assert seen.metadata.uid == written.metadata.uid
            assert seen.metadata.resource_version == written.metadata.resource_version

            await two.create(config_map("from-two", "shared"))
            await visible(one, "from-two")

            # One revision sequence: a version read through one apiserver is a
            # valid precondition on the other, and a stale one conflicts.
            seen.data["value"] = "updated via two"
            updated = await two.update(seen)
            written.data["value"] = "stale write via one"
            with pytest.raises(ConflictError):
                await one.update(written)
            again = await visible(one, "from-one")
            async with asyncio.timeout(5):
                while again.metadata.resource_version != updated.metadata.resource_version:
                    await asyncio.sleep(0.05)
                    again = await one.get("ConfigMap", "from-one", "shared")
            assert again.data["value"] == "updated via two"

            # A watch through one apiserver sees writes made through the other.
            listed = await one.list("ConfigMap", "shared")
            names = {cm.metadata.name for cm in listed.items}
            assert names == {"from-one", "from-two"}
            watch = one.watch("ConfigMap", "shared", resource_version=listed.resource_version)
            await two.create(config_map("watched", "shared"))
            try:
                async with asyncio.timeout(10):
                    ev = await watch.__anext__()
            finally:
                await watch.aclose()  # type: ignore[attr-defined]
            assert (ev.type, ev.object.metadata.name) == ("ADDED", "watched")
    finally:
        await asyncio.to_thread(second.stop)
        await asyncio.to_thread(first.stop)
