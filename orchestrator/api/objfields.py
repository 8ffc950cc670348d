"""The values that field selectors can match, read off an object."""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo


@cache
def _attribute_path(path: str) -> tuple[str, ...]:
    """`spec.nodeName` -> ("spec", "node_name"): JSON names to message attributes."""
    return tuple(
        "".join("_" + c.lower() if c.isupper() else c for c in part) for part in path.split(".")
    )


def _lookup(obj: Any, path: str) -> str:
    for attr in _attribute_path(path):
        obj = getattr(obj, attr, None)
        if obj is None:
            return ""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def selectable_fields(info: KindInfo, obj: Message) -> dict[str, str]:
    return {path: _lookup(obj, path) for path in info.fields}
