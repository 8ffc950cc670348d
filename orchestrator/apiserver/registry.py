"""Generic object storage: the rules every kind shares.

Create, update, delete and apply for any kind: metadata bookkeeping (uid,
resourceVersion, generation, timestamps), defaults and validation through
admission, the status subresource, finalizers and graceful deletion, and
compare-and-swap against the store. Reads come from the watch cache.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from orchestrator.api import codec
from orchestrator.api.codec import DecodeError, FieldError
from orchestrator.api.kinds import KindInfo, kind_info
from orchestrator.api.merge import json_equal, three_way_merge
from orchestrator.api.meta import meta, now_rfc3339
from orchestrator.api.names import dns1123_subdomain
from orchestrator.apiserver import admission
from orchestrator.apiserver.admission.quota import serialized as quota_serialized
from orchestrator.apiserver.allocators import AllocationError, ServiceAllocator
from orchestrator.apiserver.cache import CachedObject, WatchCache
from orchestrator.apiserver.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
)
from orchestrator.store.base import KeyExistsError, KeyNotFoundError, RevisionConflictError, Store

# Kubernetes' own limit on one object in etcd.
MAX_OBJECT_BYTES = 1572864
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Kinds whose status a client may not set on create: controllers own it.
_STATUS_RESET_ON_CREATE = {
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "PersistentVolumeClaim",
    "CertificateSigningRequest",
    "Namespace",
}
_UNCONDITIONAL_RETRIES = 10


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def in_group(self, group: str) -> bool:
        return group in self.groups


def _label(info: KindInfo, namespace: str, name: str) -> str:
    return f'{info.plural} "{name}"' + (f' in namespace "{namespace}"' if namespace else "")


def _spec_bytes(obj: Message) -> bytes:
    """Everything that is neither metadata nor status: what `generation` tracks."""
    clone = type(obj)()
    clone.CopyFrom(obj)
    clone.ClearField("metadata")  # type: ignore[arg-type]
    if clone.DESCRIPTOR.fields_by_name.get("status") is not None:
        clone.ClearField("status")  # type: ignore[arg-type]
    return clone.SerializeToString(deterministic=True)


def _encode(obj: Message) -> bytes:
    """The stored form: the object without its resourceVersion."""
    m = meta(obj)
    rv = m.resource_version
    m.resource_version = ""
    try:
        data = obj.SerializeToString(deterministic=True)
    finally:
        m.resource_version = rv
    if len(data) > MAX_OBJECT_BYTES:
        raise TooLarge(
            f"object is too large: {len(data)} bytes, the limit is {MAX_OBJECT_BYTES} bytes"
        )
    return data


def _random_suffix(n: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Registry:
    def __init__(
        self, store: Store, cache: WatchCache, allocator: ServiceAllocator | None = None
    ) -> None:
        self.store = store
        self.cache = cache
        # Hands out ClusterIPs and NodePorts; without one (seeding a fresh store)
        # Services are written as given.
        self.allocator = allocator

    # -- reads ---------------------------------------------------------------------

    async def consistent(self) -> None:
        """Make the cache at least as new as the store (read-your-writes across
        apiservers on one etcd)."""
        await self.cache.wait_for(await self.store.current_revision())

    def get_cached(self, info: KindInfo, namespace: str, name: str) -> CachedObject:
        obj = self.cache.get(info, namespace, name)
        if obj is None:
            raise NotFound(f"{_label(info, namespace, name)} not found")
        return obj

    async def get(self, info: KindInfo, namespace: str, name: str) -> CachedObject:
        await self.consistent()
        return self.get_cached(info, namespace, name)

    # -- create ----------------------------------------------------------------------

    def _scope(self, info: KindInfo, obj: Message, default_namespace: str = "") -> None:
        m = meta(obj)
        if info.namespaced:
            if not m.namespace:
                m.namespace = default_namespace or "default"
        elif m.namespace:
            m.namespace = ""

    def _check_namespace(self, info: KindInfo, namespace: str) -> None:
        if not info.namespaced:
            return
        ns = self.cache.get(kind_info("Namespace"), "", namespace)
        if ns is None:
            raise NotFound(f'namespace "{namespace}" not found')
        if ns.fields.get("status.phase") == "Terminating":
            raise Forbidden(
                f'unable to create new content in namespace "{namespace}" '
                "because it is being terminated"
            )

    async def create(
        self, obj: Message, user: UserInfo, *, dry_run: bool = False, namespace: str = ""
    ) -> Message:
        info = kind_info(obj.kind)  # type: ignore[attr-defined]
        obj.api_version = info.api_version  # type: ignore[attr-defined]
        self._scope(info, obj, namespace)
        m = meta(obj)
        if not m.name and m.generate_name:
            m.name = m.generate_name + _random_suffix()
        await self.consistent()
        self._check_namespace(info, m.namespace)
        m.uid = str(uuid.uuid4())
        m.resource_version = ""
        m.creation_timestamp = now_rfc3339()
        m.ClearField("deletion_timestamp")
        m.ClearField("deletion_grace_period_seconds")
        m.generation = 1
        if info.kind in _STATUS_RESET_ON_CREATE:
            obj.ClearField("status")  # type: ignore[arg-type]
        admission.prepare_create(obj, user)
        admission.normalize(obj)
        admission.apply_defaults(obj)
        errors = admission.validate(obj, None)
        if errors:
            raise Invalid(_label(info, m.namespace, m.name or "<unnamed>"), errors)
        # Check and write under the namespace's quota lock, held until the cache
        # shows the object, so the next create counts it.
        async with quota_serialized(obj, self.cache):
            await admission.check_quota_and_policy(obj, self.cache)
            data = _encode(obj)  # refuses an object over the size limit, dry run or not
            if dry_run:
                return obj
            claimed = await self._allocate(info, obj, None)
            if claimed:
                data = _encode(obj)
            key = info.key(m.namespace, m.name)
            try:
                rev = await self.store.create(key, data)
            except BaseException as exc:
                await self._release(claimed)
                if isinstance(exc, KeyExistsError):
                    raise AlreadyExists(
                        f"{_label(info, m.namespace, m.name)} already exists"
                    ) from None
                raise
            await self.cache.wait_for(rev)
        m.resource_version = str(rev)
        return obj

    # -- update ----------------------------------------------------------------------

    async def update(
        self, obj: Message, user: UserInfo, *, status: bool = False, dry_run: bool = False
    ) -> Message:
        info = kind_info(obj.kind)  # type: ignore[attr-defined]
        self._scope(info, obj)
        m = meta(obj)
        if not m.name:
            raise Invalid(
                _label(info, m.namespace, "<unnamed>"), [FieldError("metadata.name", "required")]
            )
        await self.consistent()
        unconditional = not m.resource_version
        for _attempt in range(_UNCONDITIONAL_RETRIES):
            current = self.get_cached(info, m.namespace, m.name)
            old = current.decode()
            if not unconditional and m.resource_version != str(current.revision):
                raise Conflict(
                    f"Operation cannot be fulfilled on {_label(info, m.namespace, m.name)}: "
                    "the object has been modified; please apply your changes to the latest "
                    f"version and try again (you sent resourceVersion {m.resource_version}, "
                    f"it is now {current.revision})"
                )
            new = self._merge_update(info, old, obj, status)
            errors = admission.validate(new, old)
            if errors:
                raise Invalid(_label(info, m.namespace, m.name), errors)
            try:
                return await self._write(info, new, old, current.revision, dry_run)
            except Conflict:
                if not unconditional:
                    raise
                await self.consistent()
        raise Conflict(f"{_label(info, m.namespace, m.name)}: too many concurrent updates")

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> Message:
        """The pods/binding subresource: set an unbound pod's spec.nodeName (and
        PodScheduled=True) in one write, without the client sending the whole
        pod or the full update path re-validating it. Conflict when the pod is
        bound already, being deleted or (uid given) no longer the same pod."""
        info = kind_info("Pod")
        label = _label(info, namespace, name)
        problems = dns1123_subdomain(node)
        if problems:
            raise Invalid(label, [FieldError("target.name", f"{node!r}: {p}") for p in problems])
        await self.consistent()
        for _attempt in range(_UNCONDITIONAL_RETRIES):
            current = self.get_cached(info, namespace, name)
            old: Any = current.decode()
            if uid and old.metadata.uid != uid:
                raise Conflict(
                    f"Operation cannot be fulfilled on {label}: the pod was replaced "
                    f"(its uid is {old.metadata.uid}, the binding names {uid})"
                )
            if old.spec.node_name:
                raise Conflict(f'{label} is already assigned to node "{old.spec.node_name}"')
            if old.metadata.deletion_timestamp:
                raise Conflict(f"{label} is being deleted, cannot be assigned to a host")
            new: Any = type(old)()
            new.CopyFrom(old)
            new.spec.node_name = node
            admission.prepare_update(new, old)  # PodScheduled=True
            try:
                return await self._write(info, new, old, current.revision, False)
            except Conflict:
                await self.consistent()  # changed meanwhile: look again
        raise Conflict(f"{label}: too many concurrent updates")

    def _merge_update(self, info: KindInfo, old: Message, obj: Message, status: bool) -> Message:
        new = type(old)()
        if status:
            # Status subresource: everything but status stays as it was.
            new.CopyFrom(old)
            new.ClearField("status")  # type: ignore[arg-type]
            if obj.HasField("status"):  # type: ignore[arg-type]
                new.status.CopyFrom(obj.status)  # type: ignore[attr-defined]
            return new
        new.CopyFrom(obj)
        nm, om = meta(new), meta(old)
        # Identity and lifecycle fields are the server's, not the client's.
        nm.uid = om.uid
        nm.creation_timestamp = om.creation_timestamp
        nm.deletion_timestamp = om.deletion_timestamp
        if om.HasField("deletion_grace_period_seconds"):
            nm.deletion_grace_period_seconds = om.deletion_grace_period_seconds
        else:
            nm.ClearField("deletion_grace_period_seconds")
        nm.generate_name = nm.generate_name or om.generate_name
        nm.generation = om.generation
        if info.has_status and old.DESCRIPTOR.fields_by_name.get("status") is not None:
            new.ClearField("status")  # type: ignore[arg-type]
            if old.HasField("status"):  # type: ignore[arg-type]
                new.status.CopyFrom(old.status)  # type: ignore[attr-defined]
        admission.prepare_update(new, old)
        admission.normalize(new)
        admission.apply_defaults(new)
        if _spec_bytes(new) != _spec_bytes(old):
            nm.generation = om.generation + 1
        return new

    async def _write(
        self, info: KindInfo, new: Message, old: Message, revision: int, dry_run: bool
    ) -> Message:
        m = meta(new)
        m.resource_version = ""
        data = _encode(new)
        if data == _encode(old):
            m.resource_version = str(revision)  # a no-op update writes nothing
            return new
        if dry_run:
            m.resource_version = str(revision)
            return new
        key = info.key(m.namespace, m.name)
        if m.deletion_timestamp and not self._held(info, new):
            try:
                rev = await self.store.delete(key, revision)
            except RevisionConflictError as exc:
                raise self._modified(info, new, exc) from None
            except KeyNotFoundError:
                raise NotFound(f"{_label(info, m.namespace, m.name)} not found") from None
            await self.cache.wait_for(rev)
            m.resource_version = str(rev)
            return new
        claimed = await self._allocate(info, new, old)
        if info.kind == "Service":
            data = _encode(new)
        try:
            rev = await self.store.update(key, data, revision)
        except BaseException as exc:
            await self._release(claimed)
            if isinstance(exc, RevisionConflictError):
                raise self._modified(info, new, exc) from None
            if isinstance(exc, KeyNotFoundError):
                raise NotFound(f"{_label(info, m.namespace, m.name)} not found") from None
            raise
        await self.cache.wait_for(rev)
        m.resource_version = str(rev)
        return new

    @staticmethod
    def _modified(info: KindInfo, obj: Message, exc: RevisionConflictError) -> Conflict:
        m = meta(obj)
        return Conflict(
            f"Operation cannot be fulfilled on {_label(info, m.namespace, m.name)}: "
            f"the object has been modified (expected {exc.expected}, now {exc.actual})"
        )

    async def _allocate(self, info: KindInfo, obj: Message, old: Message | None) -> list[str]:
        """Claim a Service's ClusterIP and NodePorts before it is written."""
        if info.kind != "Service" or self.allocator is None:
            return []
        try:
            return await self.allocator.allocate(obj, old)
        except AllocationError as exc:
            m = meta(obj)
            raise Invalid(_label(info, m.namespace, m.name), [exc.error]) from None

    async def _release(self, claimed: list[str]) -> None:
        if claimed and self.allocator is not None:
            await self.allocator.release(claimed)

    @staticmethod
    def _held(info: KindInfo, obj: Message) -> bool:
        """Whether an object marked for deletion must stay for now: finalizers
        remain, a namespace is not yet emptied, or a pod on a node waits for its
        node agent to confirm it stopped (by deleting with grace 0), as the
        kubelet does."""
        m = meta(obj)
        if m.finalizers:
            return True
        if info.kind == "Namespace":
            return bool(obj.spec.finalizers)  # type: ignore[attr-defined]
        if info.kind != "Pod":
            return False
        return bool(obj.spec.node_name) and (  # type: ignore[attr-defined]
            not m.HasField("deletion_grace_period_seconds") or m.deletion_grace_period_seconds > 0
        )

    # -- delete ----------------------------------------------------------------------

    async def delete(
        self,
        info: KindInfo,
        namespace: str,
        name: str,
        *,
        grace_period: int | None = None,
        propagation: str = "",
        precondition_uid: str = "",
        precondition_rv: str = "",
        dry_run: bool = False,
    ) -> tuple[Message, bool]:
        if propagation not in ("", "Background", "Foreground", "Orphan"):
            raise BadRequest(
                f'propagationPolicy "{propagation}" is invalid: expected Background, '
                "Foreground or Orphan"
            )
        if grace_period is not None and grace_period < 0:
            raise BadRequest("gracePeriodSeconds must be 0 or more")
        if info.kind == "Namespace" and name in PROTECTED_NAMESPACES:
            raise Forbidden(f'namespace "{name}" may not be deleted: the system needs it')
        await self.consistent()
        for _attempt in range(_UNCONDITIONAL_RETRIES):
            current = self.get_cached(info, namespace if info.namespaced else "", name)
            obj = current.decode()
            m = meta(obj)
            if precondition_uid and m.uid != precondition_uid:
                raise Conflict(
                    f"Precondition failed on {_label(info, namespace, name)}: uid is {m.uid}, "
                    f"not {precondition_uid}"
                )
            if precondition_rv and m.resource_version != precondition_rv:
                raise Conflict(
                    f"Precondition failed on {_label(info, namespace, name)}: resourceVersion "
                    f"is {m.resource_version}, not {precondition_rv}"
                )
            old = type(obj)()
            old.CopyFrom(obj)
            finalizers = list(m.finalizers)
            if propagation == "Orphan" and ORPHAN not in finalizers:
                finalizers.append(ORPHAN)
            if propagation == "Foreground" and FOREGROUND not in finalizers:
                finalizers.append(FOREGROUND)
            graceful = self._grace_for(info, obj, grace_period)
            if info.kind == "Namespace":
                if NAMESPACE_FINALIZER not in obj.spec.finalizers:  # type: ignore[attr-defined]
                    obj.spec.finalizers.append(NAMESPACE_FINALIZER)  # type: ignore[attr-defined]
                obj.status.phase = "Terminating"  # type: ignore[attr-defined]
            holds = bool(finalizers) or graceful is not None or info.kind == "Namespace"
            if not holds:
                if dry_run:
                    return obj, True
                try:
                    rev = await self.store.delete(current_key(info, m), current.revision)
                except RevisionConflictError:
                    await self.consistent()
                    continue
                except KeyNotFoundError:
                    raise NotFound(f"{_label(info, namespace, name)} not found") from None
                await self.cache.wait_for(rev)
                return obj, True
            del m.finalizers[:]
            m.finalizers.extend(finalizers)
            if not m.deletion_timestamp:
                m.deletion_timestamp = _after(graceful or 0)
                m.deletion_grace_period_seconds = graceful or 0
            elif graceful is not None and graceful < m.deletion_grace_period_seconds:
                # A shorter grace period may cut a pending one short, never lengthen it.
                m.deletion_timestamp = _after(graceful)
                m.deletion_grace_period_seconds = graceful
            if info.kind == "Pod" and grace_period == 0:
                m.deletion_grace_period_seconds = 0
            try:
                written = await self._write(info, obj, old, current.revision, dry_run)
            except Conflict:
                await self.consistent()
                continue
            gone = self.cache.get(info, m.namespace, name) is None and not dry_run
            return written, gone
        raise Conflict(f"{_label(info, namespace, name)}: too many concurrent updates")

    @staticmethod
    def _grace_for(info: KindInfo, obj: Message, requested: int | None) -> int | None:
        """The grace period a deletion waits for, or None for immediate deletion."""
        if info.kind != "Pod" or not obj.spec.node_name:  # type: ignore[attr-defined]
            return None
        if requested == 0:
            return None
        if requested is not None:
            return requested
        spec = obj.spec  # type: ignore[attr-defined]
        if spec.HasField("termination_grace_period_seconds"):
            return int(spec.termination_grace_period_seconds)
        return 30

    # -- apply -----------------------------------------------------------------------

    async def apply(
        self,
        manifest: dict[str, Any],
        user: UserInfo,
        *,
        default_namespace: str = "",
        dry_run: bool = False,
    ) -> tuple[Message, str]:
        info = codec.manifest_kind(manifest)
        config = json.loads(json.dumps(manifest))  # private deep copy
        meta_dict = config.setdefault("metadata", {})
        if not isinstance(meta_dict, dict):
            raise Invalid(
                codec.describe_document(manifest), [FieldError("metadata", "expected an object")]
            )
        annotations = meta_dict.get("annotations") or {}
        annotations.pop(LAST_APPLIED, None)
        if annotations:
            meta_dict["annotations"] = annotations
        else:
            meta_dict.pop("annotations", None)
        name = meta_dict.get("name")
        if not name:
            raise Invalid(
                codec.describe_document(manifest),
                [FieldError("metadata.name", "required: apply needs a name")],
            )
        if info.namespaced:
            meta_dict["namespace"] = meta_dict.get("namespace") or default_namespace or "default"
        else:
            meta_dict.pop("namespace", None)
        namespace = meta_dict.get("namespace", "")
        last_applied = json.dumps(config, sort_keys=True, separators=(",", ":"))
        desired = json.loads(last_applied)
        desired["metadata"].setdefault("annotations", {})[LAST_APPLIED] = last_applied
        await self.consistent()
        for _attempt in range(_UNCONDITIONAL_RETRIES):
            current = self.cache.get(info, namespace, name)
            if current is None:
                obj = _decode(info, desired)
                try:
                    return await self.create(obj, user, dry_run=dry_run), "created"
                except AlreadyExists:
                    await self.consistent()
                    continue
            live = codec.to_dict(current.decode())
            previous = live.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED)
            try:
                previous_config = json.loads(previous) if previous else None
            except json.JSONDecodeError:
                previous_config = None
            merged = three_way_merge(previous_config, desired, live)
            if json_equal(merged, live):
                return current.decode(), "unchanged"
            obj = _decode(info, merged)
            meta(obj).resource_version = str(current.revision)
            try:
                written = await self.update(obj, user, dry_run=dry_run)
            except Conflict:
                await self.consistent()
                continue
            if written.SerializeToString(deterministic=True) == current.decode().SerializeToString(
                deterministic=True
            ):
                return written, "unchanged"
            return written, "configured"
        raise Conflict(f"{_label(info, namespace, name)}: too many concurrent updates")


def current_key(info: KindInfo, m: Any) -> str:
    return info.key(m.namespace if info.namespaced else "", m.name)


def _decode(info: KindInfo, data: dict[str, Any]) -> Message:
    try:
        return codec.from_dict(data, info)
    except DecodeError as exc:
        raise Invalid(codec.describe_document(data), exc.errors) from None


def _after(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
