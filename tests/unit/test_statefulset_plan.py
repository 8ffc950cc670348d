"""StatefulSet decisions: ordinal plans, scale down, rolling update with a
partition, pod identity and claims, revision history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers import history
from orchestrator.controllers.stateful_plan import (
    Create,
    Delete,
    SetShape,
    count_pods,
    plan_statefulset,
    rollout_complete,
)
from orchestrator.controllers.stateful_pods import (
    POD_NAME_LABEL,
    new_claims,
    new_pod,
    ordinal_of,
)

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
OLD, NEW = "web-old", "web-new"


def pod(ordinal: int, *, rev: str = NEW, ready: bool = True, phase: str = "") -> core.Pod:
    p = core.Pod()
    p.metadata.name = f"web-{ordinal}"
    p.metadata.uid = f"uid-{ordinal}"
    p.metadata.labels[history.REVISION_HASH_LABEL] = rev
    p.status.phase = phase or ("Running" if ready else "Pending")
    if ready:
        cond = p.status.conditions.add(type="Ready", status="True")
        cond.last_transition_time = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return p


def terminating(p: core.Pod) -> core.Pod:
    p.metadata.deletion_timestamp = "2024-05-01T12:00:00Z"
    return p


def shape(replicas: int, **kw: object) -> SetShape:
    return SetShape(name="web", replicas=replicas, **kw)  # type: ignore[arg-type]


def plan(sh: SetShape, pods: list[core.Pod], current: str = NEW, update: str = NEW):  # type: ignore[no-untyped-def]
    by_ordinal = {ordinal_of("web", p.metadata.name): p for p in pods}
    return plan_statefulset(sh, by_ordinal, current, update, NOW)  # type: ignore[arg-type]


# -- ordered creation and scale down -----------------------------------------------


def test_ordered_ready_creates_one_pod_at_a_time_lowest_first() -> None:
    p = plan(shape(3), [])
    assert p.creates == [Create(0, NEW)] and not p.deletes
    assert "web-0" in p.waiting


def test_ordered_ready_waits_for_the_previous_pod_to_be_running_and_ready() -> None:
    p = plan(shape(3), [pod(0, ready=False)])
    assert not p.creates and "web-0" in p.waiting
    p = plan(shape(3), [pod(0)])
    assert p.creates == [Create(1, NEW)]


def test_min_ready_seconds_holds_the_next_pod_and_asks_for_a_requeue() -> None:
    fresh = pod(0)
    fresh.status.conditions[0].last_transition_time = "2024-05-01T11:59:55Z"
    p = plan(shape(2, min_ready_seconds=10), [fresh])
    assert not p.creates
    assert p.requeue_after == pytest.approx(5.0)


def test_parallel_creates_every_missing_pod_at_once() -> None:
    p = plan(shape(3, policy="Parallel"), [pod(1, ready=False)])
    assert p.creates == [Create(0, NEW), Create(2, NEW)]


def test_ordinals_start_shifts_the_range() -> None:
    p = plan(shape(2, start=5, policy="Parallel"), [])
    assert [c.ordinal for c in p.creates] == [5, 6]


def test_scale_down_deletes_the_highest_ordinal_first_one_at_a_time() -> None:
    p = plan(shape(1), [pod(0), pod(1), pod(2)])
    assert p.deletes == [Delete("web-2", "scale-down")] and not p.creates


def test_scale_down_waits_for_the_condemned_pod_to_be_gone() -> None:
    p = plan(shape(1), [pod(0), pod(1), terminating(pod(2))])
    assert not p.deletes and "web-2" in p.waiting


def test_scale_down_blocks_while_a_lower_condemned_pod_is_unhealthy() -> None:
    p = plan(shape(1), [pod(0), pod(1, ready=False), pod(2)])
    assert not p.deletes and "web-1" in p.waiting


def test_parallel_scale_down_deletes_all_condemned_pods() -> None:
    p = plan(shape(1, policy="Parallel"), [pod(0), pod(1), pod(2)])
    assert {d.name for d in p.deletes} == {"web-1", "web-2"}


def test_failed_pod_is_deleted_and_not_recreated_until_gone() -> None:
    p = plan(shape(2), [pod(0, phase="Failed", ready=False), pod(1)])
    assert p.deletes == [Delete("web-0", "failed")] and not p.creates
    # Still there, terminating: the same name cannot be reused yet.
    p = plan(shape(2), [terminating(pod(0, phase="Failed", ready=False)), pod(1)])
    assert not p.creates and not p.deletes
    # Gone: created again under the same ordinal.
    p = plan(shape(2), [pod(1)])
    assert p.creates == [Create(0, NEW)]


# -- rolling update --------------------------------------------------------------------


def test_rolling_update_replaces_the_highest_ordinal_first() -> None:
    pods = [pod(0, rev=OLD), pod(1, rev=OLD), pod(2, rev=OLD)]
    p = plan(shape(3), pods, OLD, NEW)
    assert p.deletes == [Delete("web-2", "update")]


def test_rolling_update_waits_for_the_replacement_to_be_ready() -> None:
    pods = [pod(0, rev=OLD), pod(1, rev=OLD), pod(2, rev=NEW, ready=False)]
    p = plan(shape(3, policy="Parallel"), pods, OLD, NEW)
    assert not p.deletes
    pods[2] = pod(2, rev=NEW)
    p = plan(shape(3), pods, OLD, NEW)
    assert p.deletes == [Delete("web-1", "update")]


def test_partition_keeps_lower_ordinals_at_the_current_revision() -> None:
    pods = [pod(0, rev=OLD), pod(1, rev=OLD), pod(2, rev=NEW)]
    p = plan(shape(3, partition=2), pods, OLD, NEW)
    assert not p.deletes and not p.creates
    p = plan(shape(3, partition=1), pods, OLD, NEW)
    assert p.deletes == [Delete("web-1", "update")]


def test_recreated_pods_get_the_revision_of_their_side_of_the_partition() -> None:
    p = plan(shape(3, partition=2, policy="Parallel"), [pod(1, rev=OLD)], OLD, NEW)
    assert p.creates == [Create(0, OLD), Create(2, NEW)]


def test_on_delete_never_deletes_for_an_update_and_recreates_at_the_new_revision() -> None:
    pods = [pod(0, rev=OLD), pod(1, rev=OLD)]
    assert not plan(shape(2, strategy="OnDelete"), pods, OLD, NEW).deletes
    p = plan(shape(2, strategy="OnDelete"), [pod(0, rev=OLD)], OLD, NEW)
    assert p.creates == [Create(1, NEW)]


def test_counts_and_rollout_completion() -> None:
    pods = {0: pod(0, rev=OLD), 1: pod(1, rev=NEW), 2: terminating(pod(2, rev=OLD))}
    counts = count_pods(pods, OLD, NEW, 0, NOW)
    assert (counts.replicas, counts.ready, counts.current, counts.updated) == (2, 2, 1, 1)
    assert not rollout_complete(shape(2), counts)
    done = count_pods({0: pod(0), 1: pod(1)}, OLD, NEW, 0, NOW)
    assert rollout_complete(shape(2), done)
    assert not rollout_complete(shape(3), done)


# -- identity ----------------------------------------------------------------------


def statefulset() -> apps.StatefulSet:
    sts = apps.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.name, sts.metadata.namespace, sts.metadata.uid = "web", "demo", "sts-uid"
    sts.spec.service_name = "nginx"
    sts.spec.selector.match_labels["app"] = "web"
    sts.spec.template.metadata.labels["app"] = "web"
    sts.spec.template.spec.containers.add(name="app", image="busybox")
    sts.spec.template.spec.volumes.add(name="data").empty_dir.SetInParent()
    claim = sts.spec.volume_claim_templates.add()
    claim.metadata.name = "data"
    claim.spec.access_modes.append("ReadWriteOnce")
    claim.spec.resources.requests["storage"] = "1Gi"
    return sts


def test_pod_identity_name_hostname_subdomain_labels_and_claim() -> None:
    sts = statefulset()
    p = new_pod(sts, sts.spec.template, 2, "web-abc")
    assert p.metadata.name == "web-2" and p.metadata.namespace == "demo"
    assert p.spec.hostname == "web-2" and p.spec.subdomain == "nginx"
    assert p.metadata.labels[POD_NAME_LABEL] == "web-2"
    assert p.metadata.labels[history.REVISION_HASH_LABEL] == "web-abc"
    assert p.metadata.owner_references[0].uid == "sts-uid"
    (vol,) = p.spec.volumes
    assert vol.persistent_volume_claim.claim_name == "data-web-2"


def test_claims_are_named_per_ordinal_and_outlive_the_set_by_default() -> None:
    sts = statefulset()
    (pvc,) = new_claims(sts, 1)
    assert pvc.metadata.name == "data-web-1"
    assert pvc.metadata.labels["app"] == "web"
    assert pvc.spec.resources.requests["storage"] == "1Gi"
    assert not pvc.metadata.owner_references
    sts.spec.persistent_volume_claim_retention_policy.when_deleted = "Delete"
    (owned,) = new_claims(sts, 1)
    (ref,) = owned.metadata.owner_references
    assert ref.uid == "sts-uid" and not ref.controller


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [("web-0", 0), ("web-12", 12), ("web-01", None), ("web-x", None), ("webby-1", None)],
)
def test_ordinal_of(name: str, ordinal: int | None) -> None:
    assert ordinal_of("web", name) == ordinal


# -- history -----------------------------------------------------------------------


def test_revision_round_trips_the_template_and_hashes_stably() -> None:
    sts = statefulset()
    sts.spec.template.spec.containers[0].ports.add(container_port=8080)
    rev = history.new_revision(sts, sts.spec.template, 3)
    assert rev.metadata.name.startswith("web-") and rev.revision == 3
    assert history.template_of(rev) == sts.spec.template
    again = history.new_revision(sts, sts.spec.template, 4)
    assert again.metadata.name == rev.metadata.name
    assert history.new_revision(sts, sts.spec.template, 4, 1).metadata.name != rev.metadata.name


def test_find_equal_and_pruning_keep_what_is_in_use() -> None:
    sts = statefulset()
    revs = []
    for i, image in enumerate(["a", "b", "c", "d"], start=1):
        t = core.PodTemplateSpec()
        t.CopyFrom(sts.spec.template)
        t.spec.containers[0].image = image
        revs.append(history.new_revision(sts, t, i))
    probe = core.PodTemplateSpec()
    probe.CopyFrom(sts.spec.template)
    probe.spec.containers[0].image = "b"
    assert history.find_equal(revs, probe) is revs[1]
    names = [r.metadata.name for r in revs]
    pruned = history.revisions_to_prune(revs, {names[0], names[3]}, 1)
    assert [r.metadata.name for r in pruned] == [names[1]]
    assert history.next_number(revs) == 5
