"""ResourceQuota status: what each quota allows (status.hard) and what its
namespace uses of it (status.used), as Kubernetes' resourcequota controller.

A quota is recounted from the informers' caches when it changes, when an
object it may count changes what it charges (a pod created, finished,
deleted), and every 30 seconds whatever happens. Kinds counted only through
`count/<resource>` (deployments, jobs, ...) are listed from the apiserver at
each recount, so the periodic recount keeps them current. Admission does not
read status.used (it counts from the apiserver's cache itself): this status
is for people and tools (`orchctl describe quota`).
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.api import quota as q
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, NotFoundError
from orchestrator.controllers.base import Controller

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
# Kinds followed by informers: they charge more than an object count, or
# (pods) change what they charge over their life.
WATCHED = ("Pod", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim", "ResourceQuota")


def desired_status(quota: Any, objects: list[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(status.hard, status.used) for a quota over its namespace's objects."""
    return dict(quota.spec.hard), q.status_strings(q.namespace_usage(quota, objects))


def charge_changed(obj: Any, old: Any) -> bool:
    """Whether an update can change any quota's count: what the object
    charges, or (pods) the spec that quota scopes look at."""
    if q.object_usage(obj) != q.object_usage(old):
        return True
    return bool(obj.kind == "Pod" and obj.spec != old.spec)


class ResourceQuotaController(Controller):
    name = "resourcequota"
    workers = 2

    def __init__(self, client: Client, *, resync: float = RESYNC_SECONDS) -> None:
        super().__init__(client)
        self.resync = resync

    def setup(self) -> None:
        self.watched = {kind: self.informer(kind) for kind in WATCHED}
        self.quotas = self.watched["ResourceQuota"]
        for inf in self.watched.values():
            inf.add_handler(self._on_object)

    def _on_object(self, type_: str, obj: Any, old: Any) -> None:
        if obj.kind == "ResourceQuota" and type_ == "MODIFIED":
            self.enqueue(obj)  # its own spec (or status, set back if wrong)
            return
        if type_ == "MODIFIED" and old is not None and not charge_changed(obj, old):
            return
        ns = obj.metadata.namespace
        for rq in self.quotas.list():
            if rq.metadata.namespace == ns:
                self.enqueue(rq)

    async def _objects(self, quota: Any) -> list[Any]:
        ns = quota.metadata.namespace
        objects: list[Any] = []
        for kind in sorted(q.charged_kinds(quota.spec.hard)):
            inf = self.watched.get(kind)
            if inf is not None:
                objects.extend(o for o in inf.list() if o.metadata.namespace == ns)
            else:
                objects.extend((await self.client.list(kind, ns)).items)
        return objects

    async def sync(self, key: str) -> None:
        quota = self.quotas.get(key)
        if quota is None:
            return
        hard, used = desired_status(quota, await self._objects(quota))
        self.queue.add_after(key, self.resync)
        if dict(quota.status.hard) == hard and dict(quota.status.used) == used:
            return
        updated = core.ResourceQuota()
        updated.CopyFrom(quota)  # never mutate the cached object
        updated.status.hard.clear()
        updated.status.hard.update(hard)
        updated.status.used.clear()
        updated.status.used.update(used)
        try:
            await self.client.update_status(updated)
        except NotFoundError:
            return  # deleted meanwhile
        log.debug("resourcequota %s: used %s", key, used)
