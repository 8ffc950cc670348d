"""How the SQLite writer hands a committed batch to the event loop: watchers
first, then the callers, so a write that is acknowledged has already reached
every watch; and a failed batch fails every caller in it, writing nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest

from orchestrator.store.base import StoreError, WatchEvent
from orchestrator.store.sqlite import SqliteStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_an_acknowledged_write_has_already_reached_the_watchers(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    seen: list[WatchEvent] = []
    primed = asyncio.Event()

    async def follow() -> None:
        async for ev in store.watch("/k/", 0):
            seen.append(ev)
            primed.set()

    watcher = asyncio.create_task(follow())
    try:
        await store.create("/k/first", b"v")
        await asyncio.wait_for(primed.wait(), 5)

        # Many writers at once, so batches hold several writes each.
        async def write(i: int) -> None:
            rev = await store.create(f"/k/{i}", b"v")
            assert rev in {ev.revision for ev in seen}, f"write {i} acknowledged before watched"

        await asyncio.gather(*(write(i) for i in range(300)))
        assert len(seen) == 301
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await store.close()


async def test_a_failed_batch_fails_every_caller_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        before = await store.current_revision()
        real = store._apply_batch

        def failing(conn: sqlite3.Connection, batch: list[Any]) -> None:
            # The database fails while applying: the batch's transaction is rolled back.
            class Broken:
                def execute(self, sql: str, *args: object) -> object:
                    if sql.startswith("INSERT INTO log"):
                        raise sqlite3.OperationalError("disk I/O error")
                    return conn.execute(sql, *args)

            real(cast(sqlite3.Connection, Broken()), batch)

        monkeypatch.setattr(store, "_apply_batch", failing)
        results = await asyncio.gather(
            *(store.create(f"/k/{i}", b"v") for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, StoreError) and "disk I/O error" in str(r) for r in results)
        monkeypatch.setattr(store, "_apply_batch", real)
        assert await store.current_revision() == before
        assert (await store.range("/k/")).kvs == []
        assert await store.create("/k/after", b"v") == before + 1
    finally:
        await store.close()
