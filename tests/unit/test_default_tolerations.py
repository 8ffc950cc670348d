"""DefaultTolerationSeconds admission: pods ride out a node outage for 300 s
unless they say otherwise."""

from __future__ import annotations

import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.apiserver.admission import apply_defaults, validate
from orchestrator.apiserver.admission.default_tolerations import (
    NOT_READY_TAINT,
    UNREACHABLE_TAINT,
    add_default_tolerations,
)

pytestmark = pytest.mark.unit


def pod(*tolerations: core.Toleration) -> core.Pod:
    p = core.Pod(api_version="v1", kind="Pod")
    p.metadata.name = "web"
    p.metadata.namespace = "default"
    p.spec.containers.add(name="app", image="busybox")
    p.spec.tolerations.extend(tolerations)
    return p


def summary(p: core.Pod) -> list[tuple[str, str, str, int | None]]:
    return [
        (
            t.key,
            t.operator,
            t.effect,
            t.toleration_seconds if t.HasField("toleration_seconds") else None,
        )
        for t in p.spec.tolerations
    ]


def test_a_pod_without_them_gets_both_with_300_seconds() -> None:
    p = pod()
    add_default_tolerations(p)
    assert summary(p) == [
        (NOT_READY_TAINT, "Exists", "NoExecute", 300),
        (UNREACHABLE_TAINT, "Exists", "NoExecute", 300),
    ]
    apply_defaults(p)
    assert validate(p, None) == []  # what the defaults add passes validation
    add_default_tolerations(p)  # idempotent
    assert len(p.spec.tolerations) == 2


def test_the_seconds_are_configurable() -> None:
    p = pod()
    add_default_tolerations(p, not_ready_seconds=30, unreachable_seconds=60)
    assert [t.toleration_seconds for t in p.spec.tolerations] == [30, 60]


def test_the_pods_own_tolerations_win() -> None:
    own = core.Toleration(
        key=UNREACHABLE_TAINT, operator="Exists", effect="NoExecute", toleration_seconds=6000
    )
    p = pod(own)
    add_default_tolerations(p)
    assert summary(p) == [
        (UNREACHABLE_TAINT, "Exists", "NoExecute", 6000),
        (NOT_READY_TAINT, "Exists", "NoExecute", 300),
    ]
    # A toleration of every taint (empty key, Exists) covers both: nothing added.
    everything = pod(core.Toleration(operator="Exists"))
    add_default_tolerations(everything)
    assert len(everything.spec.tolerations) == 1
    # One for another effect does not count.
    other = pod(core.Toleration(key=NOT_READY_TAINT, operator="Exists", effect="NoSchedule"))
    add_default_tolerations(other)
    assert len(other.spec.tolerations) == 3


def test_other_kinds_are_left_alone() -> None:
    svc = core.Service(api_version="v1", kind="Service")
    add_default_tolerations(svc)
    assert not svc.HasField("spec")
