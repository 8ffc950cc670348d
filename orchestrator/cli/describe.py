"""`orchctl describe`: kubectl's multi-section descriptions, ending with the
object's events.

Text is written as tab-separated cells and aligned with Go's tabwriter
settings kubectl's describers use, so the output reads the same.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo
from orchestrator.cli import printers, tabwriter
from orchestrator.cli.errors import CliError, not_found, report
from orchestrator.cli.get import no_resources_message
from orchestrator.cli.manifests import load_documents
from orchestrator.cli.printers import NONE, Obj, dig, meta_of
from orchestrator.cli.resources import check_label_selector, parse_resource_args
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, Client, NotFoundError, UnavailableError

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_ANNOTATION_LEN = 140


class Writer:
    """kubectl's PrefixWriter: two spaces per level, tab-separated cells."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, level: int, text: str = "") -> None:
        self.lines.append("  " * level + text)

    def kv(self, level: int, key: str, value: Any) -> None:
        self.line(level, f"{key}:\t{value}")

    def render(self) -> str:
        aligned = tabwriter.align(
            self.lines, minwidth=tabwriter.DESCRIBE_MINWIDTH, padding=tabwriter.DESCRIBE_PADDING
        )
        return "".join(line + "\n" for line in aligned)


def timestamp(ts: Any) -> str:
    """RFC 1123 with numeric zone, as kubectl's describe prints times."""
    t = printers.parse_time(ts)
    if t is None:
        return NONE
    return t.strftime("%a, %d %b %Y %H:%M:%S %z")


def write_map(
    w: Writer,
    level: int,
    title: str,
    items: Mapping[str, str] | None,
    sep: str = "=",
    skip: tuple[str, ...] = (),
) -> None:
    """`Labels:  a=b` then one `k=v` per line under it, or `<none>`."""
    entries = [(k, v) for k, v in sorted((items or {}).items()) if k not in skip]
    if not entries:
        w.line(level, f"{title}:\t{NONE}")
        return
    for i, (k, v) in enumerate(entries):
        value = str(v)
        if sep == ": " and len(value) > MAX_ANNOTATION_LEN:
            value = value[: MAX_ANNOTATION_LEN - 3] + "..."
        text = f"{k}{sep}{value}".replace("\n", " ")
        w.line(level, f"{title}:\t{text}" if i == 0 else f"\t{text}")


def header(w: Writer, d: Obj, *, namespace: bool = True, created: bool = True) -> None:
    m = meta_of(d)
    w.kv(0, "Name", m.get("name", ""))
    if namespace:
        w.kv(0, "Namespace", m.get("namespace", ""))
    write_map(w, 0, "Labels", m.get("labels"))
    write_map(w, 0, "Annotations", m.get("annotations"), ": ", (LAST_APPLIED,))
    if created:
        w.kv(0, "CreationTimestamp", timestamp(m.get("creationTimestamp")))


def controlled_by(w: Writer, d: Obj) -> None:
    ref = next((r for r in meta_of(d).get("ownerReferences") or [] if r.get("controller")), None)
    if ref:
        w.kv(0, "Controlled By", f"{ref.get('kind', '')}/{ref.get('name', '')}")


# -- pods and pod templates -----------------------------------------------------------------


def _ports(w: Writer, level: int, container: Obj) -> None:
    ports = container.get("ports") or []
    if not ports:
        w.kv(level, "Port", NONE)
        w.kv(level, "Host Port", NONE)
        return
    texts = [f"{p.get('containerPort', 0)}/{p.get('protocol') or 'TCP'}" for p in ports]
    host = [f"{p.get('hostPort', 0)}/{p.get('protocol') or 'TCP'}" for p in ports]
    if len(ports) == 1:
        name = ports[0].get("name")
        w.kv(level, "Port", f"{texts[0]} ({name})" if name else texts[0])
        w.kv(level, "Host Port", host[0])
    else:
        w.kv(level, "Ports", ", ".join(texts))
        w.kv(level, "Host Ports", ", ".join(host))


def _probe(probe: Obj) -> str:
    if probe.get("httpGet"):
        h = probe["httpGet"]
        scheme = (h.get("scheme") or "HTTP").lower()
        target = f"{scheme}://{h.get('host', '')}:{h.get('port', '')}{h.get('path', '')}"
        how = f"http-get {target}"
    elif probe.get("tcpSocket"):
        how = f"tcp-socket {probe['tcpSocket'].get('host', '')}:{probe['tcpSocket'].get('port')}"
    elif probe.get("exec"):
        how = "exec [" + " ".join(probe["exec"].get("command") or []) + "]"
    elif probe.get("grpc"):
        how = f"grpc <pod>:{probe['grpc'].get('port')} {probe['grpc'].get('service', '')}"
    else:
        how = "unknown"
    return (
        f"{how} delay={probe.get('initialDelaySeconds', 0)}s "
        f"timeout={probe.get('timeoutSeconds', 1)}s period={probe.get('periodSeconds', 10)}s"
        f" #success={probe.get('successThreshold', 1)} "
        f"#failure={probe.get('failureThreshold', 3)}"
    )


