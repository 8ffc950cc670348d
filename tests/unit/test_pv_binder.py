"""PersistentVolume binding decisions: matching, pre-binding, Lost, Released."""

from __future__ import annotations

import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.pv_binder import (
    BIND_COMPLETED,
    BOUND_BY_CONTROLLER,
    decide_claim,
    decide_volume,
    find_volume,
    mismatch,
)

pytestmark = pytest.mark.unit


def pv(
    name: str,
    size: str = "1Gi",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    cls: str = "",
    phase: str = "Available",
    labels: dict[str, str] | None = None,
) -> core.PersistentVolume:
    v = core.PersistentVolume()
    v.metadata.name = name
    v.metadata.uid = f"pv-{name}"
    v.metadata.labels.update(labels or {})
    v.spec.capacity["storage"] = size
    v.spec.access_modes.extend(modes)
    v.spec.storage_class_name = cls
    v.spec.persistent_volume_reclaim_policy = "Retain"
    v.spec.local.path = f"/mnt/{name}"
    v.status.phase = phase
    return v


def pvc(
    name: str = "data",
    size: str = "1Gi",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    cls: str | None = None,
) -> core.PersistentVolumeClaim:
    c = core.PersistentVolumeClaim()
    c.metadata.name, c.metadata.namespace, c.metadata.uid = name, "demo", f"pvc-{name}"
    c.spec.access_modes.extend(modes)
    c.spec.resources.requests["storage"] = size
    if cls is not None:
        c.spec.storage_class_name = cls
    c.status.phase = "Pending"
    return c


def bind(v: core.PersistentVolume, c: core.PersistentVolumeClaim, uid: bool = True) -> None:
    v.spec.claim_ref.namespace, v.spec.claim_ref.name = c.metadata.namespace, c.metadata.name
    if uid:
        v.spec.claim_ref.uid = c.metadata.uid


def picked(claim: core.PersistentVolumeClaim, vols: list[core.PersistentVolume]) -> str:
    """The name of the volume find_volume picks ("" for none)."""
    found = find_volume(claim, vols)
    return "" if found is None else str(found.metadata.name)


def by_name(*vols: core.PersistentVolume) -> dict[str, core.PersistentVolume]:
    return {v.metadata.name: v for v in vols}


# -- matching --------------------------------------------------------------------------


def test_smallest_fitting_volume_wins() -> None:
    vols = [pv("big", "10Gi"), pv("small", "2Gi"), pv("tiny", "500Mi"), pv("mid", "5Gi")]
    assert picked(pvc(size="1500Mi"), vols) == "small"


def test_access_modes_must_be_a_subset() -> None:
    rwo, rwx = pv("rwo"), pv("rwx", "5Gi", ("ReadWriteOnce", "ReadWriteMany"))
    assert picked(pvc(modes=("ReadWriteMany",)), [rwo, rwx]) == "rwx"
    assert "lack" in mismatch(rwo, pvc(modes=("ReadWriteMany",)))


def test_storage_class_must_match_and_unset_means_no_class() -> None:
    fast, plain = pv("fast", cls="fast"), pv("plain", "5Gi")
    assert picked(pvc(), [fast, plain]) == "plain"
    assert picked(pvc(cls="fast"), [fast, plain]) == "fast"
    assert find_volume(pvc(cls="slow"), [fast, plain]) is None


def test_selector_filters_by_volume_labels() -> None:
    a, b = pv("a", labels={"tier": "gold"}), pv("b", labels={"tier": "bronze"})
    c = pvc()
    c.spec.selector.match_labels["tier"] = "bronze"
    assert picked(c, [a, b]) == "b"
    c.spec.selector.match_expressions.add(key="tier", operator="In", values=["gold"])
    assert find_volume(c, [a, b]) is None


def test_bound_released_and_deleting_volumes_are_not_offered() -> None:
    taken = pv("taken")
    bind(taken, pvc("other"))
    released = pv("released", phase="Released")
    going = pv("going")
    going.metadata.deletion_timestamp = "2024-01-01T00:00:00Z"
    assert find_volume(pvc(), [taken, released, going]) is None
    assert find_volume(pvc(), [pv("new", phase="Pending")]) is not None


