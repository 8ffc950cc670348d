"""How fast an HPA may move: stabilization windows and scaling policies
(spec.behavior), as Kubernetes' normalizeDesiredReplicasWithBehaviors.

1. Stabilize. Every sync's raw recommendation is remembered. Within the
   scale-down window (default 300 s) the highest recommendation wins, so a
   dip in load does not drop pods at once; within the scale-up window
   (default 0) the lowest wins.
2. Limit the rate. Each policy allows so many pods (or percent) per period,
   counted from the replica count at the start of the period (the scale
   events of the period are remembered). selectPolicy Max takes the most
   permissive policy, Min the least, Disabled forbids that direction.
3. Clamp to [minReplicas, maxReplicas].

Without spec.behavior the defaults apply, as Kubernetes fills them in:
scale up by max(4 pods, 100%) per 15 s with no window; scale down by 100%
per 15 s after the 300 s window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.quantity import QuantityError, parse_quantity
from orchestrator.controllers.hpa_replicas import DEFAULT_TOLERANCE, Tolerance

DEFAULT_DOWNSCALE_WINDOW = 300


@dataclass(frozen=True)
class Policy:
    type: str  # Pods | Percent
    value: int
    period_seconds: int


@dataclass(frozen=True)
class Rules:
    window_seconds: int
    select: str  # Max | Min | Disabled
    policies: tuple[Policy, ...]


DEFAULT_SCALE_UP = Rules(0, "Max", (Policy("Pods", 4, 15), Policy("Percent", 100, 15)))


def default_scale_down(window: int = DEFAULT_DOWNSCALE_WINDOW) -> Rules:
    return Rules(window, "Max", (Policy("Percent", 100, 15),))


def _rules(rules: Any, present: bool, default: Rules) -> Rules:
    if not present:
        return default
    window = (
        rules.stabilization_window_seconds
        if rules.HasField("stabilization_window_seconds")
        else default.window_seconds
    )
    select = rules.select_policy if rules.HasField("select_policy") else default.select
    policies = (
        tuple(Policy(p.type, p.value, p.period_seconds) for p in rules.policies) or default.policies
    )
    return Rules(window, select, policies)


def behavior_rules(
    hpa: Any, downscale_window: int = DEFAULT_DOWNSCALE_WINDOW
) -> tuple[Rules, Rules]:
    """(scale up, scale down) rules of an HPA, defaults filled in."""
    spec = hpa.spec
    down_default = default_scale_down(downscale_window)
    if not spec.HasField("behavior"):
        return DEFAULT_SCALE_UP, down_default
    b = spec.behavior
    return (
        _rules(b.scale_up, b.HasField("scale_up"), DEFAULT_SCALE_UP),
        _rules(b.scale_down, b.HasField("scale_down"), down_default),
    )


def tolerance_of(hpa: Any, default: float = DEFAULT_TOLERANCE) -> Tolerance:
    """spec.behavior.scale{Up,Down}.tolerance (a quantity such as "0.05"), else the default."""

    def one(rules: Any) -> float:
        if not rules.HasField("tolerance"):
            return default
        try:
            return float(parse_quantity(rules.tolerance))
        except QuantityError:
            return default

    spec = hpa.spec
    if not spec.HasField("behavior"):
        return Tolerance(default, default)
    return Tolerance(down=one(spec.behavior.scale_down), up=one(spec.behavior.scale_up))


@dataclass
class Recommendation:
    replicas: int
    at: datetime


@dataclass
class ScaleEvent:
    change: int  # pods added (scale-up events) or removed (scale-down events)
    at: datetime


@dataclass
class History:
    """What one HPA's controller remembers between syncs (in memory, as Kubernetes)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    up_events: list[ScaleEvent] = field(default_factory=list)
    down_events: list[ScaleEvent] = field(default_factory=list)


def stabilize(
    history: History, current: int, desired: int, up: Rules, down: Rules, now: datetime
) -> int:
    """The recommendation after the stabilization windows; records `desired`."""
    up_cutoff = now - timedelta(seconds=up.window_seconds)
    down_cutoff = now - timedelta(seconds=down.window_seconds)
    up_limit = down_limit = desired
    for rec in history.recommendations:
        if rec.at > up_cutoff:
            up_limit = min(up_limit, rec.replicas)
        if rec.at > down_cutoff:
            down_limit = max(down_limit, rec.replicas)
    recommendation = max(current, up_limit)
    recommendation = min(recommendation, down_limit)
    oldest = min(up_cutoff, down_cutoff)
    history.recommendations = [r for r in history.recommendations if r.at >= oldest]
    history.recommendations.append(Recommendation(desired, now))
    return recommendation


def _changed_within(events: list[ScaleEvent], period_seconds: int, now: datetime) -> int:
    cutoff = now - timedelta(seconds=period_seconds)
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(current: int, history: History, rules: Rules, now: datetime) -> int:
    if rules.select == "Disabled":
        return current
    pick = min if rules.select == "Min" else max
    result: int | None = None
    for p in rules.policies:
        start = (
            current
            - _changed_within(history.up_events, p.period_seconds, now)
            + _changed_within(history.down_events, p.period_seconds, now)
        )
        if p.type == "Pods":
            proposed = start + p.value
        else:
            proposed = math.ceil(start * (1 + p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(current: int, history: History, rules: Rules, now: datetime) -> int:
    if rules.select == "Disabled":
        return current
    # The most permissive scale-down policy is the one allowing the lowest count.
    pick = max if rules.select == "Min" else min
    result: int | None = None
    for p in rules.policies:
        start = (
            current
            - _changed_within(history.up_events, p.period_seconds, now)
            + _changed_within(history.down_events, p.period_seconds, now)
        )
        if p.type == "Pods":
            proposed = start - p.value
        else:
            proposed = int(start * (1 - p.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


@dataclass(frozen=True)
class Limited:
    replicas: int
    reason: str
    message: str


def limit_rate(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    history: History,
    up: Rules,
    down: Rules,
    now: datetime,
) -> Limited:
    """The count the policies and [min, max] allow, with the ScalingLimited reason."""
    if desired > current:
        limit = max(scale_up_limit(current, history, up, now), current)
        if max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
            message = "the desired replica count is increasing faster than the maximum scale rate"
        else:
            allowed, reason = max_replicas, "TooManyReplicas"
            message = "the desired replica count is more than the maximum replica count"
        if desired > allowed:
            return Limited(allowed, reason, message)
    elif desired < current:
        limit = min(scale_down_limit(current, history, down, now), current)
        if min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
            message = "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            allowed, reason = min_replicas, "TooFewReplicas"
            message = "the desired replica count is less than the minimum replica count"
        if desired < allowed:
            return Limited(allowed, reason, message)
    return Limited(
        desired, "DesiredWithinRange", "the desired count is within the acceptable range"
    )


def record_scale(
    history: History, previous: int, new: int, up: Rules, down: Rules, now: datetime
) -> None:
    """Remember a rescale for the rate limits; events older than every period go."""
    longest_up = max((p.period_seconds for p in up.policies), default=0)
    longest_down = max((p.period_seconds for p in down.policies), default=0)
    history.up_events = [e for e in history.up_events if e.at > now - timedelta(seconds=longest_up)]
    history.down_events = [
        e for e in history.down_events if e.at > now - timedelta(seconds=longest_down)
    ]
    if new > previous:
        history.up_events.append(ScaleEvent(new - previous, now))
    elif new < previous:
        history.down_events.append(ScaleEvent(previous - new, now))
