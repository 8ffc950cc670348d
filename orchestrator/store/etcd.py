"""The etcd backend of the store, over the `aetcd` client.

Every operation is one etcd request, so etcd's own revision is the store's
global revision and etcd's transactions give the compare-and-swap semantics
of `base.Store` directly:

    create  Txn(create_revision(key) == 0 -> put, else -> range key)
    update  Txn(mod_revision(key) == expected -> put, else -> range key)
            (with no expected revision: create_revision(key) > 0)
    delete  Txn(the same comparisons -> delete with prev_kv, else -> range key)

The failure branch reads the key in the same transaction, so a conflict
reports the revision that actually beat the caller.

`prefix` namespaces every key: the store stores `key` as `prefix + key` and
never reads or watches outside its prefix, so several clusters (or tests) can
share one etcd.

Notes on aetcd 1.0.0, which shaped this module:

* It has no TLS support (it always opens an insecure channel), so
  `_Client.connect` replaces its channel set-up with one that can use
  `grpc.aio.secure_channel`; everything else (stubs, the multiplexed watch
  stream) is aetcd's.
* `Client.transaction` drops the response header (and with it the revision a
  write produced) and `Client.get` drops it when the key is missing, so KV
  requests go straight to aetcd's `kvstub` with aetcd's generated messages.
* gRPC's default 4 MiB receive limit would make a large range fail, so the
  channel lifts it. (etcd itself rejects requests over --max-request-bytes,
  1.5 MiB by default: raise it if objects can reach that size.)
* A watch event's `prev_kv` is an empty, yet truthy, message when the key did
  not exist before the event; it is recognised by create_revision == 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aetcd
import aetcd.watcher
import grpc
import grpc.aio
from aetcd import rpc

from orchestrator.store.base import (
    CompactedError,
    EventType,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RangeResult,
    RevisionConflictError,
    StoreError,
    WatchEvent,
)

# Generous: a single range over a big cluster can be large, and values may be
# up to a few MiB. etcd's own request limit is the real bound.
_MAX_MESSAGE_BYTES = 512 * 1024 * 1024

_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.max_receive_message_length": _MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": _MAX_MESSAGE_BYTES,
    # Notice a dead etcd (or a silently dropped connection) on idle watch streams.
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
}

_DEFAULT_TIMEOUT = 30.0
_CANCEL_TIMEOUT = 5.0


class EtcdError(StoreError):
    """etcd failed a request for a reason other than the store's own errors."""


class EtcdUnavailableError(EtcdError):
    """etcd could not be reached, did not answer in time, or a watch stream broke."""


def _wrap_rpc_error(e: BaseException) -> StoreError:
    if isinstance(e, StoreError):
        return e
    code = None
    details = str(e)
    if isinstance(e, grpc.aio.AioRpcError):
        code = e.code()
        details = e.details() or str(code)
    elif isinstance(e.__cause__, grpc.aio.AioRpcError):
        code = e.__cause__.code()
        details = e.__cause__.details() or str(code)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or isinstance(
        e, aetcd.ConnectionFailedError | aetcd.ConnectionTimeoutError | aetcd.WatchTimeoutError
    ):
        return EtcdUnavailableError(f"etcd unavailable: {details}")
    return EtcdError(f"etcd error: {details}")


