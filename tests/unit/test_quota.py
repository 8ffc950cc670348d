"""ResourceQuota: usage arithmetic, scopes, messages, and the admission check."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import pytest
from google.protobuf.message import Message

from orchestrator.api import codec
from orchestrator.api import quota as q
from orchestrator.api.kinds import KindInfo
from orchestrator.apiserver.admission.quota import check_quota, serialized
from orchestrator.apiserver.cache import Filter
from orchestrator.apiserver.errors import Forbidden
from tests.unit.manifests import container

pytestmark = pytest.mark.unit

F = Fraction


def pod(name: str = "web-1", *, phase: str = "Pending", **spec: Any) -> Any:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "uid": f"uid-{name}"},
        "spec": {"containers": [container()], **spec},
        "status": {"phase": phase},
    }
    return codec.from_dict(doc)


def sized(cpu: str = "", memory: str = "", *, limits: bool = True, **extra: Any) -> dict[str, Any]:
    res: dict[str, str] = {}
    if cpu:
        res["cpu"] = cpu
    if memory:
        res["memory"] = memory
    resources = {"requests": res, "limits": res} if limits else {"requests": res}
    return container(resources=resources, **extra)


def quota(name: str = "compute", scopes: list[str] | None = None, **hard: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"hard": {k.replace("_", "."): v for k, v in hard.items()}}
            | ({"scopes": scopes} if scopes else {}),
        }
    )


# -- pod arithmetic -------------------------------------------------------------------


def test_pod_requests_sum_containers_and_take_the_largest_init_container() -> None:
    p = pod(
        containers=[sized("500m", "128Mi"), sized("250m", "64Mi", name="side")],
        initContainers=[sized("2", "32Mi", name="init-a"), sized("100m", "1Gi", name="init-b")],
    )
    # cpu: max(750m, 2) = 2; memory: max(192Mi, 1Gi) = 1Gi: the largest init
    # container runs alone, before the others.
    assert q.pod_requests(p.spec) == {"cpu": F(2), "memory": F(1024**3)}


def test_restartable_init_containers_run_alongside_and_add_up() -> None:
    sidecar = sized("300m", limits=False, name="proxy", restartPolicy="Always")
    p = pod(
        containers=[sized("500m", limits=False)],
        initContainers=[sidecar, sized("600m", limits=False, name="migrate")],
    )
    # main 500m + sidecar 300m = 800m; the init after the sidecar needs 600m + 300m = 900m.
    assert q.pod_requests(p.spec) == {"cpu": F(9, 10)}


def test_overhead_adds_to_requests_and_only_to_limits_that_exist() -> None:
    p = pod(
        containers=[sized("1")],
        overhead={"cpu": "100m", "memory": "10Mi"},
    )
    assert q.pod_requests(p.spec) == {"cpu": F(11, 10), "memory": F(10 * 1024**2)}
    assert q.pod_limits(p.spec) == {"cpu": F(11, 10)}
    assert q.pod_requests(p.spec, overhead=False) == {"cpu": F(1)}


def test_pod_usage_charges_requests_limits_and_old_names() -> None:
    p = pod(
        containers=[
            container(
                resources={"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "1Gi"}}
            )
        ]
    )
    assert q.pod_usage(p) == {
        "count/pods": F(1),
        "pods": F(1),
        "cpu": F(1, 4),
        "requests.cpu": F(1, 4),
        "limits.cpu": F(1),
        "limits.memory": F(1024**3),
    }


def test_extended_resources_and_hugepages_are_charged_as_requests() -> None:
    usage = q.compute_usage({"example.com/gpu": F(2), "hugepages-2Mi": F(4 * 1024**2)}, {})
    assert usage["requests.example.com/gpu"] == 2
    assert usage["hugepages-2Mi"] == usage["requests.hugepages-2Mi"] == 4 * 1024**2
    assert "example.com/gpu" not in usage


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_charge_only_their_object_count(phase: str) -> None:
    assert q.pod_usage(pod(phase=phase, containers=[sized("1", "1Gi")])) == {"count/pods": F(1)}


def test_pods_being_deleted_charge_only_their_object_count() -> None:
    p = pod(containers=[sized("1")])
    p.metadata.deletion_timestamp = "2024-01-01T00:00:00Z"
    assert q.pod_usage(p) == {"count/pods": F(1)}


# -- other kinds ----------------------------------------------------------------------


def service(type_: str = "ClusterIP", ports: int = 2, **spec: Any) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"type": type_, "ports": [{"port": 80 + i} for i in range(ports)], **spec},
        }
    )


def test_service_usage_counts_node_ports_and_load_balancers() -> None:
    assert q.object_usage(service()) == {"count/services": 1, "services": 1}
    assert q.object_usage(service("NodePort"))["services.nodeports"] == 2
    lb = q.object_usage(service("LoadBalancer", 3))
    assert (lb["services.loadbalancers"], lb["services.nodeports"]) == (1, 3)
    explicit = service("LoadBalancer", 0, allocateLoadBalancerNodePorts=False)
    explicit.spec.ports.add(port=80, node_port=30080)
    explicit.spec.ports.add(port=81)
    assert q.object_usage(explicit)["services.nodeports"] == 1


def test_claims_charge_storage_also_per_storage_class() -> None:
    pvc = codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "demo"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "fast",
                "resources": {"requests": {"storage": "5Gi"}},
            },
        }
    )
    gib5 = F(5 * 1024**3)
    assert q.object_usage(pvc) == {
        "count/persistentvolumeclaims": 1,
        "persistentvolumeclaims": 1,
        "requests.storage": gib5,
        "fast.storageclass.storage.k8s.io/persistentvolumeclaims": 1,
        "fast.storageclass.storage.k8s.io/requests.storage": gib5,
    }


def test_every_kind_charges_its_object_count() -> None:
    cm = codec.from_dict({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    deploy = codec.from_dict(
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    )
    assert q.object_usage(cm) == {"count/configmaps": 1, "configmaps": 1}
    assert q.object_usage(deploy) == {"count/deployments.apps": 1}


def test_charged_kinds_maps_quota_resources_to_the_kinds_that_charge_them() -> None:
    assert q.charged_kinds(["requests.cpu", "pods", "count/pods"]) == {"Pod"}
    assert q.charged_kinds(["services.nodeports", "secrets", "count/jobs.batch"]) == {
        "Service",
        "Secret",
        "Job",
    }
    assert q.charged_kinds(["gold.storageclass.storage.k8s.io/requests.storage"]) == {
        "PersistentVolumeClaim"
    }
    assert q.charged_kinds(["count/nosuchthings"]) == set()


# -- scopes ---------------------------------------------------------------------------


def test_scopes_select_pods_by_qos_deadline_and_priority_class() -> None:
    best_effort, burstable = pod(), pod(containers=[sized("100m", limits=False)])
    assert q.quota_covers(quota(scopes=["BestEffort"], pods="1"), best_effort)
    assert not q.quota_covers(quota(scopes=["BestEffort"], pods="1"), burstable)
    assert q.quota_covers(quota(scopes=["NotBestEffort"], pods="1"), burstable)
    job_pod = pod(activeDeadlineSeconds=60)
    assert q.quota_covers(quota(scopes=["Terminating"], pods="1"), job_pod)
    assert not q.quota_covers(quota(scopes=["Terminating"], pods="1"), best_effort)
    high = quota(pods="1")
    high.spec.scope_selector.match_expressions.add(
        scope_name="PriorityClass", operator="In", values=["high"]
    )
    assert q.quota_covers(high, pod(priorityClassName="high"))
    assert not q.quota_covers(high, pod(priorityClassName="low"))
    # Scoped quotas never cover other kinds; unscoped ones cover everything.
    assert not q.quota_covers(quota(scopes=["NotTerminating"], services="1"), service())
    assert q.quota_covers(quota(services="1"), service())


def test_namespace_usage_sums_covered_objects_and_reports_every_hard_resource() -> None:
    rq = quota(requests_cpu="4", limits_memory="8Gi", pods="10", configmaps="5")
    objects = [
        pod("a", containers=[sized("1", "1Gi")]),
        pod("b", containers=[sized("500m", "512Mi")]),
        pod("done", phase="Succeeded", containers=[sized("2", "2Gi")]),
    ]
    assert q.namespace_usage(rq, objects) == {
        "requests.cpu": F(3, 2),
        "limits.memory": F(3 * 512 * 1024**2),
        "pods": F(2),
        "configmaps": F(0),
    }


# -- messages -------------------------------------------------------------------------


def test_exceeded_names_only_the_resources_over_the_limit_in_kubernetes_words() -> None:
    hard = {"requests.cpu": F(2), "requests.memory": F(4 * 1024**3), "pods": F(10)}
    used = {"requests.cpu": F(1), "requests.memory": F(1024**3), "pods": F(1)}
    requested = {"requests.cpu": F(2), "requests.memory": F(1024**3), "pods": F(1)}
    assert q.exceeded("compute", hard, used, requested) == (
        "exceeded quota: compute, requested: requests.cpu=2, used: requests.cpu=1, "
        "limited: requests.cpu=2"
    )
    assert q.exceeded("compute", hard, used, {"requests.cpu": F(1)}) is None


def test_exceeded_lists_several_resources_sorted_with_their_units() -> None:
    hard = {"limits.memory": F(1024**3), "limits.cpu": F(1)}
    used = {"limits.memory": F(768 * 1024**2), "limits.cpu": F(1, 2)}
    requested = {"limits.memory": F(512 * 1024**2), "limits.cpu": F(3, 4)}
    assert q.exceeded("mem", hard, used, requested) == (
        "exceeded quota: mem, requested: limits.cpu=750m,limits.memory=512Mi, "
        "used: limits.cpu=500m,limits.memory=768Mi, limited: limits.cpu=1,limits.memory=1Gi"
    )


def test_format_resource_uses_binary_units_only_for_exact_bytes() -> None:
    assert q.format_resource("requests.memory", F(1536 * 1024**2)) == "1536Mi"
    assert q.format_resource("memory", F(10**9)) == "1G"
    assert q.format_resource("requests.storage", F(0)) == "0"
    assert q.format_resource("requests.cpu", F(3, 2)) == "1500m"
    assert q.format_resource("pods", F(2048)) == "2048"


def test_missing_declarations_name_resources_and_containers() -> None:
    p = pod(containers=[container(), sized("100m", limits=False, name="side")])
    missing = q.missing_declarations(p, ["requests.cpu", "limits.cpu", "pods", "requests.storage"])
    assert missing == {"limits.cpu": ["app", "side"], "requests.cpu": ["app"]}
    assert (
        q.missing_message(missing) == "must specify limits.cpu for: app,side; requests.cpu for: app"
    )


def test_charge_on_update_is_only_the_growth() -> None:
    old = {"services": F(1), "services.nodeports": F(1)}
    new = {"services": F(1), "services.nodeports": F(3)}
    assert q.charge(new, old) == {"services.nodeports": F(2)}
    assert q.charge(old, new) == {}
    assert q.charge({"pods": F(1), "cpu": F(0)}) == {"pods": F(1)}


# -- the admission check ----------------------------------------------------------------


class Cached:
    def __init__(self, obj: Message) -> None:
        self.obj = obj
        self.namespace = obj.metadata.namespace  # type: ignore[attr-defined]

    def decode(self) -> Message:
        copy = type(self.obj)()
        copy.CopyFrom(self.obj)
        return copy


class FakeCache:
    """The two reads admission makes of the watch cache."""

    def __init__(self, *objects: Message) -> None:
        self.objects = list(objects)

    def list(self, info: KindInfo, flt: Filter) -> list[Cached]:
        return [
            Cached(o)
            for o in self.objects
            if o.kind == info.kind and o.metadata.namespace == flt.namespace  # type: ignore[attr-defined]
        ]


def forbidden(obj: Message, cache: FakeCache, old: Message | None = None) -> str:
    with pytest.raises(Forbidden) as exc:
        check_quota(obj, cache, old)  # type: ignore[arg-type]
    return exc.value.message


def test_a_pod_over_quota_is_refused_with_kubernetes_message() -> None:
    cache = FakeCache(quota(requests_cpu="2"), pod("a", containers=[sized("1")]))
    assert forbidden(pod("x", containers=[sized("2")]), cache) == (
        'pods "x" is forbidden: exceeded quota: compute, requested: requests.cpu=2, '
        "used: requests.cpu=1, limited: requests.cpu=2"
    )
    check_quota(pod("y", containers=[sized("1")]), cache)  # type: ignore[arg-type]


def test_finished_and_deleting_pods_leave_room() -> None:
    gone = pod("b", containers=[sized("1")])
    gone.metadata.deletion_timestamp = "2024-01-01T00:00:00Z"
    cache = FakeCache(
        quota(requests_cpu="2", pods="2"),
        pod("a", phase="Succeeded", containers=[sized("2")]),
        gone,
        pod("c", containers=[sized("500m")]),
    )
    check_quota(pod("x", containers=[sized("1500m")]), cache)  # type: ignore[arg-type]


def test_a_pod_that_does_not_declare_a_tracked_resource_is_refused() -> None:
    cache = FakeCache(quota(requests_cpu="2", limits_cpu="4"))
    assert forbidden(pod("x"), cache) == (
        'pods "x" is forbidden: failed quota: compute: must specify limits.cpu for: app; '
        "requests.cpu for: app"
    )


def test_object_counts_are_enforced_for_any_kind() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "demo"}}
    cache = FakeCache(
        quota("objects", configmaps="1"),
        codec.from_dict(cm | {"metadata": {"name": "one", "namespace": "demo"}}),
    )
    assert forbidden(
        codec.from_dict(cm | {"metadata": {"name": "two", "namespace": "demo"}}), cache
    ) == (
        'configmaps "two" is forbidden: exceeded quota: objects, requested: configmaps=1, '
        "used: configmaps=1, limited: configmaps=1"
    )


def test_quota_for_count_of_a_group_kind() -> None:
    rq = quota("objects")
    rq.spec.hard["count/deployments.apps"] = "0"
    deploy = codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "demo"},
        }
    )
    assert forbidden(deploy, FakeCache(rq)) == (
        'deployments.apps "d" is forbidden: exceeded quota: objects, '
        "requested: count/deployments.apps=1, used: count/deployments.apps=0, "
        "limited: count/deployments.apps=0"
    )


def test_a_scoped_quota_ignores_pods_outside_its_scope() -> None:
    cache = FakeCache(quota("best-effort", scopes=["BestEffort"], pods="0"))
    check_quota(pod("x", containers=[sized("100m")]), cache)  # type: ignore[arg-type]
    assert "exceeded quota: best-effort" in forbidden(pod("y"), cache)


def test_an_update_is_charged_only_what_it_adds() -> None:
    old = service("NodePort", 1)
    cache = FakeCache(quota("svc", services="1", services_nodeports="2"), old)
    check_quota(service("NodePort", 2), cache, old)  # type: ignore[arg-type]
    assert forbidden(service("NodePort", 3), cache, old) == (
        'services "web" is forbidden: exceeded quota: svc, requested: services.nodeports=2, '
        "used: services.nodeports=1, limited: services.nodeports=2"
    )


async def test_serialized_holds_creates_in_a_namespace_with_quotas_one_at_a_time() -> None:
    cache = FakeCache(quota(pods="1"))
    order: list[str] = []

    async def create(name: str) -> None:
        async with serialized(pod(name), cache):  # type: ignore[arg-type]
            order.append(f"{name} checks")
            await asyncio.sleep(0.01)  # the store write
            order.append(f"{name} written")

    await asyncio.gather(create("a"), create("b"))
    assert order == ["a checks", "a written", "b checks", "b written"]


async def test_serialized_does_not_hold_namespaces_without_quotas() -> None:
    cache = FakeCache()
    order: list[str] = []

    async def create(name: str) -> None:
        async with serialized(pod(name), cache):  # type: ignore[arg-type]
            order.append(f"{name} checks")
            await asyncio.sleep(0.01)
            order.append(f"{name} written")

    await asyncio.gather(create("a"), create("b"))
    assert order == ["a checks", "b checks", "a written", "b written"]
