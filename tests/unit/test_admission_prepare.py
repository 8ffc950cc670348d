"""What an update may not change, and what binding records."""

from __future__ import annotations

import pytest

from orchestrator.api import codec
from orchestrator.apiserver.admission.prepare import prepare_update

pytestmark = pytest.mark.unit


def pod(node: str = "", scheduled: str = "") -> object:
    status = {"phase": "Pending"}
    if scheduled:
        status["conditions"] = [  # type: ignore[assignment]
            {"type": "PodScheduled", "status": scheduled, "reason": "Unschedulable"}
        ]
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": status,
        }
    )


def scheduled_condition(p: object) -> object | None:
    for cond in p.status.conditions:  # type: ignore[attr-defined]
        if cond.type == "PodScheduled":
            return cond
    return None


def test_binding_records_pod_scheduled_true() -> None:
    old, new = pod(), pod(node="n1")
    prepare_update(new, old)  # type: ignore[arg-type]
    cond = scheduled_condition(new)
    assert cond is not None and cond.status == "True" and cond.last_transition_time  # type: ignore[attr-defined]


def test_binding_replaces_an_unschedulable_condition() -> None:
    old, new = pod(scheduled="False"), pod(node="n1", scheduled="False")
    prepare_update(new, old)  # type: ignore[arg-type]
    cond = scheduled_condition(new)
    assert (cond.status, cond.reason) == ("True", "")  # type: ignore[union-attr]
    assert len(new.status.conditions) == 1  # type: ignore[attr-defined]


def test_other_pod_updates_leave_conditions_alone() -> None:
    old, new = pod(node="n1"), pod(node="n1")
    prepare_update(new, old)  # type: ignore[arg-type]
    assert scheduled_condition(new) is None