def _prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) cover exactly the keys starting with prefix."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"  # every key (etcd's convention for "to the end of the keyspace")


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client with a channel that can speak TLS."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        timeout: float | None,
    ) -> None:
        host, _, port = target.rpartition(":")
        super().__init__(host=host, port=int(port), timeout=timeout, options=_CHANNEL_OPTIONS)
        self._target = target
        self._credentials = credentials

    async def connect(self) -> None:
        # Synchronous on purpose: creating a channel does no I/O, so there is no
        # window for concurrent callers to race in (aetcd's version awaits).
        if self._connected.is_set():
            return
        options = list(self._options.items())
        if self._credentials is None:
            self.channel = grpc.aio.insecure_channel(self._target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(self._target, self._credentials, options=options)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


_background: set[asyncio.Task[Any]] = set()


def _release_abandoned_watch(creating: asyncio.Future[Any]) -> None:
    if creating.cancelled() or creating.exception() is not None:
        return
    task = asyncio.ensure_future(creating.result().cancel())
    _background.add(task)
    task.add_done_callback(_background.discard)


def _tls_credentials(
    ca_file: str | Path, cert_file: str | Path | None, key_file: str | Path | None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(key_file).read_bytes() if key_file is not None else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file is not None else None,
    )


def _parse_endpoint(endpoint: str) -> str:
    for scheme in ("https://", "http://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    endpoint = endpoint.rstrip("/")
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint must be host:port, got {endpoint!r}")
    return endpoint


class EtcdStore:
    """`base.Store` on etcd v3."""

    def __init__(self, client: _Client, prefix: str, timeout: float | None) -> None:
        self._client = client
        self._prefix = prefix.encode()
        self._timeout = timeout
        self._closed = False

    @classmethod
    async def open(
        cls,
        endpoints: list[str],
        *,
        prefix: str = "",
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        request_timeout: float | None = _DEFAULT_TIMEOUT,
    ) -> EtcdStore:
        """Connect to the first of endpoints ("host:port", optionally with a scheme).

        TLS is used when ca_file is given (cert_file and key_file add a client
        certificate). request_timeout bounds every request, and the creation (not
        the life) of a watch. Fails fast with EtcdUnavailableError if etcd does not answer.
        """
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        if prefix and not prefix.endswith("/"):
            # Otherwise the cluster under "/c1" would see every key of "/c10".
            raise ValueError(f"the key prefix must end with '/', got {prefix!r}")
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        if cert_file is not None and ca_file is None:
            raise ValueError("a client certificate needs ca_file to verify etcd")
        credentials = None
        if ca_file is not None:
            credentials = await asyncio.to_thread(_tls_credentials, ca_file, cert_file, key_file)
        client = _Client(_parse_endpoint(endpoints[0]), credentials, request_timeout)
        store = cls(client, prefix, request_timeout)
        try:
            await client.connect()
            await store.current_revision()
        except BaseException:
            await client.close()
            raise
        return store

    # -- keys ----------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        full = self._prefix + key.encode()
        if not full:
            raise ValueError("the empty key is not allowed")
        return full

    def _unkey(self, raw: bytes) -> str:
        return raw[len(self._prefix) :].decode()

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(
            key=self._unkey(kv.key),
            value=bytes(kv.value),
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
        )

    # -- requests ------------------------------------------------------------

    async def _call(self, method: str, request: Any) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        await self._client.connect()
        stub = getattr(self._client.kvstub, method)
        try:
            return await stub(request, timeout=self._timeout, metadata=self._client.metadata)
        except grpc.aio.AioRpcError as e:
            raise _wrap_rpc_error(e) from e

    async def _range(self, request: Any) -> Any:
        return await self._call("Range", request)

    async def _txn(self, request: Any) -> Any:
        return await self._call("Txn", request)

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._range(rpc.RangeRequest(key=self._key(key)))
        return self._kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: str) -> RangeResult:
        start = self._prefix + prefix.encode()
        end = _prefix_end(start)
        if not start:
            start = b"\0"
        resp = await self._range(
            rpc.RangeRequest(
                key=start,
                range_end=end,
                sort_order=rpc.RangeRequest.ASCEND,
                sort_target=rpc.RangeRequest.KEY,
            )
        )
        return RangeResult(kvs=[self._kv(kv) for kv in resp.kvs], revision=resp.header.revision)

    @staticmethod
    def _compare_mod(key: bytes, expected: int | None) -> Any:
        if expected is None:
            # "exists": a missing key compares with create_revision 0.
            return rpc.Compare(
                key=key,
                target=rpc.Compare.CREATE,
                result=rpc.Compare.GREATER,
                create_revision=0,
            )
        return rpc.Compare(
            key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=expected
        )

    def _raise_conflict(self, key: str, expected: int | None, resp: Any) -> None:
        current = resp.responses[0].response_range.kvs
        if not current:
            raise KeyNotFoundError(key)
        assert expected is not None, "an existence check only fails on a missing key"
        raise RevisionConflictError(key, expected, current[0].mod_revision)

    async def create(self, key: str, value: bytes) -> int:
        k = self._key(key)
        resp = await self._txn(
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=k,
                        target=rpc.Compare.CREATE,
                        result=rpc.Compare.EQUAL,
                        create_revision=0,
                    )
                ],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value))],
                failure=[],
            )
        )
        if not resp.succeeded:
            raise KeyExistsError(key)
        return int(resp.header.revision)

    async def update(self, key: str, value: bytes, expected_mod_revision: int | None) -> int:
        k = self._key(key)
        resp = await self._txn(
            rpc.TxnRequest(
                compare=[self._compare_mod(k, expected_mod_revision)],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k, keys_only=True))],
            )
        )
        if not resp.succeeded:
            self._raise_conflict(key, expected_mod_revision, resp)
        return int(resp.header.revision)

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> int:
        k = self._key(key)
        resp = await self._txn(
            rpc.TxnRequest(
                compare=[self._compare_mod(k, expected_mod_revision)],
                success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k, keys_only=True))],
            )
        )
        if not resp.succeeded:
            self._raise_conflict(key, expected_mod_revision, resp)
        return int(resp.header.revision)

    async def current_revision(self) -> int:
        # A count-only read of one (usually absent) key: the cheapest request
        # that carries a linearizable header revision.
        resp = await self._range(rpc.RangeRequest(key=b"\0", count_only=True))
        return int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            await self._client.compact(revision)
        except aetcd.ClientError as e:
            cause = e.__cause__
            if (
                isinstance(cause, grpc.aio.AioRpcError)
                and cause.code() == grpc.StatusCode.OUT_OF_RANGE
                and "compacted" in (cause.details() or "")
            ):
                return  # already compacted at or beyond revision: nothing to forget
            raise _wrap_rpc_error(e) from e

    # -- watch ---------------------------------------------------------------

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        """See base.Store.watch.

        etcd is asked to start at from_revision itself (not +1) and the event at
        from_revision is skipped: etcd refuses a start revision only when it is
        below the compaction revision, so this raises CompactedError exactly when
        from_revision < compacted, as the protocol says.
        """
        if self._closed:
            raise StoreError("the store is closed")
        start = self._prefix + prefix.encode()
        end = _prefix_end(start)
        if not start:
            start = b"\0"
        last = from_revision
        await self._client.connect()
        # aetcd pairs etcd's "created" replies with create requests purely by
        # order, so a creation abandoned half-way (our task cancelled) would hand
        # this watch's events to the next watch created on the client. Let the
        # creation finish regardless, and release the watch if nobody wants it.
        creating = asyncio.ensure_future(
            self._client.watch(
                start,
                range_end=end,
                start_revision=max(from_revision, 1),
                prev_kv=True,
            )
        )
        try:
            watch = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(_release_abandoned_watch)
            raise
        except aetcd.RevisionCompactedError as e:
            raise CompactedError(from_revision, e.compacted_revision) from e
        except aetcd.ClientError as e:
            raise _wrap_rpc_error(e) from e
        try:
            async for ev in watch:
                revision = ev.kv.mod_revision
                # Only the start needs skipping: one revision can carry several
                # events (a multi-key transaction by another etcd client).
                if revision <= from_revision:
                    continue
                last = revision
                yield self._event(ev)
        except aetcd.RevisionCompactedError as e:
            raise CompactedError(last, e.compacted_revision) from e
        except aetcd.ClientError as e:
            raise _wrap_rpc_error(e) from e
        finally:
            # Runs when the caller stops iterating (aclose / garbage collection)
            # or its task is cancelled: release the etcd watch. Shielded so a
            # second cancellation cannot leave the watch registered.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CANCEL_TIMEOUT):
                    await asyncio.shield(watch.cancel())
        # aetcd ends the iteration silently when the client is closed or the
        # watch was cancelled by etcd; never let that pass for "no more events".
        if self._closed:
            raise StoreError("the store was closed while watching")
        raise EtcdUnavailableError("etcd ended the watch")

    def _event(self, ev: aetcd.Event) -> WatchEvent:
        prev = ev.prev_kv
        existed = prev is not None and prev.create_revision != 0
        prev_value = bytes(prev.value) if existed else b""
        if ev.kind == "DELETE":
            # etcd's DELETE carries only the key and the deletion revision;
            # the old value and creation revision come from prev_kv.
            return WatchEvent(
                type=EventType.DELETE,
                key=self._unkey(ev.kv.key),
                value=prev_value,
                revision=ev.kv.mod_revision,
                create_revision=prev.create_revision if existed else 0,
                prev_value=prev_value,
            )
        return WatchEvent(
            type=EventType.PUT,
            key=self._unkey(ev.kv.key),
            value=bytes(ev.kv.value),
            revision=ev.kv.mod_revision,
            create_revision=ev.kv.create_revision,
            prev_value=prev_value,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.close()