def test_a_volume_prebound_to_the_claim_wins_over_a_smaller_one() -> None:
    mine = pv("mine", "5Gi", cls="other")
    bind(mine, pvc(), uid=False)
    assert picked(pvc(), [pv("smaller"), mine]) == "mine"


def test_too_small_volume_is_explained() -> None:
    assert "less than the requested 2Gi" in mismatch(pv("v", "1Gi"), pvc(size="2Gi"))


# -- claim decisions -------------------------------------------------------------------


def test_unbound_claim_binds_or_waits() -> None:
    d = decide_claim(pvc(), by_name(pv("a")))
    assert d.action == "bind" and d.pv.metadata.name == "a"
    d = decide_claim(pvc(size="5Gi"), by_name(pv("a")))
    assert d.action == "wait" and "no persistent volumes available" in d.message


def test_prebound_claim_waits_for_its_volume_then_binds_it() -> None:
    c = pvc()
    c.spec.volume_name = "later"
    d = decide_claim(c, {})
    assert d.action == "wait" and '"later" not found' in d.message
    assert decide_claim(c, by_name(pv("later"))).action == "bind"
    small = pv("later", "100Mi")
    assert decide_claim(c, by_name(small)).action == "wait"


def test_bound_claim_whose_volume_vanished_is_lost() -> None:
    c = pvc()
    c.spec.volume_name = "gone"
    c.status.phase = "Bound"
    c.metadata.annotations[BIND_COMPLETED] = "yes"
    assert decide_claim(c, {}).action == "lost"
    stolen = pv("gone")
    bind(stolen, pvc("thief"))
    assert decide_claim(c, by_name(stolen)).action == "lost"


def test_claim_pointing_at_a_volume_bound_elsewhere_waits_if_never_bound() -> None:
    c = pvc()
    c.spec.volume_name = "v"
    v = pv("v")
    bind(v, pvc("other"))
    d = decide_claim(c, by_name(v))
    assert d.action == "wait" and "already bound to claim demo/other" in d.message


def test_half_done_binding_is_finished() -> None:
    c, v = pvc(), pv("v", phase="Bound")
    bind(v, c)
    assert decide_claim(c, by_name(v)).action == "bind"
    c.spec.volume_name, c.status.phase = "v", "Bound"
    assert decide_claim(c, by_name(v)).action == "none"


# -- volume decisions ------------------------------------------------------------------


def test_new_volume_becomes_available() -> None:
    assert decide_volume(pv("v", phase="Pending"), {}).action == "available"
    assert decide_volume(pv("v"), {}).action == "none"


def test_volume_whose_claim_is_gone_is_reclaimed_once() -> None:
    v = pv("v", phase="Bound")
    bind(v, pvc())
    d = decide_volume(v, {})
    assert d.action == "reclaim" and "demo/data" in d.message
    v.status.phase = "Released"
    assert decide_volume(v, {}).action == "none"  # Retain: stays Released
    v.spec.persistent_volume_reclaim_policy = "Delete"
    assert decide_volume(v, {}).action == "reclaim"


def test_claim_recreated_with_the_same_name_does_not_get_a_released_volume() -> None:
    v = pv("v", phase="Released")
    bind(v, pvc())
    newcomer = pvc()
    newcomer.metadata.uid = "another-uid"
    assert decide_volume(v, {"demo/data": newcomer}).action == "none"
    assert decide_claim(newcomer, by_name(v)).action == "wait"


def test_volume_bound_to_a_claim_that_went_elsewhere_is_freed_if_we_bound_it() -> None:
    c = pvc()
    c.spec.volume_name = "elsewhere"
    v = pv("v", phase="Bound")
    bind(v, c)
    assert decide_volume(v, {"demo/data": c}).action == "none"
    v.metadata.annotations[BOUND_BY_CONTROLLER] = "yes"
    assert decide_volume(v, {"demo/data": c}).action == "unbind"


def test_volume_side_finishes_a_binding_the_claim_lacks() -> None:
    c = pvc()
    v = pv("v", phase="Available")
    bind(v, c)
    assert decide_volume(v, {"demo/data": c}).action == "bind"
    c.spec.volume_name = "v"
    assert decide_volume(v, {"demo/data": c}).action == "bound"
