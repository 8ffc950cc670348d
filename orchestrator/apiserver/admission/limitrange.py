"""LimitRange admission, as Kubernetes' LimitRanger plugin.

On pod create, for every LimitRange in the pod's namespace:
- items of type Container give their `default` (limits) and `defaultRequest`
  (requests) to every container and init container that lacks them, and
  the pod is annotated `kubernetes.io/limit-ranger` with what was set;
- min, max and maxLimitRequestRatio of Container items are checked per
  container, those of Pod items against the pod's totals; every violation
  is reported, in Kubernetes' words.

An item's own defaults follow Kubernetes' SetDefaults_LimitRangeItem: a
missing default limit is the max, a missing default request is the default
limit, else the min.

The rules are pure functions of `LimitItem`s; `limit_items` reads them from
LimitRange objects (spec.limits[]: type, max, min, default, defaultRequest,
maxLimitRequestRatio).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from orchestrator.api import quota as q
from orchestrator.api.quantity import format_quantity

ANNOTATION = "kubernetes.io/limit-ranger"
CONTAINER = "Container"
POD = "Pod"


@dataclass(frozen=True)
class LimitItem:
    type: str
    max: Mapping[str, str] = field(default_factory=dict)
    min: Mapping[str, str] = field(default_factory=dict)
    default: Mapping[str, str] = field(default_factory=dict)
    default_request: Mapping[str, str] = field(default_factory=dict)
    max_limit_request_ratio: Mapping[str, str] = field(default_factory=dict)


def limit_items(limit_range: Any) -> list[LimitItem]:
    """The items of a LimitRange object, with Kubernetes' item defaults applied."""
    return [
        with_item_defaults(
            LimitItem(
                type=item.type,
                max=dict(item.max),
                min=dict(item.min),
                default=dict(item.default),
                default_request=dict(item.default_request),
                max_limit_request_ratio=dict(item.max_limit_request_ratio),
            )
        )
        for item in limit_range.spec.limits
    ]


def with_item_defaults(item: LimitItem) -> LimitItem:
    """SetDefaults_LimitRangeItem: default limit <- max; default request <-
    default limit, else min. Container items only."""
    if item.type != CONTAINER:
        return item
    default = {**item.max, **item.default}
    request = {**item.min, **default, **item.default_request}
    return LimitItem(item.type, item.max, item.min, default, request, item.max_limit_request_ratio)


# -- defaults -------------------------------------------------------------------------


def container_defaults(items: Iterable[LimitItem]) -> tuple[dict[str, str], dict[str, str]]:
    """(requests, limits) to give containers: later Container items win."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for item in items:
        if item.type == CONTAINER:
            requests.update(item.default_request)
            limits.update(item.default)
    return requests, limits


def _merge_container(
    container: Any, requests: Mapping[str, str], limits: Mapping[str, str], what: str
) -> list[str]:
    res = container.resources
    set_limits = sorted(n for n in limits if n not in res.limits)
    set_requests = sorted(n for n in requests if n not in res.requests)
    for n in set_limits:
        res.limits[n] = limits[n]
    for n in set_requests:
        res.requests[n] = requests[n]
    notes = []
    if set_requests:
        notes.append(f"{', '.join(set_requests)} request for {what} {container.name}")
    if set_limits:
        notes.append(f"{', '.join(set_limits)} limit for {what} {container.name}")
    return notes


def apply_defaults(pod: Any, items: Iterable[LimitItem]) -> bool:
    """Give the pod's containers the default requests and limits they lack;
    returns whether anything was set."""
    requests, limits = container_defaults(items)
    if not requests and not limits:
        return False
    notes: list[str] = []
    for c in pod.spec.containers:
        notes += _merge_container(c, requests, limits, "container")
    for c in pod.spec.init_containers:
        notes += _merge_container(c, requests, limits, "init container")
    if notes:
        pod.metadata.annotations[ANNOTATION] = "LimitRanger plugin set: " + "; ".join(notes)
    return bool(notes)


# -- constraints ----------------------------------------------------------------------

Amounts = Mapping[str, Fraction]


def _min(kind: str, name: str, floor: Fraction, requests: Amounts, limits: Amounts) -> str | None:
    head = f"minimum {name} usage per {kind} is {q.format_resource(name, floor)}"
    if name not in requests:
        return f"{head}.  No request is specified"
    if requests[name] < floor:
        return f"{head}, but request is {q.format_resource(name, requests[name])}"
    if name in limits and limits[name] < floor:
        return f"{head}, but limit is {q.format_resource(name, limits[name])}"
    return None


def _max(kind: str, name: str, ceiling: Fraction, requests: Amounts, limits: Amounts) -> str | None:
    head = f"maximum {name} usage per {kind} is {q.format_resource(name, ceiling)}"
    if name not in limits:
        return f"{head}.  No limit is specified"
    if limits[name] > ceiling:
        return f"{head}, but limit is {q.format_resource(name, limits[name])}"
    if name in requests and requests[name] > ceiling:
        return f"{head}, but request is {q.format_resource(name, requests[name])}"
    return None


def _ratio(kind: str, name: str, most: Fraction, requests: Amounts, limits: Amounts) -> str | None:
    head = f"{name} max limit to request ratio per {kind} is {format_quantity(most)}"
    request = requests.get(name, Fraction(0))
    limit = limits.get(name, Fraction(0))
    if request == 0:
        return f"{head}, but no request is specified or request is 0"
    if limit == 0:
        return f"{head}, but no limit is specified or limit is 0"
    if limit / request > most:
        return f"{head}, but provided ratio is {float(limit / request):f}"
    return None


def _check(kind: str, item: LimitItem, requests: Amounts, limits: Amounts) -> list[str]:
    errs: list[str | None] = []
    for name, v in sorted(q.resource_list(item.min).items()):
        errs.append(_min(kind, name, v, requests, limits))
    for name, v in sorted(q.resource_list(item.max).items()):
        errs.append(_max(kind, name, v, requests, limits))
    for name, v in sorted(q.resource_list(item.max_limit_request_ratio).items()):
        errs.append(_ratio(kind, name, v, requests, limits))
    return [e for e in errs if e is not None]


def violations(pod: Any, items: Iterable[LimitItem]) -> list[str]:
    """Every min/max/ratio the pod breaks, in Kubernetes' words, without repeats."""
    errs: list[str] = []
    for item in items:
        if item.type == CONTAINER:
            for c in (*pod.spec.containers, *pod.spec.init_containers):
                requests = q.resource_list(c.resources.requests)
                limits = q.resource_list(c.resources.limits)
                errs += _check(CONTAINER, item, requests, limits)
        elif item.type == POD:
            requests = q.pod_requests(pod.spec, overhead=False)
            limits = q.pod_limits(pod.spec, overhead=False)
            errs += _check(POD, item, requests, limits)
    return list(dict.fromkeys(errs))


def violation_message(errs: list[str]) -> str:
    """One error alone, several as Kubernetes' aggregate: `[a, b]`."""
    return errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"
