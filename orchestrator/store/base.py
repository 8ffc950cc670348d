"""The store protocol: a small key-value store with etcd's semantics.

One global revision orders every change. Every key carries the revision that
created it and the revision that last modified it; `update` and `delete` can
be made conditional on the latter (compare-and-swap). `watch` replays every
change after a revision and then follows live changes, until the caller stops
iterating; asking for a revision older than the last compaction raises
`CompactedError` so callers can relist, exactly as etcd does.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class KeyExistsError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} already exists")
        self.key = key


class KeyNotFoundError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} not found")
        self.key = key


class RevisionConflictError(StoreError):
    """The key's mod_revision was not the one the caller expected."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(
            f"key {key!r} was modified: expected mod_revision {expected}, it is now {actual}"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class CompactedError(StoreError):
    """The requested revision is older than the oldest one the store keeps."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} has been compacted; the oldest available is {compacted + 1}"
        )
        self.requested = requested
        self.compacted = compacted


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    key: str
    # For PUT the new value; for DELETE the value the key held before deletion.
    value: bytes
    # For PUT the key's new mod_revision; for DELETE the revision of the deletion.
    revision: int
    create_revision: int
    # The previous value, if the key existed before this event (b"" otherwise).
    prev_value: bytes = b""


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    # The store's revision at the moment of the read.
    revision: int


class Store(Protocol):
    """Everything the apiserver needs from a durable store."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def range(self, prefix: str) -> RangeResult:
        """All keys starting with prefix, sorted by key, at one revision."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Store value under a new key; returns the new revision.

        Raises KeyExistsError if the key exists."""
        ...

    async def update(self, key: str, value: bytes, expected_mod_revision: int | None) -> int:
        """Replace the value of an existing key; returns the new revision.

        With expected_mod_revision set, raises RevisionConflictError unless the
        key's mod_revision equals it. Raises KeyNotFoundError if absent."""
        ...

    async def delete(self, key: str, expected_mod_revision: int | None = None) -> int:
        """Delete a key; returns the revision of the deletion.

        Raises KeyNotFoundError if absent, RevisionConflictError on CAS mismatch."""
        ...

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Every change to keys under prefix with revision > from_revision, then
        live changes. Raises CompactedError (on first iteration) if
        from_revision is older than the compacted revision."""
        ...

    async def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> None:
        """Forget history at and below revision (the current values stay)."""
        ...

    async def close(self) -> None: ...
