"""The store contract (orchestrator.store.base.Store), run against every backend.

Each test body runs under one asyncio.timeout, so no await can hang the suite;
waits for watch events have their own, tighter bounds.

At the end, a few etcd-only tests: TLS, key-prefix isolation between stores
sharing one etcd, and that abandoned watches release their etcd watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.store.base import (
    CompactedError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    RevisionConflictError,
    Store,
    StoreError,
    WatchEvent,
)
from orchestrator.store.etcd import EtcdStore, EtcdUnavailableError
from tests.support.etcd import EtcdProcess, make_test_pki

pytestmark = pytest.mark.integration

TEST_TIMEOUT = 30.0
EVENT_TIMEOUT = 10.0
MIB = 1024 * 1024


# -- helpers -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def watching(
    store: Store, prefix: str, from_revision: int
) -> AsyncIterator[AsyncIterator[WatchEvent]]:
    """A watch that is always closed (and so releases its resources) on exit."""
    it = store.watch(prefix, from_revision)
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            async with asyncio.timeout(EVENT_TIMEOUT):
                await aclose()


async def take(it: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with asyncio.timeout(EVENT_TIMEOUT):
        while len(events) < n:
            events.append(await anext(it))
    return events


def summary(events: list[WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.type.value, e.key, e.value) for e in events]


# -- create / get ----------------------------------------------------------------


async def test_create_then_get(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        assert await store.get("/pods/default/a") is None
        rev = await store.create("/pods/default/a", b"hello")
        assert rev > 0
        kv = await store.get("/pods/default/a")
        assert kv is not None
        assert kv.key == "/pods/default/a"
        assert kv.value == b"hello"
        assert kv.create_revision == rev
        assert kv.mod_revision == rev
        assert await store.current_revision() == rev


async def test_empty_value_and_unicode_key(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        key = "/configmaps/ns-ü/名前 with space"
        await store.create(key, b"")
        kv = await store.get(key)
        assert kv is not None and kv.key == key and kv.value == b""
        assert [k.key for k in (await store.range("/configmaps/")).kvs] == [key]


async def test_create_existing_key_raises(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        rev = await store.create("/k", b"v1")
        with pytest.raises(KeyExistsError) as info:
            await store.create("/k", b"v2")
        assert info.value.key == "/k"
        kv = await store.get("/k")
        assert kv is not None and kv.value == b"v1" and kv.mod_revision == rev
        # A failed operation does not consume a revision.
        assert await store.current_revision() == rev


# -- update ----------------------------------------------------------------------


async def test_update_with_expected_revision(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        created = await store.create("/k", b"v1")
        updated = await store.update("/k", b"v2", created)
        assert updated > created
        kv = await store.get("/k")
        assert kv is not None
        assert (kv.value, kv.create_revision, kv.mod_revision) == (b"v2", created, updated)

        # The stale revision no longer matches: the error names the actual one.
        with pytest.raises(RevisionConflictError) as info:
            await store.update("/k", b"v3", created)
        assert (info.value.key, info.value.expected, info.value.actual) == ("/k", created, updated)
        kv = await store.get("/k")
        assert kv is not None and kv.value == b"v2" and kv.mod_revision == updated
        assert await store.current_revision() == updated

        # No expected revision: an unconditional update of an existing key.
        again = await store.update("/k", b"v4", None)
        assert again > updated
        kv = await store.get("/k")
        assert kv is not None and kv.value == b"v4" and kv.create_revision == created


async def test_update_missing_key_raises(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        with pytest.raises(KeyNotFoundError) as info:
            await store.update("/missing", b"v", None)
        assert info.value.key == "/missing"
        rev = await store.current_revision()
        with pytest.raises(KeyNotFoundError):
            await store.update("/missing", b"v", max(rev, 1))
        assert await store.get("/missing") is None


# -- delete ----------------------------------------------------------------------


async def test_delete(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        created = await store.create("/k", b"v1")
        deleted = await store.delete("/k")
        assert deleted > created
        assert await store.get("/k") is None
        assert await store.current_revision() == deleted

        with pytest.raises(KeyNotFoundError) as info:
            await store.delete("/k")
        assert info.value.key == "/k"
        with pytest.raises(KeyNotFoundError):
            await store.delete("/k", deleted)

        # A re-created key starts a new life with a new create_revision.
        recreated = await store.create("/k", b"v2")
        kv = await store.get("/k")
        assert kv is not None and kv.create_revision == recreated > deleted


async def test_delete_compare_and_swap(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        created = await store.create("/k", b"v1")
        updated = await store.update("/k", b"v2", created)
        with pytest.raises(RevisionConflictError) as info:
            await store.delete("/k", created)
        assert (info.value.expected, info.value.actual) == (created, updated)
        kv = await store.get("/k")
        assert kv is not None and kv.value == b"v2"

        deleted = await store.delete("/k", updated)
        assert deleted > updated
        assert await store.get("/k") is None


# -- revisions -------------------------------------------------------------------


async def test_one_global_revision_orders_changes_across_keys(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        start = await store.current_revision()
        revs = [
            await store.create("/a", b"1"),
            await store.create("/b", b"1"),
            await store.update("/a", b"2", None),
            await store.create("/c", b"1"),
            await store.delete("/b"),
            await store.update("/c", b"2", None),
        ]
        assert revs[0] > start
        assert revs == sorted(set(revs)), "revisions must strictly increase across keys"
        assert await store.current_revision() == revs[-1]

        a, c = await store.get("/a"), await store.get("/c")
        assert a is not None and (a.create_revision, a.mod_revision) == (revs[0], revs[2])
        assert c is not None and (c.create_revision, c.mod_revision) == (revs[3], revs[5])
        result = await store.range("/")
        assert result.revision == revs[-1]


# -- range -----------------------------------------------------------------------


async def test_range_by_prefix_is_sorted_and_does_not_leak(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        keys = ["/a/2", "/ab/x", "/a/10", "/a", "/b/1", "/a/1", "/a/", "/a0"]
        revs = {k: await store.create(k, k.encode()) for k in keys}

        result = await store.range("/a/")
        assert [kv.key for kv in result.kvs] == ["/a/", "/a/1", "/a/10", "/a/2"]
        for kv in result.kvs:
            assert kv.value == kv.key.encode()
            assert kv.create_revision == kv.mod_revision == revs[kv.key]
        assert result.revision == await store.current_revision()

        assert [kv.key for kv in (await store.range("/ab/")).kvs] == ["/ab/x"]
        assert [kv.key for kv in (await store.range("/a")).kvs] == [
            "/a",
            "/a/",
            "/a/1",
            "/a/10",
            "/a/2",
            "/a0",
            "/ab/x",
        ]
        assert [kv.key for kv in (await store.range("")).kvs] == sorted(keys)

        empty = await store.range("/nothing/")
        assert empty.kvs == [] and empty.revision == await store.current_revision()


# -- watch -----------------------------------------------------------------------


async def test_watch_replays_history_then_follows_live_events(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        start = await store.current_revision()
        r1 = await store.create("/w/a", b"a1")
        r2 = await store.update("/w/a", b"a2", r1)
        r3 = await store.create("/w/b", b"b1")
        r4 = await store.delete("/w/a", r2)

        async with watching(store, "/w/", start) as it:
            history = await take(it, 4)
            assert history == [
                WatchEvent(EventType.PUT, "/w/a", b"a1", r1, r1, b""),
                WatchEvent(EventType.PUT, "/w/a", b"a2", r2, r1, b"a1"),
                WatchEvent(EventType.PUT, "/w/b", b"b1", r3, r3, b""),
                # DELETE carries the value the key held, and its creation revision.
                WatchEvent(EventType.DELETE, "/w/a", b"a2", r4, r1, b"a2"),
            ]

            r5 = await store.update("/w/b", b"b2", r3)
            r6 = await store.delete("/w/b")
            r7 = await store.create("/w/a", b"a3")
            live = await take(it, 3)
            assert live == [
                WatchEvent(EventType.PUT, "/w/b", b"b2", r5, r3, b"b1"),
                WatchEvent(EventType.DELETE, "/w/b", b"b2", r6, r3, b"b2"),
                WatchEvent(EventType.PUT, "/w/a", b"a3", r7, r7, b""),
            ]

        # Starting at a revision means "everything after it".
        async with watching(store, "/w/", r2) as it:
            assert [e.revision for e in await take(it, 5)] == [r3, r4, r5, r6, r7]

        # Starting at the current revision: only what happens next.
        async with watching(store, "/w/", r7) as it:
            nxt = asyncio.ensure_future(take(it, 1))
            await asyncio.sleep(0.2)
            r8 = await store.update("/w/a", b"a4", r7)
            assert [e.revision for e in await nxt] == [r8]


async def test_watch_of_prefix_filters_other_keys(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        start = await store.current_revision()
        async with watching(store, "/w/", start) as it:
            for key in ["/x/1", "/w", "/wx/1", "/w0", "/v/w/1"]:
                await store.create(key, b"other")
            rev = await store.create("/w/1", b"mine")
            await store.create("/wz", b"other")
            rev2 = await store.create("/w/2", b"mine")
            events = await take(it, 2)
            assert [(e.key, e.revision) for e in events] == [("/w/1", rev), ("/w/2", rev2)]


async def test_concurrent_watchers_see_the_same_order(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        start = await store.current_revision()
        writers, per_writer = 5, 8

        async def writer(i: int) -> None:
            key = f"/cw/{i}"
            rev = await store.create(key, b"0")
            for n in range(1, per_writer):
                rev = await store.update(key, str(n).encode(), rev)
            await store.delete(key, rev)

        total = writers * (per_writer + 1)
        async with watching(store, "/cw/", start) as w1, watching(store, "/cw/", start) as w2:
            # One watcher is following before the writes, the other catches up after.
            first = asyncio.ensure_future(take(w1, total))
            await asyncio.sleep(0.1)
            await asyncio.gather(*(writer(i) for i in range(writers)))
            seen1 = await first
            seen2 = await take(w2, total)

        assert seen1 == seen2
        revs = [e.revision for e in seen1]
        assert revs == sorted(set(revs))
        for i in range(writers):
            mine = [e for e in seen1 if e.key == f"/cw/{i}"]
            assert [e.value for e in mine] == [str(n).encode() for n in range(per_writer)] + [
                str(per_writer - 1).encode()
            ]
            assert mine[-1].type is EventType.DELETE


# -- compaction ------------------------------------------------------------------


async def test_watch_from_compacted_revision_raises(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        before = await store.current_revision()
        r1 = await store.create("/c/a", b"1")
        r2 = await store.update("/c/a", b"2", r1)
        r3 = await store.create("/c/b", b"1")
        await store.compact(r2)

        async with watching(store, "/c/", before) as it:
            with pytest.raises(CompactedError) as info:
                await take(it, 1)
        assert info.value.requested == before
        assert info.value.compacted == r2

        async with watching(store, "/c/", r1) as it:
            with pytest.raises(CompactedError):
                await take(it, 1)

        # The compaction revision itself is still a valid starting point.
        async with watching(store, "/c/", r2) as it:
            (event,) = await take(it, 1)
            assert (event.key, event.revision, event.value) == ("/c/b", r3, b"1")


async def test_compaction_keeps_current_values(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        a1 = await store.create("/keep/a", b"a1")
        a2 = await store.update("/keep/a", b"a2", a1)
        b1 = await store.create("/keep/b", b"b1")
        c1 = await store.create("/keep/c", b"c1")
        gone = await store.delete("/keep/c", c1)
        await store.compact(gone)
        await store.compact(gone)  # compacting again is harmless

        result = await store.range("/keep/")
        assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision) for kv in result.kvs] == [
            ("/keep/a", b"a2", a1, a2),
            ("/keep/b", b"b1", b1, b1),
        ]
        assert await store.get("/keep/c") is None
        # CAS with revisions read before the compaction still works.
        a3 = await store.update("/keep/a", b"a3", a2)
        with pytest.raises(RevisionConflictError):
            await store.update("/keep/b", b"b2", a1)
        async with watching(store, "/keep/", gone) as it:
            (event,) = await take(it, 1)
            assert (event.revision, event.prev_value) == (a3, b"a2")


# -- concurrency -----------------------------------------------------------------


async def test_concurrent_cas_exactly_one_winner_per_round(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        tasks, rounds = 20, 10
        await store.create("/cas", b"start")
        read_all = asyncio.Barrier(tasks)
        written_all = asyncio.Barrier(tasks)
        outcomes: list[list[tuple[int, int | RevisionConflictError]]] = [[] for _ in range(rounds)]

        async def contender(i: int) -> None:
            for r in range(rounds):
                kv = await store.get("/cas")
                assert kv is not None
                await read_all.wait()  # everybody holds the same revision
                try:
                    outcomes[r].append(
                        (i, await store.update("/cas", f"{r}:{i}".encode(), kv.mod_revision))
                    )
                except RevisionConflictError as e:
                    outcomes[r].append((i, e))
                await written_all.wait()

        await asyncio.gather(*(contender(i) for i in range(tasks)))

        for r, results in enumerate(outcomes):
            winners = [(i, rev) for i, rev in results if isinstance(rev, int)]
            losers = [e for _, e in results if isinstance(e, RevisionConflictError)]
            assert len(winners) == 1, f"round {r}: {len(winners)} winners"
            assert len(losers) == tasks - 1
            assert all(e.actual == winners[0][1] for e in losers)
        kv = await store.get("/cas")
        assert kv is not None
        last_winner = next(i for i, rev in outcomes[-1] if isinstance(rev, int))
        assert kv.value == f"{rounds - 1}:{last_winner}".encode()


async def test_concurrent_read_modify_write_loses_no_update(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        tasks, increments = 20, 5
        await store.create("/counter", b"0")

        async def incrementer() -> int:
            conflicts = 0
            for _ in range(increments):
                while True:
                    kv = await store.get("/counter")
                    assert kv is not None
                    try:
                        await store.update(
                            "/counter", str(int(kv.value) + 1).encode(), kv.mod_revision
                        )
                        break
                    except RevisionConflictError:
                        conflicts += 1
            return conflicts

        await asyncio.gather(*(incrementer() for _ in range(tasks)))
        kv = await store.get("/counter")
        assert kv is not None and int(kv.value) == tasks * increments


# -- size ------------------------------------------------------------------------


async def test_large_values_round_trip(store: Store) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        big1 = os.urandom(MIB + MIB // 2)
        big2 = os.urandom(MIB + MIB // 2)
        start = await store.current_revision()
        rev = await store.create("/big/a", big1)
        kv = await store.get("/big/a")
        assert kv is not None and kv.value == big1
        rev2 = await store.update("/big/a", big2, rev)
        await store.create("/big/b", big1)
        result = await store.range("/big/")
        assert [kv.value for kv in result.kvs] == [big2, big1]
        async with watching(store, "/big/", start) as it:
            events = await take(it, 3)
        assert events[1].revision == rev2
        assert (events[1].value, events[1].prev_value) == (big2, big1)


# -- etcd only -------------------------------------------------------------------


async def _watcher_count(etcd: EtcdProcess) -> float:
    return await asyncio.to_thread(etcd.metric, "etcd_debugging_mvcc_watcher_total")


async def _wait_watchers(etcd: EtcdProcess, expected: float) -> None:
    seen = None
    for _ in range(int(EVENT_TIMEOUT / 0.05)):
        seen = await _watcher_count(etcd)
        if seen == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"etcd has {seen} watchers, expected {expected}")


async def test_etcd_abandoned_watches_are_released(
    etcd_server: EtcdProcess, etcd_store: EtcdStore
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        baseline = await _watcher_count(etcd_server)
        start = await etcd_store.current_revision()
        await etcd_store.create("/r/a", b"1")

        # 1. The caller stops iterating and closes the iterator.
        async with watching(etcd_store, "/r/", start) as it:
            await take(it, 1)
            await _wait_watchers(etcd_server, baseline + 1)
        await _wait_watchers(etcd_server, baseline)

        # 2. The task iterating is cancelled (e.g. the client went away).
        got_one = asyncio.Event()

        async def follow() -> None:
            async for _ in etcd_store.watch("/r/", start):
                got_one.set()

        task = asyncio.create_task(follow())
        await got_one.wait()
        await _wait_watchers(etcd_server, baseline + 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _wait_watchers(etcd_server, baseline)

        # 3. The caller breaks out of `async for` without closing: released on GC.
        async def first_only() -> None:
            async for _ in etcd_store.watch("/r/", start):
                break

        await first_only()
        await _wait_watchers(etcd_server, baseline)

        # 4. Cancelled while the watch is still being created.
        async def first_event() -> WatchEvent:
            return await anext(etcd_store.watch("/r/", start))

        for spins in range(6):
            abandoned = asyncio.create_task(first_event())
            for _ in range(spins):
                await asyncio.sleep(0)
            abandoned.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await abandoned
        await _wait_watchers(etcd_server, baseline)
        # ...and the next watch on the client gets its own events, not those
        # meant for an abandoned one (which would start with "/r/a").
        await etcd_store.create("/s/b", b"2")
        async with watching(etcd_store, "/s/", start) as it:
            (event,) = await take(it, 1)
            assert event.key == "/s/b"


async def test_etcd_stores_with_different_prefixes_are_isolated(etcd_server: EtcdProcess) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        one = await EtcdStore.open([etcd_server.endpoint], prefix="/iso-1/")
        ten = await EtcdStore.open([etcd_server.endpoint], prefix="/iso-10/")
        try:
            start = await one.current_revision()
            await one.create("/k", b"one")
            await ten.create("/k", b"ten")
            kv = await one.get("/k")
            assert kv is not None and kv.value == b"one"
            assert [(kv.key, kv.value) for kv in (await ten.range("")).kvs] == [("/k", b"ten")]
            assert [(kv.key, kv.value) for kv in (await one.range("")).kvs] == [("/k", b"one")]
            async with watching(one, "", start) as it:
                events = await take(it, 1)
                await one.delete("/k")
                events += await take(it, 1)
            assert summary(events) == [("PUT", "/k", b"one"), ("DELETE", "/k", b"one")]
            await ten.delete("/k")
        finally:
            await one.close()
            await ten.close()
        with pytest.raises(ValueError):
            await EtcdStore.open([etcd_server.endpoint], prefix="/no-trailing-slash")


async def test_etcd_close_ends_watches_with_an_error(etcd_server: EtcdProcess) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        store = await EtcdStore.open([etcd_server.endpoint], prefix="/close-test/")
        start = await store.current_revision()
        await store.create("/k", b"v")
        it = store.watch("/", start)
        await take(it, 1)
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.1)
        await store.close()
        with pytest.raises(StoreError):
            async with asyncio.timeout(EVENT_TIMEOUT):
                await pending
        with pytest.raises(StoreError):
            await store.get("/k")


async def test_etcd_unreachable_fails_fast() -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(EtcdUnavailableError):
            await EtcdStore.open([f"127.0.0.1:{port}"], request_timeout=5)


async def test_etcd_over_mutual_tls(tmp_path: Path) -> None:
    pki = await asyncio.to_thread(make_test_pki, tmp_path / "pki")
    async with (
        asyncio.timeout(TEST_TIMEOUT),
        EtcdProcess(
            ca_file=pki.ca_file, cert_file=pki.server_cert_file, key_file=pki.server_key_file
        ) as etcd,
    ):
        store = await EtcdStore.open(
            [f"https://{etcd.endpoint}"],
            prefix="/tls/",
            ca_file=pki.ca_file,
            cert_file=pki.client_cert_file,
            key_file=pki.client_key_file,
        )
        try:
            start = await store.current_revision()
            rev = await store.create("/k", b"secret")
            async with watching(store, "/", start) as it:
                (event,) = await take(it, 1)
            assert (event.key, event.value, event.revision) == ("/k", b"secret", rev)
        finally:
            await store.close()

        # Without a client certificate etcd refuses the connection.
        with pytest.raises(EtcdUnavailableError):
            await EtcdStore.open([etcd.endpoint], ca_file=pki.ca_file, request_timeout=5)
        # Without TLS at all, too.
        with pytest.raises(EtcdUnavailableError):
            await EtcdStore.open([etcd.endpoint], request_timeout=5)


async def test_etcd_restart_breaks_watches_loudly_and_the_store_recovers() -> None:
    async with asyncio.timeout(TEST_TIMEOUT), EtcdProcess() as etcd:
        store = await EtcdStore.open([etcd.endpoint], prefix="/restart/", request_timeout=5)
        try:
            start = await store.current_revision()
            r1 = await store.create("/k", b"1")
            it = store.watch("/", start)
            (event,) = await take(it, 1)
            pending = asyncio.ensure_future(anext(it))
            await asyncio.sleep(0.1)

            await etcd.arestart()
            with pytest.raises(EtcdUnavailableError):
                async with asyncio.timeout(EVENT_TIMEOUT):
                    await pending

            # The channel reconnects by itself; a new watch resumes without gaps.
            r2 = 0
            for _ in range(50):
                try:
                    r2 = await store.update("/k", b"2", r1)
                    break
                except EtcdUnavailableError:
                    await asyncio.sleep(0.1)
            assert r2 > r1
            async with watching(store, "/", event.revision) as it2:
                (again,) = await take(it2, 1)
            assert (again.revision, again.value, again.prev_value) == (r2, b"2", b"1")
        finally:
            await store.close()


async def test_etcd_watch_delivers_every_event_of_a_foreign_transaction(
    etcd_server: EtcdProcess,
) -> None:
    """Another etcd client may change several keys in one revision; none is lost."""
    import aetcd

    async with asyncio.timeout(TEST_TIMEOUT):
        store = await EtcdStore.open([etcd_server.endpoint], prefix="/multi/")
        host, port = etcd_server.endpoint.split(":")
        raw = aetcd.Client(host=host, port=int(port), timeout=5)
        try:
            start = await store.current_revision()
            async with watching(store, "/", start) as it:
                ok, _ = await raw.transaction(
                    compare=[],
                    success=[
                        raw.transactions.put(b"/multi//a", b"1"),
                        raw.transactions.put(b"/multi//b", b"2"),
                    ],
                    failure=[],
                )
                assert ok
                await store.create("/c", b"3")
                events = await take(it, 3)
            assert summary(events) == [
                ("PUT", "/a", b"1"),
                ("PUT", "/b", b"2"),
                ("PUT", "/c", b"3"),
            ]
            assert events[0].revision == events[1].revision < events[2].revision
        finally:
            await raw.close()
            await store.close()
