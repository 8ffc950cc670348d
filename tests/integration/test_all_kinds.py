"""Every supported kind, written as a Kubernetes manifest, applies unchanged
and reads back with what it said plus Kubernetes' defaults."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.api.kinds import all_kinds
from orchestrator.client.client import Client
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Fields the server owns, whatever a manifest says.
SERVER_OWNED = {
    ("CertificateSigningRequest", "spec", "username"),
    ("CertificateSigningRequest", "spec", "groups"),
    ("CertificateSigningRequest", "spec", "uid"),
}


def _falsy(value: Any) -> bool:
    return value in (None, False, 0, "", [], {})


def assert_contains(expected: Any, actual: Any, path: str = "") -> None:
    """Everything the manifest said is in the object read back. Zero values may
    be absent (proto3 does not keep them), numbers may come back as text
    (quantities), and nothing else may differ."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                assert _falsy(value), f"{path}.{key}: missing in the object read back"
                continue
            assert_contains(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(expected) == len(actual), f"{path}: {len(expected)} items, got {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_contains(e, a, f"{path}[{i}]")
    elif isinstance(expected, bool) or isinstance(actual, bool):
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"
    else:
        assert expected == actual or str(expected) == str(actual), (
            f"{path}: {expected!r} != {actual!r}"
        )


def manifest_view(doc: dict[str, Any]) -> dict[str, Any]:
    """What of a manifest must survive: status is the controllers', stringData
    folds into data, server-owned fields are the server's."""
    view = {k: v for k, v in doc.items() if k != "status"}
    kind = doc["kind"]
    if kind == "Secret" and "stringData" in view:
        data = dict(view.get("data") or {})
        for key, value in view.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        view["data"] = data
    for k, section, field in SERVER_OWNED:
        if kind == k and isinstance(view.get(section), dict):
            view[section] = {f: v for f, v in view[section].items() if f != field}
    return view


async def apply_fixture(client: Client, name: str) -> list[tuple[dict[str, Any], Any]]:
    text = (FIXTURES / name).read_text()
    applied = []
    for _where, doc in codec.iter_documents(text, name):
        obj, outcome = await client.apply(doc)
        assert outcome == "created", f"{codec.describe_document(doc)}: {outcome}"
        applied.append((doc, obj))
    return applied


async def read_back(client: Client, doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc["metadata"]
    obj = await client.get(doc["kind"], meta["name"], meta.get("namespace"))
    return codec.to_dict(obj)


async def test_every_kind_applies_and_reads_back(api_only_control_plane: ControlPlane) -> None:
    async with api_only_control_plane.client() as client:
        applied = await apply_fixture(client, "all-kinds.yaml")
        kinds_seen = {doc["kind"] for doc, _ in applied}
        missing = {k.kind for k in all_kinds()} - kinds_seen
        assert not missing, f"the fixture lacks a manifest of {sorted(missing)}"
        for doc, _ in applied:
            back = await read_back(client, doc)
            assert back["apiVersion"] == doc["apiVersion"]
            assert back["metadata"]["uid"] and back["metadata"]["resourceVersion"]
            assert back["metadata"]["creationTimestamp"]
            assert_contains(manifest_view(doc), back, doc["kind"])
        # Applying the same manifests again changes nothing.
        text = (FIXTURES / "all-kinds.yaml").read_text()
        for _where, doc in codec.iter_documents(text, "all-kinds.yaml"):
            _obj, outcome = await client.apply(doc)
            assert outcome == "unchanged", f"{codec.describe_document(doc)} was {outcome}"


async def test_minimal_manifests_get_kubernetes_defaults(
    api_only_control_plane: ControlPlane,
) -> None:
    async with api_only_control_plane.client() as client:
        await apply_fixture(client, "minimal-kinds.yaml")
        get = {}
        text = (FIXTURES / "minimal-kinds.yaml").read_text()
        for _where, doc in codec.iter_documents(text, "minimal-kinds.yaml"):
            get[doc["kind"]] = await read_back(client, doc)

    deploy = get["Deployment"]["spec"]
    assert deploy["replicas"] == 1
    assert deploy["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert deploy["revisionHistoryLimit"] == 10
    assert deploy["progressDeadlineSeconds"] == 600
    pod_spec = deploy["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    assert pod_spec["dnsPolicy"] == "ClusterFirst"
    assert pod_spec["schedulerName"] == "default-scheduler"
    web = pod_spec["containers"][0]
    assert web["imagePullPolicy"] == "IfNotPresent"  # busybox:1.36 has a tag
    assert web["ports"][0]["protocol"] == "TCP"
    assert web["terminationMessagePath"] == "/dev/termination-log"
    probe = web["readinessProbe"]
    assert (
        probe["timeoutSeconds"],
        probe["periodSeconds"],
        probe["successThreshold"],
        probe["failureThreshold"],
    ) == (1, 10, 1, 3)
    assert probe["httpGet"]["scheme"] == "HTTP"

    pod = get["Pod"]
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Always"  # untagged image
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["status"]["phase"] == "Pending"

    svc = get["Service"]["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["sessionAffinity"] == "None"
    assert svc["ports"][0]["protocol"] == "TCP"
    assert svc["ports"][0]["targetPort"] == 80

    assert get["ReplicaSet"]["spec"]["replicas"] == 1
    sts = get["StatefulSet"]["spec"]
    assert sts["podManagementPolicy"] == "OrderedReady"
    assert sts["updateStrategy"]["type"] == "RollingUpdate"
    ds = get["DaemonSet"]["spec"]
    assert ds["updateStrategy"]["type"] == "RollingUpdate"
    assert ds["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1

    job = get["Job"]["spec"]
    assert (job["parallelism"], job["completions"], job["backoffLimit"]) == (1, 1, 6)
    assert job["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"]
    cj = get["CronJob"]["spec"]
    assert cj["concurrencyPolicy"] == "Allow"
    assert (cj["successfulJobsHistoryLimit"], cj["failedJobsHistoryLimit"]) == (3, 1)

    hpa = get["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == 1
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 80

    assert get["Namespace"]["status"]["phase"] == "Active"
    assert get["Secret"]["type"] == "Opaque"
    assert get["PersistentVolume"]["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert get["PersistentVolumeClaim"]["spec"]["volumeMode"] == "Filesystem"
    assert get["NetworkPolicy"]["spec"]["policyTypes"] == ["Ingress"]
    assert get["PriorityClass"]["preemptionPolicy"] == "PreemptLowerPriority"
