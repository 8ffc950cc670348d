"""The watch cache hands each watcher what is ready as one batch (one gRPC
message), bounded in events and bytes, in revision order, and an end-to-end
watch still delivers every event of a burst once and in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.api.kinds import kind_info
from orchestrator.apiserver import cache as cache_module
from orchestrator.apiserver.cache import Filter, WatchBatch, WatchCache
from orchestrator.apiserver.registry import Registry, UserInfo
from orchestrator.client.client import Client
from orchestrator.store.sqlite import SqliteStore
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

ADMIN = UserInfo("test-admin", ("system:masters",))
CONFIG_MAP = kind_info("ConfigMap")


def obj(kind: str, name: str, ns: str = "", payload: str = "") -> Any:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    if ns:
        doc["metadata"]["namespace"] = ns
        doc["data"] = {"payload": payload or name}
    return codec.from_dict(doc)


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[Registry, WatchCache]]:
    store = await SqliteStore.open(tmp_path / "state.db")
    cache = WatchCache(store)
    await cache.start()
    registry = Registry(store, cache)
    await registry.create(obj("Namespace", "default"), ADMIN)
    try:
        yield registry, cache
    finally:
        await cache.stop()
        await store.close()


def names(batch: WatchBatch) -> list[str]:
    return [item[1].name for item in batch if isinstance(item, tuple)]


async def test_events_queued_while_the_watcher_was_busy_arrive_as_one_batch(
    local: tuple[Registry, WatchCache],
) -> None:
    registry, cache = local
    await registry.create(obj("ConfigMap", "first", "default"), ADMIN)
    batches = cache.watch(CONFIG_MAP, Filter(namespace="default"), None)
    initial = await anext(batches)
    assert names(initial) == ["first"]
    # The watcher is busy (not asking) while 50 writes land.
    for i in range(50):
        await registry.create(obj("ConfigMap", f"cm-{i:02}", "default"), ADMIN)
    burst = await asyncio.wait_for(anext(batches), 5)
    assert names(burst) == [f"cm-{i:02}" for i in range(50)]
    revisions = [item[1].revision for item in burst if isinstance(item, tuple)]
    assert revisions == sorted(revisions)
    # Idle again: the next write comes alone and at once.
    pending = asyncio.create_task(anext(batches))
    await asyncio.sleep(0.05)
    await registry.create(obj("ConfigMap", "later", "default"), ADMIN)
    assert names(await asyncio.wait_for(pending, 5)) == ["later"]
    await batches.aclose()  # type: ignore[attr-defined]


async def test_batches_are_bounded_in_events_and_bytes(
    local: tuple[Registry, WatchCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, cache = local
    monkeypatch.setattr(cache_module, "WATCH_BATCH_EVENTS", 4)
    monkeypatch.setattr(cache_module, "WATCH_BATCH_BYTES", 3000)
    start = cache.revision
    for i in range(5):
        await registry.create(obj("ConfigMap", f"small-{i}", "default"), ADMIN)
    for i in range(3):
        await registry.create(obj("ConfigMap", f"big-{i}", "default", "x" * 2000), ADMIN)
    batches = cache.watch(CONFIG_MAP, Filter(namespace="default"), start)
    got = [names(await asyncio.wait_for(anext(batches), 5)) for _ in range(3)]
    await batches.aclose()  # type: ignore[attr-defined]
    # Four events at most; and a batch ends once its objects pass 3000 bytes.
    assert got == [
        ["small-0", "small-1", "small-2", "small-3"],
        ["small-4", "big-0", "big-1"],
        ["big-2"],
    ]


async def test_a_burst_reaches_a_client_watch_once_and_in_order(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path / "cp", serve_args=("--no-scheduler",))
    cp.start()
    try:
        async with Client(cp.connection()) as client:
            await client.create(obj("Namespace", "burst"))
            listed = await client.list("ConfigMap", "burst")
            seen: list[tuple[str, str]] = []

            async def follow() -> None:
                async for ev in client.watch(
                    "ConfigMap", "burst", resource_version=listed.resource_version
                ):
                    seen.append((ev.type, ev.object.metadata.name))
                    if len(seen) == 400:
                        return

            watching = asyncio.create_task(follow())
            await asyncio.gather(
                *(client.create(obj("ConfigMap", f"cm-{i:03}", "burst")) for i in range(200))
            )
            await asyncio.gather(
                *(client.delete("ConfigMap", f"cm-{i:03}", "burst") for i in range(200))
            )
            await asyncio.wait_for(watching, 30)
    finally:
        cp.stop()
    added = [n for t, n in seen if t == "ADDED"]
    deleted = [n for t, n in seen if t == "DELETED"]
    assert sorted(added) == [f"cm-{i:03}" for i in range(200)]
    assert sorted(deleted) == sorted(added)
    # Every object's ADDED comes before its DELETED.
    for name in added:
        assert seen.index(("ADDED", name)) < seen.index(("DELETED", name))
