"""WatchCache.wait_for: read-your-writes waiters, released as the cache advances."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.apiserver.cache import WatchCache

pytestmark = pytest.mark.unit


def cache_at(revision: int) -> WatchCache:
    # The waiters never touch the store: advancing is what releases them.
    store: Any = None
    cache = WatchCache(store)
    cache.revision = revision
    return cache


async def test_a_reached_revision_returns_at_once() -> None:
    cache = cache_at(7)
    await asyncio.wait_for(cache.wait_for(7), 0.5)
    await asyncio.wait_for(cache.wait_for(3), 0.5)


async def test_waiters_are_released_when_their_revision_arrives_and_not_before() -> None:
    cache = cache_at(1)
    done: list[int] = []

    async def wait(rev: int) -> None:
        await cache.wait_for(rev)
        done.append(rev)

    tasks = [asyncio.create_task(wait(rev)) for rev in (5, 3, 4, 3)]
    await asyncio.sleep(0)
    cache._advance(2)
    await asyncio.sleep(0)
    assert done == []
    cache._advance(4)
    await asyncio.sleep(0)
    assert sorted(done) == [3, 3, 4]
    cache._advance(9)
    await asyncio.gather(*tasks)
    assert sorted(done) == [3, 3, 4, 5]
    assert cache._waiters == []


async def test_a_waiter_times_out_and_a_later_advance_skips_it() -> None:
    cache = cache_at(1)
    with pytest.raises(TimeoutError):
        await cache.wait_for(10, timeout=0.05)
    other = asyncio.create_task(cache.wait_for(10))
    await asyncio.sleep(0)
    cache._advance(10)
    await asyncio.wait_for(other, 0.5)
    assert cache._waiters == []


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    cache = cache_at(1)
    gone = asyncio.create_task(cache.wait_for(5))
    kept = asyncio.create_task(cache.wait_for(5))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    cache._advance(5)
    await asyncio.wait_for(kept, 0.5)
    assert gone.cancelled()


async def test_waiters_that_gave_up_do_not_pile_up_while_the_cache_stalls() -> None:
    cache = cache_at(1)
    for _ in range(500):
        with pytest.raises(TimeoutError):
            await cache.wait_for(100, timeout=0)
    assert len(cache._waiters) <= 130  # pruned as they go, not kept until revision 100
    live = asyncio.create_task(cache.wait_for(100))
    await asyncio.sleep(0)
    cache._advance(100)
    await asyncio.wait_for(live, 0.5)
    assert cache._waiters == []
