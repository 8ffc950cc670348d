"""The shape every controller shares: informers enqueue keys, workers sync them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from orchestrator.client.client import Client, ConflictError
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import Informer, cache_key
from orchestrator.client.workqueue import WorkQueue

log = logging.getLogger(__name__)


class Controller:
    """Subclasses set `name`, create informers in `setup`, and implement `sync`."""

    name = "controller"
    workers = 2
    # Controllers that report Events set one; it starts and stops with them.
    recorder: EventRecorder | None = None

    def __init__(self, client: Client) -> None:
        self.client = client
        self.queue = WorkQueue()
        self.informers: list[Informer] = []
        self._tasks: list[asyncio.Task[None]] = []

    def informer(self, kind: str, **kwargs: Any) -> Informer:
        inf = Informer(self.client, kind, **kwargs)
        self.informers.append(inf)
        return inf

    def enqueue(self, obj: Any) -> None:
        self.queue.add(cache_key(obj))

    def setup(self) -> None:
        raise NotImplementedError

    async def sync(self, key: str) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        self.setup()
        for inf in self.informers:
            inf.start()
        # Workers start only once every cache is complete: deciding on a partial
        # view would delete or create the wrong things.
        await asyncio.gather(*(inf.synced.wait() for inf in self.informers))
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"{self.name}-{i}"))

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self.sync(key)
                self.queue.forget(key)
            except ConflictError:
                self.queue.add_rate_limited(key)  # stale cache: normal, retry quietly
            except Exception:
                log.exception("%s: syncing %s failed; will retry", self.name, key)
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def stop(self) -> None:
        await self.queue.shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for inf in self.informers:
            await inf.stop()
        if self.recorder is not None:
            await self.recorder.stop()
