"""LimitRange admission: defaults given to containers, min/max/ratio refused in
Kubernetes' words, and its place before the quota check."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.apiserver.admission import apply_defaults, limitrange, policy
from orchestrator.apiserver.admission.limitrange import LimitItem
from orchestrator.apiserver.errors import Forbidden, Invalid
from tests.unit.manifests import container
from tests.unit.test_quota import FakeCache, quota, sized

pytestmark = pytest.mark.unit


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x", "namespace": "demo"},
            "spec": {"containers": list(containers) or [container()], "initContainers": list(init)},
        }
    )


def defaulted(p: Any) -> Any:
    """As the registry hands a pod to admission: with Kubernetes' defaults."""
    apply_defaults(p)
    return p


def resources(c: Any) -> tuple[dict[str, str], dict[str, str]]:
    return dict(c.resources.requests), dict(c.resources.limits)


CONTAINER_DEFAULTS = limitrange.with_item_defaults(
    LimitItem(
        "Container",
        default={"cpu": "500m", "memory": "256Mi"},
        default_request={"cpu": "100m", "memory": "128Mi"},
    )
)


def test_item_defaults_follow_kubernetes() -> None:
    item = limitrange.with_item_defaults(
        LimitItem("Container", max={"cpu": "2"}, min={"cpu": "100m", "memory": "64Mi"})
    )
    # default limit <- max; default request <- default limit, else min.
    assert dict(item.default) == {"cpu": "2"}
    assert dict(item.default_request) == {"cpu": "2", "memory": "64Mi"}
    pod_item = LimitItem("Pod", max={"cpu": "2"})
    assert limitrange.with_item_defaults(pod_item) is pod_item


