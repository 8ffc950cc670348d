"""orchctl's tables: kubectl's columns per kind, its age format and alignment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from orchestrator.api import codec
from orchestrator.api.kinds import kind_info
from orchestrator.cli import printers, tabwriter
from orchestrator.cli.printers import TableOptions, human_duration, render_table

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def obj(kind: str, name: str, namespace: str | None = "demo", **body: Any) -> Any:
    info = kind_info(kind)
    meta: dict[str, Any] = {"name": name, "creationTimestamp": ago(minutes=5)}
    if namespace and info.namespaced:
        meta["namespace"] = namespace
    meta.update(body.pop("metadata", {}))
    return codec.from_dict({"apiVersion": info.api_version, "kind": kind, "metadata": meta, **body})


def table(objs: list[Any], kind: str, **opts: Any) -> str:
    return render_table(objs, kind_info(kind), TableOptions(**opts), NOW)


# -- age ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (1, "1s"),
        (70, "70s"),
        (119, "119s"),
        (120, "2m"),
        (190, "3m10s"),
        (599, "9m59s"),
        (600, "10m"),
        (70 * 60, "70m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 3 * 60, "5h3m"),
        (47 * 3600, "47h"),
        (49 * 3600, "2d1h"),
        (3 * 86400, "3d"),
        ((8 * 24 + 2) * 3600, "8d"),
        (367 * 86400, "367d"),
        ((365 * 2 * 24 + 25) * 3600, "2y1d"),
        (365 * 3 * 86400, "3y"),
        ((365 * 8 * 24 + 2) * 3600, "8y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_missing_or_bad_timestamp_is_unknown() -> None:
    assert printers.age("", NOW) == "<unknown>"
    assert printers.age(None, NOW) == "<unknown>"
    assert printers.age("yesterday", NOW) == "<unknown>"
    assert printers.age(ago(seconds=5), NOW) == "5s"


# -- alignment ----------------------------------------------------------------------------------


def test_table_columns_are_padded_by_three_and_last_is_not() -> None:
    lines = tabwriter.table([["NAME", "READY", "STATUS"], ["nginx", "1/1", "Running"]])
    assert lines == ["NAME    READY   STATUS", "nginx   1/1     Running"]


def test_minimum_width_applies_to_short_columns() -> None:
    assert tabwriter.table([["A", "B"], ["x", "y"]]) == ["A     B", "x     y"]


def test_describe_alignment_restarts_after_a_line_without_cells() -> None:
    lines = tabwriter.align(
        ["Name:\tweb", "Namespace:\tdemo", "Containers:", "  web:", "    Image:\tbusybox"],
        minwidth=0,
        padding=2,
    )
    assert lines == [
        "Name:       web",
        "Namespace:  demo",
        "Containers:",
        "  web:",
        "    Image:  busybox",
    ]


def test_remembering_table_never_shrinks_columns() -> None:
    t = tabwriter.RememberingTable()
    first = t.format([["NAME", "AGE"], ["a-long-name", "1s"]])
    later = t.format([["b", "2s"]])
    assert first == ["NAME          AGE", "a-long-name   1s"]
    assert later == ["b             2s"]


# -- per kind -----------------------------------------------------------------------------------


def test_pods_table_and_wide() -> None:
    running = obj(
        "Pod",
        "web-1",
        spec={
            "nodeName": "node-1",
            "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}],
        },
        status={
            "phase": "Running",
            "podIP": "10.244.1.5",
            "containerStatuses": [
                {
                    "name": "a",
                    "ready": True,
                    "restartCount": 3,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=2)}},
                },
                {
                    "name": "b",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                },
            ],
        },
    )
    pending = obj(
        "Pod",
        "web-2",
        spec={"containers": [{"name": "a", "image": "busybox"}]},
        status={"phase": "Pending"},
    )
    assert table([running, pending], "Pod") == (
        "NAME    READY   STATUS             RESTARTS     AGE\n"
        "web-1   1/2     CrashLoopBackOff   3 (2m ago)   5m\n"
        "web-2   0/1     Pending            0            5m\n"
    )
    wide = table([running], "Pod", wide=True).splitlines()
    assert wide[0].split() == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    assert wide[1].split()[-4:] == ["10.244.1.5", "node-1", "<none>", "<none>"]


def test_pod_status_terminating_and_init() -> None:
    deleting = obj(
        "Pod",
        "x",
        metadata={"deletionTimestamp": ago(seconds=1)},
        spec={"containers": [{"name": "a", "image": "i"}]},
        status={"phase": "Running"},
    )
    init = obj(
        "Pod",
        "y",
        spec={
            "initContainers": [{"name": "i", "image": "i"}],
            "containers": [{"name": "a", "image": "i"}],
        },
        status={
            "phase": "Pending",
            "initContainerStatuses": [{"name": "i", "state": {"running": {}}}],
        },
    )
    done = obj(
        "Pod",
        "z",
        spec={"containers": [{"name": "a", "image": "i"}]},
        status={
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ],
        },
    )
    rows = [line.split()[2] for line in table([deleting, init, done], "Pod").splitlines()[1:]]
    assert rows == ["Terminating", "Init:0/1", "Completed"]


def test_deployments_replicasets_statefulsets() -> None:
    dep = obj(
        "Deployment",
        "web",
        spec={
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]},
            },
        },
        status={"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    )
    assert table([dep], "Deployment") == (
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    2/3     3            2           5m\n"
    )
    assert table([dep], "Deployment", wide=True).splitlines()[1].split()[-3:] == [
        "web",
        "busybox:1.36",
        "app=web",
    ]
    rs = obj(
        "ReplicaSet", "web-abc", spec={"replicas": 3}, status={"replicas": 3, "readyReplicas": 1}
    )
    assert table([rs], "ReplicaSet") == (
        "NAME      DESIRED   CURRENT   READY   AGE\nweb-abc   3         3         1       5m\n"
    )
    sts = obj("StatefulSet", "cache", spec={"replicas": 2}, status={"readyReplicas": 2})
    assert table([sts], "StatefulSet") == "NAME    READY   AGE\ncache   2/2     5m\n"


def test_daemonsets() -> None:
    ds = obj(
        "DaemonSet",
        "agent",
        spec={
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": []}}
        },
        status={
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberReady": 1,
            "updatedNumberScheduled": 2,
            "numberAvailable": 1,
        },
    )
    assert table([ds], "DaemonSet") == (
        "NAME    DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR"
        "            AGE\n"
        "agent   2         2         1       2            1           kubernetes.io/os=linux"
        "   5m\n"
    )


def test_services() -> None:
    node_port = obj(
        "Service",
        "web",
        spec={
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "externalIPs": ["192.0.2.9"],
            "selector": {"app": "web"},
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}],
        },
    )
    lb = obj(
        "Service",
        "lb",
        spec={"type": "LoadBalancer", "clusterIP": "10.96.0.11", "ports": [{"port": 443}]},
    )
    headless = obj("Service", "db", spec={"clusterIP": "None"})
    assert table([node_port, lb, headless], "Service") == (
        "NAME   TYPE           CLUSTER-IP   EXTERNAL-IP   PORT(S)               AGE\n"
        "web    NodePort       10.96.0.10   192.0.2.9     80:30080/TCP,53/UDP   5m\n"
        "lb     LoadBalancer   10.96.0.11   <pending>     443/TCP               5m\n"
        "db     ClusterIP      None         <none>        <none>                5m\n"
    )
    assert table([node_port], "Service", wide=True).splitlines()[1].endswith("app=web")


def test_nodes() -> None:
    ready = obj(
        "Node",
        "node-1",
        None,
        metadata={
            "labels": {
                "node-role.kubernetes.io/control-plane": "",
                "node-role.kubernetes.io/worker": "",
            }
        },
        spec={"unschedulable": True},
        status={
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"kubeletVersion": "v0.1.0"},
        },
    )
    lost = obj(
        "Node", "node-2", None, status={"conditions": [{"type": "Ready", "status": "Unknown"}]}
    )
    assert table([ready, lost], "Node") == (
        "NAME     STATUS                     ROLES                  AGE   VERSION\n"
        "node-1   Ready,SchedulingDisabled   control-plane,worker   5m    v0.1.0\n"
        "node-2   Unknown                    <none>                 5m    \n"
    )


def test_namespaces_configmaps_secrets() -> None:
    ns = obj("Namespace", "demo", None)
    term = obj("Namespace", "old", None, status={"phase": "Terminating"})
    assert table([ns, term], "Namespace") == (
        "NAME   STATUS        AGE\ndemo   Active        5m\nold    Terminating   5m\n"
    )
    cm = obj("ConfigMap", "cfg", data={"a": "1", "b": "2"}, binaryData={"c": "AA=="})
    assert table([cm], "ConfigMap") == "NAME   DATA   AGE\ncfg    3      5m\n"
    secret = obj("Secret", "tok", type="bootstrap.kubernetes.io/token", data={"x": "eA=="})
    assert table([secret], "Secret") == (
        "NAME   TYPE                            DATA   AGE\n"
        "tok    bootstrap.kubernetes.io/token   1      5m\n"
    )


def test_jobs_and_cronjobs() -> None:
    done = obj(
        "Job",
        "pi",
        spec={"completions": 4, "template": {"spec": {"containers": []}}},
        status={
            "succeeded": 4,
            "startTime": ago(minutes=4),
            "completionTime": ago(minutes=3, seconds=30),
        },
    )
    running = obj(
        "Job",
        "batch",
        spec={"parallelism": 3, "template": {"spec": {"containers": []}}},
        status={"startTime": ago(seconds=42)},
    )
    assert table([done, running], "Job") == (
        "NAME    COMPLETIONS   DURATION   AGE\n"
        "pi      4/4           30s        5m\n"
        "batch   0/1 of 3      42s        5m\n"
    )
    cj = obj(
        "CronJob",
        "hello",
        spec={
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}},
        },
        status={"lastScheduleTime": ago(minutes=2), "active": [{"name": "hello-1"}]},
    )
    assert table([cj], "CronJob") == (
        "NAME    SCHEDULE      SUSPEND   ACTIVE   LAST SCHEDULE   AGE\n"
        "hello   */5 * * * *   False     1        2m              5m\n"
    )


def test_events_have_no_name_column() -> None:
    ev = obj(
        "Event",
        "web.1",
        involvedObject={"kind": "Pod", "name": "web"},
        reason="BackOff",
        type="Warning",
        message="Back-off restarting",
        count=4,
        firstTimestamp=ago(minutes=6),
        lastTimestamp=ago(minutes=1),
    )
    assert table([ev], "Event") == (
        "LAST SEEN          TYPE      REASON    OBJECT    MESSAGE\n"
        "60s (x4 over 6m)   Warning   BackOff   pod/web   Back-off restarting\n"
    )
    assert table([ev], "Event", all_namespaces=True).startswith("NAMESPACE   LAST SEEN")


def test_hpa_pv_pvc_endpoints_leases_csr() -> None:
    hpa = obj(
        "HorizontalPodAutoscaler",
        "web",
        spec={
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
        status={
            "currentReplicas": 3,
            "currentMetrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": 42}},
                }
            ],
        },
    )
    assert table([hpa], "HorizontalPodAutoscaler").splitlines()[1].split() == [
        "web",
        "Deployment/web",
        "cpu:",
        "42%/70%",
        "2",
        "10",
        "3",
        "5m",
    ]
    pv = obj(
        "PersistentVolume",
        "pv1",
        None,
        spec={
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local",
            "claimRef": {"namespace": "demo", "name": "data"},
        },
        status={"phase": "Bound"},
    )
    assert table([pv], "PersistentVolume").splitlines()[1].split() == [
        "pv1",
        "10Gi",
        "RWO,ROX",
        "Retain",
        "Bound",
        "demo/data",
        "local",
        "5m",
    ]
    pvc = obj(
        "PersistentVolumeClaim",
        "data",
        spec={"volumeName": "pv1", "storageClassName": "local"},
        status={
            "phase": "Bound",
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
        },
    )
    assert table([pvc], "PersistentVolumeClaim").splitlines()[1].split() == [
        "data",
        "Bound",
        "pv1",
        "10Gi",
        "RWO",
        "local",
        "5m",
    ]
    ep = obj(
        "Endpoints",
        "web",
        subsets=[
            {
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"port": 80}, {"port": 81}],
            }
        ],
    )
    assert table([ep], "Endpoints").splitlines()[1].split() == [
        "web",
        "10.0.0.1:80,10.0.0.2:80,10.0.0.1:81",
        "+",
        "1",
        "more...",
        "5m",
    ]
    lease = obj("Lease", "node-1", spec={"holderIdentity": "node-1"})
    assert table([lease], "Lease") == "NAME     HOLDER   AGE\nnode-1   node-1   5m\n"
    csr = obj(
        "CertificateSigningRequest",
        "csr-1",
        None,
        spec={
            "signerName": "kubernetes.io/kube-apiserver-client",
            "username": "alice",
            "request": "AA==",
        },
        status={"conditions": [{"type": "Approved", "status": "True"}], "certificate": "AA=="},
    )
    assert table([csr], "CertificateSigningRequest") == (
        "NAME    AGE   SIGNERNAME                            REQUESTOR   CONDITION\n"
        "csr-1   5m    kubernetes.io/kube-apiserver-client   alice       Approved,Issued\n"
    )


def test_all_namespaces_labels_headers_and_kind_prefix() -> None:
    a = obj("ConfigMap", "a", "one", metadata={"labels": {"app": "web", "tier": "front"}})
    b = obj("ConfigMap", "b", "two")
    assert table([a, b], "ConfigMap", all_namespaces=True, show_labels=True) == (
        "NAMESPACE   NAME   DATA   AGE   LABELS\n"
        "one         a      0      5m    app=web,tier=front\n"
        "two         b      0      5m    <none>\n"
    )
    assert table([a], "ConfigMap", no_headers=True) == "a     0     5m\n"
    assert table([a], "ConfigMap", with_kind=True, label_columns=("app",)) == (
        "NAME          DATA   AGE   APP\nconfigmap/a   0      5m    web\n"
    )
    dep = obj("Deployment", "web")
    assert printers.render_names([dep], kind_info("Deployment")) == "deployment.apps/web\n"


def test_kinds_without_a_table_show_name_and_age() -> None:
    columns = printers.columns_for("SomethingNew")
    assert columns.headers == ("AGE",)


def test_every_kind_has_columns_that_render() -> None:
    from orchestrator.api.kinds import all_kinds

    for info in all_kinds():
        o = obj(info.kind, "x")
        text = render_table([o], info, TableOptions(wide=True, all_namespaces=True), NOW)
        assert len(text.splitlines()) == 2, info.kind


def test_yaml_and_json_documents() -> None:
    a, b = obj("ConfigMap", "a"), obj("ConfigMap", "b")
    single = yaml.safe_load(printers.render_objects([a], "yaml", as_list=False))
    assert single["kind"] == "ConfigMap" and single["metadata"]["name"] == "a"
    assert single["apiVersion"] == "v1"
    listed = yaml.safe_load(printers.render_objects([a], "yaml", as_list=True))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    import json

    both = json.loads(printers.render_objects([a, b], "json", as_list=False))
    assert both["kind"] == "List" and len(both["items"]) == 2
    empty = json.loads(printers.render_objects([], "json", as_list=True))
    assert empty["items"] == []
