"""The values that field selectors can match, read off an object."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo


def _lookup(obj: Any, path: str) -> str:
    for part in path.split("."):
        snake = "".join("_" + c.lower() if c.isupper() else c for c in part)
        if not hasattr(obj, snake):
            return ""
        obj = getattr(obj, snake)
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def selectable_fields(info: KindInfo, obj: Message) -> dict[str, str]:
    return {path: _lookup(obj, path) for path in info.fields}
