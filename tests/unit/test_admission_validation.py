"""Admission validation: every problem, at its Kubernetes field path."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

from orchestrator.api import codec
from orchestrator.api.codec import FieldError
from orchestrator.apiserver.admission import apply_defaults, normalize, validate
from orchestrator.apiserver.admission import validation as validation_module
from tests.unit.manifests import container, deployment, job, pod, template, workload

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent.parent / "fixtures" / "all-kinds.yaml"
UID = "6f1c2d3e-0000-4000-8000-000000000001"

# --- helpers -------------------------------------------------------------------------------------


def build(doc: dict[str, Any]) -> Message:
    """The object as validation sees it: decoded, normalized and defaulted."""
    obj = codec.from_dict(copy.deepcopy(doc))
    normalize(obj)
    apply_defaults(obj)
    return obj


def errors(doc: dict[str, Any], old: dict[str, Any] | None = None) -> list[FieldError]:
    return validate(build(doc), build(old) if old is not None else None)


def assert_valid(doc: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    assert [str(e) for e in errors(doc, old)] == []


def assert_only(
    doc: dict[str, Any], path: str, fragment: str, old: dict[str, Any] | None = None
) -> FieldError:
    """Exactly one problem, at ``path``, whose message contains ``fragment``."""
    errs = errors(doc, old)
    assert [e.path for e in errs] == [path], [str(e) for e in errs]
    assert fragment in errs[0].message, str(errs[0])
    return errs[0]


def error_paths(doc: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [e.path for e in errors(doc, old)]


def cronjob(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "hello", "namespace": "demo"},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": template(restartPolicy="OnFailure")}},
            **spec,
        },
    }


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}], **spec},
    }


def config_map(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "demo"},
        "data": {"key": "value"},
        **fields,
    }


def secret(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "demo"},
        **fields,
    }


def pvc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "demo"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            **spec,
        },
    }


def pv(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "pv-1"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/mnt/data"},
            **spec,
        },
    }


def hpa(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 5,
            **spec,
        },
    }


def resource_metric(target: dict[str, Any], name: str = "cpu") -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": name, "target": target}}


def ingress(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": spec or {"rules": [ingress_rule()]},
    }


def ingress_rule(path: str = "/", path_type: str = "Prefix", **backend: Any) -> dict[str, Any]:
    service_backend = backend or {"service": {"name": "web", "port": {"number": 80}}}
    return {
        "host": "web.example.com",
        "http": {"paths": [{"path": path, "pathType": path_type, "backend": service_backend}]},
    }


def network_policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "demo"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, **spec},
    }


def role_binding(kind: str = "RoleBinding", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "read-pods"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "jane"}],
        **fields,
    }
    if kind == "RoleBinding":
        doc["metadata"]["namespace"] = "demo"
    return doc


def role(kind: str = "Role", *rules: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "reader"},
        "rules": list(rules) or [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    if kind == "Role":
        doc["metadata"]["namespace"] = "demo"
    return doc


def priority_class(name: str = "high", value: int = 1000, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": value,
        **fields,
    }


def csr_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:node-1"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        ]
    )
    request = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def csr(request: bytes | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "node-csr-node-1"},
        "spec": {
            "request": base64.b64encode(request if request is not None else csr_pem()).decode(),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            **spec,
        },
    }


# --- the fixture ---------------------------------------------------------------------------------


def _fixture() -> list[Any]:
    docs = codec.iter_documents(FIXTURE.read_text(), FIXTURE.name)
    return [pytest.param(doc, id=doc["kind"]) for _, doc in docs]


@pytest.mark.parametrize("doc", _fixture())
def test_fixture_documents_validate_clean(doc: dict[str, Any]) -> None:
    obj = codec.from_dict(doc)
    apply_defaults(obj)
    assert [str(e) for e in validate(obj, None)] == []


@pytest.mark.parametrize("doc", _fixture())
def test_fixture_documents_validate_clean_as_unchanged_updates(doc: dict[str, Any]) -> None:
    # What a status update or a no-op apply does: the same spec again.
    assert_valid(doc, old=doc)


def test_fixture_job_with_server_assigned_uid() -> None:
    # The apiserver sets the uid before defaulting, which generates the selector.
    doc = next(d for _, d in codec.iter_documents(FIXTURE.read_text(), "f") if d["kind"] == "Job")
    doc = copy.deepcopy(doc)
    doc["metadata"]["uid"] = UID
    obj: Any = build(doc)
    assert obj.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == UID
    assert validate(obj, None) == []


# --- validate() itself ----------------------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    doc = deployment(replicas=-1)
    doc["metadata"]["name"] = "Bad_Name"
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    paths = error_paths(doc)
    assert "metadata.name" in paths
    assert "spec.replicas" in paths
    assert "spec.template.spec.containers[0].image" in paths


def test_validate_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(obj: Any, old: Any) -> list[FieldError]:
        raise RuntimeError("bug")

    monkeypatch.setitem(validation_module._KINDS, "ConfigMap", broken)  # type: ignore[index]
    errs = validate(build(config_map()), None)
    assert len(errs) == 1
    assert "internal error" in errs[0].message


def test_error_text_reads_like_kubectl() -> None:
    err = assert_only(deployment(replicas=-1), "spec.replicas", "")
    assert str(err) == "spec.replicas: Invalid value: -1: must be greater than or equal to 0"


# --- metadata ------------------------------------------------------------------------------------


def test_name_required() -> None:
    doc = config_map()
    del doc["metadata"]["name"]
    assert_only(doc, "metadata.name", "Required value")


def test_generate_name_is_enough() -> None:
    doc = config_map()
    doc["metadata"] = {"generateName": "cfg-", "namespace": "demo"}
    assert_valid(doc)


@pytest.mark.parametrize(
    ("doc", "name", "valid"),
    [
        (config_map(), "web.example.com", True),  # DNS subdomain
        (config_map(), "Web", False),
        (config_map(), "a" * 254, False),
        ({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}, "web.example", False),
        ({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}, "web-1", True),
        (service(), "web.v1", False),  # a Service name is a DNS label
        (role("ClusterRole"), "system:controller:job", True),  # a path segment
        (role("ClusterRole"), "a/b", False),
    ],
)
def test_names(doc: dict[str, Any], name: str, valid: bool) -> None:
    doc = copy.deepcopy(doc)
    doc["metadata"]["name"] = name
    if valid:
        assert_valid(doc)
    else:
        assert_only(doc, "metadata.name", "Invalid value")


def test_label_key_and_value() -> None:
    doc = config_map()
    doc["metadata"]["labels"] = {"bad key!": "ok", "app": "-bad-value-"}
    assert sorted(error_paths(doc)) == ["metadata.labels[app]", "metadata.labels[bad key!]"]


def test_annotation_key() -> None:
    doc = config_map()
    doc["metadata"]["annotations"] = {"example.com/Fine": "x", "not/a/key": "x"}
    assert_only(doc, "metadata.annotations[not/a/key]", "a qualified name must consist of")


def test_annotations_total_size() -> None:
    doc = config_map()
    doc["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    assert_only(doc, "metadata.annotations", "Too long: must have at most 262144 bytes")


def test_owner_references() -> None:
    doc = config_map()
    doc["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "a",
            "uid": UID,
            "controller": True,
        },
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "b", "controller": True},
    ]
    errs = errors(doc)
    assert [e.path for e in errs] == ["metadata.ownerReferences[1].uid", "metadata.ownerReferences"]
    assert "Only one reference can have Controller set to true" in errs[1].message


# --- pod spec ------------------------------------------------------------------------------------


def test_containers_required() -> None:
    assert_only(pod(containers=[]), "spec.containers", "Required value")


def test_duplicate_container_names_across_init_and_regular() -> None:
    doc = pod(initContainers=[container(name="app")])
    assert_only(doc, "spec.containers[0].name", 'Duplicate value: "app"')


def test_container_name_is_a_dns_label() -> None:
    assert_only(pod(containers=[container(name="App_1")]), "spec.containers[0].name", "RFC 1123")


@pytest.mark.parametrize(("image", "message"), [("", "Required value"), ("busy box", "whitespace")])
def test_image(image: str, message: str) -> None:
    assert_only(pod(containers=[container(image=image)]), "spec.containers[0].image", message)


def test_image_required_in_templates_too() -> None:
    doc = deployment(template=template(containers=[container(image="")]))
    assert_only(doc, "spec.template.spec.containers[0].image", "Required value")


def test_image_pull_policy() -> None:
    doc = pod(containers=[container(imagePullPolicy="Sometimes")])
    assert_only(
        doc,
        "spec.containers[0].imagePullPolicy",
        'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"',
    )


@pytest.mark.parametrize(
    ("port", "path", "message"),
    [
        ({"containerPort": 0}, "spec.containers[0].ports[0].containerPort", "Required value"),
        (
            {"containerPort": 70000},
            "spec.containers[0].ports[0].containerPort",
            "between 1 and 65535",
        ),
        (
            {"containerPort": 80, "hostPort": 70000},
            "spec.containers[0].ports[0].hostPort",
            "between 1",
        ),
        (
            {"containerPort": 80, "name": "a-very-long-port-name"},
            "spec.containers[0].ports[0].name",
            "15",
        ),
        (
            {"containerPort": 80, "protocol": "HTTP"},
            "spec.containers[0].ports[0].protocol",
            "Unsupported",
        ),
        (
            {"containerPort": 80, "hostIP": "nowhere"},
            "spec.containers[0].ports[0].hostIP",
            "IP address",
        ),
    ],
)
def test_container_ports(port: dict[str, Any], path: str, message: str) -> None:
    assert_only(pod(containers=[container(ports=[port])]), path, message)


def test_duplicate_port_names() -> None:
    ports = [{"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81}]
    assert_only(
        pod(containers=[container(ports=ports)]), "spec.containers[0].ports[1].name", "Duplicate"
    )


def test_host_ports_are_unique_across_containers() -> None:
    port = {"containerPort": 80, "hostPort": 8080}
    doc = pod(containers=[container(ports=[port]), container(name="b", ports=[port])])
    assert_only(doc, "spec.containers[1].ports[0].hostPort", 'Duplicate value: "TCP//8080"')


def test_host_network_needs_matching_host_port() -> None:
    doc = pod(
        hostNetwork=True, containers=[container(ports=[{"containerPort": 80, "hostPort": 8080}])]
    )
    assert_only(doc, "spec.containers[0].ports[0].hostPort", "must match `containerPort`")
    assert_valid(pod(hostNetwork=True, containers=[container(ports=[{"containerPort": 80}])]))


@pytest.mark.parametrize(
    ("env", "path", "message"),
    [
        (
            [{"name": "1BAD", "value": "x"}],
            "spec.containers[0].env[0].name",
            "environment variable",
        ),
        ([{"name": "", "value": "x"}], "spec.containers[0].env[0].name", "Required value"),
        (
            [
                {
                    "name": "A",
                    "value": "x",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                }
            ],
            "spec.containers[0].env[0].valueFrom",
            "may not be specified when `value` is not empty",
        ),
        (
            [{"name": "A", "valueFrom": {}}],
            "spec.containers[0].env[0].valueFrom",
            "must specify one of",
        ),
        (
            [
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "metadata.name"},
                        "secretKeyRef": {"name": "s", "key": "k"},
                    },
                }
            ],
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
            "may not have more than one field specified at a time",
        ),
        (
            [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg"}}}],
            "spec.containers[0].env[0].valueFrom.configMapKeyRef.key",
            "Required value",
        ),
        (
            [{"name": "A", "valueFrom": {"secretKeyRef": {"key": "k"}}}],
            "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
            "Required value",
        ),
        (
            [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}],
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            "Unsupported value",
        ),
        (
            [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}],
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            "Unsupported value",  # whole maps only in downward API volumes
        ),
        (
            [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}],
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
            "Unsupported value",
        ),
    ],
)
def test_env(env: list[dict[str, Any]], path: str, message: str) -> None:
    assert_only(pod(containers=[container(env=env)]), path, message)


def test_env_subscripted_label_is_fine() -> None:
    env = [{"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}]
    assert_valid(pod(containers=[container(env=env)]))


@pytest.mark.parametrize(
    ("env_from", "path", "message"),
    [
        ({}, "spec.containers[0].envFrom[0]", "must specify one of: `configMapRef` or `secretRef`"),
        (
            {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}},
            "spec.containers[0].envFrom[0].secretRef",
            "may not have more than one field specified at a time",
        ),
        ({"secretRef": {}}, "spec.containers[0].envFrom[0].secretRef.name", "Required value"),
        (
            {"configMapRef": {"name": "a"}, "prefix": "1X"},
            "spec.containers[0].envFrom[0].prefix",
            "Invalid",
        ),
    ],
)
def test_env_from(env_from: dict[str, Any], path: str, message: str) -> None:
    assert_only(pod(containers=[container(envFrom=[env_from])]), path, message)


def test_bad_quantity_in_a_deployment() -> None:
    resources = {"requests": {"cpu": "12XYZ"}}
    doc = deployment(template=template(containers=[container(resources=resources)]))
    err = assert_only(doc, "spec.template.spec.containers[0].resources.requests[cpu]", '"12XYZ"')
    assert 'quantity "12XYZ" is invalid' in err.message


def test_negative_quantity() -> None:
    doc = pod(containers=[container(resources={"limits": {"memory": "-1Gi"}})])
    errs = errors(doc)
    # The limit is copied to the request by the pod defaults: both are reported.
    assert {e.path for e in errs} == {
        "spec.containers[0].resources.limits[memory]",
        "spec.containers[0].resources.requests[memory]",
    }
    assert all("must be greater than or equal to 0" in e.message for e in errs)


def test_requests_above_limits() -> None:
    resources = {
        "requests": {"cpu": "2", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "128Mi"},
    }
    err = assert_only(
        pod(containers=[container(resources=resources)]),
        "spec.containers[0].resources.requests[cpu]",
        "must be less than or equal to cpu limit of 1",
    )
    assert err.message.startswith('Invalid value: "2"')


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("cpu", True),
        ("memory", True),
        ("ephemeral-storage", True),
        ("hugepages-2Mi", True),
        ("example.com/gpu", True),
        ("gpu", False),
        ("hugepages-huge", False),
        ("example.com/bad name", False),
    ],
)
def test_resource_names(name: str, valid: bool) -> None:
    doc = pod(containers=[container(resources={"limits": {name: "1"}})])
    if valid:
        assert_valid(doc)
    else:
        assert error_paths(doc)[0] == f"spec.containers[0].resources.limits[{name}]"


def test_extended_resources_cannot_be_overcommitted() -> None:
    tmpl = template(containers=[container(resources={"requests": {"example.com/gpu": "1"}})])
    assert_only(
        deployment(template=tmpl),
        "spec.template.spec.containers[0].resources.requests[example.com/gpu]",
        "Limit must be set for non overcommitable resources",
    )
    resources = {"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "2"}}
    assert_only(
        pod(containers=[container(resources=resources)]),
        "spec.containers[0].resources.requests[example.com/gpu]",
        "must be equal to example.com/gpu limit of 2",
    )


def test_unknown_volume_mount() -> None:
    mounts = [{"name": "data", "mountPath": "/data"}]
    err = assert_only(
        pod(containers=[container(volumeMounts=mounts)]),
        "spec.containers[0].volumeMounts[0].name",
        'Not found: "data"',
    )
    assert str(err) == 'spec.containers[0].volumeMounts[0].name: Not found: "data"'


@pytest.mark.parametrize(
    ("mounts", "path", "message"),
    [
        (
            [{"name": "v", "mountPath": "data"}],
            "spec.containers[0].volumeMounts[0].mountPath",
            "absolute",
        ),
        (
            [{"name": "v", "mountPath": ""}],
            "spec.containers[0].volumeMounts[0].mountPath",
            "Required",
        ),
        (
            [{"name": "v", "mountPath": "/d"}, {"name": "v", "mountPath": "/d"}],
            "spec.containers[0].volumeMounts[1].mountPath",
            "must be unique",
        ),
        (
            [{"name": "v", "mountPath": "/d", "subPath": "../etc"}],
            "spec.containers[0].volumeMounts[0].subPath",
            "must not contain '..'",
        ),
        (
            [{"name": "v", "mountPath": "/d", "mountPropagation": "Sideways"}],
            "spec.containers[0].volumeMounts[0].mountPropagation",
            "Unsupported",
        ),
    ],
)
def test_volume_mounts(mounts: list[dict[str, Any]], path: str, message: str) -> None:
    doc = pod(volumes=[{"name": "v", "emptyDir": {}}], containers=[container(volumeMounts=mounts)])
    assert_only(doc, path, message)


@pytest.mark.parametrize(
    ("volumes", "path", "message"),
    [
        (
            [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}],
            "spec.volumes[1].name",
            'Duplicate value: "v"',
        ),
        ([{"name": "V_1", "emptyDir": {}}], "spec.volumes[0].name", "RFC 1123"),
        (
            [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}],
            "spec.volumes[0].emptyDir",
            "may not specify more than 1 volume type",
        ),
        (
            [{"name": "v", "hostPath": {"path": "var/log"}}],
            "spec.volumes[0].hostPath.path",
            "absolute",
        ),
        ([{"name": "v", "hostPath": {"path": "/a/../b"}}], "spec.volumes[0].hostPath.path", "'..'"),
        (
            [{"name": "v", "hostPath": {"path": "/x", "type": "Folder"}}],
            "spec.volumes[0].hostPath.type",
            "Unsupported",
        ),
        ([{"name": "v", "configMap": {}}], "spec.volumes[0].configMap.name", "Required"),
        ([{"name": "v", "secret": {}}], "spec.volumes[0].secret.secretName", "Required"),
        (
            [
                {
                    "name": "v",
                    "configMap": {"name": "c", "items": [{"key": "k", "path": "../escape"}]},
                }
            ],
            "spec.volumes[0].configMap.items[0].path",
            "must not contain '..'",
        ),
        (
            [{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "/abs"}]}}],
            "spec.volumes[0].configMap.items[0].path",
            "must be a relative path",
        ),
        (
            [
                {
                    "name": "v",
                    "secret": {"secretName": "s", "items": [{"key": "bad key", "path": "p"}]},
                }
            ],
            "spec.volumes[0].secret.items[0].key",
            "config key",
        ),
        (
            [{"name": "v", "secret": {"secretName": "s", "defaultMode": 0o1000}}],
            "spec.volumes[0].secret.defaultMode",
            "between 0 and 0777",
        ),
        (
            [{"name": "v", "persistentVolumeClaim": {}}],
            "spec.volumes[0].persistentVolumeClaim.claimName",
            "Required",
        ),
        (
            [{"name": "v", "nfs": {"server": "nfs", "path": "exports"}}],
            "spec.volumes[0].nfs.path",
            "absolute",
        ),
        (
            [
                {
                    "name": "v",
                    "projected": {
                        "sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 60}}]
                    },
                }
            ],
            "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds",
            "less than 10 minutes",
        ),
        (
            [{"name": "v", "downwardAPI": {"items": [{"path": "x"}]}}],
            "spec.volumes[0].downwardAPI.items[0]",
            "one of fieldRef and resourceFieldRef is required",
        ),
        (
            [{"name": "v", "emptyDir": {"sizeLimit": "lots"}}],
            "spec.volumes[0].emptyDir.sizeLimit",
            "is invalid",
        ),
    ],
)
def test_volumes(volumes: list[dict[str, Any]], path: str, message: str) -> None:
    assert_only(pod(volumes=volumes), path, message)


@pytest.mark.parametrize(
    ("probe", "path", "message"),
    [
        ({}, "spec.containers[0].livenessProbe", "must specify a handler type"),
        (
            {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}},
            "spec.containers[0].livenessProbe.tcpSocket",
            "may not specify more than 1 handler type",
        ),
        ({"exec": {}}, "spec.containers[0].livenessProbe.exec.command", "Required"),
        ({"httpGet": {"port": 99999}}, "spec.containers[0].livenessProbe.httpGet.port", "65535"),
        (
            {"httpGet": {"port": "Not_A_Name"}},
            "spec.containers[0].livenessProbe.httpGet.port",
            "invalid port",
        ),
        (
            {"httpGet": {"port": 80, "scheme": "FTP"}},
            "spec.containers[0].livenessProbe.httpGet.scheme",
            "Unsupported",
        ),
        ({"tcpSocket": {}}, "spec.containers[0].livenessProbe.tcpSocket.port", "Required"),
        (
            {"grpc": {"port": 0}},
            "spec.containers[0].livenessProbe.grpc.port",
            "between 1 and 65535",
        ),
        (
            {"tcpSocket": {"port": 80}, "periodSeconds": -1},
            "spec.containers[0].livenessProbe.periodSeconds",
            "must be greater than 0",
        ),
        (
            {"tcpSocket": {"port": 80}, "initialDelaySeconds": -5},
            "spec.containers[0].livenessProbe.initialDelaySeconds",
            "greater than or equal to 0",
        ),
        (
            {"tcpSocket": {"port": 80}, "successThreshold": 2},
            "spec.containers[0].livenessProbe.successThreshold",
            "must be 1",
        ),
    ],
)
def test_liveness_probe(probe: dict[str, Any], path: str, message: str) -> None:
    assert_only(pod(containers=[container(livenessProbe=probe)]), path, message)


def test_readiness_may_need_several_successes() -> None:
    probe = {"tcpSocket": {"port": 80}, "successThreshold": 3}
    assert_valid(pod(containers=[container(readinessProbe=probe)]))
    doc = pod(containers=[container(startupProbe=probe)])
    assert_only(doc, "spec.containers[0].startupProbe.successThreshold", "must be 1")


def test_readiness_probe_has_no_grace_period() -> None:
    probe = {"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 5}
    doc = pod(containers=[container(readinessProbe=probe)])
    assert_only(
        doc, "spec.containers[0].readinessProbe.terminationGracePeriodSeconds", "readinessProbes"
    )


def test_lifecycle_handlers() -> None:
    both = {"preStop": {"exec": {"command": ["x"]}, "sleep": {"seconds": 1}}}
    doc = pod(containers=[container(lifecycle=both)])
    assert_only(
        doc,
        "spec.containers[0].lifecycle.preStop.sleep",
        "may not specify more than 1 handler type",
    )
    too_long = {"preStop": {"sleep": {"seconds": 60}}}
    doc = pod(containers=[container(lifecycle=too_long)])
    assert_only(
        doc,
        "spec.containers[0].lifecycle.preStop.sleep.seconds",
        "terminationGracePeriodSeconds (30)",
    )


def test_init_containers_and_sidecars() -> None:
    probe = {"tcpSocket": {"port": 80}}
    doc = pod(initContainers=[container(name="init", readinessProbe=probe)])
    assert_only(doc, "spec.initContainers[0].readinessProbe", "without restartPolicy=Always")
    assert_valid(
        pod(initContainers=[container(name="side", restartPolicy="Always", readinessProbe=probe)])
    )
    doc = pod(containers=[container(restartPolicy="Always")])
    assert_only(doc, "spec.containers[0].restartPolicy", "may not be set for non-init containers")


def test_restart_policy() -> None:
    assert_only(
        pod(restartPolicy="Sometimes"), "spec.restartPolicy", 'Unsupported value: "Sometimes"'
    )


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"dnsPolicy": "Google"}, "spec.dnsPolicy", "Unsupported"),
        (
            {"dnsPolicy": "None"},
            "spec.dnsConfig.nameservers",
            "must provide at least one DNS nameserver",
        ),
        (
            {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.1"] * 4}},
            "spec.dnsConfig.nameservers",
            "more than 3",
        ),
        (
            {"dnsConfig": {"nameservers": ["dns.google"]}},
            "spec.dnsConfig.nameservers[0]",
            "IP address",
        ),
        (
            {"terminationGracePeriodSeconds": -1},
            "spec.terminationGracePeriodSeconds",
            ">= 0".replace(">= 0", "equal to 0"),
        ),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds", "must be greater than 0"),
        ({"hostname": "Web"}, "spec.hostname", "RFC 1123"),
        ({"subdomain": "a.b"}, "spec.subdomain", "RFC 1123"),
        (
            {"nodeSelector": {"disk type": "ssd"}},
            "spec.nodeSelector[disk type]",
            "name part must consist of",
        ),
        ({"nodeSelector": {"disk": "s s d"}}, "spec.nodeSelector[disk]", "valid label"),
        (
            {"hostAliases": [{"ip": "localhost", "hostnames": ["x"]}]},
            "spec.hostAliases[0].ip",
            "IP address",
        ),
    ],
)
def test_pod_spec_fields(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(pod(**spec), path, message)


def test_dns_policy_none_with_nameservers() -> None:
    assert_valid(pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"]}))


@pytest.mark.parametrize(
    ("toleration", "path", "message"),
    [
        (
            {"key": "k", "operator": "Exists", "value": "v"},
            "spec.tolerations[0].operator",
            "value must be empty",
        ),
        (
            {"operator": "Equal", "value": "v"},
            "spec.tolerations[0].operator",
            "operator must be Exists when `key` is empty",
        ),
        ({"key": "k", "operator": "Like"}, "spec.tolerations[0].operator", "Unsupported"),
        ({"key": "k", "effect": "NoRun"}, "spec.tolerations[0].effect", "Unsupported"),
        (
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30},
            "spec.tolerations[0].effect",
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ),
        ({"key": "bad key"}, "spec.tolerations[0].key", "name part must consist of"),
    ],
)
def test_tolerations(toleration: dict[str, Any], path: str, message: str) -> None:
    assert_only(pod(tolerations=[toleration]), path, message)


def test_tolerate_everything() -> None:
    assert_valid(pod(tolerations=[{"operator": "Exists"}]))


def node_affinity(
    *expressions: dict[str, Any], fields: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    term: dict[str, Any] = {"matchExpressions": list(expressions)}
    if fields:
        term["matchFields"] = fields
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


TERM = (
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
)


@pytest.mark.parametrize(
    ("expression", "path", "message"),
    [
        (
            {"key": "zone", "operator": "In"},
            f"{TERM}.matchExpressions[0].values",
            "must be specified when",
        ),
        (
            {"key": "zone", "operator": "Exists", "values": ["a"]},
            f"{TERM}.matchExpressions[0].values",
            "may not be specified",
        ),
        (
            {"key": "cpus", "operator": "Gt", "values": ["1", "2"]},
            f"{TERM}.matchExpressions[0].values",
            "single value",
        ),
        (
            {"key": "cpus", "operator": "Lt", "values": ["many"]},
            f"{TERM}.matchExpressions[0].values[0]",
            "integer",
        ),
        (
            {"key": "zone", "operator": "Near", "values": ["a"]},
            f"{TERM}.matchExpressions[0].operator",
            "Unsupported",
        ),
        ({"key": "", "operator": "Exists"}, f"{TERM}.matchExpressions[0].key", "Required"),
    ],
)
def test_node_affinity(expression: dict[str, Any], path: str, message: str) -> None:
    assert_only(pod(affinity=node_affinity(expression)), path, message)


def test_node_affinity_valid_operators() -> None:
    affinity = node_affinity(
        {"key": "zone", "operator": "NotIn", "values": ["a", "b"]},
        {"key": "gpu", "operator": "DoesNotExist"},
        {"key": "cpus", "operator": "Gt", "values": ["4"]},
    )
    assert_valid(pod(affinity=affinity))


def test_node_affinity_match_fields() -> None:
    fields = [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]
    doc = pod(affinity=node_affinity(fields=fields))
    assert_only(doc, f"{TERM}.matchFields[0].values", "must be only one value")
    fields = [{"key": "metadata.labels", "operator": "In", "values": ["a"]}]
    assert_only(
        pod(affinity=node_affinity(fields=fields)), f"{TERM}.matchFields[0].key", "Unsupported"
    )


def test_node_affinity_needs_terms() -> None:
    affinity: dict[str, Any] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
    }
    assert_only(
        pod(affinity=affinity),
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
        "at least one node selector term",
    )


def test_pod_affinity_needs_topology_key() -> None:
    affinity = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}}
            ],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}
            ],
        }
    }
    assert error_paths(pod(affinity=affinity)) == [
        "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
        "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
    ]


def test_pod_affinity_selector() -> None:
    term = {
        "topologyKey": "zone",
        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
    }
    affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    assert_only(
        pod(affinity=affinity),
        "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0]",
        "values set can't be empty",
    )


@pytest.mark.parametrize(
    ("constraint", "path", "message"),
    [
        ({"maxSkew": 0}, "spec.topologySpreadConstraints[0].maxSkew", "greater than zero"),
        (
            {"whenUnsatisfiable": "Whatever"},
            "spec.topologySpreadConstraints[0].whenUnsatisfiable",
            "Unsupported",
        ),
        ({"topologyKey": ""}, "spec.topologySpreadConstraints[0].topologyKey", "Required"),
        (
            {"minDomains": 2, "whenUnsatisfiable": "ScheduleAnyway"},
            "spec.topologySpreadConstraints[0].minDomains",
            "whenUnsatisfiable=DoNotSchedule",
        ),
    ],
)
def test_topology_spread(constraint: dict[str, Any], path: str, message: str) -> None:
    base = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
    assert_only(pod(topologySpreadConstraints=[{**base, **constraint}]), path, message)


def test_topology_spread_duplicates() -> None:
    c = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
    assert_only(
        pod(topologySpreadConstraints=[c, c]), "spec.topologySpreadConstraints[1]", "Duplicate"
    )


# --- pod updates ---------------------------------------------------------------------------------

POD_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than spec.containers[*].image, "
    "spec.initContainers[*].image, spec.activeDeadlineSeconds, "
    "spec.tolerations (only additions to existing tolerations)"
)


def test_pod_image_update_is_allowed() -> None:
    new = pod(
        initContainers=[container(name="init", image="busybox:2")],
        containers=[container(image="busybox:2")],
    )
    old = pod(initContainers=[container(name="init")])
    assert_valid(new, old=old)


def test_pod_update_forbidden_fields() -> None:
    err = assert_only(pod(restartPolicy="Never"), "spec", "pod updates may not change", old=pod())
    assert err.message == POD_FORBIDDEN
    assert str(err) == "spec: " + POD_FORBIDDEN


@pytest.mark.parametrize(
    "change",
    [
        {"containers": [container(command=["sleep", "1"])]},
        {"containers": [container(resources={"limits": {"cpu": "1"}})]},
        {"hostname": "other"},
        {"volumes": [{"name": "v", "emptyDir": {}}]},
        {"nodeSelector": {"disk": "ssd"}},
    ],
)
def test_pod_spec_changes_are_forbidden(change: dict[str, Any]) -> None:
    assert error_paths(pod(**change), old=pod()) == ["spec"]


def test_pod_containers_cannot_be_added() -> None:
    new = pod(containers=[container(), container(name="b")])
    assert_only(new, "spec.containers", "may not add or remove containers", old=pod())


def test_pod_binding_is_allowed() -> None:
    assert_valid(pod(nodeName="node-1"), old=pod())


def test_pod_cannot_move_to_another_node() -> None:
    assert_only(
        pod(nodeName="node-2"), "spec", "pod updates may not change", old=pod(nodeName="node-1")
    )


def test_pod_metadata_and_status_updates_are_allowed() -> None:
    new = pod(nodeName="node-1")
    new["metadata"]["labels"]["tier"] = "frontend"
    new["status"] = {"phase": "Running", "podIP": "10.244.1.5"}
    assert_valid(new, old=pod(nodeName="node-1"))


def test_pod_active_deadline_updates() -> None:
    assert_valid(pod(activeDeadlineSeconds=100), old=pod())
    assert_valid(pod(activeDeadlineSeconds=50), old=pod(activeDeadlineSeconds=100))
    assert_only(
        pod(activeDeadlineSeconds=200),
        "spec.activeDeadlineSeconds",
        "must be less than or equal to previous value",
        old=pod(activeDeadlineSeconds=100),
    )
    assert_only(
        pod(),
        "spec.activeDeadlineSeconds",
        "must not update from a positive integer to nil value",
        old=pod(activeDeadlineSeconds=100),
    )


def test_pod_tolerations_may_only_be_added() -> None:
    a = {"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
    b = {"key": "b", "operator": "Exists"}
    assert_valid(pod(tolerations=[a, b]), old=pod(tolerations=[a]))
    assert_valid(pod(tolerations=[{**a, "tolerationSeconds": 30}]), old=pod(tolerations=[a]))
    assert_only(
        pod(tolerations=[b]),
        "spec.tolerations",
        "existing toleration can not be modified",
        old=pod(tolerations=[a]),
    )


def test_pod_grace_period_changes_are_ignored() -> None:
    assert_valid(pod(terminationGracePeriodSeconds=5), old=pod())


# --- apps/v1 -------------------------------------------------------------------------------------


def test_deployment_selector_mismatch() -> None:
    doc = deployment(template=template(labels={"app": "api"}))
    err = assert_only(
        doc, "spec.template.metadata.labels", "selector does not match template labels"
    )
    assert str(err) == (
        'spec.template.metadata.labels: Invalid value: {"app":"api"}: '
        "selector does not match template labels"
    )


def test_deployment_selector_expressions_must_match_too() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}],
    }
    assert_only(deployment(selector=selector), "spec.template.metadata.labels", "does not match")
    tmpl = template(labels={"app": "web", "tier": "frontend"})
    assert_valid(deployment(selector=selector, template=tmpl))


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}}])
def test_deployment_selector_required(selector: dict[str, Any] | None) -> None:
    doc = deployment()
    if selector is None:
        del doc["spec"]["selector"]
    else:
        doc["spec"]["selector"] = selector
    assert_only(doc, "spec.selector", "Required value")


def test_deployment_selector_bad_expression() -> None:
    selector = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Is"}]}
    assert_only(
        deployment(selector=selector),
        "spec.selector.matchExpressions[0]",
        "not a valid label selector operator",
    )


def test_negative_replicas() -> None:
    assert_only(deployment(replicas=-1), "spec.replicas", "must be greater than or equal to 0")


def test_selector_is_immutable() -> None:
    old = deployment()
    new = deployment(
        selector={"matchLabels": {"app": "web", "v": "2"}},
        template=template(labels={"app": "web", "v": "2"}),
    )
    assert_only(new, "spec.selector", "field is immutable", old=old)


def test_deployment_scaling_and_new_template_are_fine() -> None:
    new = deployment(replicas=5, template=template(containers=[container(image="busybox:1.37")]))
    assert_valid(new, old=deployment())


@pytest.mark.parametrize(
    ("strategy", "path", "message"),
    [
        ({"type": "Blue-Green"}, "spec.strategy.type", "Unsupported"),
        (
            {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}},
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ),
        (
            {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
            "spec.strategy.rollingUpdate.maxUnavailable",
            "may not be 0 when `maxSurge` is 0",
        ),
        (
            {"rollingUpdate": {"maxUnavailable": "150%"}},
            "spec.strategy.rollingUpdate.maxUnavailable",
            "must not be greater than 100%",
        ),
        (
            {"rollingUpdate": {"maxSurge": "lots"}},
            "spec.strategy.rollingUpdate.maxSurge",
            "percentage",
        ),
        ({"rollingUpdate": {"maxSurge": "-1"}}, "spec.strategy.rollingUpdate.maxSurge", "negative"),
    ],
)
def test_deployment_strategy(strategy: dict[str, Any], path: str, message: str) -> None:
    assert_only(deployment(strategy=strategy), path, message)


def test_deployment_surge_may_exceed_100_percent() -> None:
    assert_valid(deployment(strategy={"rollingUpdate": {"maxSurge": "200%"}}))


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"revisionHistoryLimit": -1}, "spec.revisionHistoryLimit", "greater than or equal to 0"),
        ({"minReadySeconds": -1}, "spec.minReadySeconds", "greater than or equal to 0"),
        (
            {"minReadySeconds": 600, "progressDeadlineSeconds": 600},
            "spec.progressDeadlineSeconds",
            "must be greater than minReadySeconds",
        ),
        (
            {"template": template(restartPolicy="OnFailure")},
            "spec.template.spec.restartPolicy",
            'Unsupported value: "OnFailure": supported values: "Always"',
        ),
        (
            {"template": template(activeDeadlineSeconds=30)},
            "spec.template.spec.activeDeadlineSeconds",
            "Forbidden",
        ),
        (
            {"template": {**template(), "metadata": {"labels": {"app": "web", "bad key": "x"}}}},
            "spec.template.metadata.labels[bad key]",
            "name part must consist of",
        ),
    ],
)
def test_deployment_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(deployment(**spec), path, message)


def test_replicaset() -> None:
    assert_valid(workload("ReplicaSet"))
    doc = workload("ReplicaSet", template=template(labels={"app": "other"}))
    assert_only(doc, "spec.template.metadata.labels", "selector does not match template labels")


def statefulset(**spec: Any) -> dict[str, Any]:
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    tmpl = template(containers=[container(volumeMounts=[{"name": "data", "mountPath": "/data"}])])
    fields = {"serviceName": "web", "template": tmpl, "volumeClaimTemplates": [claim], **spec}
    return workload("StatefulSet", **fields)


def test_statefulset_mounts_claim_templates() -> None:
    assert_valid(statefulset())


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"podManagementPolicy": "Random"}, "spec.podManagementPolicy", "Unsupported"),
        ({"updateStrategy": {"type": "Recreate"}}, "spec.updateStrategy.type", "Unsupported"),
        (
            {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}},
            "spec.updateStrategy.rollingUpdate.partition",
            "greater than or equal to 0",
        ),
        (
            {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}},
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "must be greater than 0",
        ),
        (
            {"updateStrategy": {"type": "OnDelete", "rollingUpdate": {}}},
            "spec.updateStrategy.rollingUpdate",
            "Forbidden",
        ),
        ({"replicas": -3}, "spec.replicas", "greater than or equal to 0"),
        (
            {
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
                ]
            },
            "spec.volumeClaimTemplates[0].spec.resources.requests[storage]",
            "Required",
        ),
        (
            {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Archive"}},
            "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
            "Unsupported",
        ),
    ],
)
def test_statefulset_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(statefulset(**spec), path, message)


def test_statefulset_updates() -> None:
    old = statefulset()
    new = statefulset(replicas=5, minReadySeconds=10, updateStrategy={"type": "OnDelete"})
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    assert_valid(new, old=old)
    err = assert_only(
        statefulset(serviceName="other"), "spec", "updates to statefulset spec", old=old
    )
    assert "'replicas', 'ordinals', 'template', 'updateStrategy'" in err.message
    assert_only(statefulset(podManagementPolicy="Parallel"), "spec", "are forbidden", old=old)


def test_daemonset() -> None:
    assert_valid(workload("DaemonSet"))
    doc = workload(
        "DaemonSet", updateStrategy={"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    )
    assert_only(
        doc,
        "spec.updateStrategy.rollingUpdate.maxSurge",
        "may not be set when maxUnavailable is non-zero",
    )
    doc = workload(
        "DaemonSet", updateStrategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}
    )
    assert_only(
        doc, "spec.updateStrategy.rollingUpdate.maxUnavailable", "cannot be 0 when maxSurge is 0"
    )
    doc = workload(
        "DaemonSet", updateStrategy={"rollingUpdate": {"maxSurge": "101%", "maxUnavailable": 0}}
    )
    assert_only(doc, "spec.updateStrategy.rollingUpdate.maxSurge", "must not be greater than 100%")
    assert_only(
        workload("DaemonSet", updateStrategy={"type": "Parallel"}),
        "spec.updateStrategy.type",
        "Unsupported",
    )
    assert_valid(workload("DaemonSet", updateStrategy={"type": "OnDelete"}))


def test_daemonset_selector_is_immutable() -> None:
    old = workload("DaemonSet")
    new = workload("DaemonSet", selector={"matchLabels": {"app": "web", "v": "2"}})
    new["spec"]["template"]["metadata"]["labels"]["v"] = "2"
    assert_only(new, "spec.selector", "field is immutable", old=old)


# --- batch/v1 ------------------------------------------------------------------------------------


def test_job_restart_policy_always_is_rejected() -> None:
    assert_only(
        job(template=template(restartPolicy="Always")),
        "spec.template.spec.restartPolicy",
        'Unsupported value: "Always": supported values: "OnFailure", "Never"',
    )


def test_job_restart_policy_is_required() -> None:
    assert_only(job(template=template()), "spec.template.spec.restartPolicy", "Required value")


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"parallelism": -1}, "spec.parallelism", "greater than or equal to 0"),
        ({"completions": -1}, "spec.completions", "greater than or equal to 0"),
        ({"backoffLimit": -1}, "spec.backoffLimit", "greater than or equal to 0"),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds", "must be greater than 0"),
        (
            {"ttlSecondsAfterFinished": -1},
            "spec.ttlSecondsAfterFinished",
            "greater than or equal to 0",
        ),
        (
            {"completionMode": "Indexed", "parallelism": 2},
            "spec.completions",
            "when completion mode is Indexed",
        ),
        ({"completionMode": "Sorted"}, "spec.completionMode", "Unsupported"),
        (
            {"backoffLimitPerIndex": 1},
            "spec.backoffLimitPerIndex",
            "requires indexed completion mode",
        ),
        (
            {"selector": {"matchLabels": {"app": "other"}}, "manualSelector": True},
            "spec.template.metadata.labels",
            "selector does not match template labels",
        ),
        (
            {
                "template": template(restartPolicy="OnFailure"),
                "podFailurePolicy": {
                    "rules": [
                        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}}
                    ]
                },
            },
            "spec.template.spec.restartPolicy",
            'only "Never" is supported when podFailurePolicy is specified',
        ),
        (
            {
                "podFailurePolicy": {
                    "rules": [
                        {"action": "Explode", "onExitCodes": {"operator": "In", "values": [1]}}
                    ]
                }
            },
            "spec.podFailurePolicy.rules[0].action",
            "Unsupported",
        ),
    ],
)
def test_job_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(job(**spec), path, message)


def test_indexed_job() -> None:
    assert_valid(job(completionMode="Indexed", completions=3, backoffLimitPerIndex=1))


def test_job_template_is_immutable() -> None:
    doc = job()
    doc["metadata"]["uid"] = UID
    changed = copy.deepcopy(doc)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    assert_only(changed, "spec.template", "field is immutable", old=doc)


def test_job_parallelism_may_change() -> None:
    doc = job()
    doc["metadata"]["uid"] = UID
    assert_valid(job(parallelism=5) | {"metadata": doc["metadata"]}, old=doc)


def test_cronjob_valid() -> None:
    assert_valid(cronjob())
    assert_valid(cronjob(schedule="@hourly", timeZone="Europe/Berlin"))


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "Required value"),
        ("*/0 * * * *", "must be a positive number"),
        ("61 * * * *", "out of range"),
        ("every day", "expected exactly 5 fields"),
        ("TZ=Europe/Berlin 0 * * * *", "use timeZone field instead"),
        ("CRON_TZ=UTC 0 * * * *", "use timeZone field instead"),
    ],
)
def test_bad_cron_schedule(schedule: str, message: str) -> None:
    assert_only(cronjob(schedule=schedule), "spec.schedule", message)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "Local", "", "../../etc/passwd", "/etc/localtime"]
)
def test_bad_time_zone(zone: str) -> None:
    assert_only(cronjob(timeZone=zone), "spec.timeZone", "Invalid value")


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy", "Unsupported"),
        (
            {"successfulJobsHistoryLimit": -1},
            "spec.successfulJobsHistoryLimit",
            "greater than or equal to 0",
        ),
        (
            {"failedJobsHistoryLimit": -1},
            "spec.failedJobsHistoryLimit",
            "greater than or equal to 0",
        ),
        (
            {"startingDeadlineSeconds": -1},
            "spec.startingDeadlineSeconds",
            "greater than or equal to 0",
        ),
        (
            {"jobTemplate": {"spec": {"template": template(restartPolicy="Always")}}},
            "spec.jobTemplate.spec.template.spec.restartPolicy",
            'Unsupported value: "Always"',
        ),
        (
            {
                "jobTemplate": {
                    "spec": {"backoffLimit": -1, "template": template(restartPolicy="Never")}
                }
            },
            "spec.jobTemplate.spec.backoffLimit",
            "greater than or equal to 0",
        ),
    ],
)
def test_cronjob_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(cronjob(**spec), path, message)


def test_cronjob_name_leaves_room_for_job_names() -> None:
    doc = cronjob()
    doc["metadata"]["name"] = "c" * 53
    assert_only(doc, "metadata.name", "must be no more than 52 characters")


# --- Service --------------------------------------------------------------------------------------


def test_service_valid_kinds() -> None:
    assert_valid(service())
    assert_valid(service(clusterIP="None", ports=[]))  # headless
    assert_valid(service(type="ExternalName", externalName="db.example.com", ports=[]))
    assert_valid(service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"ports": []}, "spec.ports", "Required value"),
        (
            {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]},
            "spec.ports[0].nodePort",
            "The range of valid ports is 30000-32767",
        ),
        (
            {"ports": [{"port": 80, "nodePort": 30080}]},
            "spec.ports[0].nodePort",
            "may not be used when `type` is 'ClusterIP'",
        ),
        ({"ports": [{"port": 0, "targetPort": 80}]}, "spec.ports[0].port", "between 1 and 65535"),
        ({"ports": [{"port": 80, "targetPort": 70000}]}, "spec.ports[0].targetPort", "65535"),
        (
            {"ports": [{"port": 80, "targetPort": "Not_A_Name"}]},
            "spec.ports[0].targetPort",
            "invalid port",
        ),
        ({"ports": [{"port": 80, "protocol": "ICMP"}]}, "spec.ports[0].protocol", "Unsupported"),
        (
            {"ports": [{"name": "a", "port": 80}, {"port": 81}]},
            "spec.ports[1].name",
            "Required value",
        ),
        (
            {"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]},
            "spec.ports[1].name",
            "Duplicate",
        ),
        (
            {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]},
            "spec.ports[1]",
            "Duplicate",
        ),
        ({"type": "Internal"}, "spec.type", "Unsupported"),
        ({"sessionAffinity": "Sticky"}, "spec.sessionAffinity", "Unsupported"),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}},
            },
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            "less than 86400",
        ),
        ({"clusterIP": "10.96.0.300"}, "spec.clusterIP", "IP address"),
        ({"clusterIP": "fd00::1"}, "spec.clusterIP", "IPv4"),
        ({"type": "NodePort", "clusterIP": "None"}, "spec.clusterIP", "may not be set to 'None'"),
        ({"type": "ExternalName", "ports": []}, "spec.externalName", "Required"),
        ({"selector": {"app": "not valid!"}}, "spec.selector[app]", "valid label"),
        ({"externalIPs": ["example.com"]}, "spec.externalIPs[0]", "IP address"),
    ],
)
def test_service_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(service(**spec), path, message)


def test_service_cluster_ip_is_immutable() -> None:
    old = service(clusterIP="10.96.0.10")
    err = assert_only(
        service(clusterIP="10.96.0.11"), "spec.clusterIP", "field is immutable", old=old
    )
    assert str(err) == 'spec.clusterIP: Invalid value: "10.96.0.11": field is immutable'
    assert_only(service(), "spec.clusterIP", "field is immutable", old=old)


def test_service_cluster_ip_may_be_allocated_once() -> None:
    assert_valid(service(clusterIP="10.96.0.10"), old=service())
    assert_valid(
        service(clusterIP="10.96.0.10", ports=[{"port": 81}]), old=service(clusterIP="10.96.0.10")
    )


def test_service_may_become_external_name() -> None:
    new = service(type="ExternalName", externalName="db.example.com", ports=[])
    assert_valid(new, old=service(clusterIP="10.96.0.10"))


def test_endpoints() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "web", "namespace": "demo"},
        "subsets": [
            {"addresses": [{"ip": "10.0.0.300"}], "ports": [{"port": 80}, {"name": "b", "port": 0}]}
        ],
    }
    assert error_paths(doc) == [
        "subsets[0].addresses[0].ip",
        "subsets[0].ports[0].name",
        "subsets[0].ports[1].port",
    ]


# --- ConfigMap and Secret -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"data": {"bad key": "v"}}, "data[bad key]", "config key"),
        ({"data": {"..": "v"}}, "data[..]", "must not be '..'"),
        ({"binaryData": {"key": "AAAA"}}, "binaryData[key]", "duplicate of key present in data"),
        (
            {"data": {"big": "x" * (1024 * 1024 + 1)}},
            "data",
            "Too long: must have at most 1048576 bytes",
        ),
    ],
)
def test_config_map(fields: dict[str, Any], path: str, message: str) -> None:
    assert_only(config_map(**fields), path, message)


def test_config_map_immutable() -> None:
    old = config_map(immutable=True)
    assert_only(
        config_map(immutable=True, data={"key": "new"}),
        "data",
        "field is immutable when `immutable` is set",
        old=old,
    )
    assert_only(
        config_map(immutable=True, binaryData={"b": "AAAA"}), "binaryData", "immutable", old=old
    )
    assert_only(
        config_map(immutable=False),
        "immutable",
        "field is immutable when `immutable` is set",
        old=old,
    )
    relabeled = config_map(immutable=True)
    relabeled["metadata"]["labels"] = {"x": "y"}
    assert_valid(relabeled, old=old)


def test_mutable_config_map_may_change() -> None:
    assert_valid(config_map(data={"key": "new"}, immutable=True), old=config_map())


def test_secret_type_is_immutable() -> None:
    old = secret(data={"token": "dG9r"})
    new = secret(type="example.com/custom", data={"token": "dG9r"})
    assert_only(new, "type", "field is immutable", old=old)


def test_secret_immutable_data() -> None:
    old = secret(immutable=True, data={"a": "YQ=="})
    assert_only(secret(immutable=True, data={"a": "Yg=="}), "data", "immutable", old=old)
    assert_only(secret(immutable=True, stringData={"a": "b"}), "data", "immutable", old=old)


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        (
            {"type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA=="}},
            "data[tls.key]",
            "Required",
        ),
        (
            {"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{"}},
            "data[.dockerconfigjson]",
            "Invalid value",
        ),
        ({"type": "kubernetes.io/ssh-auth"}, "data[ssh-privatekey]", "Required"),
        ({"type": "kubernetes.io/basic-auth"}, "data[username]", "Required"),
        (
            {"type": "kubernetes.io/service-account-token"},
            "metadata.annotations[kubernetes.io/service-account.name]",
            "Required",
        ),
        ({"stringData": {"bad key": "v"}}, "data[bad key]", "config key"),  # normalized into data
    ],
)
def test_secret(fields: dict[str, Any], path: str, message: str) -> None:
    assert_only(secret(**fields), path, message)


def test_tls_secret() -> None:
    assert_valid(secret(type="kubernetes.io/tls", stringData={"tls.crt": "c", "tls.key": "k"}))


def test_bootstrap_token_secret() -> None:
    token = {"token-id": "abcdef", "token-secret": "0123456789abcdef"}
    doc = secret(type="bootstrap.kubernetes.io/token", stringData=token)
    doc["metadata"] = {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    assert_valid(doc)
    doc["metadata"]["name"] = "my-token"
    assert_only(doc, "metadata.name", 'must be "bootstrap-token-abcdef"')


# --- Namespace and Node ---------------------------------------------------------------------------


def node(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"taints": [{"key": "k", "effect": "NoRun"}]}, "spec.taints[0].effect", "Unsupported"),
        ({"taints": [{"key": "k"}]}, "spec.taints[0].effect", "Required"),
        (
            {"taints": [{"key": "bad key", "effect": "NoSchedule"}]},
            "spec.taints[0].key",
            "name part must consist of",
        ),
        (
            {
                "taints": [
                    {"key": "k", "effect": "NoSchedule"},
                    {"key": "k", "value": "v", "effect": "NoSchedule"},
                ]
            },
            "spec.taints[1]",
            "taints must be unique by key and effect pair",
        ),
        ({"podCIDR": "10.244.0.0/33"}, "spec.podCIDR", "CIDR"),
        ({"podCIDR": "not-a-cidr"}, "spec.podCIDR", "CIDR"),
    ],
)
def test_node(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(node(**spec), path, message)


def test_node_pod_cidr_is_assigned_once() -> None:
    assert_valid(node(podCIDR="10.244.1.0/24"), old=node())
    assert_only(
        node(podCIDR="10.244.2.0/24"),
        "spec.podCIDR",
        "may not change podCIDR",
        old=node(podCIDR="10.244.1.0/24"),
    )


def test_node_capacity_quantities() -> None:
    doc = node()
    doc["status"] = {"capacity": {"cpu": "four"}}
    paths = error_paths(doc)
    assert "status.capacity[cpu]" in paths


def test_namespace() -> None:
    assert_valid({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo.prod"}}
    assert_only(doc, "metadata.name", "RFC 1123 label")


# --- PersistentVolume(Claim) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"capacity": {}}, "spec.capacity", "Required"),
        ({"capacity": {"storage": "big"}}, "spec.capacity[storage]", "is invalid"),
        ({"capacity": {"storage": "1Gi", "cpu": "1"}}, "spec.capacity[cpu]", "Unsupported"),
        ({"accessModes": []}, "spec.accessModes", "at least 1 access mode is required"),
        ({"accessModes": ["ReadWriteSometimes"]}, "spec.accessModes[0]", "Unsupported"),
        (
            {"accessModes": ["ReadWriteOncePod", "ReadOnlyMany"]},
            "spec.accessModes",
            "ReadWriteOncePod",
        ),
        (
            {"nfs": {"server": "nfs", "path": "/exports"}},
            "spec.nfs",
            "may not specify more than 1 volume type",
        ),
        (
            {"persistentVolumeReclaimPolicy": "Shred"},
            "spec.persistentVolumeReclaimPolicy",
            "Unsupported",
        ),
        ({"hostPath": {"path": "relative"}}, "spec.hostPath.path", "absolute"),
    ],
)
def test_persistent_volume(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(pv(**spec), path, message)


def test_persistent_volume_needs_a_source() -> None:
    doc = pv()
    del doc["spec"]["hostPath"]
    assert_only(doc, "spec", "must specify a volume type")


def test_local_volume_needs_node_affinity() -> None:
    doc = pv()
    doc["spec"] = {**doc["spec"], "local": {"path": "/mnt/ssd"}}
    del doc["spec"]["hostPath"]
    assert_only(doc, "spec.nodeAffinity", "Local volume requires node affinity")


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"accessModes": []}, "spec.accessModes", "at least 1 access mode is required"),
        ({"resources": {}}, "spec.resources.requests[storage]", "Required value"),
        (
            {"resources": {"requests": {"storage": "0"}}},
            "spec.resources.requests[storage]",
            "must be greater than zero",
        ),
        (
            {"resources": {"requests": {"storage": "1Gb"}}},
            "spec.resources.requests[storage]",
            "is invalid",
        ),
        ({"volumeMode": "Raw"}, "spec.volumeMode", "Unsupported"),
        (
            {"selector": {"matchLabels": {"bad key": "x"}}},
            "spec.selector.matchLabels[bad key]",
            "name part must consist of",
        ),
    ],
)
def test_persistent_volume_claim(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(pvc(**spec), path, message)


def test_pvc_spec_is_immutable() -> None:
    err = assert_only(
        pvc(accessModes=["ReadWriteMany"]), "spec", "spec is immutable after creation", old=pvc()
    )
    assert err.message.startswith(
        "Forbidden: spec is immutable after creation except resources.requests"
    )
    assert_only(pvc(storageClassName="fast"), "spec", "immutable", old=pvc(storageClassName="slow"))


def test_pvc_may_grow_but_not_shrink() -> None:
    assert_valid(pvc(resources={"requests": {"storage": "2Gi"}}), old=pvc())
    assert_only(
        pvc(resources={"requests": {"storage": "512Mi"}}),
        "spec.resources.requests[storage]",
        "can not be less than previous value",
        old=pvc(),
    )


def test_pvc_binding_and_default_class_are_allowed() -> None:
    assert_valid(pvc(volumeName="pv-1", storageClassName="standard"), old=pvc())


# --- HorizontalPodAutoscaler ----------------------------------------------------------------------


def test_hpa_min_above_max() -> None:
    err = assert_only(
        hpa(minReplicas=5, maxReplicas=2),
        "spec.maxReplicas",
        "must be greater than or equal to `minReplicas`",
    )
    assert (
        str(err)
        == "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
    )


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"minReplicas": 0}, "spec.minReplicas", "must be greater than 0"),
        ({"maxReplicas": 0, "minReplicas": None}, "spec.maxReplicas", "must be greater than 0"),
        ({"scaleTargetRef": {"kind": "Deployment"}}, "spec.scaleTargetRef.name", "Required"),
        ({"scaleTargetRef": {"name": "web"}}, "spec.scaleTargetRef.kind", "Required"),
        (
            {"metrics": [{"type": "Resource"}]},
            "spec.metrics[0].resource",
            "must populate information for the given metric source",
        ),
        ({"metrics": [{"type": "Magic"}]}, "spec.metrics[0].type", "Unsupported"),
        (
            {
                "metrics": [
                    {
                        **resource_metric({"type": "Utilization", "averageUtilization": 50}),
                        "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue"}},
                    }
                ]
            },
            "spec.metrics[0].pods",
            "must populate the given metric source only",
        ),
        (
            {"metrics": [resource_metric({"type": "Utilization"})]},
            "spec.metrics[0].resource.target.averageUtilization",
            "Required",
        ),
        (
            {"metrics": [resource_metric({"type": "Utilization", "averageUtilization": 0})]},
            "spec.metrics[0].resource.target.averageUtilization",
            "must be greater than 0",
        ),
        (
            {"metrics": [resource_metric({"type": "AverageValue", "averageValue": "-1"})]},
            "spec.metrics[0].resource.target.averageValue",
            "must be greater than zero",
        ),
        (
            {"metrics": [resource_metric({"type": "Average"})]},
            "spec.metrics[0].resource.target.type",
            "Unsupported",
        ),
        (
            {
                "metrics": [
                    resource_metric({"type": "Utilization", "averageUtilization": 50}, name="")
                ]
            },
            "spec.metrics[0].resource.name",
            "Required",
        ),
        (
            {"behavior": {"scaleUp": {"stabilizationWindowSeconds": 3601}}},
            "spec.behavior.scaleUp.stabilizationWindowSeconds",
            "between 0 and 3600",
        ),
        (
            {
                "behavior": {
                    "scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 60}]}
                }
            },
            "spec.behavior.scaleDown.policies[0].value",
            "must be greater than 0",
        ),
        (
            {"behavior": {"scaleDown": {"selectPolicy": "Avg"}}},
            "spec.behavior.scaleDown.selectPolicy",
            "Unsupported",
        ),
    ],
)
def test_hpa_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(hpa(**spec), path, message)


def test_hpa_metric_targets() -> None:
    metrics = [
        resource_metric({"type": "Utilization", "averageUtilization": 60}),
        resource_metric({"type": "AverageValue", "averageValue": "500Mi"}, name="memory"),
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "qps"},
                "target": {"type": "AverageValue", "averageValue": "1k"},
            },
        },
        {
            "type": "Object",
            "object": {
                "metric": {"name": "hits"},
                "describedObject": {"kind": "Ingress", "name": "web"},
                "target": {"type": "Value", "value": "10k"},
            },
        },
    ]
    assert_valid(hpa(metrics=metrics))


def test_hpa_resource_metric_is_an_average() -> None:
    doc = hpa(metrics=[resource_metric({"type": "Value", "value": "1"})])
    assert_only(
        doc,
        "spec.metrics[0].resource.target.type",
        'Unsupported value: "Value": supported values: "Utilization", "AverageValue"',
    )
    both = {"type": "Utilization", "averageUtilization": 50, "averageValue": "100m"}
    doc = hpa(metrics=[resource_metric(both)])
    assert_only(doc, "spec.metrics[0].resource.target.averageValue", "may not set both")


# --- networking -----------------------------------------------------------------------------------


def test_ingress_valid() -> None:
    assert_valid(ingress())
    assert_valid(ingress(defaultBackend={"service": {"name": "web", "port": {"name": "http"}}}))


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        (ingress_rule(path="api"), "spec.rules[0].http.paths[0].path", "must be an absolute path"),
        (ingress_rule(path_type=""), "spec.rules[0].http.paths[0].pathType", "Required"),
        (ingress_rule(path_type="Regex"), "spec.rules[0].http.paths[0].pathType", "Unsupported"),
        (
            ingress_rule(service={"name": "web", "port": {}}),
            "spec.rules[0].http.paths[0].backend.service.port",
            "port name or number is required",
        ),
        (
            ingress_rule(service={"name": "web", "port": {"name": "http", "number": 80}}),
            "spec.rules[0].http.paths[0].backend.service.port",
            "cannot set both port name & port number",
        ),
        (
            ingress_rule(service={"name": "web", "port": {"number": 70000}}),
            "spec.rules[0].http.paths[0].backend.service.port.number",
            "65535",
        ),
        (
            ingress_rule(service={"port": {"number": 80}}),
            "spec.rules[0].http.paths[0].backend.service.name",
            "Required",
        ),
        (
            {
                "host": "web.example.com",
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {}}]},
            },
            "spec.rules[0].http.paths[0].backend",
            "one backend (`service` or `resource`) must be specified",
        ),
        (
            {**ingress_rule(), "host": "10.0.0.1"},
            "spec.rules[0].host",
            "must be a DNS name, not an IP address",
        ),
        ({**ingress_rule(), "host": "Web.Example.com"}, "spec.rules[0].host", "RFC 1123"),
    ],
)
def test_ingress_rules(rule: dict[str, Any], path: str, message: str) -> None:
    assert_only(ingress(rules=[rule]), path, message)


def test_ingress_wildcard_host_and_implementation_specific_path() -> None:
    rule = {**ingress_rule(path="", path_type="ImplementationSpecific"), "host": "*.example.com"}
    assert_valid(ingress(rules=[rule]))


def test_ingress_needs_rules_or_default_backend() -> None:
    doc = ingress()
    doc["spec"] = {"tls": [{"hosts": ["web.example.com"]}]}
    assert_only(doc, "spec", "either `defaultBackend` or `rules` must be specified")


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"policyTypes": ["Ingress", "Sideways"]}, "spec.policyTypes[1]", "Unsupported"),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
            "spec.ingress[0].from[0].ipBlock.cidr",
            "CIDR",
        ),
        (
            {
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["192.168.0.0/24"]}}]}
                ]
            },
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "must be a strict subset of `cidr`",
        ),
        (
            {
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}
                ]
            },
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strict subset",
        ),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
            "spec.egress[0].to[0]",
            "may not specify both ipBlock and another peer",
        ),
        ({"egress": [{"to": [{}]}]}, "spec.egress[0].to[0]", "must specify a peer"),
        (
            {"egress": [{"ports": [{"port": 32000, "endPort": 31000}]}]},
            "spec.egress[0].ports[0].endPort",
            "must be greater than or equal to `port`",
        ),
        (
            {"egress": [{"ports": [{"port": "dns", "endPort": 31000}]}]},
            "spec.egress[0].ports[0].endPort",
            "non-numeric",
        ),
        (
            {"ingress": [{"ports": [{"protocol": "ICMP"}]}]},
            "spec.ingress[0].ports[0].protocol",
            "Unsupported",
        ),
        (
            {"ingress": [{"ports": [{"port": 0}]}]},
            "spec.ingress[0].ports[0].port",
            "between 1 and 65535",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            },
            "spec.podSelector.matchExpressions[0]",
            "values set must be empty",
        ),
    ],
)
def test_network_policy(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(network_policy(**spec), path, message)


def test_ingress_class() -> None:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "nginx"},
        "spec": {
            "controller": "example.com/ingress",
            "parameters": {"kind": "Params", "name": "p", "scope": "Namespace"},
        },
    }
    assert_only(doc, "spec.parameters.namespace", "Required")


# --- RBAC -----------------------------------------------------------------------------------------


def test_role_rules() -> None:
    doc = role("Role", {"apiGroups": [""], "resources": ["pods"], "verbs": []})
    assert_only(doc, "rules[0].verbs", "verbs must contain at least one value")
    doc = role("Role", {"nonResourceURLs": ["/healthz"], "verbs": ["get"]})
    assert_only(
        doc, "rules[0].nonResourceURLs", "namespaced rules cannot apply to non-resource URLs"
    )
    assert_valid(role("ClusterRole", {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}))
    doc = role("ClusterRole", {"resources": ["pods"], "verbs": ["get"]})
    assert_only(doc, "rules[0].apiGroups", "at least one api group")


def test_role_ref_is_immutable() -> None:
    old = role_binding()
    new = role_binding(roleRef={"kind": "ClusterRole", "name": "admin"})
    err = assert_only(new, "roleRef", "cannot change roleRef", old=old)
    assert err.message.startswith("Invalid value: ")
    relabeled = role_binding(subjects=[{"kind": "Group", "name": "devs"}])
    assert_valid(relabeled, old=old)  # subjects may change


@pytest.mark.parametrize(
    ("kind", "fields", "path", "message"),
    [
        ("RoleBinding", {"roleRef": {"kind": "User", "name": "x"}}, "roleRef.kind", "Unsupported"),
        ("RoleBinding", {"roleRef": {"kind": "Role"}}, "roleRef.name", "Required"),
        (
            "ClusterRoleBinding",
            {"roleRef": {"kind": "Role", "name": "x"}},
            "roleRef.kind",
            'supported values: "ClusterRole"',
        ),
        (
            "RoleBinding",
            {"subjects": [{"kind": "Robot", "name": "r2"}]},
            "subjects[0].kind",
            "Unsupported",
        ),
        ("RoleBinding", {"subjects": [{"kind": "User"}]}, "subjects[0].name", "Required"),
        (
            "ClusterRoleBinding",
            {"subjects": [{"kind": "ServiceAccount", "name": "sa"}]},
            "subjects[0].namespace",
            "Required",
        ),
        (
            "RoleBinding",
            {
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": "sa",
                        "apiGroup": "rbac.authorization.k8s.io",
                    }
                ]
            },
            "subjects[0].apiGroup",
            "Unsupported",
        ),
    ],
)
def test_bindings(kind: str, fields: dict[str, Any], path: str, message: str) -> None:
    assert_only(role_binding(kind, **fields), path, message)


def test_service_account_subject_in_a_role_binding_needs_no_namespace() -> None:
    assert_valid(role_binding(subjects=[{"kind": "ServiceAccount", "name": "builder"}]))


# --- Lease, PriorityClass, CSR, ResourceQuota, Event ----------------------------------------------


def test_lease_duration() -> None:
    doc = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "node-1", "namespace": "demo"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 0},
    }
    assert_only(doc, "spec.leaseDurationSeconds", "must be greater than 0")


def test_priority_class() -> None:
    assert_valid(priority_class())
    assert_only(
        priority_class(value=1_000_000_001),
        "value",
        "maximum allowed value of a user defined priority is 1000000000",
    )
    assert_only(
        priority_class(name="system-special"), "metadata.name", "'system-' prefix are reserved"
    )
    assert_valid(priority_class(name="system-cluster-critical", value=2_000_000_000))
    assert_only(priority_class(preemptionPolicy="Sometimes"), "preemptionPolicy", "Unsupported")


def test_priority_class_value_is_immutable() -> None:
    assert_only(
        priority_class(value=2000), "value", "may not be changed in an update", old=priority_class()
    )


def test_csr_valid() -> None:
    assert_valid(csr())


def test_csr_request_required() -> None:
    assert_only(csr(request=b""), "spec.request", "Required value")


def test_csr_garbage_request() -> None:
    err = assert_only(
        csr(request=b"this is not a certificate request"),
        "spec.request",
        "PEM-encoded CERTIFICATE REQUEST",
    )
    assert err.message.startswith("Invalid value: ")


def test_csr_certificate_is_not_a_request() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert_only(
        csr(request=cert.public_bytes(serialization.Encoding.PEM)),
        "spec.request",
        "CERTIFICATE REQUEST",
    )


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"signerName": ""}, "spec.signerName", "Required"),
        ({"signerName": "kubelet"}, "spec.signerName", "example.com/signer-name"),
        ({"usages": []}, "spec.usages", "Required"),
        ({"usages": ["client auth", "mind control"]}, "spec.usages[1]", "Unsupported"),
        ({"usages": ["client auth", "client auth"]}, "spec.usages[1]", "Duplicate"),
        ({"expirationSeconds": 60}, "spec.expirationSeconds", "600 seconds"),
    ],
)
def test_csr_spec(spec: dict[str, Any], path: str, message: str) -> None:
    assert_only(csr(**spec), path, message)


def test_csr_spec_is_immutable() -> None:
    old = csr()
    new = copy.deepcopy(old)
    new["spec"]["usages"] = ["digital signature", "server auth"]
    assert_only(new, "spec", "field is immutable", old=old)
    approved = copy.deepcopy(old)
    approved["status"] = {"conditions": [{"type": "Approved", "status": "True"}]}
    assert_valid(approved, old=old)


def test_resource_quota() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q", "namespace": "demo"},
        "spec": {
            "hard": {"pods": "ten", "count/deployments.apps": "5", "gpus": "1"},
            "scopes": ["Sometimes"],
        },
    }
    assert sorted(error_paths(doc)) == ["spec.hard[gpus]", "spec.hard[pods]", "spec.scopes[0]"]


def test_event() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.17c8a1b2c3d4e5f6", "namespace": "demo"},
        "involvedObject": {"kind": "Pod", "name": "web"},
        "reason": "BackOff",
    }
    assert_valid(doc)
    doc["reason"] = "x" * 129
    assert_only(doc, "reason", "Too long: must have at most 128 bytes")
    doc["reason"] = "BackOff"
    doc["involvedObject"] = {"kind": "Pod"}
    assert_only(doc, "involvedObject.name", "Required")
