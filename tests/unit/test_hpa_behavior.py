"""HPA behavior: the scale-down stabilization window, scaling policies and
the min/max clamp, with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.controllers.hpa_behavior import (
    DEFAULT_SCALE_UP,
    History,
    Policy,
    Rules,
    behavior_rules,
    default_scale_down,
    limit_rate,
    record_scale,
    stabilize,
    tolerance_of,
)
from orchestrator.controllers.hpa_replicas import Tolerance

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
DOWN = default_scale_down()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_scale_down_waits_for_the_window_and_takes_the_highest() -> None:
    history = History()
    # Load peaks: 8 recommended (the scale-up is immediate, window 0).
    assert stabilize(history, 4, 8, DEFAULT_SCALE_UP, DOWN, at(0)) == 8
    # Then it falls: 3 and 5 recommended, but 8 was within the last 300 s.
    assert stabilize(history, 8, 3, DEFAULT_SCALE_UP, DOWN, at(60)) == 8
    assert stabilize(history, 8, 5, DEFAULT_SCALE_UP, DOWN, at(120)) == 8
    # 8 leaves the window: the highest left is 5.
    assert stabilize(history, 8, 2, DEFAULT_SCALE_UP, DOWN, at(301)) == 5
    # And later the lowest sustained recommendation.
    assert stabilize(history, 5, 2, DEFAULT_SCALE_UP, DOWN, at(421)) == 2
    # Old recommendations are dropped, not kept for ever.
    assert all(r.at >= at(421) - timedelta(seconds=300) for r in history.recommendations)


def test_a_custom_window_and_a_scale_up_window() -> None:
    history = History()
    quick = default_scale_down(30)
    assert stabilize(history, 4, 4, DEFAULT_SCALE_UP, quick, at(0)) == 4
    assert stabilize(history, 4, 1, DEFAULT_SCALE_UP, quick, at(31)) == 1
    # A scale-up window holds a rise until it is sustained: the lowest wins.
    slow_up = Rules(60, "Max", DEFAULT_SCALE_UP.policies)
    history = History()
    assert stabilize(history, 2, 2, slow_up, DOWN, at(0)) == 2
    assert stabilize(history, 2, 6, slow_up, DOWN, at(30)) == 2
    assert stabilize(history, 2, 6, slow_up, DOWN, at(61)) == 6


def test_default_scale_up_rate_four_pods_or_double() -> None:
    history = History()
    up, down = DEFAULT_SCALE_UP, DOWN
    limited = limit_rate(2, 20, 1, 50, history, up, down, at(0))
    assert (limited.replicas, limited.reason) == (6, "ScaleUpLimit")  # 2 + 4 > 2 * 2
    assert limited.message == (
        "the desired replica count is increasing faster than the maximum scale rate"
    )
    assert limit_rate(10, 40, 1, 50, history, up, down, at(0)).replicas == 20  # doubled
    # Within the period the pods added count: starting at 6 after 2 -> 6, the
    # period began at 2 and only 6 (2 + 4) is allowed until it ends.
    record_scale(history, 2, 6, up, down, at(0))
    assert limit_rate(6, 20, 1, 50, history, up, down, at(10)).replicas == 6
    assert limit_rate(6, 20, 1, 50, history, up, down, at(16)).replicas == 12


def test_scale_down_policy_pods_per_period() -> None:
    down = Rules(0, "Max", (Policy("Pods", 1, 60),))
    history = History()
    first = limit_rate(10, 2, 1, 20, history, DEFAULT_SCALE_UP, down, at(0))
    assert (first.replicas, first.reason) == (9, "ScaleDownLimit")
    record_scale(history, 10, 9, DEFAULT_SCALE_UP, down, at(0))
    assert limit_rate(9, 2, 1, 20, history, DEFAULT_SCALE_UP, down, at(30)).replicas == 9
    assert limit_rate(9, 2, 1, 20, history, DEFAULT_SCALE_UP, down, at(61)).replicas == 8
    # Min picks the least change of several policies; Max the most.
    both = (Policy("Pods", 1, 60), Policy("Percent", 50, 60))
    most = Rules(0, "Max", both)
    least = Rules(0, "Min", both)
    assert limit_rate(10, 1, 1, 20, History(), DEFAULT_SCALE_UP, most, at(0)).replicas == 5
    assert limit_rate(10, 1, 1, 20, History(), DEFAULT_SCALE_UP, least, at(0)).replicas == 9


def test_disabled_direction_never_moves() -> None:
    off = Rules(0, "Disabled", (Policy("Percent", 100, 15),))
    assert limit_rate(5, 1, 1, 10, History(), DEFAULT_SCALE_UP, off, at(0)).replicas == 5
    assert limit_rate(5, 9, 1, 10, History(), off, DOWN, at(0)).replicas == 5


def test_min_and_max_clamp() -> None:
    history = History()
    high = limit_rate(8, 12, 2, 10, history, DEFAULT_SCALE_UP, DOWN, at(0))
    assert (high.replicas, high.reason) == (10, "TooManyReplicas")
    low = limit_rate(4, 1, 2, 10, history, DEFAULT_SCALE_UP, DOWN, at(0))
    assert (low.replicas, low.reason) == (2, "TooFewReplicas")
    ok = limit_rate(4, 6, 2, 10, history, DEFAULT_SCALE_UP, DOWN, at(0))
    assert (ok.replicas, ok.reason) == (6, "DesiredWithinRange")


def test_rules_and_tolerance_from_the_spec() -> None:
    hpa = kind_info("HorizontalPodAutoscaler").new()
    up, down = behavior_rules(hpa, 120)
    assert up == DEFAULT_SCALE_UP and down == default_scale_down(120)
    assert tolerance_of(hpa) == Tolerance(0.1, 0.1)
    hpa.spec.behavior.scale_down.stabilization_window_seconds = 60
    hpa.spec.behavior.scale_down.policies.add(type="Pods", value=2, period_seconds=30)
    hpa.spec.behavior.scale_up.select_policy = "Disabled"
    hpa.spec.behavior.scale_up.tolerance = "0.05"
    up, down = behavior_rules(hpa)
    assert down == Rules(60, "Max", (Policy("Pods", 2, 30),))
    assert up == Rules(0, "Disabled", DEFAULT_SCALE_UP.policies)
    assert tolerance_of(hpa) == Tolerance(down=0.1, up=0.05)
