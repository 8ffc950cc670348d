"""The resourcequota controller's decisions: the status it wants, and which
changes to an object can move a quota's count."""

from __future__ import annotations

import pytest

from orchestrator.controllers.resourcequota import charge_changed, desired_status
from tests.unit.test_quota import pod, quota, service, sized

pytestmark = pytest.mark.unit


def test_desired_status_copies_hard_and_counts_used_in_kubernetes_units() -> None:
    rq = quota(requests_memory="2Gi", pods="3", services="1")
    objects = [pod("a", containers=[sized("1", "1Gi")]), pod("b", containers=[sized("1", "512Mi")])]
    hard, used = desired_status(rq, objects)
    assert hard == {"requests.memory": "2Gi", "pods": "3", "services": "1"}
    assert used == {"requests.memory": "1536Mi", "pods": "2", "services": "0"}


def test_only_changes_to_what_an_object_charges_requeue_quotas() -> None:
    running = pod("a", containers=[sized("1")])
    running.status.phase = "Running"
    assert not charge_changed(running, pod("a", containers=[sized("1")]))
    finished = pod("a", phase="Succeeded", containers=[sized("1")])
    assert charge_changed(finished, running)
    deadline = pod("a", containers=[sized("1")], activeDeadlineSeconds=30)
    assert charge_changed(deadline, pod("a", containers=[sized("1")]))  # Terminating scope
    assert charge_changed(service("NodePort"), service())
    relabelled = service()
    relabelled.metadata.labels["x"] = "y"
    assert not charge_changed(relabelled, service())
