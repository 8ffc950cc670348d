"""A work queue as in client-go: keys, not events.

A key is queued at most once however often it is added; a key being
processed is never handed to a second worker (adding it again marks it to
run once more afterwards); failures are retried with per-key exponential
back-off, and a token bucket limits the overall retry rate.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class WorkQueue:
    def __init__(
        self,
        *,
        base_delay: float = 0.005,
        max_delay: float = 300.0,
        rate: float = 10.0,
        burst: int = 100,
    ) -> None:
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._delayed: dict[str, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Condition()
        self._base = base_delay
        self._max = max_delay
        self._rate = rate
        self._tokens = float(burst)
        self._burst = burst
        self._last = time.monotonic()
        self._shutdown = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._wakeup:
            self._wakeup.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        existing = self._delayed.get(key)
        loop = asyncio.get_running_loop()
        if existing is not None:
            if existing.when() <= loop.time() + delay:
                return  # an earlier wake-up is already scheduled
            existing.cancel()
        self._delayed[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> None:
        """Retry later: per-key exponential back-off, overall token bucket."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        per_key = min(self._base * (2**failures), self._max)
        self.add_after(key, max(per_key, self._bucket_delay()))

    def _bucket_delay(self) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def forget(self, key: str) -> None:
        """The key succeeded: reset its back-off."""
        self._failures.pop(key, None)

    def retries(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str | None:
        """The next key to process, or None once shut down."""
        async with self._wakeup:
            await self._wakeup.wait_for(lambda: bool(self._queue) or self._shutdown)
            if self._shutdown:
                return None
            key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            asyncio.get_running_loop().create_task(self._notify())

    async def shutdown(self) -> None:
        self._shutdown = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        async with self._wakeup:
            self._wakeup.notify_all()
