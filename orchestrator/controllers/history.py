"""ControllerRevisions: the history of a StatefulSet's or DaemonSet's pod
template, shared by both controllers.

As in Kubernetes, a revision stores the template as a strategic-merge patch
(`{"spec": {"template": {..., "$patch": "replace"}}}`), is named
`<owner>-<hash>`, carries a `revision` number that only grows, and is
controlled by its owner. Going back to an earlier template does not add a
revision: the matching one is reused with the next number, so
`controller-revision-hash` labels on pods stay meaningful.

Decisions (which revision is which, which to prune) are pure functions here;
`ensure_revision` is the one effect, through the client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import AlreadyExistsError, Client, ConflictError, NotFoundError
from orchestrator.controllers.podtemplate import controller_ref, is_controlled_by, template_hash

log = logging.getLogger(__name__)

REVISION_HASH_LABEL = "controller-revision-hash"
DEFAULT_HISTORY_LIMIT = 10
# Names are DNS subdomains (253); the hash and dash take 11.
_MAX_PREFIX = 253 - 11


def revision_data(template: core.PodTemplateSpec) -> struct_pb2.Struct:
    """The patch a revision stores: the whole template, replacing the owner's."""
    doc = json_format.MessageToDict(template)
    doc["$patch"] = "replace"
    data = struct_pb2.Struct()
    data.update({"spec": {"template": doc}})
    return data


def template_of(revision: apps.ControllerRevision) -> core.PodTemplateSpec:
    """The pod template a revision recorded (the inverse of revision_data)."""
    doc = json_format.MessageToDict(revision.data)
    template_doc = dict(doc.get("spec", {}).get("template", {}))
    template_doc.pop("$patch", None)
    template = core.PodTemplateSpec()
    # Struct keeps numbers as doubles; ParseDict takes integral ones for ints.
    json_format.ParseDict(template_doc, template, ignore_unknown_fields=True)
    return template


def revision_name(owner_name: str, hash_: str) -> str:
    return f"{owner_name[:_MAX_PREFIX]}-{hash_}"


def new_revision(
    owner: Any, template: core.PodTemplateSpec, number: int, collision_count: int = 0
) -> apps.ControllerRevision:
    """A revision (not yet created) of owner's template, controlled by owner."""
    hash_ = template_hash(template, collision_count)
    rev = apps.ControllerRevision(api_version="apps/v1", kind="ControllerRevision")
    rev.metadata.name = revision_name(owner.metadata.name, hash_)
    rev.metadata.namespace = owner.metadata.namespace
    rev.metadata.labels.update(template.metadata.labels)
    rev.metadata.labels[REVISION_HASH_LABEL] = hash_
    rev.metadata.owner_references.append(controller_ref(owner))
    rev.data.CopyFrom(revision_data(template))
    rev.revision = number
    return rev


def owned_revisions(owner: Any, revisions: Iterable[Any]) -> list[Any]:
    """owner's revisions, oldest first (by revision number, then name)."""
    mine = [r for r in revisions if is_controlled_by(r, owner)]
    return sorted(mine, key=lambda r: (r.revision, r.metadata.name))


def next_number(revisions: Sequence[Any]) -> int:
    return max((r.revision for r in revisions), default=0) + 1


def find_equal(revisions: Sequence[Any], template: core.PodTemplateSpec) -> Any | None:
    """The newest revision recording exactly this template, if any."""
    wanted = revision_data(template)
    for rev in reversed(revisions):
        if rev.data == wanted:
            return rev
    return None


def revisions_to_prune(revisions: Sequence[Any], in_use: Iterable[str], limit: int) -> list[Any]:
    """The oldest revisions beyond limit that nothing uses (no live pod carries
    them and they are neither the current nor the update revision)."""
    used = set(in_use)
    idle = [r for r in revisions if r.metadata.name not in used]
    excess = len(idle) - max(limit, 0)
    return idle[:excess] if excess > 0 else []


def history_limit(spec: Any) -> int:
    if spec.HasField("revision_history_limit"):
        return int(spec.revision_history_limit)
    return DEFAULT_HISTORY_LIMIT


async def ensure_revision(
    client: Client,
    owner: Any,
    revisions: Sequence[Any],
    collision_count: int,
) -> tuple[Any, int]:
    """The revision for owner's current template, created or renumbered as
    needed. Returns (revision, collision_count): the count grows when a
    revision of another template already holds the hashed name."""
    template = owner.spec.template
    existing = find_equal(revisions, template)
    latest = revisions[-1] if revisions else None
    if existing is not None:
        if existing is latest:
            return existing, collision_count
        # A rollback: the old revision becomes the newest again.
        fresh = apps.ControllerRevision()
        fresh.CopyFrom(existing)
        fresh.revision = next_number(revisions)
        return await client.update(fresh), collision_count
    number = next_number(revisions)
    for _ in range(16):
        candidate = new_revision(owner, template, number, collision_count)
        try:
            return await client.create(candidate), collision_count
        except AlreadyExistsError:
            live = await client.get(
                "ControllerRevision", candidate.metadata.name, owner.metadata.namespace
            )
            if is_controlled_by(live, owner) and live.data == candidate.data:
                if live.revision < number:
                    live.revision = number
                    live = await client.update(live)
                return live, collision_count
            # Same hash, different template (or someone else's object): rehash.
            log.info(
                "ControllerRevision %s/%s exists with other data; collision count %d",
                owner.metadata.namespace,
                candidate.metadata.name,
                collision_count + 1,
            )
            collision_count += 1
    raise ConflictError(
        grpc.StatusCode.ABORTED,
        f"{owner.kind} {owner.metadata.namespace}/{owner.metadata.name}: "
        "could not find a free ControllerRevision name after 16 collisions",
    )


async def prune_revisions(
    client: Client, owner: Any, revisions: list[Any], in_use: Iterable[str]
) -> None:
    """Delete owner's idle revisions beyond its revisionHistoryLimit (never one a
    pod or the owner's status still names)."""
    limit = history_limit(owner.spec)
    for rev in revisions_to_prune(revisions, in_use, limit):
        try:
            await client.delete(
                "ControllerRevision",
                rev.metadata.name,
                rev.metadata.namespace,
                precondition_uid=rev.metadata.uid,
            )
        except NotFoundError:
            pass
