"""Kubernetes' defaults, per kind (placeholder until the full set lands)."""

from __future__ import annotations

from google.protobuf.message import Message


def apply_defaults(obj: Message) -> None:
    return None
