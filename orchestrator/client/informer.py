"""Informers: list + watch into a local cache, with event handlers.

As client-go: list, then watch from the list's resourceVersion; when the
stream ends, watch again from the last version seen; when that version is
too old, list again and report the differences. Handlers only ever get
copies' references to cached objects: never mutate them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from orchestrator.api.meta import meta
from orchestrator.client.client import ApiError, Client, GoneError

log = logging.getLogger(__name__)

Handler = Callable[[str, Any, Any], None]  # (event type, object, old object or None)


def cache_key(obj: Any) -> str:
    m = meta(obj)
    return f"{m.namespace}/{m.name}" if m.namespace else m.name


class Informer:
    def __init__(
        self,
        client: Client,
        kind: str,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
    ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._items: dict[str, Any] = {}
        self._handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.resource_version = ""

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, key: str) -> Any | None:
        return self._items.get(key)

    def list(self) -> list[Any]:
        return list(self._items.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _emit(self, type_: str, obj: Any, old: Any) -> None:
        for handler in self._handlers:
            try:
                handler(type_, obj, old)
            except Exception:
                log.exception("%s informer handler failed", self.kind)

    async def _list(self) -> None:
        listed = await self.client.list(
            self.kind,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            all_namespaces=not self.namespace,
        )
        fresh = {cache_key(o): o for o in listed.items}
        old = self._items
        self._items = fresh
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj, None)
            elif meta(before).resource_version != meta(obj).resource_version:
                self._emit("MODIFIED", obj, before)
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj, None)
        self.resource_version = listed.resource_version

    async def _run(self) -> None:
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    self.synced.set()
                    need_list = False
                async for ev in self.client.watch(
                    self.kind,
                    self.namespace,
                    resource_version=self.resource_version,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    all_namespaces=not self.namespace,
                    allow_bookmarks=True,
                ):
                    backoff = 0.2
                    self.resource_version = ev.resource_version or self.resource_version
                    if ev.object is None:
                        continue  # bookmark
                    key = cache_key(ev.object)
                    old = self._items.get(key)
                    if ev.type == "DELETED":
                        self._items.pop(key, None)
                        self._emit("DELETED", ev.object, old)
                    else:
                        self._items[key] = ev.object
                        self._emit("ADDED" if old is None else "MODIFIED", ev.object, old)
            except asyncio.CancelledError:
                raise
            except GoneError:
                need_list = True
                continue
            except ApiError as exc:
                log.warning("%s informer: %s; retrying in %.1fs", self.kind, exc.message, backoff)
            except Exception:
                log.exception("%s informer failed; retrying in %.1fs", self.kind, backoff)
            await asyncio.sleep(backoff * (1 + random.random() / 2))
            backoff = min(backoff * 2, 10.0)