def test_defaults_fill_only_what_containers_lack_and_are_recorded() -> None:
    p = pod(
        container(),
        container(name="side", resources={"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}}),
        init=(container(name="setup"),),
    )
    assert limitrange.apply_defaults(p, [CONTAINER_DEFAULTS])
    app, side = p.spec.containers
    assert resources(app) == (
        {"cpu": "100m", "memory": "128Mi"},
        {"cpu": "500m", "memory": "256Mi"},
    )
    assert resources(side) == ({"cpu": "50m", "memory": "128Mi"}, {"cpu": "1", "memory": "256Mi"})
    assert resources(p.spec.init_containers[0])[1] == {"cpu": "500m", "memory": "256Mi"}
    assert p.metadata.annotations[limitrange.ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container app; "
        "cpu, memory limit for container app; memory request for container side; "
        "memory limit for container side; cpu, memory request for init container setup; "
        "cpu, memory limit for init container setup"
    )


def test_nothing_to_default_leaves_the_pod_alone() -> None:
    p = pod(sized("100m", "128Mi"))
    before = p.SerializeToString()
    assert not limitrange.apply_defaults(p, [CONTAINER_DEFAULTS])
    assert not limitrange.apply_defaults(p, [LimitItem("Pod", max={"cpu": "1"})])
    assert p.SerializeToString() == before


def test_max_is_enforced_on_limits_and_requests() -> None:
    item = LimitItem("Container", max={"cpu": "1", "memory": "1Gi"})
    assert limitrange.violations(pod(sized("2", "512Mi")), [item]) == [
        "maximum cpu usage per Container is 1, but limit is 2"
    ]
    no_limit = pod(sized("500m", limits=False))
    assert limitrange.violations(no_limit, [item]) == [
        "maximum cpu usage per Container is 1.  No limit is specified",
        "maximum memory usage per Container is 1Gi.  No limit is specified",
    ]


def test_min_is_enforced_on_requests_and_limits() -> None:
    item = LimitItem("Container", min={"cpu": "200m"})
    assert limitrange.violations(pod(sized("100m")), [item]) == [
        "minimum cpu usage per Container is 200m, but request is 100m"
    ]
    assert limitrange.violations(pod(container()), [item]) == [
        "minimum cpu usage per Container is 200m.  No request is specified"
    ]
    low_limit = container(resources={"requests": {"cpu": "300m"}, "limits": {"cpu": "150m"}})
    assert limitrange.violations(pod(low_limit), [item]) == [
        "minimum cpu usage per Container is 200m, but limit is 150m"
    ]


def test_limit_to_request_ratio() -> None:
    item = LimitItem("Container", max_limit_request_ratio={"cpu": "2"})
    wide = container(resources={"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}})
    assert limitrange.violations(pod(wide), [item]) == [
        "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
    ]
    assert limitrange.violations(pod(sized("1")), [item]) == []
    assert limitrange.violations(pod(container()), [item]) == [
        "cpu max limit to request ratio per Container is 2, "
        "but no request is specified or request is 0"
    ]


def test_pod_items_look_at_the_pods_totals() -> None:
    item = LimitItem("Pod", max={"cpu": "1"})
    two = pod(sized("600m"), sized("600m", name="side"))
    assert limitrange.violations(two, [item]) == [
        "maximum cpu usage per Pod is 1, but limit is 1200m"
    ]
    assert limitrange.violations(pod(sized("600m")), [item]) == []


def test_several_violations_read_as_kubernetes_aggregate() -> None:
    assert limitrange.violation_message(["a"]) == "a"
    assert limitrange.violation_message(["a", "b"]) == "[a, b]"


# -- in admission ---------------------------------------------------------------------


@pytest.fixture
def items(monkeypatch: pytest.MonkeyPatch) -> list[LimitItem]:
    """The namespace's LimitRange items, as admission reads them."""
    found: list[LimitItem] = []
    monkeypatch.setattr(policy, "limit_items", lambda _cache, _ns: found)
    return found


async def test_admission_refuses_a_pod_over_max(items: list[LimitItem]) -> None:
    items.append(LimitItem("Container", max={"cpu": "1"}, default={"cpu": "1"}))
    with pytest.raises(Forbidden) as exc:
        await policy.check_quota_and_policy(defaulted(pod(sized("2"))), FakeCache())  # type: ignore[arg-type]
    assert exc.value.message == (
        'pods "x" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )


async def test_quota_sees_the_requests_a_limit_range_filled_in(items: list[LimitItem]) -> None:
    items.append(CONTAINER_DEFAULTS)
    cache = FakeCache(
        quota(requests_cpu="150m", limits_cpu="1"), quota("mem", requests_memory="1Gi")
    )
    p = defaulted(pod(container(), container(name="side")))
    # Without defaults the quota would say "must specify"; with them it counts 200m.
    with pytest.raises(Forbidden) as exc:
        await policy.check_quota_and_policy(p, cache)  # type: ignore[arg-type]
    assert exc.value.message == (
        'pods "x" is forbidden: exceeded quota: compute, requested: requests.cpu=200m, '
        "used: requests.cpu=0, limited: requests.cpu=150m"
    )


async def test_defaults_that_contradict_the_pod_are_invalid(items: list[LimitItem]) -> None:
    items.append(LimitItem("Container", default={"cpu": "500m"}, default_request={"cpu": "500m"}))
    own_request = container(resources={"requests": {"cpu": "2"}})
    with pytest.raises(Invalid) as exc:
        await policy.check_quota_and_policy(defaulted(pod(own_request)), FakeCache())  # type: ignore[arg-type]
    assert "spec.containers[0].resources.requests" in exc.value.message


def test_limit_range_bounds_must_nest_and_types_are_known() -> None:
    from orchestrator.api import codec
    from orchestrator.apiserver.admission.validation import validate

    lr = codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "l", "namespace": "d"},
            "spec": {
                "limits": [
                    {"type": "Container", "default": {"cpu": "3"}, "max": {"cpu": "2"}},
                    {"type": "Bogus"},
                ]
            },
        }
    )
    got = [str(e) for e in validate(lr, None)]
    assert got == [
        'spec.limits[0].default[cpu]: Invalid value: "3": default value 3 must be less than '
        "or equal to max value 2",
        'spec.limits[1].type: Unsupported value: "Bogus": supported values: "Container", '
        '"Pod", "PersistentVolumeClaim"',
    ]
