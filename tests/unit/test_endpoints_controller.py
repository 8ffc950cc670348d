"""Which pods a Service's Endpoints hold, and on which ports (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.controllers.endpoints import desired_subsets, resolve_port

pytestmark = pytest.mark.unit


def svc(ports: list[dict[str, Any]], **spec: Any) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": ports, **spec},
        }
    )


def pod(
    name: str,
    ip: str,
    *,
    ready: bool = True,
    phase: str = "Running",
    ports: list[dict[str, Any]] | None = None,
    deleting: bool = False,
    **spec: Any,
) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "busybox", "ports": ports or []}],
                **spec,
            },
            "status": {
                "phase": phase,
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def ips(addresses: Any) -> list[str]:
    return [a.ip for a in addresses]


def test_ready_and_not_ready_pods_are_kept_apart() -> None:
    subsets = desired_subsets(
        svc([{"port": 80, "targetPort": 8080}]),
        [pod("b", "10.244.0.3"), pod("a", "10.244.0.2"), pod("c", "10.244.0.4", ready=False)],
    )
    assert len(subsets) == 1
    assert ips(subsets[0].addresses) == ["10.244.0.2", "10.244.0.3"]
    assert ips(subsets[0].not_ready_addresses) == ["10.244.0.4"]
    assert [(p.port, p.protocol) for p in subsets[0].ports] == [(8080, "TCP")]
    ref = subsets[0].addresses[0].target_ref
    assert (ref.kind, ref.name, ref.uid) == ("Pod", "a", "uid-a")
    assert subsets[0].addresses[0].node_name == "n1"


def test_pods_leaving_or_finished_or_without_ip_are_not_endpoints() -> None:
    subsets = desired_subsets(
        svc([{"port": 80}]),
        [
            pod("going", "10.244.0.2", deleting=True),
            pod("done", "10.244.0.3", phase="Succeeded"),
            pod("failed", "10.244.0.4", phase="Failed"),
            pod("starting", ""),
            pod("serving", "10.244.0.5"),
        ],
    )
    assert ips(subsets[0].addresses) == ["10.244.0.5"]
    assert not subsets[0].not_ready_addresses


def test_named_target_ports_resolve_per_pod_into_subsets() -> None:
    service = svc([{"name": "http", "port": 80, "targetPort": "web"}])
    old = pod("old", "10.244.0.2", ports=[{"name": "web", "containerPort": 8080}])
    new = pod("new", "10.244.0.3", ports=[{"name": "web", "containerPort": 9090}])
    other = pod("other", "10.244.0.4", ports=[{"name": "metrics", "containerPort": 9100}])
    subsets = desired_subsets(service, [old, new, other])
    assert [(ips(s.addresses), [p.port for p in s.ports]) for s in subsets] == [
        (["10.244.0.2"], [8080]),
        (["10.244.0.3"], [9090]),
    ]
    assert resolve_port(other, service.spec.ports[0]) is None


def test_publish_not_ready_addresses_lists_every_pod_as_ready() -> None:
    subsets = desired_subsets(
        svc([{"port": 80}], publishNotReadyAddresses=True),
        [pod("a", "10.244.0.2", ready=False)],
    )
    assert ips(subsets[0].addresses) == ["10.244.0.2"]


def test_statefulset_pods_get_their_hostname() -> None:
    subsets = desired_subsets(
        svc([{"port": 80}], clusterIP="None"),
        [
            pod("db-0", "10.244.0.2", hostname="db-0", subdomain="web"),
            pod("x", "10.244.0.3", hostname="x", subdomain="other"),
        ],
    )
    assert [a.hostname for a in subsets[0].addresses] == ["db-0", ""]


def test_no_pods_no_subsets() -> None:
    assert desired_subsets(svc([{"port": 80}]), []) == []