def _state(w: Writer, level: int, title: str, state: Obj | None) -> None:
    if not state:
        w.kv(level, title, "Waiting" if title == "State" else "")
        return
    if "running" in state:
        w.kv(level, title, "Running")
        w.kv(level + 1, "Started", timestamp(state["running"].get("startedAt")))
    elif "waiting" in state:
        w.kv(level, title, "Waiting")
        if state["waiting"].get("reason"):
            w.kv(level + 1, "Reason", state["waiting"]["reason"])
        if state["waiting"].get("message"):
            w.kv(level + 1, "Message", state["waiting"]["message"])
    elif "terminated" in state:
        t = state["terminated"]
        w.kv(level, title, "Terminated")
        w.kv(level + 1, "Reason", t.get("reason", ""))
        if t.get("message"):
            w.kv(level + 1, "Message", t["message"])
        w.kv(level + 1, "Exit Code", t.get("exitCode", 0))
        if t.get("signal"):
            w.kv(level + 1, "Signal", t["signal"])
        w.kv(level + 1, "Started", timestamp(t.get("startedAt")))
        w.kv(level + 1, "Finished", timestamp(t.get("finishedAt")))


def _env_value(env: Obj) -> str:
    if "value" in env:
        return str(env["value"])
    src = env.get("valueFrom") or {}
    if src.get("fieldRef"):
        return f"({src['fieldRef'].get('apiVersion', 'v1')}:{src['fieldRef'].get('fieldPath')})"
    if src.get("resourceFieldRef"):
        r = src["resourceFieldRef"]
        return f"{r.get('resource')} ({r.get('containerName', '')})"
    if src.get("configMapKeyRef"):
        r = src["configMapKeyRef"]
        return f"<set to the key '{r.get('key')}' of config map '{r.get('name')}'>"
    if src.get("secretKeyRef"):
        r = src["secretKeyRef"]
        return f"<set to the key '{r.get('key')}' in secret '{r.get('name')}'>"
    return ""


def _containers(
    w: Writer, level: int, title: str, containers: list[Obj], statuses: list[Obj] | None
) -> None:
    w.line(level, f"{title}:")
    by_name = {s.get("name"): s for s in statuses or []}
    for c in containers:
        w.line(level + 1, f"{c.get('name', '')}:")
        inner = level + 2
        status = by_name.get(c.get("name"))
        if statuses is not None:
            w.kv(inner, "Container ID", (status or {}).get("containerID", ""))
        w.kv(inner, "Image", c.get("image", ""))
        if statuses is not None:
            w.kv(inner, "Image ID", (status or {}).get("imageID", ""))
        _ports(w, inner, c)
        for key, title_ in (("command", "Command"), ("args", "Args")):
            if c.get(key):
                w.line(inner, f"{title_}:")
                for part in c[key]:
                    w.line(inner + 1, str(part))
        if statuses is not None:
            _state(w, inner, "State", (status or {}).get("state"))
            if (status or {}).get("lastState"):
                _state(w, inner, "Last State", status["lastState"])  # type: ignore[index]
            w.kv(inner, "Ready", "True" if (status or {}).get("ready") else "False")
            w.kv(inner, "Restart Count", (status or {}).get("restartCount", 0))
        resources = c.get("resources") or {}
        for key, title_ in (("limits", "Limits"), ("requests", "Requests")):
            if resources.get(key):
                w.line(inner, f"{title_}:")
                for rname, qty in sorted(resources[key].items()):
                    w.kv(inner + 1, rname, qty)
        for key, title_ in (
            ("livenessProbe", "Liveness"),
            ("readinessProbe", "Readiness"),
            ("startupProbe", "Startup"),
        ):
            if c.get(key):
                w.kv(inner, title_, _probe(c[key]))
        env = c.get("env") or []
        env_from = c.get("envFrom") or []
        if env_from:
            w.line(inner, "Environment Variables from:")
            for src in env_from:
                ref = src.get("configMapRef") or src.get("secretRef") or {}
                what = "ConfigMap" if src.get("configMapRef") else "Secret"
                w.kv(
                    inner + 1,
                    ref.get("name", ""),
                    f"{what}  Optional: {str(bool(ref.get('optional'))).lower()}",
                )
        if env:
            w.line(inner, "Environment:")
            for e in env:
                w.kv(inner + 1, e.get("name", ""), _env_value(e))
        else:
            w.kv(inner, "Environment", NONE)
        mounts = c.get("volumeMounts") or []
        if mounts:
            w.line(inner, "Mounts:")
            for mnt in mounts:
                mode = "ro" if mnt.get("readOnly") else "rw"
                sub = f',path="{mnt["subPath"]}"' if mnt.get("subPath") else ""
                w.line(
                    inner + 1,
                    f"{mnt.get('mountPath', '')} from {mnt.get('name', '')} ({mode}{sub})",
                )
        else:
            w.kv(inner, "Mounts", NONE)


