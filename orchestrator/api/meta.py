"""Small helpers over the metadata every object carries."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from orchestrator.api.pb import meta_pb2


def meta(obj: Message) -> meta_pb2.ObjectMeta:
    m: meta_pb2.ObjectMeta = obj.metadata  # type: ignore[attr-defined]
    return m


def copy_of(obj: Any) -> Any:
    """A deep copy of an API object: cached objects are shared and never mutated."""
    clone = type(obj)()
    clone.CopyFrom(obj)
    return clone


_last_second: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """The current UTC time to the second. The apiserver stamps every write
    with it, so the text is made once per second."""
    global _last_second
    second = int(time.time())
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _last_second[1]


def parse_rfc3339(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def object_label(kind: str, namespace: str, name: str) -> str:
    """How Kubernetes names an object in messages: `pods "web-1"`."""
    return f'{kind} "{namespace}/{name}"' if namespace else f'{kind} "{name}"'


def has_field(obj: Any, name: str) -> bool:
    try:
        return bool(obj.HasField(name))
    except ValueError:
        return False
