"""The Deployment controller: roll a pod template out through ReplicaSets.

As Kubernetes' deployment controller: the ReplicaSet running the current
template is `<deployment>-<pod-template-hash>`; RollingUpdate grows it and
shrinks the old ones within maxSurge/maxUnavailable, Recreate removes every
old pod before starting the new ones; a resize mid-rollout is shared out in
proportion; a paused Deployment only scales; revisions are recorded in
annotations and old ReplicaSets beyond revisionHistoryLimit are removed;
Progressing (with the progress deadline) and Available conditions and the
replica counts go into status. The arithmetic lives in deployment_util.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import copy_of, now_rfc3339
from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.client.client import (
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
)
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import cache_key
from orchestrator.controllers import deployment_util as du
from orchestrator.controllers.base import Controller
from orchestrator.controllers.claims import adopt, classify, label_selector, release
from orchestrator.controllers.podtemplate import controller_of, controller_ref, template_hash
from orchestrator.controllers.replicaset_util import Backoff

log = logging.getLogger(__name__)

COMPONENT = "deployment-controller"
# Recreate waits for old pods to be gone; their disappearance does not touch
# any ReplicaSet, so look again after this long.
RECREATE_POLL = 1.0


class RetryLater(Exception):
    """The sync cannot finish now (a name collision, a failed create): retry with back-off."""


class DeploymentController(Controller):
    name = "deployment"
    recorder: EventRecorder
    workers = 4

    def __init__(self, client: Client, *, recorder: EventRecorder | None = None) -> None:
        super().__init__(client)
        self.recorder = recorder or EventRecorder(client, "", component=COMPONENT)
        self.backoff = Backoff()

    def setup(self) -> None:
        self.deployments = self.informer("Deployment")
        self.replicasets = self.informer("ReplicaSet")
        self.deployments.add_handler(lambda type_, d, old: self.enqueue(d))
        self.replicasets.add_handler(self._on_replicaset)

    # -- event handlers ----------------------------------------------------------------

    def _owner_key(self, rs: Any) -> str | None:
        ref = controller_of(rs)
        if ref is None or ref.kind != "Deployment":
            return None
        return f"{rs.metadata.namespace}/{ref.name}"

    def _on_replicaset(self, type_: str, rs: Any, old: Any) -> None:
        owner = self._owner_key(rs)
        if owner is not None:
            self.queue.add(owner)
        elif type_ != "DELETED":
            self._enqueue_matching(rs)
        if old is not None:
            old_owner = self._owner_key(old)
            if old_owner is not None and old_owner != owner:
                self.queue.add(old_owner)

    def _enqueue_matching(self, rs: Any) -> None:
        for d in self.deployments.list():
            if d.metadata.namespace != rs.metadata.namespace:
                continue
            selector = label_selector(d.spec.selector)
            if selector is not None and selector.matches(rs.metadata.labels):
                self.enqueue(d)

    # -- sync ----------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            self.backoff.reset(key)
            return
        try:
            await self._sync(key, copy_of(cached))
        except RetryLater as exc:
            log.info("deployment %s: %s; retrying", key, exc)
            self.queue.add_after(key, self.backoff.next(key))
            return
        except NotFoundError:
            return  # deleted while syncing
        self.backoff.reset(key)

    async def _sync(self, key: str, d: Any) -> None:
        selector = label_selector(d.spec.selector)
        if selector is None:
            self.recorder.record(
                d,
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            if d.status.observed_generation < d.metadata.generation:
                status = copy_of(d.status)
                status.observed_generation = d.metadata.generation
                await self._update_status(d, status)
            return
        rss = await self._claim_replicasets(d, selector)
        if d.metadata.deletion_timestamp:
            await self._sync_status_only(d, rss)
            return
        d = await self._check_paused_conditions(d)
        if d.spec.paused:
            await self._sync_scale(d, rss)
            return
        new_rs = du.find_new_rs(d, rss)
        if du.is_scaling_event(d, new_rs, du.old_rss(new_rs, rss)):
            await self._sync_scale(d, rss)
            return
        if d.spec.strategy.type == du.RECREATE:
            await self._rollout_recreate(key, d, rss)
        else:
            await self._rollout_rolling(key, d, rss)

    async def _claim_replicasets(self, d: Any, selector: Any) -> list[Any]:
        ns = d.metadata.namespace
        candidates = [rs for rs in self.replicasets.list() if rs.metadata.namespace == ns]
        claims = classify(d, selector, candidates)
        owned = list(claims.owned)
        owned.extend(await adopt(self.client, d, claims.adopt))
        await release(self.client, d, claims.release)
        return owned

    # -- writes --------------------------------------------------------------------------

    async def _update_status(self, d: Any, status: Any) -> Any:
        fresh = copy_of(d)
        fresh.status.CopyFrom(status)
        return await self.client.update_status(fresh)

    async def _scale(self, rs: Any, size: int, d: Any) -> Any:
        """Resize rs (and note the Deployment size it was sized for); an event
        when the size changes."""
        fresh = copy_of(rs)
        annotations_changed = du.set_replicas_annotations(
            fresh, du.replicas(d), du.replicas(d) + du.max_surge(d)
        )
        old_size = rs.spec.replicas
        if old_size == size and not annotations_changed:
            return rs
        fresh.spec.replicas = size
        updated = await self.client.update(fresh)
        if old_size != size:
            direction = "up" if size > old_size else "down"
            self.recorder.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {rs.metadata.name} from {old_size} to {size}",
            )
        return updated

    async def _apply_plan(self, d: Any, rss: list[Any], plan: du.Plan) -> list[Any]:
        """Write a plan's sizes; returns rss with the written ReplicaSets replaced."""
        result = []
        for rs in rss:
            size = plan.get(rs.metadata.name)
            result.append(rs if size is None else await self._scale(rs, size, d))
        return result

    # -- the new ReplicaSet and revisions ---------------------------------------------------

    async def _all_replicasets(
        self, d: Any, rss: list[Any], create: bool
    ) -> tuple[Any, Any | None, list[Any]]:
        """(deployment, new ReplicaSet or None, old ReplicaSets), the new one
        created when asked and revision annotations brought up to date."""
        new_rs = du.find_new_rs(d, rss)
        old = du.old_rss(new_rs, rss)
        d, new_rs = await self._new_replicaset(d, new_rs, old, create)
        return d, new_rs, old

    async def _new_replicaset(
        self, d: Any, existing: Any | None, old: list[Any], create: bool
    ) -> tuple[Any, Any | None]:
        new_revision = du.max_revision(old) + 1
        now = now_rfc3339()
        if existing is not None:
            rs = copy_of(existing)
            changed = du.set_new_rs_annotations(d, rs, new_revision, exists=True)
            if changed or rs.spec.min_ready_seconds != d.spec.min_ready_seconds:
                rs.spec.min_ready_seconds = d.spec.min_ready_seconds
                return d, await self.client.update(rs)
            d = await self._set_revision(d, rs.metadata.annotations.get(du.REVISION, ""))
            if du.has_progress_deadline(d) and du.get_condition(d.status, du.PROGRESSING) is None:
                status = copy_of(d.status)
                du.set_condition(
                    status,
                    du.new_condition(
                        du.PROGRESSING,
                        "True",
                        du.FOUND_NEW_RS,
                        f'Found new replica set "{rs.metadata.name}"',
                        now,
                    ),
                )
                d = await self._update_status(d, status)
            return d, rs
        if not create:
            return d, None

        rs = self._build_replicaset(d, old, new_revision)
        try:
            created = await self.client.create(rs)
        except AlreadyExistsError:
            return d, await self._resolve_collision(d, rs)
        except ApiError as exc:
            message = f'Failed to create new replica set "{rs.metadata.name}": {exc.message}'
            self.recorder.record(d, "Warning", "FailedCreate", message)
            if du.has_progress_deadline(d):
                status = copy_of(d.status)
                du.set_condition(
                    status,
                    du.new_condition(du.PROGRESSING, "False", du.RS_CREATE_ERROR, message, now),
                )
                await self._update_status(d, status)
            raise RetryLater(message) from None
        if created.spec.replicas > 0:
            self.recorder.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {created.metadata.name} from 0 to {created.spec.replicas}",
            )
        d = await self._set_revision(d, str(new_revision))
        if du.has_progress_deadline(d):
            status = copy_of(d.status)
            du.set_condition(
                status,
                du.new_condition(
                    du.PROGRESSING,
                    "True",
                    du.NEW_RS_CREATED,
                    f'Created new replica set "{created.metadata.name}"',
                    now,
                ),
            )
            d = await self._update_status(d, status)
        return d, created

    def _build_replicaset(self, d: Any, old: list[Any], new_revision: int) -> Any:
        collision = d.status.collision_count if d.status.HasField("collision_count") else 0
        pod_hash = template_hash(du.template_without_hash(d.spec.template), collision)
        rs = apps.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name = f"{d.metadata.name}-{pod_hash}"
        rs.metadata.namespace = d.metadata.namespace
        rs.metadata.owner_references.append(controller_ref(d))
        rs.spec.template.CopyFrom(d.spec.template)
        rs.spec.template.metadata.labels[du.POD_TEMPLATE_HASH] = pod_hash
        rs.metadata.labels.update(rs.spec.template.metadata.labels)
        rs.spec.selector.CopyFrom(d.spec.selector)
        rs.spec.selector.match_labels[du.POD_TEMPLATE_HASH] = pod_hash
        rs.spec.min_ready_seconds = d.spec.min_ready_seconds
        rs.spec.replicas = 0
        du.set_new_rs_annotations(d, rs, new_revision, exists=False)
        rs.spec.replicas = du.new_rs_new_replicas(d, [*old, rs], rs)
        return rs

    async def _resolve_collision(self, d: Any, wanted: Any) -> Any:
        """A ReplicaSet of that name exists: ours with this template is the new
        one; anything else is a hash collision, and the next hash is tried."""
        live = await self.client.get("ReplicaSet", wanted.metadata.name, d.metadata.namespace)
        ref = controller_of(live)
        if (
            ref is not None
            and ref.uid == d.metadata.uid
            and du.equal_ignore_hash(live.spec.template, d.spec.template)
        ):
            return live
        status = copy_of(d.status)
        status.collision_count = (
            d.status.collision_count if d.status.HasField("collision_count") else 0
        ) + 1
        await self._update_status(d, status)
        raise RetryLater(
            f'replica set "{wanted.metadata.name}" exists and is not this template; '
            f"collisionCount is now {status.collision_count}"
        )

    async def _set_revision(self, d: Any, rev: str) -> Any:
        if not rev or d.metadata.annotations.get(du.REVISION) == rev:
            return d
        fresh = copy_of(d)
        fresh.metadata.annotations[du.REVISION] = rev
        return await self.client.update(fresh)

    # -- strategies ----------------------------------------------------------------------

    async def _rollout_rolling(self, key: str, d: Any, rss: list[Any]) -> None:
        d, new_rs, old = await self._all_replicasets(d, rss, create=True)
        assert new_rs is not None
        size = du.plan_new_rs(d, [*old, new_rs], new_rs)
        if size is not None:
            new_rs = await self._scale(new_rs, size, d)
            await self._sync_rollout_status(key, d, [*old, new_rs], new_rs)
            return
        plan = du.plan_old_rss(d, [*old, new_rs], du.active(old), new_rs)
        if plan:
            old = await self._apply_plan(d, old, plan)
            await self._sync_rollout_status(key, d, [*old, new_rs], new_rs)
            return
        if du.deployment_complete(d, d.status):
            await self._cleanup(d, old)
        await self._sync_rollout_status(key, d, [*old, new_rs], new_rs)

    async def _rollout_recreate(self, key: str, d: Any, rss: list[Any]) -> None:
        d, new_rs, old = await self._all_replicasets(d, rss, create=False)
        live_old = du.active(old)
        if live_old:
            old = await self._apply_plan(d, old, {rs.metadata.name: 0 for rs in live_old})
            await self._sync_rollout_status(key, d, [*old, new_rs], new_rs)
            return
        if await self._old_pods_running(d, new_rs, old):
            await self._sync_rollout_status(key, d, [*old, new_rs], new_rs)
            self.queue.add_after(key, RECREATE_POLL)
            return
        if new_rs is None:
            d, new_rs, old = await self._all_replicasets(d, rss, create=True)
            assert new_rs is not None
        if new_rs.spec.replicas != du.replicas(d):
            new_rs = await self._scale(new_rs, du.replicas(d), d)
        if du.deployment_complete(d, d.status):
            await self._cleanup(d, old)
        await self._sync_rollout_status(key, d, [*old, new_rs], new_rs)

    async def _old_pods_running(self, d: Any, new_rs: Any | None, old: list[Any]) -> bool:
        if du.total_actual(old) > 0:
            return True
        old_uids = {rs.metadata.uid for rs in old}
        if not old_uids:
            return False
        selector = label_selector(d.spec.selector)
        pods = await self.client.list(
            "Pod", d.metadata.namespace, label_selector=str(selector) if selector else ""
        )
        for pod in pods.items:
            ref = controller_of(pod)
            if ref is None or ref.uid not in old_uids:
                continue
            if pod.status.phase in ("Succeeded", "Failed"):
                continue
            return True  # running, pending, unknown or still terminating
        return False

    async def _sync_scale(self, d: Any, rss: list[Any]) -> None:
        """A paused Deployment, or a resize: scale without rolling anything out."""
        d, new_rs, old = await self._all_replicasets(d, rss, create=False)
        plan = du.plan_scale(d, new_rs, old)
        if plan:
            everything = await self._apply_plan(d, [*old, *([new_rs] if new_rs else [])], plan)
            if new_rs is not None:
                new_rs = everything[-1]
                old = everything[:-1]
            else:
                old = everything
        if d.spec.paused:
            await self._cleanup(d, old)
        await self._sync_status(d, [*old, new_rs], new_rs)

    async def _sync_status_only(self, d: Any, rss: list[Any]) -> None:
        d, new_rs, old = await self._all_replicasets(d, rss, create=False)
        await self._sync_status(d, [*old, new_rs], new_rs)

    async def _sync_status(self, d: Any, all_rss: list[Any | None], new_rs: Any | None) -> None:
        status = du.calculate_status(d, all_rss, new_rs, now_rfc3339())
        if status != d.status:
            await self._update_status(d, status)

    async def _sync_rollout_status(
        self, key: str, d: Any, all_rss: list[Any | None], new_rs: Any | None
    ) -> None:
        now = datetime.now(UTC)
        status = du.rollout_status(d, all_rss, new_rs, now, now_rfc3339())
        if status == d.status:
            wait = du.requeue_after(d, status, now)
            if wait is not None:
                self.queue.add_after(key, wait)
            return
        await self._update_status(d, status)

    async def _check_paused_conditions(self, d: Any) -> Any:
        cond = du.paused_condition(d, now_rfc3339())
        if cond is None:
            return d
        status = copy_of(d.status)
        du.set_condition(status, cond)
        return await self._update_status(d, status)

    async def _cleanup(self, d: Any, old: list[Any]) -> None:
        for rs in du.rs_to_clean_up(d, old):
            log.info("deployment %s: removing old replica set %s", cache_key(d), rs.metadata.name)
            try:
                await self.client.delete(
                    "ReplicaSet",
                    rs.metadata.name,
                    rs.metadata.namespace,
                    precondition_uid=rs.metadata.uid,
                )
            except (NotFoundError, ConflictError):
                continue
