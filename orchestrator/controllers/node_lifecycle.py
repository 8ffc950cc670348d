"""The node lifecycle controller, as Kubernetes' (pkg/controller/nodelifecycle
with its NoExecute taint manager):

- Health: every monitor period each Node is judged by its Lease
  (kube-node-lease/<node>) and its Ready heartbeat (node_lifecycle_health).
  A node silent past the grace period (default 50 s) gets Ready,
  MemoryPressure, DiskPressure and PIDPressure = Unknown, reason
  NodeStatusUnknown, "Kubelet stopped posting node status.". The agent
  overwrites them with its next status update when it comes back.
- NoSchedule taints follow the conditions (TaintNodesByCondition): Ready
  False -> node.kubernetes.io/not-ready, Unknown -> unreachable, pressure
  conditions, and spec.unschedulable. Not rate limited.
- NoExecute taints (TaintBasedEvictions): not-ready or unreachable, added at
  --node-eviction-rate per zone (0.1 nodes/s; less or none when a zone is
  partially disrupted), swapped between the two at once, removed at once when
  the node is Ready again. When every zone is fully down nothing is tainted
  and existing NoExecute taints are removed: the likelier story is that this
  controller is cut off, and evicting everything would make it worse. On
  leaving that state every node gets a fresh grace period.
- Pods on a node that stops being Ready get their Ready condition set False
  (so Services stop sending them traffic) and an event.
- Taint manager: a pod on a node with NoExecute taints is deleted (with its
  own grace period, and a DisruptionTarget condition and a
  TaintManagerEviction event first) when a taint is not tolerated, or after
  the shortest tolerationSeconds of the tolerations it relies on; a
  toleration without tolerationSeconds keeps it there for good.

What it deliberately does not do, following Kubernetes: a pod deleted on an
unreachable node stays Terminating until its agent confirms (the apiserver
holds pods with a nodeName until then). Nothing force-deletes it after some
margin: the node may still be running it, and workload controllers already
create replacements while the old pod is Terminating; StatefulSets wait, so
two pods of one identity never run at once. Pods of a Node that is deleted are
force-deleted by the pod GC (node_lifecycle_podgc).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import copy_of, meta
from orchestrator.client.client import Client, ConflictError, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import cache_key
from orchestrator.controllers.base import Controller
from orchestrator.controllers.node_lifecycle_health import (
    NODE_LEASE_NAMESPACE,
    NodeHealth,
    TokenBucket,
    all_fully_disrupted,
    eviction_rate,
    is_silent,
    observe,
    unknown_conditions,
    zone_of,
    zone_state,
)
from orchestrator.controllers.node_lifecycle_taints import (
    NO_EXECUTE,
    desired_no_schedule,
    eviction_due,
    no_execute_for,
    owned_no_execute,
    ready_status,
    reconcile_taints,
)

log = logging.getLogger(__name__)

COMPONENT = "node-controller"
UPDATE_ATTEMPTS = 5
DISRUPTION_TARGET = "DisruptionTarget"


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NoExecuteIntent:
    """What a monitor pass wants for a node's NoExecute taints."""

    manage: bool  # False: leave them as they are (waiting for a rate-limit token)
    key: str | None  # the one NoExecute taint to have (None: none)


def set_pod_condition(
    pod: Any, ctype: str, status: str, now: str, reason: str = "", message: str = ""
) -> bool:
    """Set a pod condition in place; False when it already was so."""
    for c in pod.status.conditions:
        if c.type == ctype:
            if c.status == status and (not reason or c.reason == reason):
                return False
            if c.status != status:
                c.last_transition_time = now
            c.status = status
            if reason:
                c.reason = reason
                c.message = message
            return True
    pod.status.conditions.add(
        type=ctype, status=status, last_transition_time=now, reason=reason, message=message
    )
    return True


