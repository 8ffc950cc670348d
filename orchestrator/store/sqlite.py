"""The embedded store: SQLite in WAL mode with durable group commit.

One writer thread owns the database. Callers enqueue operations; the writer
drains everything queued, applies it in one transaction, commits once
(synchronous=FULL, so the WAL is fsynced before anyone is told "done") and
only then resolves the callers' futures and publishes the changes to
watchers. Batching many writes per fsync is what makes durable writes fast.

History lives in a `log` table keyed by revision, so a watcher can replay
from any revision newer than the last compaction, as with etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    type INTEGER NOT NULL,
    value BLOB NOT NULL,
    prev_value BLOB NOT NULL,
    create_rev INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

_PUT, _DELETE = 0, 1
# Upper bound on operations folded into one transaction; keeps latency bounded
# when a flood of writes arrives at once.
_MAX_BATCH = 512
_STOP = object()


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with prefix."""
    return prefix + "\U0010ffff"


class _Op:
    __slots__ = ("args", "future", "kind", "loop")

    def __init__(
        self,
        kind: str,
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.kind = kind
        self.args = args
        self.loop = loop
        self.future = future


class _Subscriber:
    __slots__ = ("loop", "prefix", "queue")

    def __init__(self, prefix: str, loop: asyncio.AbstractEventLoop) -> None:
        self.prefix = prefix
        self.loop = loop
        # A list of events, or None when the store closes under the watcher.
        self.queue: asyncio.Queue[list[WatchEvent] | None] = asyncio.Queue()


# What one batch hands to one event loop: events for its watchers' queues,
# then outcomes for its callers' futures.
_Publications = list[tuple["asyncio.Queue[list[WatchEvent] | None]", list[WatchEvent]]]
_Outcomes = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


def _hand_over(publications: _Publications, outcomes: _Outcomes) -> None:
    """On the event loop: watchers first, so that a caller who sees its write
    acknowledged and then watches finds the event already in history; then
    the callers, unless one gave up (a cancelled request: its write may still
    have been applied, as with etcd)."""
    for q, events in publications:
        q.put_nowait(events)
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteStore:
    """Store protocol over one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._subscribers: set[_Subscriber] = set()
        self._subscribers_lock = threading.Lock()
        self._revision = 0
        self._compacted = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path | str) -> SqliteStore:
        store = cls(Path(path))
        await asyncio.to_thread(store._open_db)
        store._thread.start()
        return store

    def _open_db(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write
        # survives a crash of the process and of the machine.
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT MAX(rev) FROM log").fetchone()
        rev = row[0] or 0
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        self._revision = max(rev, meta.get("revision", 0))
        self._compacted = meta.get("compacted", 0)
        self._conn = conn

    # -- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            first = self._ops.get()
            if first is _STOP:
                break
            batch: list[_Op] = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._ops.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._apply_batch(conn, batch)
            if stop:
                break
        conn.close()

    def _apply_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[_Op, Any, BaseException | None]] = []
        events: list[WatchEvent] = []
        start_rev = self._revision
        writes = [op for op in batch if op.kind in _WRITE_OPS]
        try:
            if writes:
                conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    handler = _HANDLERS[op.kind]
                    results.append((op, handler(self, conn, events, *op.args), None))
                except StoreError as exc:
                    results.append((op, None, exc))
            if writes:
                conn.execute(
                    "INSERT INTO meta(name, value) VALUES('revision', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                    (self._revision,),
                )
                conn.execute("COMMIT")
        except BaseException as exc:  # the database itself failed: fail the whole batch
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._revision = start_rev
            failure = StoreError(f"sqlite store failure: {exc}")
            self._deliver([], [(op, None, failure) for op in batch])
            return
        self._deliver(events, results)

    def _deliver(
        self, events: list[WatchEvent], results: list[tuple[_Op, Any, BaseException | None]]
    ) -> None:
        """Durable now: one call per event loop hands it the batch's events and
        outcomes. (One wake-up and one callback per batch, where a future per
        operation would cost a wake-up, a lock and two callbacks each.)"""
        by_loop: dict[asyncio.AbstractEventLoop, tuple[_Publications, _Outcomes]] = {}
        if events:
            with self._subscribers_lock:
                subscribers = list(self._subscribers)
            for sub in subscribers:
                mine = [e for e in events if e.key.startswith(sub.prefix)]
                if mine:
                    by_loop.setdefault(sub.loop, ([], []))[0].append((sub.queue, mine))
        for op, result, error in results:
            by_loop.setdefault(op.loop, ([], []))[1].append((op.future, result, error))
        for loop, (publications, outcomes) in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(_hand_over, publications, outcomes)

    # Operation handlers run on the writer thread inside the batch transaction.

    def _do_get(
        self, conn: sqlite3.Connection, events: list[WatchEvent], key: str
    ) -> KeyValue | None:
        row = conn.execute(
            "SELECT value, create_rev, mod_rev FROM kv WHERE key=?", (key,)
        ).fetchone()
        return KeyValue(key, row[0], row[1], row[2]) if row else None

    def _do_range(
        self, conn: sqlite3.Connection, events: list[WatchEvent], prefix: str
    ) -> RangeResult:
        rows = conn.execute(
            "SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ? AND key < ? "
            "ORDER BY key",
            (prefix, _prefix_end(prefix)),
        ).fetchall()
        return RangeResult([KeyValue(*r) for r in rows], self._revision)

    def _do_history(
        self, conn: sqlite3.Connection, events: list[WatchEvent], prefix: str, after: int
    ) -> tuple[list[WatchEvent], int]:
        if after < self._compacted:
            raise CompactedError(after, self._compacted)
        rows = conn.execute(
            "SELECT rev, key, type, value, prev_value, create_rev FROM log "
            "WHERE rev > ? AND key >= ? AND key < ? ORDER BY rev",
            (after, prefix, _prefix_end(prefix)),
        ).fetchall()
        history = [
            WatchEvent(
                EventType.PUT if r[2] == _PUT else EventType.DELETE, r[1], r[3], r[0], r[5], r[4]
            )
            for r in rows
        ]
        return history, self._revision

    def _do_put(
        self,
        conn: sqlite3.Connection,
        events: list[WatchEvent],
        key: str,
        value: bytes,
        mode: str,
        expected: int | None,
    ) -> int:
        row = conn.execute(
            "SELECT value, create_rev, mod_rev FROM kv WHERE key=?", (key,)
        ).fetchone()
        if mode == "create":
            if row is not None:
                raise KeyExistsError(key)
        else:
            if row is None:
                raise KeyNotFoundError(key)
            if expected is not None and row[2] != expected:
                raise RevisionConflictError(key, expected, row[2])
        rev = self._revision + 1
        create_rev = rev if row is None else row[1]
        prev = b"" if row is None else row[0]
        conn.execute(
            "INSERT INTO kv(key, value, create_rev, mod_rev) VALUES(?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, mod_rev=excluded.mod_rev",
            (key, value, create_rev, rev),
        )
        conn.execute(
            "INSERT INTO log(rev, key, type, value, prev_value, create_rev) VALUES(?,?,?,?,?,?)",
            (rev, key, _PUT, value, prev, create_rev),
        )
        self._revision = rev
        events.append(WatchEvent(EventType.PUT, key, value, rev, create_rev, prev))
        return rev

    def _do_delete(
        self, conn: sqlite3.Connection, events: list[WatchEvent], key: str, expected: int | None
    ) -> int:
        row = conn.execute(
            "SELECT value, create_rev, mod_rev FROM kv WHERE key=?", (key,)
        ).fetchone()
        if row is None:
            raise KeyNotFoundError(key)
        if expected is not None and row[2] != expected:
            raise RevisionConflictError(key, expected, row[2])
        rev = self._revision + 1
        conn.execute("DELETE FROM kv WHERE key=?", (key,))
        conn.execute(
            "INSERT INTO log(rev, key, type, value, prev_value, create_rev) VALUES(?,?,?,?,?,?)",
            (rev, key, _DELETE, row[0], row[0], row[1]),
        )
        self._revision = rev
        events.append(WatchEvent(EventType.DELETE, key, row[0], rev, row[1], row[0]))
        return rev

    def _do_compact(self, conn: sqlite3.Connection, events: list[WatchEvent], rev: int) -> None:
        rev = min(rev, self._revision)
        if rev <= self._compacted:
            return
        conn.execute("DELETE FROM log WHERE rev <= ?", (rev,))
        conn.execute(
            "INSERT INTO meta(name, value) VALUES('compacted', ?) "
            "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (rev,),
        )
        self._compacted = rev

    # -- the async surface -----------------------------------------------------

    async def _submit(self, kind: str, *args: Any) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._ops.put(_Op(kind, args, loop, future))
        return await future

    async def get(self, key: str) -> KeyValue | None:
        result: KeyValue | None = await self._submit("get", key)
        return result

    async def range(self, prefix: str) -> RangeResult:
        result: RangeResult = await self._submit("range", prefix)
        return result

    async def create(self, key: str, value: bytes) -> int:
        rev: int = await self._submit("put", key, value, "create", None)
        return rev

    async def update(self, key: str, value: bytes, expected_mod_revision: int | None) -> int:
        rev: int = await self._submit("put", key, value, "update", expected_mod_revision)
        return rev

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> int:
        rev: int = await self._submit("delete", key, expected_mod_revision)
        return rev

    async def current_revision(self) -> int:
        return self._revision

    async def compact(self, revision: int) -> None:
        await self._submit("compact", revision)

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        sub = _Subscriber(prefix, asyncio.get_running_loop())
        # Subscribe before reading history so nothing falls between the two.
        with self._subscribers_lock:
            self._subscribers.add(sub)
        try:
            history, _ = await self._submit("history", prefix, from_revision)
            last = from_revision
            for event in history:
                last = event.revision
                yield event
            while True:
                batch = await sub.queue.get()
                if batch is None:
                    raise StoreError("the store was closed while watching")
                for event in batch:
                    if event.revision > last:
                        last = event.revision
                        yield event
        finally:
            with self._subscribers_lock:
                self._subscribers.discard(sub)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ops.put(_STOP)
        await asyncio.to_thread(self._thread.join, 10)
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            with contextlib.suppress(RuntimeError):
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, None)


_WRITE_OPS = {"put", "delete", "compact"}
_HANDLERS: dict[str, Callable[..., Any]] = {
    "get": SqliteStore._do_get,
    "range": SqliteStore._do_range,
    "history": SqliteStore._do_history,
    "put": SqliteStore._do_put,
    "delete": SqliteStore._do_delete,
    "compact": SqliteStore._do_compact,
}
