"""The generic API's semantics against a real control plane over mutual TLS:
metadata bookkeeping, optimistic concurrency, the status subresource,
finalizers, graceful deletion, propagation, namespaces, selectors, paging,
size limits, apply and dry-run.

Every test works in a namespace of its own on the shared control plane."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.api.meta import parse_rfc3339
from orchestrator.client.client import (
    AlreadyExistsError,
    Client,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
)
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

# The API's limit on one stored object (Kubernetes' etcd limit): 1.5 MiB.
MAX_OBJECT_BYTES = 1572864


# -- helpers -----------------------------------------------------------------------------


def namespace(name: str) -> Any:
    return codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def config_map(name: str, ns: str, data: dict[str, str] | None = None, **metadata: Any) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, **metadata},
            "data": data if data is not None else {"key": name},
        }
    )


def pod(name: str, ns: str, node: str = "", **spec: Any) -> Any:
    body: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}], **spec}
    if node:
        body["nodeName"] = node
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": body,
        }
    )


def deployment_manifest(name: str, ns: str, image: str = "busybox:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def owner_ref(owner: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
    }


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout}s") from None


async def gone(client: Client, kind: str, name: str, ns: str | None = None) -> bool:
    try:
        await client.get(kind, name, ns)
    except NotFoundError:
        return True
    return False


@pytest.fixture
async def client(control_plane: ControlPlane) -> AsyncIterator[Client]:
    async with control_plane.client() as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"sem-{uuid.uuid4().hex[:10]}"
    await client.create(namespace(name))
    return name


# -- metadata and optimistic concurrency -----------------------------------------------------


async def test_create_sets_uid_timestamp_resource_version_and_generation(
    client: Client, ns: str
) -> None:
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    a = await client.create(config_map("a", ns))
    b = await client.create(config_map("b", ns))
    for obj in (a, b):
        m = obj.metadata
        assert uuid.UUID(m.uid)
        assert int(m.resource_version) > 0
        assert m.generation == 1
        created = parse_rfc3339(m.creation_timestamp)
        assert before <= created <= datetime.now(UTC) + timedelta(seconds=2)
        assert not m.deletion_timestamp
    assert a.metadata.uid != b.metadata.uid
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    got = await client.get("ConfigMap", "a", ns)
    assert got.metadata.uid == a.metadata.uid
    assert got.metadata.resource_version == a.metadata.resource_version
    assert got.metadata.creation_timestamp == a.metadata.creation_timestamp


async def test_client_cannot_choose_server_owned_metadata(client: Client, ns: str) -> None:
    cm = config_map("owned", ns)
    cm.metadata.uid = "not-a-uid"
    cm.metadata.generation = 41
    cm.metadata.creation_timestamp = "2001-01-01T00:00:00Z"
    created = await client.create(cm)
    assert created.metadata.uid != "not-a-uid"
    assert created.metadata.generation == 1
    assert not created.metadata.creation_timestamp.startswith("2001")
    # ... nor change them later.
    tampered = created.__class__()
    tampered.CopyFrom(created)
    tampered.metadata.uid = str(uuid.uuid4())
    tampered.metadata.creation_timestamp = "2001-01-01T00:00:00Z"
    tampered.data["key"] = "changed"
    updated = await client.update(tampered)
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.creation_timestamp == created.metadata.creation_timestamp


async def test_generation_tracks_spec_changes_only(client: Client, ns: str) -> None:
    created, outcome = await client.apply(deployment_manifest("gen", ns))
    assert outcome == "created"
    assert created.metadata.generation == 1

    # Unconditional writes throughout: the Deployment controller updates the
    # status concurrently, and only generation is under test here.
    labelled = await client.get("Deployment", "gen", ns)
    labelled.metadata.labels["extra"] = "yes"
    labelled.metadata.annotations["note"] = "metadata only"
    labelled.metadata.resource_version = ""
    labelled = await client.update(labelled)
    assert labelled.metadata.generation == 1, "a label/annotation change must not bump generation"

    labelled.status.replicas = 3
    labelled.status.observed_generation = 1
    labelled.metadata.resource_version = ""
    with_status = await client.update_status(labelled)
    assert with_status.status.replicas == 3
    assert with_status.metadata.generation == 1, "a status change must not bump generation"

    with_status.spec.replicas = 4
    with_status.metadata.resource_version = ""
    scaled = await client.update(with_status)
    assert scaled.metadata.generation == 2
    scaled.spec.template.spec.containers[0].image = "busybox:2"
    scaled.metadata.resource_version = ""
    again = await client.update(scaled)
    assert again.metadata.generation == 3
    # A no-op spec update leaves the generation alone.
    again.metadata.resource_version = ""
    same = await client.update(again)
    assert same.metadata.generation == 3


async def test_update_with_stale_resource_version_conflicts(client: Client, ns: str) -> None:
    first = await client.create(config_map("cas", ns))
    stale = first.__class__()
    stale.CopyFrom(first)
    first.data["key"] = "one"
    newer = await client.update(first)
    assert int(newer.metadata.resource_version) > int(first.metadata.resource_version)

    stale.data["key"] = "two"
    with pytest.raises(ConflictError) as err:
        await client.update(stale)
    assert "cas" in err.value.message and ns in err.value.message
    assert "modified" in err.value.message
    assert (await client.get("ConfigMap", "cas", ns)).data["key"] == "one"


async def test_update_without_resource_version_is_unconditional(client: Client, ns: str) -> None:
    created = await client.create(config_map("blind", ns))
    created.data["key"] = "first"
    await client.update(created)  # moves resourceVersion on
    blind = config_map("blind", ns, {"key": "last writer wins"})
    assert not blind.metadata.resource_version
    written = await client.update(blind)
    assert written.data["key"] == "last writer wins"
    assert written.metadata.uid == created.metadata.uid
    assert (await client.get("ConfigMap", "blind", ns)).data["key"] == "last writer wins"


async def test_update_of_missing_object_is_not_found(client: Client, ns: str) -> None:
    with pytest.raises(NotFoundError) as err:
        await client.update(config_map("never-created", ns))
    assert "never-created" in err.value.message


# -- the status subresource ------------------------------------------------------------------


async def test_status_subresource_is_apart_from_the_rest(client: Client, ns: str) -> None:
    created = await client.create(pod("status", ns, node="fake-node-status"))
    assert created.status.phase == "Pending"

    # update_status writes status and nothing else.
    attempt = created.__class__()
    attempt.CopyFrom(created)
    attempt.status.phase = "Running"
    attempt.status.pod_ip = "10.244.1.7"
    attempt.metadata.labels["sneaky"] = "label"
    attempt.spec.containers[0].image = "evil:latest"
    after_status = await client.update_status(attempt)
    assert after_status.status.phase == "Running"
    assert after_status.status.pod_ip == "10.244.1.7"
    assert "sneaky" not in after_status.metadata.labels
    assert after_status.spec.containers[0].image == "busybox"

    # A normal update cannot change status.
    normal = after_status.__class__()
    normal.CopyFrom(after_status)
    normal.status.phase = "Failed"
    normal.metadata.labels["visible"] = "yes"
    after_update = await client.update(normal)
    assert after_update.metadata.labels["visible"] == "yes"
    assert after_update.status.phase == "Running"

    stored = await client.get("Pod", "status", ns)
    assert stored.status.phase == "Running"
    assert stored.status.pod_ip == "10.244.1.7"
    assert stored.metadata.labels["visible"] == "yes"
    assert stored.spec.containers[0].image == "busybox"
    await client.delete("Pod", "status", ns, grace_period=0)


async def test_status_update_with_stale_resource_version_conflicts(client: Client, ns: str) -> None:
    created = await client.create(pod("status-cas", ns))
    created.status.phase = "Running"
    await client.update_status(created)
    created.status.phase = "Succeeded"
    with pytest.raises(ConflictError):
        await client.update_status(created)  # still carries the first resourceVersion


# -- the binding subresource ----------------------------------------------------------------


async def test_binding_assigns_an_unbound_pod_once(client: Client, ns: str) -> None:
    created = await client.create(pod("bind-me", ns))
    created.status.phase = "Pending"
    await client.update_status(created)  # the scheduler's copy is now stale: no matter
    bound = await client.bind(ns, "bind-me", "node-1", uid=created.metadata.uid)
    assert bound.spec.node_name == "node-1"
    scheduled = [c for c in bound.status.conditions if c.type == "PodScheduled"]
    assert [(c.status, bool(c.last_transition_time)) for c in scheduled] == [("True", True)]
    stored = await client.get("Pod", "bind-me", ns)
    assert stored.spec.node_name == "node-1"
    assert stored.metadata.resource_version == bound.metadata.resource_version
    with pytest.raises(ConflictError, match='already assigned to node "node-1"'):
        await client.bind(ns, "bind-me", "node-2")
    await client.delete("Pod", "bind-me", ns, grace_period=0)


async def test_binding_refuses_a_replaced_missing_or_misnamed_target(
    client: Client, ns: str
) -> None:
    first = await client.create(pod("replaced", ns))
    await client.delete("Pod", "replaced", ns)  # unbound: gone at once
    await client.create(pod("replaced", ns))
    with pytest.raises(ConflictError, match="was replaced"):
        await client.bind(ns, "replaced", "node-1", uid=first.metadata.uid)
    assert not (await client.get("Pod", "replaced", ns)).spec.node_name
    with pytest.raises(InvalidError, match=r"target\.name"):
        await client.bind(ns, "replaced", "Not_A_Node")
    with pytest.raises(NotFoundError):
        await client.bind(ns, "never-created", "node-1")


async def test_binding_refuses_a_pod_being_deleted(client: Client, ns: str) -> None:
    await client.create(pod("leaving", ns))
    held = await client.get("Pod", "leaving", ns)
    held.metadata.finalizers.append("example.com/hold")
    await client.update(held)
    await client.delete("Pod", "leaving", ns)  # held by the finalizer: deleting, still there
    with pytest.raises(ConflictError, match="being deleted"):
        await client.bind(ns, "leaving", "node-1")
    held = await client.get("Pod", "leaving", ns)
    del held.metadata.finalizers[:]
    await client.update(held)


# -- finalizers and graceful deletion --------------------------------------------------------


async def test_finalizer_holds_deletion_until_removed(client: Client, ns: str) -> None:
    await client.create(config_map("held", ns, finalizers=["example.com/hold"]))
    obj, deleted = await client.delete("ConfigMap", "held", ns)
    assert deleted is False
    assert obj.metadata.deletion_timestamp

    held = await client.get("ConfigMap", "held", ns)
    assert held.metadata.deletion_timestamp
    assert list(held.metadata.finalizers) == ["example.com/hold"]
    # Deleting again changes nothing and still reports "not yet".
    _, deleted_again = await client.delete("ConfigMap", "held", ns)
    assert deleted_again is False

    del held.metadata.finalizers[:]
    await client.update(held)
    assert await gone(client, "ConfigMap", "held", ns)


async def test_graceful_deletion_of_a_bound_pod(client: Client, ns: str) -> None:
    await client.create(pod("bound-default", ns, node="fake-node-1"))
    await client.create(pod("bound-short", ns, node="fake-node-1"))

    obj, deleted = await client.delete("Pod", "bound-default", ns)
    assert deleted is False
    assert obj.metadata.deletion_timestamp
    assert obj.metadata.deletion_grace_period_seconds == 30
    expected = datetime.now(UTC) + timedelta(seconds=30)
    assert abs(parse_rfc3339(obj.metadata.deletion_timestamp) - expected) < timedelta(seconds=5)

    obj, deleted = await client.delete("Pod", "bound-short", ns, grace_period=5)
    assert deleted is False
    assert obj.metadata.deletion_grace_period_seconds == 5

    kept = await client.get("Pod", "bound-default", ns)
    assert kept.metadata.deletion_timestamp
    assert kept.metadata.deletion_grace_period_seconds == 30

    # The node agent confirms the containers stopped: grace 0 removes it.
    for name in ("bound-default", "bound-short"):
        _, deleted = await client.delete("Pod", name, ns, grace_period=0)
        assert deleted is True
        assert await gone(client, "Pod", name, ns)


async def test_shorter_grace_period_cuts_a_pending_one_short(client: Client, ns: str) -> None:
    await client.create(pod("shorten", ns, node="fake-node-1"))
    await client.delete("Pod", "shorten", ns)
    obj, deleted = await client.delete("Pod", "shorten", ns, grace_period=3)
    assert deleted is False
    assert obj.metadata.deletion_grace_period_seconds == 3
    longer, _ = await client.delete("Pod", "shorten", ns, grace_period=60)
    assert longer.metadata.deletion_grace_period_seconds == 3
    await client.delete("Pod", "shorten", ns, grace_period=0)


async def test_unbound_pod_is_deleted_at_once(client: Client, ns: str) -> None:
    await client.create(pod("unbound", ns))
    _, deleted = await client.delete("Pod", "unbound", ns)
    assert deleted is True
    assert await gone(client, "Pod", "unbound", ns)


async def test_delete_with_a_stale_uid_precondition_conflicts(client: Client, ns: str) -> None:
    first = await client.create(config_map("reborn", ns))
    await client.delete("ConfigMap", "reborn", ns)
    second = await client.create(config_map("reborn", ns))
    assert second.metadata.uid != first.metadata.uid
    with pytest.raises(ConflictError) as err:
        await client.delete("ConfigMap", "reborn", ns, precondition_uid=first.metadata.uid)
    assert first.metadata.uid in err.value.message
    await client.get("ConfigMap", "reborn", ns)
    _, deleted = await client.delete(
        "ConfigMap", "reborn", ns, precondition_uid=second.metadata.uid
    )
    assert deleted is True


async def test_delete_of_missing_object_is_not_found(client: Client, ns: str) -> None:
    with pytest.raises(NotFoundError) as err:
        await client.delete("ConfigMap", "nothing-here", ns)
    assert "nothing-here" in err.value.message


# -- propagation (the garbage collector) -----------------------------------------------------


async def _owner_and_dependents(client: Client, ns: str, n: int = 2) -> tuple[Any, list[str]]:
    owner = await client.create(config_map("owner", ns))
    names = [f"dependent-{i}" for i in range(n)]
    for name in names:
        await client.create(config_map(name, ns, ownerReferences=[owner_ref(owner)]))
    return owner, names


async def test_background_propagation_deletes_dependents(client: Client, ns: str) -> None:
    _, dependents = await _owner_and_dependents(client, ns)
    unrelated = await client.create(config_map("bystander", ns))
    _, deleted = await client.delete("ConfigMap", "owner", ns, propagation="Background")
    assert deleted is True

    async def all_gone() -> bool:
        return all([await gone(client, "ConfigMap", d, ns) for d in dependents])

    await eventually(all_gone, what="dependents deleted after their owner")
    still = await client.get("ConfigMap", "bystander", ns)
    assert still.metadata.uid == unrelated.metadata.uid


async def test_orphan_propagation_keeps_dependents(client: Client, ns: str) -> None:
    owner, dependents = await _owner_and_dependents(client, ns)
    obj, deleted = await client.delete("ConfigMap", "owner", ns, propagation="Orphan")
    assert deleted is False  # held by the orphan finalizer until the collector is done
    assert "orphan" in obj.metadata.finalizers

    await eventually(lambda: gone(client, "ConfigMap", "owner", ns), what="owner removed")
    for name in dependents:
        dep = await client.get("ConfigMap", name, ns)
        assert all(ref.uid != owner.metadata.uid for ref in dep.metadata.owner_references)
        assert not dep.metadata.deletion_timestamp
    # And they stay: nothing collects them later.
    await asyncio.sleep(1.0)
    for name in dependents:
        await client.get("ConfigMap", name, ns)


async def test_foreground_propagation_deletes_dependents_before_owner(
    client: Client, ns: str
) -> None:
    listed = await client.list("ConfigMap", ns)
    order: list[str] = []
    owner_gone = asyncio.Event()

    async def record() -> None:
        async for ev in client.watch("ConfigMap", ns, resource_version=listed.resource_version):
            if ev.type == "DELETED":
                order.append(ev.object.metadata.name)
                if ev.object.metadata.name == "owner":
                    owner_gone.set()
                    return

    watcher = asyncio.create_task(record())
    try:
        _, dependents = await _owner_and_dependents(client, ns, n=3)
        obj, deleted = await client.delete("ConfigMap", "owner", ns, propagation="Foreground")
        assert deleted is False
        assert "foregroundDeletion" in obj.metadata.finalizers
        # While dependents remain, the owner stays, marked for deletion.
        held = await client.get("ConfigMap", "owner", ns)
        assert held.metadata.deletion_timestamp
        async with asyncio.timeout(20):
            await owner_gone.wait()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert sorted(order[:-1]) == sorted(dependents), order
    assert order[-1] == "owner"


async def test_unknown_propagation_policy_is_rejected(client: Client, ns: str) -> None:
    await client.create(config_map("policy", ns))
    with pytest.raises(InvalidError) as err:
        await client.delete("ConfigMap", "policy", ns, propagation="Sideways")
    assert "Background" in err.value.message
    await client.get("ConfigMap", "policy", ns)


# -- namespaces -------------------------------------------------------------------------------


async def test_namespace_deletion_empties_then_removes_it(client: Client) -> None:
    name = f"sem-doomed-{uuid.uuid4().hex[:8]}"
    await client.create(namespace(name))
    await client.create(config_map("plain", name))
    await client.create(pod("unbound", name))
    await client.create(config_map("held", name, finalizers=["example.com/hold"]))

    obj, deleted = await client.delete("Namespace", name)
    assert deleted is False
    assert obj.metadata.deletion_timestamp
    assert obj.status.phase == "Terminating"

    with pytest.raises(ForbiddenError) as err:
        await client.create(config_map("late", name))
    assert name in err.value.message and "terminat" in err.value.message

    async def emptied_but_held() -> bool:
        items = (await client.list("ConfigMap", name)).items
        pods = (await client.list("Pod", name)).items
        return not pods and [cm.metadata.name for cm in items] == ["held"]

    await eventually(emptied_but_held, what="namespace contents deleted")
    held = await client.get("ConfigMap", "held", name)
    assert held.metadata.deletion_timestamp
    # The namespace waits for its last object.
    ns_obj = await client.get("Namespace", name)
    assert ns_obj.status.phase == "Terminating"

    del held.metadata.finalizers[:]
    await client.update(held)
    await eventually(lambda: gone(client, "Namespace", name), what="namespace removed")


async def test_create_in_missing_namespace_is_not_found(client: Client) -> None:
    missing = f"no-such-ns-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotFoundError) as err:
        await client.create(config_map("x", missing))
    assert missing in err.value.message
    assert "namespace" in err.value.message


async def test_system_namespaces_cannot_be_deleted(fresh_control_plane: ControlPlane) -> None:
    async with fresh_control_plane.client() as c:
        for name in ("default", "kube-system", "kube-public"):
            with pytest.raises(ForbiddenError):
                await c.delete("Namespace", name)
            assert not (await c.get("Namespace", name)).metadata.deletion_timestamp


# -- selectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", {"a", "c"}),
        ("env==prod", {"a", "c"}),
        ("env!=prod", {"b", "d"}),
        ("env in (prod,dev)", {"a", "b", "c"}),
        ("env notin (prod)", {"b", "d"}),
        ("tier", {"a", "b"}),
        ("!tier", {"c", "d"}),
        ("env=prod,tier", {"a"}),
        ("env in (prod),tier notin (web)", {"c"}),
        ("env=staging", set()),
        ("", {"a", "b", "c", "d"}),
    ],
)
async def test_list_with_label_selector(
    client: Client, ns: str, selector: str, expected: set[str]
) -> None:
    labels = {
        "a": {"env": "prod", "tier": "web"},
        "b": {"env": "dev", "tier": "web"},
        "c": {"env": "prod"},
        "d": {},
    }
    for name, lab in labels.items():
        await client.create(config_map(name, ns, labels=lab))
    listed = await client.list("ConfigMap", ns, label_selector=selector)
    assert {cm.metadata.name for cm in listed.items} == expected


async def test_malformed_label_selector_is_invalid(client: Client, ns: str) -> None:
    with pytest.raises(InvalidError):
        await client.list("ConfigMap", ns, label_selector="env in prod")


async def test_list_with_field_selectors(client: Client, ns: str) -> None:
    other = f"{ns}-other"
    await client.create(namespace(other))
    for name in ("one", "two"):
        await client.create(config_map(name, ns))
    await client.create(config_map("one", other))

    names = {
        cm.metadata.name
        for cm in (await client.list("ConfigMap", ns, field_selector="metadata.name=one")).items
    }
    assert names == {"one"}
    names = {
        cm.metadata.name
        for cm in (await client.list("ConfigMap", ns, field_selector="metadata.name!=one")).items
    }
    assert names == {"two"}
    everywhere = await client.list(
        "ConfigMap", all_namespaces=True, field_selector=f"metadata.namespace={other}"
    )
    assert {(c.metadata.namespace, c.metadata.name) for c in everywhere.items} == {(other, "one")}
    across = await client.list("ConfigMap", all_namespaces=True, field_selector="metadata.name=one")
    assert {c.metadata.namespace for c in across.items} >= {ns, other}

    await client.create(pod("on-n1", ns, node="fake-n1"))
    await client.create(pod("on-n2", ns, node="fake-n2"))
    running = await client.create(pod("unbound-running", ns))
    await client.create(pod("unbound-pending", ns))
    running.status.phase = "Running"
    await client.update_status(running)

    async def pods(selector: str) -> set[str]:
        return {
            p.metadata.name for p in (await client.list("Pod", ns, field_selector=selector)).items
        }

    assert await pods("spec.nodeName=fake-n1") == {"on-n1"}
    assert await pods("spec.nodeName==fake-n2") == {"on-n2"}
    assert await pods("spec.nodeName=") == {"unbound-running", "unbound-pending"}
    assert await pods("status.phase=Running") == {"unbound-running"}
    assert await pods("status.phase=Pending,spec.nodeName!=fake-n1") == {"on-n2", "unbound-pending"}
    for name in ("on-n1", "on-n2"):
        await client.delete("Pod", name, ns, grace_period=0)


async def test_unknown_field_selector_is_invalid_and_lists_allowed_fields(
    client: Client, ns: str
) -> None:
    with pytest.raises(InvalidError) as err:
        await client.list("Pod", ns, field_selector="spec.hostNetwork=true")
    message = err.value.message
    assert "spec.hostNetwork" in message
    for allowed in ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"):
        assert allowed in message
    with pytest.raises(InvalidError):
        await client.watch("Pod", ns, field_selector="bogus=1").__anext__()


# -- paging and limits ----------------------------------------------------------------------


async def test_list_pagination_covers_every_item_exactly_once(client: Client, ns: str) -> None:
    expected = {f"page-{i:02d}" for i in range(25)}
    await asyncio.gather(*(client.create(config_map(n, ns)) for n in expected))
    seen: list[str] = []
    pages = 0
    token = ""
    async with asyncio.timeout(20):
        while True:
            page = await client.list("ConfigMap", ns, limit=7, continue_token=token)
            pages += 1
            assert len(page.items) <= 7
            seen.extend(cm.metadata.name for cm in page.items)
            token = page.continue_token
            if not token:
                break
    assert pages == 4
    assert len(seen) == len(expected)
    assert set(seen) == expected


async def test_malformed_continue_token_is_invalid(client: Client, ns: str) -> None:
    await client.create(config_map("only", ns))
    for token in ("not json", "42", '["a"]'):
        with pytest.raises(InvalidError):
            await client.list("ConfigMap", ns, limit=1, continue_token=token)


def deployment_with_env(name: str, ns: str, value: str) -> Any:
    """A Deployment carrying `value` in an env var: no per-field limit applies,
    so only the object size limit can stop it."""
    return codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "busybox:1.36",
                                "env": [{"name": "BLOB", "value": value}],
                            }
                        ]
                    },
                },
            },
        }
    )


async def test_object_over_the_size_limit_is_rejected(client: Client, ns: str) -> None:
    big = deployment_with_env("huge", ns, "x" * int(1.6 * 1024 * 1024))
    with pytest.raises(InvalidError) as err:
        await client.create(big)
    assert str(MAX_OBJECT_BYTES) in err.value.message
    assert "too large" in err.value.message
    assert await gone(client, "Deployment", "huge", ns)

    # Growing an existing object past the limit is refused the same way.
    small = await client.create(deployment_with_env("grows", ns, "x"))
    small.spec.template.spec.containers[0].env[0].value = "y" * int(1.6 * 1024 * 1024)
    small.metadata.resource_version = ""  # unconditional: the controllers write its status
    with pytest.raises(InvalidError):
        await client.update(small)
    got = await client.get("Deployment", "grows", ns)
    assert got.spec.template.spec.containers[0].env[0].value == "x"
    # Just under the limit is fine.
    await client.create(deployment_with_env("large", ns, "z" * (1400 * 1024)))


async def test_duplicate_create_already_exists(client: Client, ns: str) -> None:
    first = await client.create(config_map("twice", ns, {"v": "1"}))
    with pytest.raises(AlreadyExistsError) as err:
        await client.create(config_map("twice", ns, {"v": "2"}))
    assert "twice" in err.value.message
    got = await client.get("ConfigMap", "twice", ns)
    assert got.data["v"] == "1"
    assert got.metadata.uid == first.metadata.uid


# -- apply ------------------------------------------------------------------------------------


async def test_apply_creates_then_unchanged_then_configured_and_keeps_others_fields(
    client: Client, ns: str
) -> None:
    manifest = deployment_manifest("web", ns)
    created, outcome = await client.apply(manifest)
    assert outcome == "created"
    assert created.metadata.uid

    again, outcome = await client.apply(manifest)
    assert outcome == "unchanged"
    assert again.metadata.resource_version == created.metadata.resource_version

    # Someone else scales it.
    live = await client.get("Deployment", "web", ns)
    live.spec.replicas = 5
    await client.update(live)

    kept, outcome = await client.apply(manifest)
    assert outcome == "unchanged"
    assert kept.spec.replicas == 5

    changed = deployment_manifest("web", ns, image="busybox:2")
    configured, outcome = await client.apply(changed)
    assert outcome == "configured"
    assert configured.spec.template.spec.containers[0].image == "busybox:2"
    assert configured.spec.replicas == 5
    stored = await client.get("Deployment", "web", ns)
    assert stored.spec.replicas == 5
    assert stored.metadata.uid == created.metadata.uid
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored.metadata.annotations


async def test_apply_removes_a_label_dropped_from_the_manifest(client: Client, ns: str) -> None:
    def manifest(labels: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "labelled", "namespace": ns, "labels": labels},
            "data": {"k": "v"},
        }

    await client.apply(manifest({"keep": "1", "drop": "2"}))
    live = await client.get("ConfigMap", "labelled", ns)
    live.metadata.labels["theirs"] = "3"  # set by someone else: not apply's to remove
    await client.update(live)

    result, outcome = await client.apply(manifest({"keep": "1"}))
    assert outcome == "configured"
    assert dict(result.metadata.labels) == {"keep": "1", "theirs": "3"}
    stored = await client.get("ConfigMap", "labelled", ns)
    assert dict(stored.metadata.labels) == {"keep": "1", "theirs": "3"}


# -- dry run and generated names --------------------------------------------------------------


async def test_dry_run_stores_nothing(client: Client, ns: str) -> None:
    before = await client.list("ConfigMap", ns)
    result = await client.create(config_map("dry", ns), dry_run=True)
    assert result.metadata.name == "dry"
    assert await gone(client, "ConfigMap", "dry", ns)
    after = await client.list("ConfigMap", ns)
    assert after.items == before.items

    _, outcome = await client.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dry-apply", "namespace": ns},
        },
        dry_run=True,
    )
    assert outcome == "created"
    assert await gone(client, "ConfigMap", "dry-apply", ns)

    real = await client.create(config_map("real", ns, {"k": "v"}))
    real.data["k"] = "dry"
    await client.update(real, dry_run=True)
    assert (await client.get("ConfigMap", "real", ns)).data["k"] == "v"
    _, deleted = await client.delete("ConfigMap", "real", ns, dry_run=True)
    assert deleted is True
    await client.get("ConfigMap", "real", ns)


async def test_generate_name_yields_unique_names(client: Client, ns: str) -> None:
    made = []
    for _ in range(8):
        cm = config_map("", ns, generateName="gen-")
        made.append(await client.create(cm))
    names = [m.metadata.name for m in made]
    assert len(set(names)) == len(names)
    for name in names:
        assert name.startswith("gen-") and len(name) > len("gen-")
        await client.get("ConfigMap", name, ns)
    assert all(m.metadata.generate_name == "gen-" for m in made)