class NodeLifecycleController(Controller):
    name = "node-lifecycle"
    recorder: EventRecorder
    workers = 2

    def __init__(
        self,
        client: Client,
        *,
        grace_period: float = 50.0,
        startup_grace_period: float = 60.0,
        monitor_period: float = 5.0,
        eviction_rate: float = 0.1,
        secondary_eviction_rate: float = 0.01,
        large_cluster_threshold: int = 50,
        unhealthy_zone_threshold: float = 0.55,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client)
        self.grace_period = grace_period
        self.startup_grace_period = startup_grace_period
        self.monitor_period = monitor_period
        self.rate = eviction_rate
        self.secondary_rate = secondary_eviction_rate
        self.large_cluster_threshold = large_cluster_threshold
        self.unhealthy_zone_threshold = unhealthy_zone_threshold
        self.clock = clock or (lambda: datetime.now(UTC))
        self.monotonic = monotonic
        self.recorder = EventRecorder(client, "", component=COMPONENT, clock=self.clock)
        self.health: dict[str, NodeHealth] = {}
        self._last_ready: dict[str, str] = {}
        self._pods_by_node: dict[str, set[str]] = {}
        self._first_seen: dict[str, datetime] = {}
        # zone -> nodes waiting for a token to get their NoExecute taint, FIFO.
        self._tainting: dict[str, OrderedDict[str, None]] = {}
        self._limiters: dict[str, TokenBucket] = {}
        self.all_down = False

    # -- wiring ---------------------------------------------------------------------------

    def setup(self) -> None:
        self.nodes = self.informer("Node")
        self.leases = self.informer("Lease", namespace=NODE_LEASE_NAMESPACE)
        self.pods = self.informer("Pod")
        self.nodes.add_handler(self._on_node)
        self.pods.add_handler(self._on_pod)

        self._tasks.append(asyncio.create_task(self._monitor(), name=f"{self.name}-monitor"))

    def _on_node(self, type_: str, node: Any, old: Any) -> None:
        if type_ == "DELETED":
            name = node.metadata.name
            self.health.pop(name, None)
            self._last_ready.pop(name, None)
            return
        before = no_execute_taints(old) if old is not None else set()
        if before != no_execute_taints(node):
            for key in list(self._pods_by_node.get(node.metadata.name, ())):
                self.queue.add(key)

    def _on_pod(self, type_: str, pod: Any, old: Any) -> None:
        key = cache_key(pod)
        if old is not None and old.spec.node_name != pod.spec.node_name:
            self._pods_by_node.get(old.spec.node_name, set()).discard(key)
        if type_ == "DELETED":
            self._pods_by_node.get(pod.spec.node_name, set()).discard(key)
            self._first_seen.pop(key, None)
            return
        if not pod.spec.node_name:
            return
        self._pods_by_node.setdefault(pod.spec.node_name, set()).add(key)
        node = self.nodes.get(pod.spec.node_name)
        if node is not None and any(t.effect == NO_EXECUTE for t in node.spec.taints):
            self.queue.add(key)

    # -- taint manager: one pod per key ---------------------------------------------------

    async def sync(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or meta(pod).deletion_timestamp or not pod.spec.node_name:
            self._first_seen.pop(key, None)
            return
        node = self.nodes.get(pod.spec.node_name)
        if node is None:
            return  # the pod GC deals with pods of vanished nodes
        now = self.clock()
        decision = eviction_due(
            pod.spec.tolerations, node.spec.taints, self._first_seen.setdefault(key, now)
        )
        if decision.due is None:
            self._first_seen.pop(key, None)
            return
        wait = (decision.due - now).total_seconds()
        if wait > 0:
            self.queue.add_after(key, wait)
            return
        await self._evict(pod, decision.reason)

    async def _evict(self, pod: Any, why: str) -> None:
        m = meta(pod)
        log.info(
            "evicting pod %s/%s from node %s: %s", m.namespace, m.name, pod.spec.node_name, why
        )
        self.recorder.record(
            pod,
            "Normal",
            "TaintManagerEviction",
            f"Marking for deletion Pod {m.namespace}/{m.name}",
        )
        fresh = copy_of(pod)
        if set_pod_condition(
            fresh,
            DISRUPTION_TARGET,
            "True",
            rfc3339(self.clock()),
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
        ):
            try:
                await self.client.update_status(fresh)
            except (ConflictError, NotFoundError):
                pass  # informative only: the deletion below is what matters
        try:
            await self.client.delete("Pod", m.name, m.namespace, precondition_uid=m.uid)
        except NotFoundError:
            pass
        except ConflictError:
            pass  # another pod of that name now: not ours to evict
        self._first_seen.pop(cache_key(pod), None)

    # -- monitor: every node each period ---------------------------------------------------

    async def _monitor(self) -> None:
        while True:
            try:
                await self.monitor_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node lifecycle: monitor pass failed")
            await asyncio.sleep(self.monitor_period)

    async def monitor_pass(self) -> None:
        now = self.clock()
        nodes = []
        for node in self.nodes.list():
            name = node.metadata.name
            lease = self.leases.get(f"{NODE_LEASE_NAMESPACE}/{name}")
            health = observe(self.health.get(name), node, lease, now)
            self.health[name] = health
            if is_silent(health, now, self.grace_period, self.startup_grace_period):
                node = await self._mark_unknown(node, lease, now)
                if node is None:
                    continue
            await self._follow_readiness(node, now)
            nodes.append(node)
        known = {n.metadata.name for n in self.nodes.list()}
        for gone in set(self.health) - known:
            self.health.pop(gone, None)
        intents = self._plan_no_execute(nodes, now)
        for node in nodes:
            await self._write_taints(node, intents[node.metadata.name], now)

    async def _mark_unknown(self, node: Any, lease: Any | None, now: datetime) -> Any | None:
        """Set the node's watched conditions Unknown; the node as written (or as
        it was when nothing changed), None when it is gone."""
        name = node.metadata.name
        for _ in range(UPDATE_ATTEMPTS):
            conditions = unknown_conditions(
                node.status.conditions, rfc3339(now), node.metadata.creation_timestamp
            )
            if conditions is None:
                return node
            fresh = copy_of(node)
            del fresh.status.conditions[:]
            fresh.status.conditions.extend(conditions)
            try:
                written = await self.client.update_status(fresh)
            except NotFoundError:
                return None
            except ConflictError:
                try:
                    node = await self.client.get("Node", name)
                except NotFoundError:
                    return None
                # It changed meanwhile: if that was the agent posting, it is alive.
                self.health[name] = observe(self.health.get(name), node, lease, now)
                if not is_silent(
                    self.health[name], now, self.grace_period, self.startup_grace_period
                ):
                    return node
                continue
            log.warning(
                "node %s: no heartbeat for %.0fs; status now Unknown", name, self.grace_period
            )
            return written
        return node

    async def _follow_readiness(self, node: Any, now: datetime) -> None:
        name = node.metadata.name
        ready = ready_status(node)
        previous = self._last_ready.get(name)
        self._last_ready[name] = ready
        if previous is not None and previous != ready:
            if ready == "True":
                self.recorder.record(
                    node, "Normal", "NodeReady", f"Node {name} status is now: NodeReady"
                )
            elif previous == "True":
                self.recorder.record(
                    node, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady"
                )
        # An agent that reports Ready=False keeps writing its pods' status and
        # knows better; one that went silent cannot, so that case is level-triggered.
        if ready == "Unknown" or (ready == "False" and previous == "True"):
            await self._mark_pods_not_ready(name, now)

    async def _mark_pods_not_ready(self, node_name: str, now: datetime) -> None:
        for key in list(self._pods_by_node.get(node_name, ())):
            pod = self.pods.get(key)
            if pod is None or pod.spec.node_name != node_name:
                continue
            if not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions):
                continue
            fresh = copy_of(pod)
            set_pod_condition(fresh, "Ready", "False", rfc3339(now))
            try:
                await self.client.update_status(fresh)
            except (ConflictError, NotFoundError):
                continue  # next pass looks again
            self.recorder.record(pod, "Warning", "NodeNotReady", "Node is not ready")

    # -- NoExecute taints: rate limits and disruption ------------------------------------

    def _plan_no_execute(self, nodes: list[Any], now: datetime) -> dict[str, NoExecuteIntent]:
        by_zone: dict[str, list[Any]] = {}
        for node in nodes:
            by_zone.setdefault(zone_of(node), []).append(node)
        states = {
            zone: zone_state(
                (ready_status(n) == "True" for n in members), self.unhealthy_zone_threshold
            )
            for zone, members in by_zone.items()
        }
        all_down = all_fully_disrupted(states.values())
        if all_down != self.all_down:
            if all_down:
                log.warning(
                    "every node is not ready: entering full disruption mode; "
                    "no NoExecute taints and no evictions until a node is ready"
                )
            else:
                log.info("a node is ready again: leaving full disruption mode")
                # Nodes that were silent during the outage get a fresh grace period.
                for name, h in self.health.items():
                    self.health[name] = NodeHealth(now, h.renew_time, h.heartbeat, h.has_ready)
            self.all_down = all_down
        intents: dict[str, NoExecuteIntent] = {}
        if all_down:
            self._tainting.clear()
            return {n.metadata.name: NoExecuteIntent(True, None) for n in nodes}
        for zone in list(self._tainting):
            if zone not in by_zone:
                del self._tainting[zone]
        for zone, members in by_zone.items():
            limiter = self._limiters.get(zone)
            rate = eviction_rate(
                states[zone],
                len(members),
                rate=self.rate,
                secondary_rate=self.secondary_rate,
                large_cluster_threshold=self.large_cluster_threshold,
            )
            if limiter is None:
                limiter = self._limiters[zone] = TokenBucket(rate, clock=self.monotonic)
            limiter.set_rate(rate)
            pending = self._tainting.setdefault(zone, OrderedDict())
            wanted: dict[str, str] = {}
            for node in members:
                name = node.metadata.name
                want = no_execute_for(ready_status(node))
                have = owned_no_execute(node.spec.taints)
                if want is None:
                    pending.pop(name, None)
                    intents[name] = NoExecuteIntent(True, None)
                elif have:
                    # Already tainted: swapping not-ready <-> unreachable is not rate limited.
                    pending.pop(name, None)
                    intents[name] = NoExecuteIntent(True, want)
                else:
                    wanted[name] = want
                    pending.setdefault(name, None)
                    intents[name] = NoExecuteIntent(False, None)
            for name in list(pending):
                if name not in wanted:
                    del pending[name]
                    continue
                if not limiter.try_take():
                    break
                del pending[name]
                intents[name] = NoExecuteIntent(True, wanted[name])
        return intents

    async def _write_taints(self, node: Any, intent: NoExecuteIntent, now: datetime) -> None:
        """Make the node's owned taints match; `node` is the newest copy this
        pass has (it may be newer than the cache, right after a status write)."""
        name = node.metadata.name
        for _ in range(UPDATE_ATTEMPTS):
            if node is None:
                return
            taints = reconcile_taints(
                node.spec.taints,
                no_schedule=desired_no_schedule(node),
                no_execute=intent.key,
                now=rfc3339(now),
                manage_no_execute=intent.manage,
            )
            if taints is None:
                return
            fresh = copy_of(node)
            del fresh.spec.taints[:]
            fresh.spec.taints.extend(taints)
            try:
                await self.client.update(fresh)
                if intent.manage and intent.key:
                    log.info("node %s: tainted %s:%s", name, intent.key, NO_EXECUTE)
                return
            except NotFoundError:
                return
            except ConflictError:
                try:
                    node = await self.client.get("Node", name)
                except NotFoundError:
                    return
        log.warning("node %s: taints not updated: it kept changing", name)


def no_execute_taints(node: Any) -> set[tuple[str, str, str]]:
    """The node's NoExecute taints, for noticing a change that concerns pods."""
    return {(t.key, t.value, t.time_added) for t in node.spec.taints if t.effect == NO_EXECUTE}
