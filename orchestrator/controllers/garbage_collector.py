"""Garbage collection by ownerReferences, and namespace deletion.

- A dependent whose owners are all gone is deleted (background cascade).
- An owner being deleted with the `orphan` finalizer has its dependents'
  ownerReferences to it removed, then the finalizer.
- An owner being deleted with `foregroundDeletion` has its dependents
  deleted first; the finalizer goes once none remains.
- A namespace being deleted is emptied, then its `kubernetes` finalizer goes.

Before deleting a dependent for a missing owner, the owner is looked up live
(not in a cache that may lag), as Kubernetes' collector does.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.api.kinds import all_kinds
from orchestrator.api.meta import copy_of, meta
from orchestrator.client.client import Client, NotFoundError
from orchestrator.client.informer import Informer, cache_key
from orchestrator.controllers.base import Controller

log = logging.getLogger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
NAMESPACE_FINALIZER = "kubernetes"
# Kinds that never own anything and change constantly: not worth watching here.
_SKIP = {"Event", "Lease"}


class GarbageCollector(Controller):
    name = "garbage-collector"
    workers = 2

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.by_kind: dict[str, Informer] = {}
        self.uids: dict[str, tuple[str, str]] = {}

    def setup(self) -> None:
        for info in all_kinds():
            if info.kind in _SKIP:
                continue
            inf = self.informer(info.kind)
            inf.add_handler(self._handler(info.kind))
            self.by_kind[info.kind] = inf

    def _handler(self, kind: str) -> Any:
        def handle(type_: str, obj: Any, old: Any) -> None:
            m = meta(obj)
            if type_ == "DELETED":
                self.uids.pop(m.uid, None)
                # Dependents of a vanished owner need a look.
                for dep_kind, dep_key in self._dependents_of(m.uid):
                    self.queue.add(f"{dep_kind}|{dep_key}")
                return
            self.uids[m.uid] = (kind, cache_key(obj))
            if m.owner_references or m.deletion_timestamp:
                self.queue.add(f"{kind}|{cache_key(obj)}")

        return handle

    def _dependents_of(self, uid: str) -> list[tuple[str, str]]:
        found = []
        for kind, inf in self.by_kind.items():
            for obj in inf.list():
                if any(ref.uid == uid for ref in meta(obj).owner_references):
                    found.append((kind, cache_key(obj)))
        return found

    async def sync(self, key: str) -> None:
        kind, _, obj_key = key.partition("|")
        obj = self.by_kind[kind].get(obj_key)
        if obj is None:
            return
        m = meta(obj)
        if m.deletion_timestamp:
            if kind == "Namespace" and NAMESPACE_FINALIZER in obj.spec.finalizers:
                await self._empty_namespace(obj)
            if ORPHAN in m.finalizers:
                await self._orphan_dependents(obj)
            if FOREGROUND in m.finalizers:
                await self._delete_dependents_first(kind, obj)
            return
        if m.owner_references:
            await self._collect_if_orphaned(kind, obj)

    async def _collect_if_orphaned(self, kind: str, obj: Any) -> None:
        # Decide on the live object, not the cache: an orphaning owner may have
        # just removed its reference, and the cache may not show that yet.
        try:
            obj = await self.client.get(kind, meta(obj).name, meta(obj).namespace or None)
        except NotFoundError:
            return
        m = meta(obj)
        if not m.owner_references:
            return
        for ref in m.owner_references:
            if ref.uid in self.uids:
                return
            try:
                owner = await self.client.get(ref.kind, ref.name, m.namespace)
                if meta(owner).uid == ref.uid:
                    return
            except NotFoundError:
                pass
            except LookupError:
                log.warning("%s %s has an owner of unknown kind %s", kind, m.name, ref.kind)
                return
        log.info("deleting %s %s/%s: its owners are gone", kind, m.namespace, m.name)
        try:
            await self.client.delete(
                kind, m.name, m.namespace or None, precondition_uid=m.uid, propagation="Background"
            )
        except NotFoundError:
            pass

    async def _orphan_dependents(self, owner: Any) -> None:
        om = meta(owner)
        for dep_kind, dep_key in self._dependents_of(om.uid):
            dep = self.by_kind[dep_kind].get(dep_key)
            if dep is None:
                continue
            fresh = copy_of(dep)
            refs = [r for r in meta(fresh).owner_references if r.uid != om.uid]
            del meta(fresh).owner_references[:]
            meta(fresh).owner_references.extend(refs)
            try:
                await self.client.update(fresh)
            except NotFoundError:
                pass
        await self._remove_finalizer(owner, ORPHAN)

    async def _delete_dependents_first(self, kind: str, owner: Any) -> None:
        om = meta(owner)
        dependents = self._dependents_of(om.uid)
        for dep_kind, dep_key in dependents:
            dep = self.by_kind[dep_kind].get(dep_key)
            if dep is None or meta(dep).deletion_timestamp:
                continue
            try:
                await self.client.delete(
                    dep_kind, meta(dep).name, meta(dep).namespace or None, propagation="Foreground"
                )
            except NotFoundError:
                pass
        if dependents:
            self.queue.add_after(f"{kind}|{cache_key(owner)}", 1.0)
            return
        await self._remove_finalizer(owner, FOREGROUND)

    async def _remove_finalizer(self, obj: Any, finalizer: str) -> None:
        fresh = copy_of(obj)
        kept = [f for f in meta(fresh).finalizers if f != finalizer]
        del meta(fresh).finalizers[:]
        meta(fresh).finalizers.extend(kept)
        try:
            await self.client.update(fresh)
        except NotFoundError:
            pass

    async def _empty_namespace(self, ns: Any) -> None:
        name = meta(ns).name
        remaining = 0
        for info in all_kinds():
            if not info.namespaced:
                continue
            listed = await self.client.list(info.kind, name)
            for obj in listed.items:
                remaining += 1
                if meta(obj).deletion_timestamp:
                    continue
                try:
                    await self.client.delete(info.kind, meta(obj).name, name)
                except NotFoundError:
                    pass
        if remaining:
            self.queue.add_after(f"Namespace|{name}", 1.0)
            return
        fresh = copy_of(ns)
        kept = [f for f in fresh.spec.finalizers if f != NAMESPACE_FINALIZER]
        del fresh.spec.finalizers[:]
        fresh.spec.finalizers.extend(kept)
        try:
            await self.client.update(fresh)
        except NotFoundError:
            pass
        log.info("namespace %s emptied and deleted", name)
