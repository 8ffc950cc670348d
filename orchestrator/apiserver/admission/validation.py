"""Validation with field paths (placeholder until the full set lands)."""

from __future__ import annotations

from google.protobuf.message import Message

from orchestrator.api.codec import FieldError


def validate(obj: Message, old: Message | None) -> list[FieldError]:
    return []
