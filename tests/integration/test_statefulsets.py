"""StatefulSets against a real control plane.

No scheduler or agents run here: pods stay Pending until the test plays the
kubelet and marks them Running and Ready, which is how these tests walk
OrderedReady creation and rolling updates one step at a time. PersistentVolumes
get a storage class of the test's own so no other test's claim takes them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api.meta import now_rfc3339
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, ConflictError, InvalidError, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TIMEOUT = 20.0
REVISION = "controller-revision-hash"


async def new_namespace(c: Client, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    ns = core.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    await c.create(ns)
    return name


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def statefulset(name: str, replicas: int, storage_class: str = "", **spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": f"{name}-svc",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": storage_class or "none",
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
            **spec,
        },
    }
    return manifest


def local_pv(name: str, storage_class: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "local": {"path": f"/var/lib/orch-test/{name}"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": ["n1"],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


async def pod_names(c: Client, ns: str, app: str) -> list[str]:
    listed = await c.list("Pod", ns, label_selector=f"app={app}")
    return sorted(p.metadata.name for p in listed.items)


async def mark_ready(c: Client, ns: str, name: str) -> Any:
    """Play the kubelet: the pod is Running and Ready."""
    for _ in range(10):
        pod = await c.get("Pod", name, ns)
        pod.status.phase = "Running"
        del pod.status.conditions[:]
        pod.status.conditions.add(type="Ready", status="True", last_transition_time=now_rfc3339())
        try:
            return await c.update_status(pod)
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"could not mark pod {ns}/{name} ready")


async def mark_unready(c: Client, ns: str, name: str) -> None:
    pod = await c.get("Pod", name, ns)
    pod.status.conditions[0].status = "False"
    await c.update_status(pod)


async def record_deletions(c: Client, ns: str, into: list[str]) -> None:
    async for ev in c.watch("Pod", ns):
        if ev.type == "DELETED" and ev.object is not None:
            into.append(ev.object.metadata.name)  # type: ignore[attr-defined]


async def wait_for_pods(c: Client, ns: str, app: str, names: list[str]) -> None:
    async def exactly() -> bool:
        return await pod_names(c, ns, app) == names

    await wait_for(exactly, f"pods {names}")


async def ready_in_order(c: Client, ns: str, app: str, count: int) -> None:
    """Walk OrderedReady creation: exactly one new pod shows up per ready one."""
    for i in range(count):
        expected = [f"{app}-{j}" for j in range(i + 1)]
        await wait_for_pods(c, ns, app, expected)
        await asyncio.sleep(0.3)  # nothing further may appear while the newest is not ready
        assert await pod_names(c, ns, app) == expected
        await mark_ready(c, ns, f"{app}-{i}")


async def edit(c: Client, name: str, ns: str, change: Callable[[Any], None]) -> Any:
    """Change a StatefulSet's spec, retrying when its status moved meanwhile."""
    for _ in range(20):
        sts = await c.get("StatefulSet", name, ns)
        change(sts)
        try:
            return await c.update(sts)
        except ConflictError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"could not update StatefulSet {ns}/{name}")


async def status_of(c: Client, ns: str, name: str) -> Any:
    return (await c.get("StatefulSet", name, ns)).status


async def test_ordered_creation_claims_identity_scale_down_and_recreation(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "sts")
        sc = f"sc-{ns}"
        pvs = [f"{ns}-pv-{i}" for i in range(3)]
        try:
            for name in pvs:
                await c.apply(local_pv(name, sc))
            await c.apply(statefulset("web", 3, sc), namespace=ns)
            await ready_in_order(c, ns, "web", 3)

            async def all_ready() -> Any:
                st = await status_of(c, ns, "web")
                return st if st.ready_replicas == 3 and st.replicas == 3 else None

            st = await wait_for(all_ready, "3 ready replicas")
            assert st.current_revision == st.update_revision
            assert st.current_replicas == st.updated_replicas == 3
            assert st.observed_generation >= 1

            pod = await c.get("Pod", "web-1", ns)
            assert pod.spec.hostname == "web-1" and pod.spec.subdomain == "web-svc"
            assert pod.metadata.labels["statefulset.kubernetes.io/pod-name"] == "web-1"
            assert pod.metadata.labels[REVISION] == st.update_revision
            (vol,) = [v for v in pod.spec.volumes if v.name == "data"]
            assert vol.persistent_volume_claim.claim_name == "data-web-1"

            # Each claim was made from the template and bound to one of our volumes.
            async def claims_bound() -> Any:
                claims = (await c.list("PersistentVolumeClaim", ns)).items
                bound = {p.metadata.name: p.spec.volume_name for p in claims}
                phases = {p.status.phase for p in claims}
                return bound if len(bound) == 3 and phases == {"Bound"} else None

            bound = await wait_for(claims_bound, "3 bound claims")
            assert sorted(bound) == ["data-web-0", "data-web-1", "data-web-2"]
            assert sorted(bound.values()) == sorted(pvs)

            # Scale down waits while a pod is not ready, then removes the highest
            # ordinal first, one at a time.
            deleted: list[str] = []
            watcher = asyncio.create_task(record_deletions(c, ns, deleted))
            await asyncio.sleep(0.3)
            await mark_unready(c, ns, "web-1")
            await edit(c, "web", ns, lambda s: setattr(s.spec, "replicas", 1))
            await asyncio.sleep(1.0)
            assert await pod_names(c, ns, "web") == ["web-0", "web-1", "web-2"]
            await mark_ready(c, ns, "web-1")
            await wait_for_pods(c, ns, "web", ["web-0"])
            await asyncio.sleep(0.3)
            watcher.cancel()
            assert deleted == ["web-2", "web-1"]
            claims = (await c.list("PersistentVolumeClaim", ns)).items
            assert len(claims) == 3, "claims outlive their pods"

            # A deleted pod comes back under the same name, with the same claim.
            old_uid = (await c.get("Pod", "web-0", ns)).metadata.uid
            await c.delete("Pod", "web-0", ns)

            async def recreated() -> Any:
                try:
                    pod = await c.get("Pod", "web-0", ns)
                except NotFoundError:
                    return None
                return pod if pod.metadata.uid != old_uid else None

            again = await wait_for(recreated, "web-0 recreated")
            (vol,) = [v for v in again.spec.volumes if v.name == "data"]
            assert vol.persistent_volume_claim.claim_name == "data-web-0"

            # Deleting the set keeps the claims (default retention).
            await c.delete("StatefulSet", "web", ns)

            async def pods_gone() -> bool:
                return not await pod_names(c, ns, "web")

            await wait_for(pods_gone, "pods deleted with the set")
            assert len((await c.list("PersistentVolumeClaim", ns)).items) == 3
        finally:
            for name in pvs:
                try:
                    await c.delete("PersistentVolume", name)
                except NotFoundError:
                    pass


