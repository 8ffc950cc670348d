"""ResourceQuota admission: refuse a write that would take a namespace over a quota.

Usage is computed from the watch cache, not read from the quotas' status
(the controller's status lags behind writes). The arithmetic is
`orchestrator.api.quota`; this module only gathers the objects and raises.

Concurrency: two creates that each fit alone can together exceed a quota if
both are checked before either is written. Kubernetes serialises them with
a compare-and-swap on the quota's status. Here `serialized` is a lock per
namespace, held by the apiserver from the check until the write is in its
cache. It covers one apiserver process only: apiservers sharing an etcd can
still race past a quota together (by at most one object each per race), and
the controller's recount then reports the overshoot in status.used.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from orchestrator.api import quota as q
from orchestrator.api.kinds import kind_info
from orchestrator.api.meta import meta
from orchestrator.apiserver.cache import Filter
from orchestrator.apiserver.errors import Forbidden

if TYPE_CHECKING:
    from orchestrator.apiserver.cache import WatchCache

_QUOTA = kind_info("ResourceQuota")
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def _quotas(cache: WatchCache, namespace: str) -> list[Any]:
    return [c.decode() for c in cache.list(_QUOTA, Filter(namespace=namespace))]


def _objects(cache: WatchCache, namespace: str, kinds: set[str]) -> list[Any]:
    out: list[Any] = []
    for kind in sorted(kinds):
        out.extend(c.decode() for c in cache.list(kind_info(kind), Filter(namespace=namespace)))
    return out


def _forbidden(obj: Any, reason: str) -> Forbidden:
    info = kind_info(obj.kind)
    return Forbidden(f'{info.resource} "{obj.metadata.name}" is forbidden: {reason}')


def check_quota(obj: Message, cache: WatchCache, old: Message | None = None) -> None:
    """Raise Forbidden if writing obj (replacing old, on update) would exceed
    a quota of its namespace, or if a pod leaves out a resource a quota tracks."""
    o: Any = obj
    namespace = meta(obj).namespace
    if not namespace or not kind_info(o.kind).namespaced:
        return
    quotas = sorted(
        (rq for rq in _quotas(cache, namespace) if q.quota_covers(rq, obj)),
        key=lambda rq: rq.metadata.name,
    )
    if not quotas:
        return
    if o.kind == "Pod":
        for rq in quotas:
            missing = q.missing_declarations(obj, rq.spec.hard)
            if missing:
                raise _forbidden(
                    obj, f"failed quota: {rq.metadata.name}: {q.missing_message(missing)}"
                )
    requested = q.charge(q.object_usage(obj), q.object_usage(old) if old is not None else None)
    for rq in quotas:
        hard = q.resource_list(rq.spec.hard)
        charged = q.mask(requested, hard)
        if not charged:
            continue
        # On update the stored object is among these, as it was: the charge
        # is only what the update adds to it.
        used = q.namespace_usage(rq, _objects(cache, namespace, q.charged_kinds(charged)))
        reason = q.exceeded(rq.metadata.name, hard, used, charged)
        if reason is not None:
            raise _forbidden(obj, reason)


@contextlib.asynccontextmanager
async def serialized(obj: Message, cache: WatchCache) -> AsyncIterator[None]:
    """Hold the namespace's quota lock, if it has quotas, around check and write.

    The caller must keep it until the write is visible in the cache, so the
    next check counts the object."""
    namespace = meta(obj).namespace
    if not namespace or not cache.list(_QUOTA, Filter(namespace=namespace)):
        yield
        return
    lock = _locks.get(namespace)
    if lock is None:
        lock = _locks[namespace] = asyncio.Lock()
    async with lock:
        yield
