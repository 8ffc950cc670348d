"""The HorizontalPodAutoscaler controller (autoscaling/v2), as Kubernetes'.

Every HPA is synced every `sync_period` (15 s), and at once when its spec
changes:

1. read the scale target (Deployment, ReplicaSet or StatefulSet) and its
   spec.replicas and selector; AbleToScale says whether that worked;
2. outside [minReplicas, maxReplicas], move inside; a target scaled to 0
   by hand disables autoscaling (ScalingDisabled);
3. otherwise fetch the pods' usage from the metrics API and let every
   metric propose a count (hpa_metrics, hpa_replicas); ScalingActive says
   whether a count could be computed, and why not (FailedGetResourceMetric
   with the reason, e.g. a container without a request);
4. stabilize and rate-limit the proposal (hpa_behavior); ScalingLimited says
   whether the policies or the bounds held it back;
5. write the new count to the target's spec.replicas (the workload
   controller does the rest), record SuccessfulRescale, and write status:
   currentReplicas, desiredReplicas, currentMetrics, lastScaleTime,
   conditions.

The recommendations and scale events that the windows and policies need are
kept in memory, as in Kubernetes: a restarted controller waits a window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.pb import autoscaling_v2_pb2 as asv2
from orchestrator.api.selectors import LabelSelector, SelectorError, selector_from_match
from orchestrator.client.client import ApiError, Client, ConflictError
from orchestrator.client.events import EventRecorder
from orchestrator.controllers.base import Controller
from orchestrator.controllers.hpa_behavior import (
    DEFAULT_DOWNSCALE_WINDOW,
    History,
    behavior_rules,
    limit_rate,
    record_scale,
    stabilize,
    tolerance_of,
)
from orchestrator.controllers.hpa_metrics import (
    ClientMetricsSource,
    InvalidMetric,
    MetricsSource,
    compute_replicas,
)
from orchestrator.controllers.hpa_replicas import DEFAULT_TOLERANCE

log = logging.getLogger(__name__)

COMPONENT = "horizontal-pod-autoscaler"
DEFAULT_SYNC_PERIOD = 15.0
SCALABLE_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")
UPDATE_ATTEMPTS = 3


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    status: Any, type_: str, value: str, reason: str, message: str, now: datetime
) -> None:
    """Set one condition, keeping lastTransitionTime while its status holds."""
    for cond in status.conditions:
        if cond.type == type_:
            if cond.status != value:
                cond.last_transition_time = rfc3339(now)
            cond.status, cond.reason, cond.message = value, reason, message
            return
    status.conditions.add(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=rfc3339(now),
    )


def target_selector(target: Any) -> LabelSelector | None:
    """The pods a scale target counts as its own; None without a selector."""
    sel = target.spec.selector
    if not sel.match_labels and not sel.match_expressions:
        return None
    return selector_from_match(
        dict(sel.match_labels),
        [(e.key, e.operator, list(e.values)) for e in sel.match_expressions],
    )


def spec_replicas(target: Any) -> int:
    return int(target.spec.replicas) if target.spec.HasField("replicas") else 1


class HorizontalPodAutoscalerController(Controller):
    name = "horizontal-pod-autoscaler"
    recorder: EventRecorder
    workers = 2

    def __init__(
        self,
        client: Client,
        *,
        metrics: MetricsSource | None = None,
        clock: Callable[[], datetime] | None = None,
        sync_period: float = DEFAULT_SYNC_PERIOD,
        downscale_window: int = DEFAULT_DOWNSCALE_WINDOW,
        tolerance: float = DEFAULT_TOLERANCE,
        recorder: Any = None,
    ) -> None:
        super().__init__(client)
        self.metrics: MetricsSource = metrics or ClientMetricsSource(client)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sync_period = sync_period
        self.downscale_window = downscale_window
        self.tolerance = tolerance
        self.recorder = recorder or EventRecorder(client, "", component=COMPONENT)
        self.histories: dict[str, History] = {}

    # -- wiring ------------------------------------------------------------------------

    def setup(self) -> None:
        self.hpas = self.informer("HorizontalPodAutoscaler")
        self.hpas.add_handler(self._on_hpa)
        self.pods = self.informer("Pod")

    def _on_hpa(self, type_: str, hpa: Any, old: Any) -> None:
        key = f"{hpa.metadata.namespace}/{hpa.metadata.name}"
        if type_ == "DELETED":
            self.histories.pop(key, None)
            return
        # Our own status writes come back as MODIFIED: only a spec change (a new
        # generation) is worth a sync before the timer's.
        if old is None or old.metadata.generation != hpa.metadata.generation:
            self.enqueue(hpa)

    # -- one HPA -----------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.hpas.get(key)
        if cached is None:
            self.histories.pop(key, None)
            return
        hpa = asv2.HorizontalPodAutoscaler()
        hpa.CopyFrom(cached)
        hpa.kind, hpa.api_version = "HorizontalPodAutoscaler", "autoscaling/v2"
        try:
            await self.reconcile(hpa, key)
        finally:
            if self.hpas.get(key) is not None:
                self.queue.add_after(key, self.sync_period)

    async def reconcile(self, hpa: Any, key: str) -> None:
        now = self.clock()
        before = asv2.HorizontalPodAutoscalerStatus()
        before.CopyFrom(hpa.status)
        status = hpa.status
        ref = hpa.spec.scale_target_ref
        ns = hpa.metadata.namespace
        target = await self._get_target(hpa, now)
        if target is None:
            await self._write_status(hpa, before)
            return
        set_condition(
            status,
            "AbleToScale",
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
            now,
        )
        current = spec_replicas(target)
        status.current_replicas = target.status.replicas
        min_replicas = hpa.spec.min_replicas if hpa.spec.HasField("min_replicas") else 1
        max_replicas = hpa.spec.max_replicas
        reason = ""
        if current == 0 and min_replicas != 0:
            desired = 0
            set_condition(
                status,
                "ScalingActive",
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                now,
            )
        elif current > max_replicas:
            desired, reason = max_replicas, "Current number of replicas above Spec.MaxReplicas"
            set_condition(
                status,
                "ScalingLimited",
                "True",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
                now,
            )
        elif current < min_replicas:
            desired, reason = min_replicas, "Current number of replicas below Spec.MinReplicas"
            set_condition(
                status,
                "ScalingLimited",
                "True",
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
                now,
            )
        else:
            computed = await self._from_metrics(hpa, target, current, now)
            if computed is None:
                await self._write_status(hpa, before)
                return
            proposed, metric = computed
            desired = self._normalize(hpa, key, current, proposed, min_replicas, now)
            if desired != current:
                reason = (
                    f"{metric} above target" if desired > current else "All metrics below target"
                )
        if desired != current:
            if not await self._rescale(hpa, ref, ns, desired, now):
                await self._write_status(hpa, before)
                return
            up, down = behavior_rules(hpa, self.downscale_window)
            record_scale(self.histories.setdefault(key, History()), current, desired, up, down, now)
            self.recorder.record(
                hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}"
            )
            log.info(
                "hpa %s: rescaled %s/%s %d -> %d (%s)",
                key,
                ref.kind,
                ref.name,
                current,
                desired,
                reason,
            )
            status.last_scale_time = rfc3339(now)
        status.desired_replicas = desired
        status.observed_generation = hpa.metadata.generation
        await self._write_status(hpa, before)

    async def _get_target(self, hpa: Any, now: datetime) -> Any | None:
        ref = hpa.spec.scale_target_ref
        problem = ""
        target = None
        if ref.kind not in SCALABLE_KINDS:
            problem = f'the kind "{ref.kind}" cannot be scaled (only {", ".join(SCALABLE_KINDS)})'
        else:
            try:
                target = await self.client.get(ref.kind, ref.name, hpa.metadata.namespace)
            except ApiError as exc:
                problem = exc.message
        if target is None:
            message = f"the HPA controller was unable to get the target's current scale: {problem}"
            set_condition(hpa.status, "AbleToScale", "False", "FailedGetScale", message, now)
            self.recorder.record(hpa, "Warning", "FailedGetScale", problem)
        return target

    async def _from_metrics(
        self, hpa: Any, target: Any, current: int, now: datetime
    ) -> tuple[int, str] | None:
        """(proposed count, deciding metric), or None with ScalingActive False."""
        status = hpa.status
        ns = hpa.metadata.namespace
        try:
            selector = target_selector(target)
        except SelectorError as exc:
            selector, problem = None, str(exc)
        else:
            problem = "the HPA target's scale is missing a selector"
        if selector is None:
            set_condition(status, "ScalingActive", "False", "InvalidSelector", problem, now)
            self.recorder.record(hpa, "Warning", "SelectorRequired", problem)
            return None
        pods = [
            p
            for p in self.pods.list()
            if p.metadata.namespace == ns and selector.matches(p.metadata.labels)
        ]
        try:
            usage = await self.metrics.pod_usage(ns, str(selector))
        except ApiError as exc:
            usage = {}
            log.info("hpa %s/%s: metrics unavailable: %s", ns, hpa.metadata.name, exc.message)
        try:
            computed = compute_replicas(
                list(hpa.spec.metrics), current, pods, usage, now, tolerance_of(hpa, self.tolerance)
            )
        except InvalidMetric as exc:
            set_condition(status, "ScalingActive", "False", exc.reason, exc.message, now)
            self.recorder.record(hpa, "Warning", exc.reason, exc.message)
            del status.current_metrics[:]
            return None
        del status.current_metrics[:]
        status.current_metrics.extend(computed.statuses)
        set_condition(
            status,
            "ScalingActive",
            "True",
            "ValidMetricFound",
            f"the HPA was able to successfully calculate a replica count from {computed.metric}",
            now,
        )
        return computed.replicas, computed.metric

    def _normalize(
        self, hpa: Any, key: str, current: int, proposed: int, min_replicas: int, now: datetime
    ) -> int:
        up, down = behavior_rules(hpa, self.downscale_window)
        history = self.histories.setdefault(key, History())
        stabilized = stabilize(history, current, proposed, up, down, now)
        status = hpa.status
        if stabilized != proposed:
            if stabilized > proposed:
                reason = "ScaleDownStabilized"
                message = (
                    "recent recommendations were higher than current one, "
                    "applying the highest recent recommendation"
                )
            else:
                reason = "ScaleUpStabilized"
                message = (
                    "recent recommendations were lower than current one, "
                    "applying the lowest recent recommendation"
                )
            set_condition(status, "AbleToScale", "True", reason, message, now)
        else:
            set_condition(
                status,
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
                now,
            )
        limited = limit_rate(
            current, stabilized, min_replicas, hpa.spec.max_replicas, history, up, down, now
        )
        set_condition(
            status,
            "ScalingLimited",
            "False" if limited.replicas == stabilized else "True",
            limited.reason,
            limited.message,
            now,
        )
        return limited.replicas

    async def _rescale(self, hpa: Any, ref: Any, ns: str, desired: int, now: datetime) -> bool:
        """Write spec.replicas of the target; False (condition and event set) on failure."""
        problem = "the target kept changing"
        for _ in range(UPDATE_ATTEMPTS):
            try:
                target = await self.client.get(ref.kind, ref.name, ns)
                target.spec.replicas = desired
                await self.client.update(target)
            except ConflictError:
                continue  # changed meanwhile (its controller's status): read again
            except ApiError as exc:
                problem = exc.message
                break
            set_condition(
                hpa.status,
                "AbleToScale",
                "True",
                "SucceededRescale",
                f"the HPA controller was able to update the target scale to {desired}",
                now,
            )
            return True
        message = f"the HPA controller was unable to update the target scale: {problem}"
        set_condition(hpa.status, "AbleToScale", "False", "FailedUpdateScale", message, now)
        self.recorder.record(hpa, "Warning", "FailedRescale", f"New size: {desired}; {problem}")
        return False

    async def _write_status(self, hpa: Any, before: Any) -> None:
        if hpa.status == before:
            return
        try:
            await self.client.update_status(hpa)
        except ConflictError:
            raise  # the worker retries with a fresh copy
        except ApiError as exc:
            log.warning(
                "hpa %s/%s: status not written: %s",
                hpa.metadata.namespace,
                hpa.metadata.name,
                exc.message,
            )
