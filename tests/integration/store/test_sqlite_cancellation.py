"""A caller that gives up on a write (a request deadline, a cancelled task) must
not take the SQLite store's writer thread down with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.store.sqlite import SqliteStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_cancelled_writes_leave_the_store_working(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        for round_ in range(20):
            tasks = [asyncio.create_task(store.create(f"/k/{round_}/{i}", b"v")) for i in range(20)]
            await asyncio.sleep(0)  # let them enqueue
            for task in tasks[::2]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # The writer still answers, and the cancelled writes may or may not have
        # landed (as with etcd), but the others did.
        rev = await asyncio.wait_for(store.create("/after", b"ok"), timeout=5)
        assert rev > 0
        got = await store.range("/k/")
        assert len(got.kvs) >= 200
    finally:
        await store.close()
