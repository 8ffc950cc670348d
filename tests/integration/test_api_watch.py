"""Watches against a real control plane: initial state, resuming from a
list's resourceVersion, selectors, too-old versions, bookmarks, fan-out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, GoneError, WatchEvent
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def namespace(name: str) -> Any:
    return codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def config_map(name: str, ns: str, labels: dict[str, str] | None = None, payload: str = "") -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "data": {"payload": payload or name},
        }
    )


def pod(name: str, ns: str, node: str = "") -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )


class Collector:
    """Runs one watch in the background and keeps every event it gets."""

    def __init__(self, client: Client, kind: str, ns: str | None, **kwargs: Any) -> None:
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(client, kind, ns, kwargs))

    async def _run(self, client: Client, kind: str, ns: str | None, kwargs: Any) -> None:
        try:
            async for ev in client.watch(kind, ns, **kwargs):
                async with self._changed:
                    self.events.append(ev)
                    self._changed.notify_all()
        except Exception as exc:
            self.error = exc
        async with self._changed:
            self._changed.notify_all()

    def objects(self) -> list[tuple[str, str]]:
        return [(e.type, e.object.metadata.name) for e in self.events if e.object is not None]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self) or self._task.done())
        if self.error is not None:
            raise self.error
        assert predicate(self), f"watch ended early: {self.objects()}"

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def saw(kind_name: tuple[str, str]) -> Any:
    return lambda c: kind_name in c.objects()


@pytest.fixture
async def client(control_plane: ControlPlane) -> AsyncIterator[Client]:
    async with control_plane.client() as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"watch-{uuid.uuid4().hex[:10]}"
    await client.create(namespace(name))
    return name


async def test_watch_from_empty_version_sends_existing_objects_then_live_events(
    client: Client, ns: str
) -> None:
    for name in ("a", "b"):
        await client.create(config_map(name, ns))
    watch = Collector(client, "ConfigMap", ns, resource_version="")
    try:
        await watch.wait_for(lambda c: len(c.events) >= 2)
        assert sorted(watch.objects()[:2]) == [("ADDED", "a"), ("ADDED", "b")]

        c = await client.create(config_map("c", ns))
        await watch.wait_for(saw(("ADDED", "c")))
        b = await client.get("ConfigMap", "b", ns)
        b.data["payload"] = "changed"
        b = await client.update(b)
        await watch.wait_for(saw(("MODIFIED", "b")))
        await client.delete("ConfigMap", "a", ns)
        await watch.wait_for(saw(("DELETED", "a")))
    finally:
        await watch.close()
    assert watch.objects() == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "b"),
        ("DELETED", "a"),
    ]
    by_type = {(e.type, e.object.metadata.name): e for e in watch.events}
    assert by_type[("ADDED", "c")].resource_version == c.metadata.resource_version
    assert by_type[("MODIFIED", "b")].object.data["payload"] == "changed"
    assert by_type[("MODIFIED", "b")].resource_version == b.metadata.resource_version
    # Each event's object carries its own resourceVersion.
    for ev in watch.events:
        assert ev.object.metadata.resource_version == ev.resource_version


async def test_watch_from_list_version_misses_nothing_across_a_burst(
    client: Client, ns: str
) -> None:
    for i in range(5):
        await client.create(config_map(f"before-{i}", ns))
    listed = await client.list("ConfigMap", ns)
    assert len(listed.items) == 5

    watch = Collector(client, "ConfigMap", ns, resource_version=listed.resource_version)
    writes: dict[int, tuple[str, str]] = {}
    sem = asyncio.Semaphore(25)

    async def create(i: int) -> None:
        async with sem:
            obj = await client.create(config_map(f"burst-{i}", ns))
            writes[int(obj.metadata.resource_version)] = ("ADDED", obj.metadata.name)

    async def modify(i: int) -> None:
        async with sem:
            obj = config_map(f"before-{i % 5}", ns, payload=f"v{i}")
            written = await client.update(obj)  # unconditional: serialised by the store
            writes[int(written.metadata.resource_version)] = ("MODIFIED", f"before-{i % 5}")

    try:
        await asyncio.gather(*(create(i) for i in range(150)), *(modify(i) for i in range(50)))
        assert len(writes) == 200
        await watch.wait_for(lambda c: len(c.events) >= 200, timeout=20)
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive now
    finally:
        await watch.close()

    revisions = [int(e.resource_version) for e in watch.events]
    assert len(revisions) == 200, "events were duplicated"
    assert revisions == sorted(revisions), "events out of resourceVersion order"
    assert len(set(revisions)) == 200
    assert min(revisions) > int(listed.resource_version)
    got = {int(e.resource_version): (e.type, e.object.metadata.name) for e in watch.events}
    assert got == writes


async def test_watch_with_label_selector_sees_objects_enter_and_leave(
    client: Client, ns: str
) -> None:
    await client.create(config_map("joins", ns))
    await client.create(config_map("leaves", ns, labels={"team": "blue"}))
    await client.create(config_map("never", ns, labels={"team": "red"}))
    watch = Collector(client, "ConfigMap", ns, label_selector="team=blue")
    try:
        await watch.wait_for(saw(("ADDED", "leaves")))

        joins = await client.get("ConfigMap", "joins", ns)
        joins.metadata.labels["team"] = "blue"
        await client.update(joins)
        await watch.wait_for(saw(("ADDED", "joins")))

        leaves = await client.get("ConfigMap", "leaves", ns)
        leaves.metadata.labels["team"] = "green"
        await client.update(leaves)
        await watch.wait_for(saw(("DELETED", "leaves")))

        never = await client.get("ConfigMap", "never", ns)
        never.data["payload"] = "still red"
        await client.update(never)
        joins = await client.get("ConfigMap", "joins", ns)
        joins.data["payload"] = "still blue"
        await client.update(joins)
        await watch.wait_for(saw(("MODIFIED", "joins")))
    finally:
        await watch.close()
    assert watch.objects() == [
        ("ADDED", "leaves"),
        ("ADDED", "joins"),
        ("DELETED", "leaves"),
        ("MODIFIED", "joins"),
    ]


async def test_object_leaving_the_selector_is_deleted_with_its_last_matching_state(
    client: Client, ns: str
) -> None:
    await client.create(config_map("leaves", ns, labels={"team": "blue"}))
    watch = Collector(client, "ConfigMap", ns, label_selector="team=blue")
    try:
        await watch.wait_for(saw(("ADDED", "leaves")))
        leaves = await client.get("ConfigMap", "leaves", ns)
        leaves.metadata.labels["team"] = "green"
        moved = await client.update(leaves)
        await watch.wait_for(saw(("DELETED", "leaves")))
    finally:
        await watch.close()
    deleted = watch.events[-1]
    assert deleted.resource_version == moved.metadata.resource_version
    # What the watcher sees still matches its selector (Kubernetes' cacher
    # sends the previous object with the event's resourceVersion).
    assert deleted.object.metadata.labels["team"] == "blue"


async def test_watch_pods_by_node_name(client: Client, ns: str) -> None:
    watch = Collector(client, "Pod", ns, field_selector="spec.nodeName=fake-watch-n1")
    everywhere = Collector(
        client, "Pod", None, all_namespaces=True, field_selector="spec.nodeName=fake-watch-n1"
    )
    try:
        await client.create(pod("elsewhere", ns, node="fake-watch-n2"))
        await client.create(pod("unbound", ns))
        mine = await client.create(pod("mine", ns, node="fake-watch-n1"))
        await watch.wait_for(saw(("ADDED", "mine")))
        mine.status.phase = "Running"
        await client.update_status(mine)
        await watch.wait_for(saw(("MODIFIED", "mine")))
        await client.delete("Pod", "mine", ns, grace_period=0)
        await watch.wait_for(saw(("DELETED", "mine")))
        await everywhere.wait_for(saw(("DELETED", "mine")))
    finally:
        await watch.close()
        await everywhere.close()
    assert watch.objects() == [("ADDED", "mine"), ("MODIFIED", "mine"), ("DELETED", "mine")]
    assert everywhere.objects() == watch.objects()
    await client.delete("Pod", "elsewhere", ns, grace_period=0)


async def test_watch_from_before_the_servers_history_is_gone(client: Client, ns: str) -> None:
    # The watch cache starts at the revision the server started at; revision 1
    # (written by `orchestrator init`) is before any server's window.
    with pytest.raises(GoneError) as err:
        async with asyncio.timeout(10):
            async for _ in client.watch("ConfigMap", ns, resource_version="1"):
                pass
    assert "too old" in err.value.message
    assert "list again" in err.value.message


async def test_watch_from_a_compacted_window_is_gone(tmp_path: Any) -> None:
    cp = ControlPlane(tmp_path / "cp", serve_args=("--watch-cache-size", "50"))
    await asyncio.to_thread(cp.start)
    try:
        async with cp.client() as c:
            await c.create(namespace("gone"))
            listed = await c.list("ConfigMap", "gone")
            for i in range(120):
                await c.create(config_map(f"cm-{i}", "gone"))
            with pytest.raises(GoneError) as err:
                async with asyncio.timeout(10):
                    async for _ in c.watch(
                        "ConfigMap", "gone", resource_version=listed.resource_version
                    ):
                        pass
            assert "too old" in err.value.message
            # Relisting and watching from the new list's version works.
            relisted = await c.list("ConfigMap", "gone")
            assert len(relisted.items) == 120
            watch = Collector(c, "ConfigMap", "gone", resource_version=relisted.resource_version)
            try:
                await c.create(config_map("after", "gone"))
                await watch.wait_for(saw(("ADDED", "after")))
            finally:
                await watch.close()
            assert watch.objects() == [("ADDED", "after")]
    finally:
        await asyncio.to_thread(cp.stop)


async def test_watch_never_delivers_events_at_or_below_its_resource_version(
    client: Client, ns: str
) -> None:
    # A client that listed through another apiserver (or resumed from a
    # bookmark) may ask for a version this server's cache has not reached.
    listed = await client.list("ConfigMap", ns)
    start = int(listed.resource_version) + 10
    watch = Collector(client, "ConfigMap", ns, resource_version=str(start))
    try:
        await asyncio.sleep(0.5)  # let the watch register before the writes
        written = [await client.create(config_map(f"w-{i}", ns)) for i in range(20)]
        revisions = [int(w.metadata.resource_version) for w in written]
        if not any(r <= start for r in revisions):
            pytest.skip("other writers used up the revisions this test needed")
        await watch.wait_for(saw(("ADDED", "w-19")))
    finally:
        await watch.close()
    delivered = [int(e.resource_version) for e in watch.events]
    assert all(r > start for r in delivered), (
        f"watch from {start} delivered revisions {[r for r in delivered if r <= start]}"
    )


async def test_bookmarks_are_sent_only_when_asked_for(tmp_path: Any) -> None:
    cp = ControlPlane(tmp_path / "cp", serve_args=("--bookmark-interval", "0.2"))
    await asyncio.to_thread(cp.start)
    try:
        async with cp.client() as c:
            await c.create(namespace("bm"))
            with_bm = Collector(c, "ConfigMap", "bm", allow_bookmarks=True)
            without = Collector(c, "ConfigMap", "bm")
            try:
                made = await c.create(config_map("x", "bm"))
                await with_bm.wait_for(
                    lambda col: sum(e.type == "BOOKMARK" for e in col.events) >= 3
                )
                await without.wait_for(saw(("ADDED", "x")))
                await asyncio.sleep(0.5)
            finally:
                await with_bm.close()
                await without.close()
            types = [e.type for e in with_bm.events]
            assert types.count("ADDED") == 1
            after_added = with_bm.events[types.index("ADDED") + 1 :]
            assert len(after_added) >= 2 and all(e.type == "BOOKMARK" for e in after_added)
            for bookmark in after_added:
                assert bookmark.object is None
                assert int(bookmark.resource_version) >= int(made.metadata.resource_version)
            assert [e.type for e in without.events] == ["ADDED"]
    finally:
        await asyncio.to_thread(cp.stop)


async def test_bookmarks_never_run_ahead_of_undelivered_events(tmp_path: Any) -> None:
    cp = ControlPlane(tmp_path / "cp", serve_args=("--bookmark-interval", "0.05"))
    await asyncio.to_thread(cp.start)
    try:
        async with cp.client() as c, cp.client() as writer:
            await c.create(namespace("bm"))
            listed = await c.list("ConfigMap", "bm")
            go = asyncio.Event()
            events: list[WatchEvent] = []
            last_rv: list[int] = []
            done = asyncio.Event()

            async def slow_reader() -> None:
                async for ev in c.watch(
                    "ConfigMap",
                    "bm",
                    allow_bookmarks=True,
                    resource_version=listed.resource_version,
                ):
                    events.append(ev)
                    if ev.type != "BOOKMARK":
                        await go.wait()  # stall: the server's queue for us backs up
                        if last_rv and int(ev.resource_version) >= last_rv[0]:
                            done.set()
                            return

            reader = asyncio.create_task(slow_reader())
            try:
                payload = "p" * 40_000
                for i in range(150):
                    obj = await writer.create(config_map(f"cm-{i}", "bm", payload=payload))
                last_rv.append(int(obj.metadata.resource_version))
                await asyncio.sleep(0.3)  # several bookmark ticks while the reader stalls
                go.set()
                async with asyncio.timeout(30):
                    await done.wait()
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await asyncio.to_thread(cp.stop)
    assert sum(e.type != "BOOKMARK" for e in events) == 150
    # A client that stops after a bookmark resumes from its version: every
    # event it has not seen yet must be newer than that.
    for i, ev in enumerate(events):
        if ev.type != "BOOKMARK":
            continue
        later = [int(e.resource_version) for e in events[i + 1 :] if e.type != "BOOKMARK"]
        behind = [r for r in later if r <= int(ev.resource_version)]
        assert not behind, (
            f"bookmark at {ev.resource_version} was followed by "
            f"{len(behind)} older events, e.g. {behind[:3]}"
        )


async def test_a_hundred_concurrent_watchers_all_receive_one_write(client: Client, ns: str) -> None:
    listed = await client.list("ConfigMap", ns)
    watchers = [
        Collector(client, "ConfigMap", ns, resource_version=listed.resource_version)
        for _ in range(100)
    ]
    try:
        await asyncio.sleep(0.2)
        made = await client.create(config_map("fanout", ns))
        await asyncio.gather(*(w.wait_for(saw(("ADDED", "fanout")), timeout=15) for w in watchers))
        await asyncio.sleep(0.2)
    finally:
        await asyncio.gather(*(w.close() for w in watchers))
    for w in watchers:
        assert w.objects() == [("ADDED", "fanout")]
        assert w.events[0].resource_version == made.metadata.resource_version
