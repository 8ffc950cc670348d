"""Admission defaults: an object read back looks as Kubernetes would show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from orchestrator.api import codec
from orchestrator.apiserver.admission import apply_defaults
from orchestrator.apiserver.admission.defaults import image_pull_policy, pod_qos_class
from tests.unit.manifests import container, deployment, job, pod, template, workload

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent.parent / "fixtures" / "all-kinds.yaml"


def defaulted(doc: dict[str, Any]) -> Message:
    obj = codec.from_dict(doc)
    apply_defaults(obj)
    return obj


def read_back(doc: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes-form dict of the defaulted object, as a client would get it."""
    return codec.to_dict(defaulted(doc))


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec},
    }


# --- workloads ---------------------------------------------------------------------------------


def test_deployment_read_back() -> None:
    spec = read_back(deployment())["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    assert pod_spec["dnsPolicy"] == "ClusterFirst"
    assert pod_spec["schedulerName"] == "default-scheduler"
    assert pod_spec["securityContext"] == {}
    c = pod_spec["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"


def test_deployment_keeps_what_was_set() -> None:
    doc = deployment(
        replicas=0,
        revisionHistoryLimit=0,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
    )
    spec = read_back(doc)["spec"]
    assert spec["replicas"] == 0  # explicit zero is not "unset"
    assert spec["revisionHistoryLimit"] == 0
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "25%"}


def test_recreate_deployment_gets_no_rolling_parameters() -> None:
    spec = read_back(deployment(strategy={"type": "Recreate"}))["spec"]
    assert spec["strategy"] == {"type": "Recreate"}


def test_pod_templates_get_no_pod_only_defaults() -> None:
    # SetDefaults_Pod and the admission plugins apply to pods, not templates.
    pod_spec = read_back(deployment())["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod_spec
    assert "enableServiceLinks" not in pod_spec
    assert "priority" not in pod_spec


def test_replicaset() -> None:
    spec = read_back(workload("ReplicaSet"))["spec"]
    assert spec["replicas"] == 1
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert "revisionHistoryLimit" not in spec


def test_statefulset() -> None:
    doc = workload(
        "StatefulSet",
        serviceName="web",
        volumeClaimTemplates=[
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ],
    )
    spec = read_back(doc)["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    claim = spec["volumeClaimTemplates"][0]
    assert claim["spec"]["volumeMode"] == "Filesystem"
    assert claim["status"] == {"phase": "Pending"}  # as Kubernetes shows it


def test_statefulset_on_delete_gets_no_partition() -> None:
    spec = read_back(workload("StatefulSet", updateStrategy={"type": "OnDelete"}))["spec"]
    assert spec["updateStrategy"] == {"type": "OnDelete"}


def test_daemonset() -> None:
    doc = workload("DaemonSet")
    spec = read_back(doc)["spec"]
    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert "replicas" not in spec
    assert spec["template"]["spec"]["restartPolicy"] == "Always"


# --- containers and pods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox:1.36", "IfNotPresent"),
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("library/busybox", "Always"),
        ("registry.local:5000/busybox", "Always"),  # a port, not a tag
        ("registry.local:5000/busybox:1.36", "IfNotPresent"),
        ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
        ("busybox:latest@sha256:" + "a" * 64, "Always"),
        ("", "IfNotPresent"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


@pytest.mark.parametrize(
    ("image", "policy"),
    [("busybox:1.36", "IfNotPresent"), ("busybox", "Always"), ("busybox:latest", "Always")],
)
def test_container_pull_policy(image: str, policy: str) -> None:
    spec = read_back(pod(containers=[container(image=image)]))["spec"]
    assert spec["containers"][0]["imagePullPolicy"] == policy


def test_explicit_pull_policy_is_kept() -> None:
    doc = pod(containers=[container(image="busybox", imagePullPolicy="Never")])
    assert read_back(doc)["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_port_protocol() -> None:
    doc = pod(
        containers=[
            container(ports=[{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}])
        ]
    )
    ports = read_back(doc)["spec"]["containers"][0]["ports"]
    assert [p["protocol"] for p in ports] == ["TCP", "UDP"]
    assert "hostPort" not in ports[0]


def test_probe_defaults() -> None:
    doc = pod(
        containers=[
            container(
                livenessProbe={"httpGet": {"port": 8080}},
                readinessProbe={"tcpSocket": {"port": "http"}, "periodSeconds": 3},
                startupProbe={"grpc": {"port": 9000}},
            )
        ]
    )
    c = read_back(doc)["spec"]["containers"][0]
    assert c["livenessProbe"] == {
        "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert c["readinessProbe"]["periodSeconds"] == 3
    assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert c["startupProbe"]["grpc"] == {"port": 9000, "service": ""}


def test_lifecycle_http_get_defaults() -> None:
    doc = pod(containers=[container(lifecycle={"preStop": {"httpGet": {"port": 80}}})])
    c = read_back(doc)["spec"]["containers"][0]
    assert c["lifecycle"]["preStop"]["httpGet"] == {"port": 80, "path": "/", "scheme": "HTTP"}


def test_env_field_ref_api_version() -> None:
    env = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    c = read_back(pod(containers=[container(env=env)]))["spec"]["containers"][0]
    assert c["env"][0]["valueFrom"]["fieldRef"] == {
        "apiVersion": "v1",
        "fieldPath": "spec.nodeName",
    }


def test_pod_only_defaults() -> None:
    spec = read_back(pod())["spec"]
    assert spec["serviceAccountName"] == "default"
    assert spec["serviceAccount"] == "default"
    assert spec["enableServiceLinks"] is True
    assert spec["priority"] == 0
    assert spec["restartPolicy"] == "Always"


def test_deprecated_service_account_alias() -> None:
    spec = read_back(pod(serviceAccount="builder"))["spec"]
    assert spec["serviceAccountName"] == "builder"
    assert spec["serviceAccount"] == "builder"


def test_requests_default_to_limits() -> None:
    resources = {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}}
    c = read_back(pod(containers=[container(resources=resources)]))["spec"]["containers"][0]
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_templates_do_not_copy_limits_to_requests() -> None:
    resources = {"limits": {"cpu": "500m"}}
    tmpl = template(containers=[container(resources=resources)])
    c = read_back(deployment(template=tmpl))["spec"]["template"]["spec"]["containers"][0]
    assert "requests" not in c["resources"]


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ({}, "BestEffort"),
        ({"requests": {"cpu": "100m"}}, "Burstable"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}, "Burstable"),
        ({"limits": {"cpu": "1"}}, "Burstable"),
    ],
)
def test_qos_class(resources: dict[str, Any], qos: str) -> None:
    obj: Any = defaulted(pod(containers=[container(resources=resources)]))
    assert obj.status.qos_class == qos
    assert pod_qos_class(obj.spec) == qos


def test_qos_class_is_set_once() -> None:
    doc = pod(containers=[container(resources={"requests": {"cpu": "1"}})])
    doc["status"] = {"phase": "Running", "qosClass": "BestEffort"}
    obj: Any = defaulted(doc)
    assert obj.status.qos_class == "BestEffort"


def test_host_network_ports() -> None:
    doc = pod(hostNetwork=True, containers=[container(ports=[{"containerPort": 8080}])])
    port = read_back(doc)["spec"]["containers"][0]["ports"][0]
    assert port["hostPort"] == 8080


def test_volume_defaults() -> None:
    volumes = [
        {"name": "scratch"},
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "creds", "secret": {"secretName": "s", "defaultMode": 0o400}},
        {"name": "host", "hostPath": {"path": "/var/log"}},
        {"name": "all", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
    ]
    vols = {v["name"]: v for v in read_back(pod(volumes=volumes))["spec"]["volumes"]}
    assert vols["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert vols["cfg"]["configMap"]["defaultMode"] == 0o644
    assert vols["creds"]["secret"]["defaultMode"] == 0o400
    assert vols["host"]["hostPath"] == {"path": "/var/log", "type": ""}
    assert vols["all"]["projected"]["defaultMode"] == 0o644
    token = vols["all"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["expirationSeconds"] == 3600


# --- batch ---------------------------------------------------------------------------------------


def test_job_defaults() -> None:
    read = read_back(job())
    spec = read["spec"]
    assert spec["parallelism"] == 1
    assert spec["completions"] == 1
    assert spec["backoffLimit"] == 6
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    # A Job without labels takes its pods' labels.
    assert read["metadata"]["labels"] == {"app": "web"}


def test_job_restart_policy_is_not_defaulted() -> None:
    # Kubernetes requires an explicit OnFailure or Never in a Job's pods.
    doc = job(template=template())
    assert "restartPolicy" not in read_back(doc)["spec"]["template"]["spec"]


def test_work_queue_job_keeps_completions_unset() -> None:
    spec = read_back(job(parallelism=3))["spec"]
    assert spec["parallelism"] == 3
    assert "completions" not in spec


def test_job_completions_alone() -> None:
    spec = read_back(job(completions=5))["spec"]
    assert (spec["completions"], spec["parallelism"]) == (5, 1)


def test_job_backoff_limit_per_index() -> None:
    doc = job(completionMode="Indexed", completions=3, backoffLimitPerIndex=1)
    assert read_back(doc)["spec"]["backoffLimit"] == 2**31 - 1


def test_job_failure_policy_defaults() -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    spec = read_back(job(podFailurePolicy=policy))["spec"]
    assert spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"] == "True"
    assert spec["podReplacementPolicy"] == "Failed"


def test_job_selector_is_generated_from_uid() -> None:
    doc = job()
    doc["metadata"]["uid"] = "0b1c2d3e-0000-4000-8000-000000000001"
    read = read_back(doc)
    uid = doc["metadata"]["uid"]
    assert read["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = read["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app": "web",
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": "pi",
        "controller-uid": uid,
        "job-name": "pi",
    }
    assert read["metadata"]["labels"] == labels


def test_manual_job_selector_is_left_alone() -> None:
    doc = job(manualSelector=True, selector={"matchLabels": {"app": "web"}})
    doc["metadata"]["uid"] = "0b1c2d3e-0000-4000-8000-000000000002"
    read = read_back(doc)
    assert read["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert read["spec"]["template"]["metadata"]["labels"] == {"app": "web"}


def test_cronjob_defaults() -> None:
    doc = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "ns"},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": template(restartPolicy="OnFailure")}},
        },
    }
    spec = read_back(doc)["spec"]
    assert spec["concurrencyPolicy"] == "Allow"
    assert spec["suspend"] is False
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 1
    job_spec = spec["jobTemplate"]["spec"]
    # Job defaults belong to the Jobs the CronJob makes, not to the template.
    assert "backoffLimit" not in job_spec
    pod_spec = job_spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "OnFailure"
    assert pod_spec["dnsPolicy"] == "ClusterFirst"
    assert pod_spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"


# --- core ----------------------------------------------------------------------------------------


def test_service_defaults() -> None:
    spec = read_back(service())["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["ipFamilyPolicy"] == "SingleStack"
    assert "externalTrafficPolicy" not in spec


def test_service_named_target_port_is_kept() -> None:
    spec = read_back(service(ports=[{"port": 80, "targetPort": "http"}]))["spec"]
    assert spec["ports"][0]["targetPort"] == "http"


def test_service_client_ip_affinity() -> None:
    spec = read_back(service(sessionAffinity="ClientIP"))["spec"]
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


def test_service_node_port() -> None:
    spec = read_back(service(type="NodePort"))["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"


def test_load_balancer_allocates_node_ports() -> None:
    spec = read_back(service(type="LoadBalancer"))["spec"]
    assert spec["allocateLoadBalancerNodePorts"] is True


def test_external_name_service() -> None:
    spec = read_back(service(type="ExternalName", externalName="db.example.com", ports=[]))["spec"]
    assert "ipFamilies" not in spec
    assert "internalTrafficPolicy" not in spec


def test_namespace() -> None:
    read = read_back({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    assert read["status"] == {"phase": "Active"}
    assert read["metadata"]["labels"] == {"kubernetes.io/metadata.name": "demo"}


def test_secret_type() -> None:
    read = read_back(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}}
    )
    assert read["type"] == "Opaque"


def test_persistent_volume_and_claim() -> None:
    pv = read_back(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "pv"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/d"},
            },
        }
    )
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["volumeMode"] == "Filesystem"
    assert pv["status"] == {"phase": "Pending"}
    pvc = read_back(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    assert pvc["spec"]["volumeMode"] == "Filesystem"
    assert pvc["status"] == {"phase": "Pending"}


def test_node_allocatable_from_capacity() -> None:
    read = read_back(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n"},
            "status": {"capacity": {"cpu": "4", "pods": "110"}},
        }
    )
    assert read["status"]["allocatable"] == {"cpu": "4", "pods": "110"}


# --- other groups -------------------------------------------------------------------------------


def hpa(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 5,
            **spec,
        },
    }


def test_hpa_defaults() -> None:
    spec = read_back(hpa())["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    assert "behavior" not in spec


def test_hpa_behavior_is_filled_in() -> None:
    spec = read_back(hpa(behavior={"scaleDown": {"selectPolicy": "Min"}}))["spec"]
    assert spec["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }
    assert spec["behavior"]["scaleDown"] == {
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }


def test_network_policy_types() -> None:
    def policy_types(spec: dict[str, Any]) -> list[str]:
        doc = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace": "ns"},
            "spec": {"podSelector": {}, **spec},
        }
        return list(read_back(doc)["spec"]["policyTypes"])

    assert policy_types({}) == ["Ingress"]
    assert policy_types({"egress": [{}]}) == ["Ingress", "Egress"]
    assert policy_types({"policyTypes": ["Egress"]}) == ["Egress"]


def test_role_binding_api_groups() -> None:
    read = read_back(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "rb", "namespace": "ns"},
            "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [
                {"kind": "User", "name": "jane"},
                {"kind": "ServiceAccount", "name": "sa"},
            ],
        }
    )
    assert read["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert read["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "apiGroup" not in read["subjects"][1]


def test_priority_class_preemption_policy() -> None:
    read = read_back(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "p"},
            "value": 10,
        }
    )
    assert read["preemptionPolicy"] == "PreemptLowerPriority"


def test_unknown_kinds_are_left_alone() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns"},
        "data": {"a": "b"},
    }
    assert read_back(doc) == doc


# --- idempotence ---------------------------------------------------------------------------------


def _fixture_documents() -> list[tuple[str, Any]]:
    return list(codec.iter_documents(FIXTURE.read_text(), FIXTURE.name))


def _samples() -> list[Any]:
    docs = [doc for _, doc in _fixture_documents()]
    docs += [
        pod(),
        deployment(),
        workload("StatefulSet"),
        workload("DaemonSet"),
        job(),
        service(),
        hpa(),
    ]
    return [pytest.param(doc, id=f"{doc['kind']}-{i}") for i, doc in enumerate(docs)]


@pytest.mark.parametrize("doc", _samples())
def test_apply_defaults_is_idempotent(doc: dict[str, Any]) -> None:
    # Defaults run again on every update, on the merged object: a second run
    # must change nothing, or every update would bump the generation.
    obj = defaulted(doc)
    once = obj.SerializeToString(deterministic=True)
    apply_defaults(obj)
    assert obj.SerializeToString(deterministic=True) == once
