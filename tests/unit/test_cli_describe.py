"""`orchctl describe` text, without a server: the describers work on dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.cli import describe, printers

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def render(fn: Any, data: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    w = describe.Writer()
    d = printers.as_dict(codec.from_dict(data))
    fn(w, d, {"now": NOW, **(extra or {})})
    return w.render()


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "namespace": "demo",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {describe.LAST_APPLIED: "{}", "note": "hi"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-abc",
                "uid": "u1",
                "controller": True,
            }
        ],
    },
    "spec": {
        "nodeName": "node-1",
        "containers": [
            {
                "name": "web",
                "image": "busybox:1.36",
                "command": ["httpd", "-f"],
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "MODE", "value": "prod"}],
                "resources": {
                    "limits": {"cpu": "1", "memory": "128Mi"},
                    "requests": {"cpu": "100m"},
                },
                "volumeMounts": [{"name": "www", "mountPath": "/www", "readOnly": True}],
            }
        ],
        "volumes": [{"name": "www", "emptyDir": {}}],
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
    },
    "status": {
        "phase": "Running",
        "hostIP": "192.0.2.11",
        "podIP": "10.244.1.5",
        "podIPs": [{"ip": "10.244.1.5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": "web",
                "ready": True,
                "restartCount": 2,
                "state": {"running": {"startedAt": "2024-05-01T11:00:00Z"}},
            }
        ],
    },
}


def test_pod_description_sections() -> None:
    text = render(describe.describe_pod, POD)
    lines = text.splitlines()
    assert lines[0] == "Name:             web"
    assert "Namespace:        demo" in lines
    assert "Node:             node-1/192.0.2.11" in lines
    assert "Labels:           app=web" in lines
    assert "                  tier=front" in lines
    # The last-applied annotation is bookkeeping, not shown.
    assert "Annotations:      note: hi" in lines
    assert "Controlled By:  ReplicaSet/web-abc" in lines
    assert "Status:           Running" in lines
    for expected in (
        "Containers:",
        "  web:",
        "    Image:         busybox:1.36",
        "    Port:          8080/TCP",
        "      httpd",
        "    State:          Running",
        "    Ready:          True",
        "    Restart Count:  2",
        "    Limits:",
        "      cpu:     1",
        "      MODE:  prod",
        "      /www from www (ro)",
        "Conditions:",
        "  Type    Status",
        "  Ready   True ",
        "Volumes:",
        "QoS Class:       Burstable",
        "Tolerations:     node.kubernetes.io/not-ready:NoExecute op=Exists for 300s",
    ):
        assert expected in lines, expected


def test_events_section_sorted_with_counts() -> None:
    w = describe.Writer()
    events: list[dict[str, Any]] = [
        {
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off  restarting\n",
            "count": 4,
            "firstTimestamp": "2024-05-01T11:54:00Z",
            "lastTimestamp": "2024-05-01T11:59:00Z",
            "source": {"component": "kubelet", "host": "node-1"},
        },
        {
            "type": "Normal",
            "reason": "Scheduled",
            "message": "Assigned demo/web to node-1",
            "firstTimestamp": "2024-05-01T11:50:00Z",
            "lastTimestamp": "2024-05-01T11:50:00Z",
            "source": {"component": "default-scheduler"},
        },
    ]
    describe.write_events(w, events, NOW)
    assert w.render() == (
        "Events:\n"
        "  Type     Reason     Age               From               Message\n"
        "  ----     ------     ----              ----               -------\n"
        "  Normal   Scheduled  10m               default-scheduler  Assigned demo/web to node-1\n"
        "  Warning  BackOff    60s (x4 over 6m)  kubelet, node-1    Back-off restarting\n"
    )


def test_no_events() -> None:
    w = describe.Writer()
    describe.write_events(w, [], NOW)
    assert w.render() == "Events:  <none>\n"


def test_service_description_lists_endpoints_per_port() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "d"},
        "spec": {
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.5",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }
    ep = {
        "subsets": [
            {"addresses": [{"ip": "10.244.1.5"}], "ports": [{"name": "http", "port": 8080}]}
        ]
    }
    lines = render(describe.describe_service, svc, {"endpoints": ep}).splitlines()
    assert "Selector:          app=web" in lines
    assert "Type:              ClusterIP" in lines
    assert "Port:              http  80/TCP" in lines
    assert "TargetPort:        8080/TCP" in lines
    assert "Endpoints:         10.244.1.5:8080" in lines


def test_node_description() -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
            "capacity": {"cpu": "4"},
            "allocatable": {"cpu": "3800m"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }
    text = render(describe.describe_node, node, {"pods": []})
    assert "Taints:             dedicated=x:NoSchedule" in text
    assert "Unschedulable:      false" in text
    assert "  InternalIP:  192.0.2.1" in text
    # As Go's tabwriter (and so kubectl): consecutive lines with cells align together.
    assert "Capacity:\n  cpu:  4\nAllocatable:\n  cpu:                3800m\n" in text
    assert "Non-terminated Pods:" in text


def test_deployment_description() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "d"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox"}]},
            },
        },
        "status": {
            "replicas": 3,
            "updatedReplicas": 3,
            "availableReplicas": 2,
            "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
            ],
        },
    }
    text = render(describe.describe_deployment, dep, {"replicasets": []})
    assert "3 desired | 3 updated | 3 total | 2 available | 1 unavailable" in text
    assert "StrategyType:           RollingUpdate" in text
    assert "Pod Template:\n  Labels:  app=web\n  Containers:\n    web:" in text
    # kubectl's own quirk: the conditions align with the lines that follow them.
    assert "  Available      True    MinimumReplicasAvailable\nOldReplicaSets:  <none>" in text
    assert "NewReplicaSet:   <none>" in text


def test_generic_description_uses_readable_field_names() -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "n1", "namespace": "d"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40},
    }
    text = render(describe.describe_generic, lease)
    assert "Kind:         Lease" in text
    assert "Spec:\n  Holder Identity:         n1\n  Lease Duration Seconds:  40" in text


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("holderIdentity", "Holder Identity"),
        ("podIP", "Pod IP"),
        ("apiVersion", "API Version"),
        ("uid", "UID"),
        ("kubernetes.io/os", "kubernetes.io/os"),
        ("data", "Data"),
    ],
)
def test_smart_label(field: str, label: str) -> None:
    assert describe.smart_label(field) == label


def test_timestamp_format_is_rfc1123z() -> None:
    assert describe.timestamp("2024-05-01T10:00:00Z") == "Wed, 01 May 2024 10:00:00 +0000"
    assert describe.timestamp("") == "<none>"