def _volume(w: Writer, level: int, vol: Obj) -> None:
    w.line(level, f"{vol.get('name', '')}:")
    inner = level + 1
    if "emptyDir" in vol:
        ed = vol.get("emptyDir") or {}
        w.kv(inner, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)")
        w.kv(inner, "Medium", ed.get("medium", ""))
        w.kv(inner, "SizeLimit", ed.get("sizeLimit", "<unset>"))
    elif "hostPath" in vol:
        hp = vol["hostPath"]
        w.kv(inner, "Type", "HostPath (bare host directory volume)")
        w.kv(inner, "Path", hp.get("path", ""))
        w.kv(inner, "HostPathType", hp.get("type", ""))
    elif "configMap" in vol:
        cm = vol["configMap"]
        w.kv(inner, "Type", "ConfigMap (a volume populated by a ConfigMap)")
        w.kv(inner, "Name", cm.get("name", ""))
        w.kv(inner, "Optional", str(bool(cm.get("optional"))).lower())
    elif "secret" in vol:
        s = vol["secret"]
        w.kv(inner, "Type", "Secret (a volume populated by a Secret)")
        w.kv(inner, "SecretName", s.get("secretName", ""))
        w.kv(inner, "Optional", str(bool(s.get("optional"))).lower())
    elif "persistentVolumeClaim" in vol:
        p = vol["persistentVolumeClaim"]
        w.kv(
            inner,
            "Type",
            "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)",
        )
        w.kv(inner, "ClaimName", p.get("claimName", ""))
        w.kv(inner, "ReadOnly", str(bool(p.get("readOnly"))).lower())
    else:
        kinds = [k for k in vol if k != "name"]
        w.kv(inner, "Type", kinds[0] if kinds else "<unknown>")


def _tolerations(w: Writer, level: int, title: str, tolerations: list[Obj]) -> None:
    if not tolerations:
        w.kv(level, title, NONE)
        return
    for i, t in enumerate(tolerations):
        text = t.get("key", "")
        if t.get("value"):
            text += f"={t['value']}"
        if t.get("effect"):
            text += f":{t['effect']}"
        if t.get("operator") == "Exists" and not t.get("value"):
            text += " op=Exists"
        if t.get("tolerationSeconds") is not None:
            text += f" for {t['tolerationSeconds']}s"
        w.line(level, f"{title}:\t{text}" if i == 0 else f"\t{text}")


def pod_template(w: Writer, level: int, template: Obj) -> None:
    tm = template.get("metadata") or {}
    spec = template.get("spec") or {}
    write_map(w, level, "Labels", tm.get("labels"))
    if tm.get("annotations"):
        write_map(w, level, "Annotations", tm.get("annotations"), ": ")
    if spec.get("serviceAccountName"):
        w.kv(level, "Service Account", spec["serviceAccountName"])
    if spec.get("initContainers"):
        _containers(w, level, "Init Containers", spec["initContainers"], None)
    _containers(w, level, "Containers", spec.get("containers") or [], None)
    vols = spec.get("volumes") or []
    if vols:
        w.line(level, "Volumes:")
        for v in vols:
            _volume(w, level + 1, v)
    else:
        w.kv(level, "Volumes", NONE)
    write_map(w, level, "Node-Selectors", spec.get("nodeSelector"))
    _tolerations(w, level, "Tolerations", spec.get("tolerations") or [])


def qos_class(pod: Obj) -> str:
    if dig(pod, "status", "qosClass"):
        return str(pod["status"]["qosClass"])
    requests_all, limits_all, any_set = True, True, False
    for c in dig(pod, "spec", "containers", default=[]) or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim:
                limits_all = False
            if lim.get(r) is not None and req.get(r, lim.get(r)) != lim.get(r):
                requests_all = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if limits_all and requests_all else "Burstable"