async def test_rolling_update_in_reverse_order_honours_the_partition(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "sts-roll")
        manifest = statefulset("db", 3)
        del manifest["spec"]["volumeClaimTemplates"]
        manifest["spec"]["template"]["spec"]["containers"][0].pop("volumeMounts")
        await c.apply(manifest, namespace=ns)
        await ready_in_order(c, ns, "db", 3)

        async def settled() -> Any:
            st = await status_of(c, ns, "db")
            return st if st.ready_replicas == 3 else None

        first = await wait_for(settled, "3 ready")
        old_rev = first.update_revision

        def new_image(sts: Any) -> None:
            sts.spec.template.spec.containers[0].image = "busybox:1.37"
            sts.spec.update_strategy.rolling_update.partition = 1

        await edit(c, "db", ns, new_image)

        async def revision(name: str) -> str:
            try:
                pod = await c.get("Pod", name, ns)
            except NotFoundError:
                return ""
            return str(pod.metadata.labels.get(REVISION, ""))

        async def replaced(name: str) -> str:
            async def check() -> str:
                rev = await revision(name)
                return rev if rev and rev != old_rev else ""

            return str(await wait_for(check, f"{name} at the new revision"))

        new_rev = await replaced("db-2")
        assert await revision("db-1") == old_rev, "db-1 waits for db-2 to be ready"
        await asyncio.sleep(0.5)
        assert await revision("db-1") == old_rev
        await mark_ready(c, ns, "db-2")
        assert await replaced("db-1") == new_rev
        await mark_ready(c, ns, "db-1")

        async def partitioned() -> Any:
            st = await status_of(c, ns, "db")
            ok = st.updated_replicas == 2 and st.ready_replicas == 3
            return st if ok else None

        st = await wait_for(partitioned, "2 updated, partition holding db-0")
        assert st.current_revision == old_rev and st.update_revision == new_rev
        assert await revision("db-0") == old_rev

        # Below the partition a deleted pod comes back at the current revision.
        await c.delete("Pod", "db-0", ns)

        async def back_old() -> bool:
            return await revision("db-0") == old_rev

        await asyncio.sleep(0.3)
        await wait_for(back_old, "db-0 back at the old revision")
        await mark_ready(c, ns, "db-0")

        await edit(
            c, "db", ns, lambda s: setattr(s.spec.update_strategy.rolling_update, "partition", 0)
        )
        assert await replaced("db-0") == new_rev
        await mark_ready(c, ns, "db-0")

        async def complete() -> Any:
            st = await status_of(c, ns, "db")
            return st if st.current_revision == new_rev and st.updated_replicas == 3 else None

        st = await wait_for(complete, "rollout complete")
        assert st.current_replicas == 3
        revs = (await c.list("ControllerRevision", ns)).items
        assert {r.metadata.name for r in revs} == {old_rev, new_rev}
        assert {r.revision for r in revs} == {1, 2}


async def test_parallel_creates_and_removes_pods_together(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "sts-par")
        manifest = statefulset("cache", 3, podManagementPolicy="Parallel")
        del manifest["spec"]["volumeClaimTemplates"]
        manifest["spec"]["template"]["spec"]["containers"][0].pop("volumeMounts")
        await c.apply(manifest, namespace=ns)
        await wait_for_pods(c, ns, "cache", ["cache-0", "cache-1", "cache-2"])
        await edit(c, "cache", ns, lambda s: setattr(s.spec, "replicas", 0))

        async def none_left() -> bool:
            return not await pod_names(c, ns, "cache")

        await wait_for(none_left, "all pods removed")


async def test_bad_statefulsets_are_rejected_with_the_field_named(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "sts-bad")
        wrong_selector = statefulset("a", 1)
        wrong_selector["spec"]["selector"] = {"matchLabels": {"app": "other"}}
        with pytest.raises(InvalidError, match=r"spec\.template\.metadata\.labels"):
            await c.apply(wrong_selector, namespace=ns)
        bad_policy = statefulset("b", 1, podManagementPolicy="Sometimes")
        with pytest.raises(InvalidError, match=r"spec\.podManagementPolicy"):
            await c.apply(bad_policy, namespace=ns)
        negative = statefulset("c", -1)
        with pytest.raises(InvalidError, match=r"spec\.replicas"):
            await c.apply(negative, namespace=ns)
        await c.apply(statefulset("d", 1), namespace=ns)
        with pytest.raises(InvalidError, match="forbidden"):
            await edit(c, "d", ns, lambda s: setattr(s.spec, "service_name", "renamed"))
