"""Which objects a workload controller owns: Kubernetes' ControllerRefManager,
as pure decisions.

A controller owns what carries its controllerRef. An orphan (no controller)
whose labels match the selector is adopted; an owned object whose labels no
longer match is released. A controller being deleted adopts nothing, and an
object being deleted is never adopted: both would fight the garbage collector.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api.meta import copy_of
from orchestrator.api.selectors import LabelSelector, SelectorError, selector_from_match
from orchestrator.client.client import Client, ConflictError, NotFoundError
from orchestrator.controllers.podtemplate import controller_of, controller_ref


def label_selector(selector: Any) -> LabelSelector | None:
    """The selector of a metav1.LabelSelector message; None when it selects
    nothing (empty, or one admission would have refused)."""
    if not selector.match_labels and not selector.match_expressions:
        return None
    try:
        return selector_from_match(
            dict(selector.match_labels),
            [(e.key, e.operator, list(e.values)) for e in selector.match_expressions],
        )
    except SelectorError:
        return None


@dataclass
class Claims:
    owned: list[Any] = field(default_factory=list)  # ours, matching: keep
    adopt: list[Any] = field(default_factory=list)  # orphans to take
    release: list[Any] = field(default_factory=list)  # ours, no longer matching


def classify(owner: Any, selector: LabelSelector | None, candidates: Iterable[Any]) -> Claims:
    """Sort candidates (same namespace as owner) into what owner keeps, adopts, releases."""
    claims = Claims()
    owner_deleting = bool(owner.metadata.deletion_timestamp)
    uid = owner.metadata.uid
    for obj in candidates:
        labels = obj.metadata.labels
        matches = selector is not None and selector.matches(labels)
        ref = controller_of(obj)
        if ref is not None:
            if ref.uid != uid:
                continue  # another controller's
            if matches:
                claims.owned.append(obj)
            elif not owner_deleting:
                # Kubernetes leaves a deleting owner's objects alone: the GC
                # deletes them with it.
                claims.release.append(obj)
            continue
        if matches and not owner_deleting and not obj.metadata.deletion_timestamp:
            claims.adopt.append(obj)
    return claims


async def adopt(client: Client, owner: Any, orphans: list[Any]) -> list[Any]:
    """Make owner the controller of each orphan; returns those adopted.

    Decided against the live owner, not the cache: it may be being deleted
    already, or replaced by another object of the same name."""
    if not orphans:
        return []
    try:
        live = await client.get(owner.kind, owner.metadata.name, owner.metadata.namespace)
    except NotFoundError:
        return []
    if live.metadata.uid != owner.metadata.uid or live.metadata.deletion_timestamp:
        return []
    adopted = []
    for obj in orphans:
        fresh = copy_of(obj)
        fresh.metadata.owner_references.append(controller_ref(owner))
        try:
            adopted.append(await client.update(fresh))
        except (ConflictError, NotFoundError):
            continue  # changed meanwhile: the next sync decides again
    return adopted


async def release(client: Client, owner: Any, objs: list[Any]) -> None:
    """Drop owner's reference from objects that no longer match its selector."""
    for obj in objs:
        fresh = copy_of(obj)
        refs = [r for r in fresh.metadata.owner_references if r.uid != owner.metadata.uid]
        del fresh.metadata.owner_references[:]
        fresh.metadata.owner_references.extend(refs)
        try:
            await client.update(fresh)
        except (ConflictError, NotFoundError):
            continue