def describe_pod(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    m, spec, st = meta_of(d), d.get("spec") or {}, d.get("status") or {}
    w.kv(0, "Name", m.get("name", ""))
    w.kv(0, "Namespace", m.get("namespace", ""))
    w.kv(0, "Priority", spec.get("priority", 0))
    if spec.get("priorityClassName"):
        w.kv(0, "Priority Class Name", spec["priorityClassName"])
    w.kv(0, "Service Account", spec.get("serviceAccountName") or "default")
    node = spec.get("nodeName")
    w.kv(0, "Node", f"{node}/{st['hostIP']}" if node and st.get("hostIP") else node or NONE)
    if st.get("startTime"):
        w.kv(0, "Start Time", timestamp(st["startTime"]))
    write_map(w, 0, "Labels", m.get("labels"))
    write_map(w, 0, "Annotations", m.get("annotations"), ": ", (LAST_APPLIED,))
    if m.get("deletionTimestamp"):
        w.kv(
            0, "Status", f"Terminating (lasts {printers.age(m['deletionTimestamp'], extra['now'])})"
        )
        w.kv(0, "Termination Grace Period", f"{m.get('deletionGracePeriodSeconds', 0)}s")
    else:
        w.kv(0, "Status", st.get("phase") or "Pending")
    if st.get("reason"):
        w.kv(0, "Reason", st["reason"])
    if st.get("message"):
        w.kv(0, "Message", st["message"].strip())
    w.kv(0, "IP", st.get("podIP", ""))
    ips = [p.get("ip", "") for p in st.get("podIPs") or []]
    if ips:
        w.line(0, "IPs:")
        for ip in ips:
            w.kv(1, "IP", ip)
    else:
        w.kv(0, "IPs", NONE)
    controlled_by(w, d)
    if spec.get("nominatedNodeName") or st.get("nominatedNodeName"):
        w.kv(0, "NominatedNodeName", st.get("nominatedNodeName", ""))
    if spec.get("initContainers"):
        _containers(
            w, 0, "Init Containers", spec["initContainers"], st.get("initContainerStatuses") or []
        )
    _containers(w, 0, "Containers", spec.get("containers") or [], st.get("containerStatuses") or [])
    conds = st.get("conditions") or []
    if conds:
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus")
        for c in conds:
            w.line(1, f"{c.get('type', '')} \t{c.get('status', '')} ")
    vols = spec.get("volumes") or []
    if vols:
        w.line(0, "Volumes:")
        for v in vols:
            _volume(w, 1, v)
    else:
        w.kv(0, "Volumes", NONE)
    w.kv(0, "QoS Class", qos_class(d))
    write_map(w, 0, "Node-Selectors", spec.get("nodeSelector"))
    _tolerations(w, 0, "Tolerations", spec.get("tolerations") or [])


# -- workloads ----------------------------------------------------------------------------------


def _conditions_table(w: Writer, conds: list[Obj]) -> None:
    if not conds:
        return
    w.line(0, "Conditions:")
    w.line(1, "Type\tStatus\tReason")
    w.line(1, "----\t------\t------")
    for c in conds:
        w.line(1, f"{c.get('type', '')} \t{c.get('status', '')}\t{c.get('reason', '')}")


def describe_deployment(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    header(w, d)
    w.kv(0, "Selector", printers.selector_text(spec.get("selector")))
    desired = 1 if spec.get("replicas") is None else spec["replicas"]
    w.kv(
        0,
        "Replicas",
        f"{desired} desired | {st.get('updatedReplicas', 0)} updated | "
        f"{st.get('replicas', 0)} total | {st.get('availableReplicas', 0)} "
        f"available | {st.get('unavailableReplicas', 0)} unavailable",
    )
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type") or "RollingUpdate"
    w.kv(0, "StrategyType", stype)
    w.kv(0, "MinReadySeconds", spec.get("minReadySeconds", 0))
    if stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        w.kv(
            0,
            "RollingUpdateStrategy",
            f"{ru.get('maxUnavailable', '25%')} max unavailable, "
            f"{ru.get('maxSurge', '25%')} max surge",
        )
    w.line(0, "Pod Template:")
    pod_template(w, 1, spec.get("template") or {})
    _conditions_table(w, st.get("conditions") or [])
    if "replicasets" in extra:
        owned = sorted(
            extra["replicasets"], key=lambda r: str(meta_of(r).get("creationTimestamp", ""))
        )
        new = owned[-1:] if owned else []
        old = [r for r in owned[:-1] if _int(dig(r, "spec", "replicas")) > 0]

        def rs_text(rs: Obj) -> str:
            return (
                f"{meta_of(rs).get('name', '')} ({_int(dig(rs, 'status', 'replicas'))}/"
                f"{_int(dig(rs, 'spec', 'replicas'))} replicas created)"
            )

        w.kv(0, "OldReplicaSets", ", ".join(rs_text(r) for r in old) or NONE)
        w.kv(0, "NewReplicaSet", rs_text(new[0]) if new else NONE)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def describe_replicaset(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    header(w, d, created=False)
    w.kv(0, "Selector", printers.selector_text(spec.get("selector")))
    controlled_by(w, d)
    desired = 1 if spec.get("replicas") is None else spec["replicas"]
    if d.get("kind") == "StatefulSet":
        w.kv(0, "Replicas", f"{desired} desired | {st.get('replicas', 0)} total")
        w.kv(0, "Update Strategy", dig(spec, "updateStrategy", "type") or "RollingUpdate")
    elif d.get("kind") == "DaemonSet":
        w.kv(0, "Desired Number of Nodes Scheduled", st.get("desiredNumberScheduled", 0))
        w.kv(0, "Current Number of Nodes Scheduled", st.get("currentNumberScheduled", 0))
        w.kv(
            0, "Number of Nodes Scheduled with Up-to-date Pods", st.get("updatedNumberScheduled", 0)
        )
        w.kv(0, "Number of Nodes Scheduled with Available Pods", st.get("numberAvailable", 0))
        w.kv(0, "Number of Nodes Misscheduled", st.get("numberMisscheduled", 0))
    else:
        w.kv(0, "Replicas", f"{st.get('replicas', 0)} current / {desired} desired")
    pods = extra.get("pods")
    if pods is not None:
        counts = {"Running": 0, "Pending": 0, "Succeeded": 0, "Failed": 0}
        for p in pods:
            phase = dig(p, "status", "phase") or "Pending"
            counts[phase] = counts.get(phase, 0) + 1
        w.kv(
            0,
            "Pods Status",
            f"{counts['Running']} Running / {counts['Pending']} Waiting / "
            f"{counts['Succeeded']} Succeeded / {counts['Failed']} Failed",
        )
    w.line(0, "Pod Template:")
    pod_template(w, 1, spec.get("template") or {})
    _conditions_table(w, st.get("conditions") or [])


def describe_job(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    header(w, d, created=False)
    w.kv(0, "Selector", printers.selector_text(spec.get("selector")))
    controlled_by(w, d)
    w.kv(0, "Parallelism", spec.get("parallelism", 1))
    w.kv(0, "Completions", spec.get("completions", "<unset>"))
    w.kv(0, "Completion Mode", spec.get("completionMode") or "NonIndexed")
    w.kv(0, "Suspend", str(bool(spec.get("suspend"))).lower())
    w.kv(0, "Backoff Limit", spec.get("backoffLimit", 6))
    if st.get("startTime"):
        w.kv(0, "Start Time", timestamp(st["startTime"]))
    if st.get("completionTime"):
        w.kv(0, "Completed At", timestamp(st["completionTime"]))
    duration = printers.job_duration(d, extra["now"])
    if duration:
        w.kv(0, "Duration", duration)
    if spec.get("activeDeadlineSeconds") is not None:
        w.kv(0, "Active Deadline Seconds", f"{spec['activeDeadlineSeconds']}s")
    w.kv(
        0,
        "Pods Statuses",
        f"{st.get('active', 0)} Active ({st.get('ready', 0)} Ready) / "
        f"{st.get('succeeded', 0)} Succeeded / {st.get('failed', 0)} Failed",
    )
    w.line(0, "Pod Template:")
    pod_template(w, 1, spec.get("template") or {})


# -- services, nodes, config ------------------------------------------------------------------


def describe_service(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    spec = d.get("spec") or {}
    header(w, d, created=False)
    w.kv(0, "Selector", printers.join_labels(spec.get("selector")))
    stype = spec.get("type") or "ClusterIP"
    w.kv(0, "Type", stype)
    if spec.get("ipFamilyPolicy"):
        w.kv(0, "IP Family Policy", spec["ipFamilyPolicy"])
    if spec.get("ipFamilies"):
        w.kv(0, "IP Families", ",".join(spec["ipFamilies"]))
    w.kv(0, "IP", spec.get("clusterIP") or NONE)
    if spec.get("clusterIPs"):
        w.kv(0, "IPs", ",".join(spec["clusterIPs"]))
    if spec.get("externalIPs"):
        w.kv(0, "External IPs", ",".join(spec["externalIPs"]))
    lb = [
        i.get("ip") or i.get("hostname") or ""
        for i in dig(d, "status", "loadBalancer", "ingress", default=[]) or []
    ]
    if lb:
        w.kv(0, "LoadBalancer Ingress", ", ".join(lb))
    if stype == "ExternalName":
        w.kv(0, "External Name", spec.get("externalName", ""))
    endpoints: Obj | None = extra.get("endpoints")
    for p in spec.get("ports") or []:
        name = p.get("name") or "<unset>"
        proto = p.get("protocol") or "TCP"
        w.kv(0, "Port", f"{name}\t{p.get('port')}/{proto}")
        target = p.get("targetPort", p.get("port"))
        w.kv(0, "TargetPort", f"{target}/{proto}")
        if p.get("nodePort"):
            w.kv(0, "NodePort", f"{name}\t{p['nodePort']}/{proto}")
        w.kv(0, "Endpoints", _service_endpoints(endpoints, p.get("name") or ""))
    if not spec.get("ports"):
        w.kv(0, "Port", "<none>\t<none>")
        w.kv(0, "Endpoints", _service_endpoints(endpoints, None))
    w.kv(0, "Session Affinity", spec.get("sessionAffinity") or "None")
    if spec.get("externalTrafficPolicy"):
        w.kv(0, "External Traffic Policy", spec["externalTrafficPolicy"])
    if spec.get("internalTrafficPolicy"):
        w.kv(0, "Internal Traffic Policy", spec["internalTrafficPolicy"])


def _service_endpoints(ep: Obj | None, port_name: str | None) -> str:
    if not ep:
        return NONE if port_name is not None else ""
    pairs = []
    for subset in ep.get("subsets") or []:
        ports = subset.get("ports") or []
        chosen = [p for p in ports if port_name is None or (p.get("name") or "") == port_name]
        for port in chosen:
            for addr in subset.get("addresses") or []:
                pairs.append(f"{addr.get('ip', '')}:{port.get('port')}")
    if not pairs:
        return NONE
    if len(pairs) > 3:
        return ",".join(pairs[:3]) + f" + {len(pairs) - 3} more..."
    return ",".join(pairs)


def describe_node(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    m, spec, st = meta_of(d), d.get("spec") or {}, d.get("status") or {}
    w.kv(0, "Name", m.get("name", ""))
    w.kv(0, "Roles", printers.node_roles(d))
    write_map(w, 0, "Labels", m.get("labels"))
    write_map(w, 0, "Annotations", m.get("annotations"), ": ", (LAST_APPLIED,))
    w.kv(0, "CreationTimestamp", timestamp(m.get("creationTimestamp")))
    taints = spec.get("taints") or []
    if taints:
        for i, t in enumerate(taints):
            text = (
                t.get("key", "")
                + (f"={t['value']}" if t.get("value") else "")
                + f":{t.get('effect', '')}"
            )
            w.line(0, f"Taints:\t{text}" if i == 0 else f"\t{text}")
    else:
        w.kv(0, "Taints", NONE)
    w.kv(0, "Unschedulable", str(bool(spec.get("unschedulable"))).lower())
    conds = st.get("conditions") or []
    if conds:
        w.line(0, "Conditions:")
        w.line(1, "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage")
        w.line(1, "----\t------\t-----------------\t------------------\t------\t-------")
        for c in conds:
            w.line(
                1,
                f"{c.get('type', '')} \t{c.get('status', '')} \t"
                f"{timestamp(c.get('lastHeartbeatTime'))} \t"
                f"{timestamp(c.get('lastTransitionTime'))} \t{c.get('reason', '')} \t"
                f"{c.get('message', '')}",
            )
    addrs = st.get("addresses") or []
    if addrs:
        w.line(0, "Addresses:")
        for a in addrs:
            w.kv(1, a.get("type", ""), a.get("address", ""))
    for key, title in (("capacity", "Capacity"), ("allocatable", "Allocatable")):
        if st.get(key):
            w.line(0, f"{title}:")
            for rname, qty in sorted(st[key].items()):
                w.kv(1, rname, qty)
    info = st.get("nodeInfo") or {}
    if info:
        w.line(0, "System Info:")
        for field, title in (
            ("machineID", "Machine ID"),
            ("systemUUID", "System UUID"),
            ("bootID", "Boot ID"),
            ("kernelVersion", "Kernel Version"),
            ("osImage", "OS Image"),
            ("operatingSystem", "Operating System"),
            ("architecture", "Architecture"),
            ("containerRuntimeVersion", "Container Runtime Version"),
            ("kubeletVersion", "Kubelet Version"),
            ("kubeProxyVersion", "Kube-Proxy Version"),
        ):
            w.kv(1, title, info.get(field, ""))
    if spec.get("podCIDR"):
        w.kv(0, "PodCIDR", spec["podCIDR"])
    if spec.get("podCIDRs"):
        w.kv(0, "PodCIDRs", ",".join(spec["podCIDRs"]))
    if spec.get("providerID"):
        w.kv(0, "ProviderID", spec["providerID"])
    pods = extra.get("pods")
    if pods is not None:
        running = [p for p in pods if dig(p, "status", "phase") not in ("Succeeded", "Failed")]
        w.kv(0, "Non-terminated Pods", f"({len(running)} in total)")
        if running:
            w.line(1, "Namespace\tName\tAge")
            w.line(1, "---------\t----\t---")
            for p in running:
                pm = meta_of(p)
                w.line(
                    1,
                    f"{pm.get('namespace', '')}\t{pm.get('name', '')}\t"
                    f"{printers.age(pm.get('creationTimestamp'), extra['now'])}",
                )


def describe_configmap(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    header(w, d, created=False)
    w.line(0)
    w.line(0, "Data")
    w.line(0, "====")
    for key, value in sorted((d.get("data") or {}).items()):
        w.line(0, f"{key}:")
        w.line(0, "----")
        w.line(0, str(value).rstrip("\n"))
        w.line(0)
    w.line(0)
    w.line(0, "BinaryData")
    w.line(0, "====")
    for key, value in sorted((d.get("binaryData") or {}).items()):
        w.line(0, f"{key}: {len(_b64decode(value))} bytes")
    w.line(0)


def _b64decode(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value))
    except (binascii.Error, ValueError):
        return b""


def describe_secret(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    header(w, d, created=False)
    w.line(0)
    w.kv(0, "Type", d.get("type") or "Opaque")
    w.line(0)
    w.line(0, "Data")
    w.line(0, "====")
    for key, value in sorted((d.get("data") or {}).items()):
        w.kv(0, key, f"{len(_b64decode(value))} bytes")


def describe_namespace(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    header(w, d, namespace=False, created=False)
    w.kv(0, "Status", dig(d, "status", "phase") or "Active")
    quotas = extra.get("quotas") or []
    if not quotas:
        w.line(0)
        w.line(0, "No resource quota.")
    for q in quotas:
        w.line(0)
        w.kv(0, "Resource Quotas", "")
        w.kv(1, "Name", meta_of(q).get("name", ""))
        w.line(1, "Resource\tUsed\tHard")
        w.line(1, "--------\t---\t---")
        used = dig(q, "status", "used") or {}
        for rname, hard in sorted(
            (dig(q, "status", "hard") or dig(q, "spec", "hard") or {}).items()
        ):
            w.line(1, f"{rname}\t{used.get(rname, '0')}\t{hard}")
    w.line(0)
    w.line(0, "No LimitRange resource.")


# -- anything else ------------------------------------------------------------------------------

_ACRONYMS = {
    "Ip",
    "Ips",
    "Api",
    "Url",
    "Uid",
    "Id",
    "Cidr",
    "Cidrs",
    "Dns",
    "Tls",
    "Cpu",
    "Os",
    "Http",
    "Tcp",
    "Udp",
    "Uuid",
}


def smart_label(field: str) -> str:
    """`lastTransitionTime` -> `Last Transition Time`, `podIP` -> `Pod IP`, as kubectl's
    describe labels unknown fields. Keys that are not plain camelCase stay as they are."""
    if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", field):
        return field
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", field)
    out = []
    for word in words:
        title = word[:1].upper() + word[1:]
        out.append(title.upper() if title in _ACRONYMS else title)
    return " ".join(out)


def write_value(w: Writer, level: int, key: str, value: Any, *, user_keys: bool = False) -> None:
    label = key if user_keys else smart_label(key)
    if isinstance(value, Mapping):
        if not value:
            w.kv(level, label, "")
            return
        w.line(level, f"{label}:")
        plain = key in (
            "labels",
            "annotations",
            "data",
            "matchLabels",
            "selector",
            "nodeSelector",
            "capacity",
            "allocatable",
            "hard",
            "used",
            "limits",
            "requests",
            "extra",
            "binaryData",
            "stringData",
        )
        for k, v in value.items():
            write_value(w, level + 1, str(k), v, user_keys=plain)
    elif isinstance(value, list):
        if not value:
            w.kv(level, label, "")
            return
        w.line(level, f"{label}:")
        for item in value:
            if isinstance(item, Mapping):
                for k, v in item.items():
                    write_value(w, level + 1, str(k), v)
            else:
                w.line(level + 1, str(item))
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
        w.kv(level, label, text.replace("\n", " "))


def describe_generic(w: Writer, d: Obj, extra: Mapping[str, Any]) -> None:
    m = meta_of(d)
    w.kv(0, "Name", m.get("name", ""))
    if m.get("namespace"):
        w.kv(0, "Namespace", m.get("namespace", ""))
    write_map(w, 0, "Labels", m.get("labels"))
    write_map(w, 0, "Annotations", m.get("annotations"), ": ", (LAST_APPLIED,))
    w.kv(0, "API Version", d.get("apiVersion", ""))
    w.kv(0, "Kind", d.get("kind", ""))
    meta_rest = {
        k: v
        for k, v in m.items()
        if k not in ("name", "namespace", "labels", "annotations", "managedFields")
    }
    if meta_rest:
        write_value(w, 0, "metadata", meta_rest)
    for key, value in d.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        write_value(w, 0, key, value)


Describer = Callable[[Writer, Obj, Mapping[str, Any]], None]

DESCRIBERS: dict[str, Describer] = {
    "Pod": describe_pod,
    "Deployment": describe_deployment,
    "ReplicaSet": describe_replicaset,
    "StatefulSet": describe_replicaset,
    "DaemonSet": describe_replicaset,
    "Job": describe_job,
    "Service": describe_service,
    "Node": describe_node,
    "ConfigMap": describe_configmap,
    "Secret": describe_secret,
    "Namespace": describe_namespace,
}


# -- events -------------------------------------------------------------------------------------


def write_events(w: Writer, events: Sequence[Obj], now: datetime) -> None:
    if not events:
        w.kv(0, "Events", NONE)
        return
    w.line(0, "Events:")
    w.line(1, "Type\tReason\tAge\tFrom\tMessage")
    w.line(1, "----\t------\t----\t----\t-------")
    for e in sorted(events, key=printers.event_time_key):
        first = e.get("firstTimestamp") or e.get("eventTime") or meta_of(e).get("creationTimestamp")
        first_age = printers.age(first, now)
        count = _int(e.get("count")) if e.get("count") is not None else 1
        series = e.get("series") or {}
        if series:
            interval = (
                f"{printers.age(series.get('lastObservedTime'), now)} "
                f"(x{series.get('count', 0)} over {first_age})"
            )
        elif count > 1:
            interval = f"{printers.age(e.get('lastTimestamp'), now)} (x{count} over {first_age})"
        else:
            interval = first_age
        src = e.get("source") or {}
        component = src.get("component") or e.get("reportingComponent") or ""
        instance = src.get("host") or e.get("reportingInstance") or ""
        source = f"{component}, {instance}" if instance else component
        message = " ".join(str(e.get("message", "")).split())
        w.line(1, f"{e.get('type', '')}\t{e.get('reason', '')}\t{interval}\t{source}\t{message}")


# -- the command ----------------------------------------------------------------------------------


async def _extra(client: Client, info: KindInfo, d: Obj) -> dict[str, Any]:
    """Other objects a description shows: a service's endpoints, a node's pods..."""
    m = meta_of(d)
    ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
    extra: dict[str, Any] = {"now": printers.utcnow()}
    try:
        if info.kind == "Service":
            try:
                extra["endpoints"] = printers.as_dict(await client.get("Endpoints", name, ns))
            except NotFoundError:
                extra["endpoints"] = None
        elif info.kind == "Node":
            pods = await client.list(
                "Pod", all_namespaces=True, field_selector=f"spec.nodeName={name}"
            )
            extra["pods"] = [printers.as_dict(p) for p in pods.items]
        elif info.kind == "Deployment":
            listing = await client.list("ReplicaSet", ns)
            extra["replicasets"] = [
                printers.as_dict(r)
                for r in listing.items
                if _owned_by(printers.as_dict(r), m.get("uid"))
            ]
        elif info.kind in ("ReplicaSet", "StatefulSet", "DaemonSet"):
            listing = await client.list("Pod", ns)
            extra["pods"] = [
                printers.as_dict(p)
                for p in listing.items
                if _owned_by(printers.as_dict(p), m.get("uid"))
            ]
        elif info.kind == "Namespace":
            listing = await client.list("ResourceQuota", name)
            extra["quotas"] = [printers.as_dict(q) for q in listing.items]
    except UnavailableError:
        raise
    except ApiError:
        pass  # the description is still useful without the extras (e.g. not allowed to list)
    return extra


def _owned_by(d: Obj, uid: Any) -> bool:
    return bool(uid) and any(r.get("uid") == uid for r in meta_of(d).get("ownerReferences") or [])


async def object_events(client: Client, info: KindInfo, d: Obj) -> list[Obj]:
    m = meta_of(d)
    selector = f"involvedObject.name={m.get('name', '')},involvedObject.kind={info.kind}"
    try:
        if info.namespaced:
            listing = await client.list(
                "Event", str(m.get("namespace", "")), field_selector=selector
            )
        else:
            listing = await client.list("Event", all_namespaces=True, field_selector=selector)
    except UnavailableError:
        raise
    except ApiError:
        return []
    return [printers.as_dict(e) for e in listing.items]


async def describe_object(
    client: Client, info: KindInfo, obj: Message | Obj, show_events: bool = True
) -> str:
    d = printers.as_dict(obj)
    extra = await _extra(client, info, d)
    w = Writer()
    DESCRIBERS.get(info.kind, describe_generic)(w, d, extra)
    if show_events:
        write_events(w, await object_events(client, info, d), extra["now"])
    return w.render()


async def run_describe(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    selector = check_label_selector(args.selector)
    rc = 0
    found: list[tuple[KindInfo, Message]] = []
    ns = session.namespace
    fetch: list[tuple[KindInfo, str, list[str]]]
    if args.filename:
        docs = load_documents(args.filename, recursive=args.recursive, strict=False)
        fetch = [(d.info, d.namespace or ns, [d.name]) for d in docs]
    else:
        fetch = [
            (s.info, ns, s.names) for s in parse_resource_args(args.resources, verb="describe")
        ]
    for info, where, names in fetch:
        if names and selector:
            raise CliError("name cannot be provided when a selector is specified")
        if not names:
            listing = await client.list(
                info.kind, where, label_selector=selector, all_namespaces=args.all_namespaces
            )
            if not listing.items:
                report(no_resources_message(session, [info], bool(args.all_namespaces)))
            found.extend((info, o) for o in listing.items)
            continue
        for name in names:
            try:
                found.append((info, await client.get(info.kind, name, where)))
            except NotFoundError:
                # kubectl describes every object whose name starts with the one given.
                listing = await client.list(info.kind, where)
                prefixed = [
                    o
                    for o in listing.items
                    if printers.as_dict(o)["metadata"].get("name", "").startswith(name)
                ]
                if not prefixed:
                    report(not_found(info, name))
                    rc = 1
                found.extend((info, o) for o in prefixed)
    for i, (info, obj) in enumerate(found):
        if i:
            sys.stdout.write("\n\n")
        sys.stdout.write(await describe_object(client, info, obj, args.show_events))
    sys.stdout.flush()
    return rc
