"""Output of `get`: kubectl's table columns per kind, `-o name|yaml|json`.

Tables work on the Kubernetes-form dict of each object (codec.to_dict), so
a column reads the way the field is documented (`status.readyReplicas`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from google.protobuf.message import Message

from orchestrator.api import codec
from orchestrator.api.kinds import KindInfo, all_kinds, kind_info
from orchestrator.api.meta import parse_rfc3339
from orchestrator.cli import tabwriter

NONE = "<none>"
Obj = Mapping[str, Any]

# -- time ------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration: 5s, 3m10s, 25m, 5h3m, 2d3h, 400d, 3y10d."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 60 * 2:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        s = secs % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def parse_time(ts: Any) -> datetime | None:
    if not ts or not isinstance(ts, str):
        return None
    try:
        t = parse_rfc3339(ts)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def age(ts: Any, now: datetime) -> str:
    """Time since an RFC 3339 timestamp, or `<unknown>` when unset (kubectl's wording)."""
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- small readers -----------------------------------------------------------------------


def dig(obj: Any, *path: str | int, default: Any = None) -> Any:
    cur = obj
    for key in path:
        if isinstance(key, int):
            if not isinstance(cur, list) or key >= len(cur):
                return default
            cur = cur[key]
        else:
            if not isinstance(cur, Mapping) or key not in cur:
                return default
            cur = cur[key]
    return cur


def meta_of(obj: Obj) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def as_dict(obj: Message | Obj) -> dict[str, Any]:
    """The Kubernetes-form dict of an object, with apiVersion and kind filled in."""
    if isinstance(obj, Message):
        data = codec.to_dict(obj)
        kind = getattr(obj, "kind", "") or _kind_of_message(obj)
        if kind:
            info = kind_info(kind)
            ordered: dict[str, Any] = {
                "apiVersion": data.pop("apiVersion", "") or info.api_version,
                "kind": data.pop("kind", "") or info.kind,
            }
            ordered.update(data)
            return ordered
        return data
    return dict(obj)


def _kind_of_message(obj: Message) -> str:
    for info in all_kinds():
        if info.message is type(obj):
            return info.kind
    return ""


def join_labels(labels: Mapping[str, str] | None) -> str:
    if not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def selector_text(selector: Any) -> str:
    """A metav1.LabelSelector dict in kubectl's string form."""
    if not isinstance(selector, Mapping):
        return NONE
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) if parts else NONE


def _template_containers(obj: Obj, *path: str) -> tuple[str, str]:
    containers = dig(obj, *path, "containers", default=[]) or []
    names = ",".join(c.get("name", "") for c in containers)
    images = ",".join(c.get("image", "") for c in containers)
    return names or NONE, images or NONE


def or_none(value: Any) -> str:
    if value is None or value == "" or value == []:
        return NONE
    return str(value)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def resource_name(info: KindInfo, name: str) -> str:
    """`deployment.apps/web`, `pod/x`: how kubectl names an object in its output."""
    kind = info.kind.lower()
    return f"{kind}.{info.group}/{name}" if info.group else f"{kind}/{name}"


def quoted_name(info: KindInfo, name: str) -> str:
    """`deployment.apps "web"`: as in kubectl's `deleted` lines."""
    kind = info.kind.lower()
    return f'{kind}.{info.group} "{name}"' if info.group else f'{kind} "{name}"'


# -- per-kind columns -------------------------------------------------------------------------

Cells = Callable[[Obj, datetime], list[str]]


@dataclass(frozen=True)
class Columns:
    headers: tuple[str, ...]  # after NAME
    cells: Cells
    wide_headers: tuple[str, ...] = ()
    wide_cells: Cells | None = None
    has_name: bool = True


def _pod_status(pod: Obj) -> tuple[str, int, str, int]:
    """(status text, restarts, last restart, ready containers) as kubectl's printPod."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    restarts = 0
    last_restart: datetime | None = None
    ready = 0

    def note_restart(cs: Mapping[str, Any]) -> None:
        nonlocal last_restart
        finished = parse_time(dig(cs, "lastState", "terminated", "finishedAt"))
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished

    initializing = False
    init_total = len(spec.get("initContainers") or [])
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += _int(cs.get("restartCount"))
        note_restart(cs)
        state = cs.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term is not None and _int(term.get("exitCode")) == 0:
            continue
        if term is not None:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif _int(term.get("signal")):
                reason = f"Init:Signal:{_int(term.get('signal'))}"
            else:
                reason = f"Init:ExitCode:{_int(term.get('exitCode'))}"
        elif wait is not None and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{init_total}"
        initializing = True
        break
    if not initializing:
        restarts = 0
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += _int(cs.get("restartCount"))
            note_restart(cs)
            state = cs.get("state") or {}
            term, wait = state.get("terminated"), state.get("waiting")
            if wait is not None and wait.get("reason"):
                reason = wait["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                if _int(term.get("signal")):
                    reason = f"Signal:{_int(term.get('signal'))}"
                else:
                    reason = f"ExitCode:{_int(term.get('exitCode'))}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            ready_cond = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            reason = "Running" if ready_cond else "NotReady"
    if meta_of(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    last = last_restart.isoformat() if last_restart else ""
    return reason, restarts, last, ready


def _pod_cells(pod: Obj, now: datetime) -> list[str]:
    reason, restarts, last, ready = _pod_status(pod)
    total = len(dig(pod, "spec", "containers", default=[]) or [])
    restart_text = str(restarts)
    if restarts and last:
        restart_text = f"{restarts} ({age(last, now)} ago)"
    return [
        f"{ready}/{total}",
        reason,
        restart_text,
        age(meta_of(pod).get("creationTimestamp"), now),
    ]


def _pod_wide(pod: Obj, now: datetime) -> list[str]:
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    gates = spec.get("readinessGates") or []
    gate_text = NONE
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
        gate_text = f"{ok}/{len(gates)}"
    return [
        or_none(status.get("podIP")),
        or_none(spec.get("nodeName")),
        or_none(status.get("nominatedNodeName")),
        gate_text,
    ]


def _created(obj: Obj, now: datetime) -> str:
    return age(meta_of(obj).get("creationTimestamp"), now)


def _deploy_cells(d: Obj, now: datetime) -> list[str]:
    st = d.get("status") or {}
    return [
        f"{_int(st.get('readyReplicas'))}/{_desired(d)}",
        str(_int(st.get("updatedReplicas"))),
        str(_int(st.get("availableReplicas"))),
        _created(d, now),
    ]


def _template_wide(d: Obj, now: datetime) -> list[str]:
    names, images = _template_containers(d, "spec", "template", "spec")
    return [names, images, selector_text(dig(d, "spec", "selector"))]


def _template_wide_no_selector(d: Obj, now: datetime) -> list[str]:
    return list(_template_containers(d, "spec", "template", "spec"))


def _desired(d: Obj) -> int:
    value = dig(d, "spec", "replicas")
    return 1 if value is None else _int(value)


def _rs_cells(d: Obj, now: datetime) -> list[str]:
    st = d.get("status") or {}
    return [
        str(_desired(d)),
        str(_int(st.get("replicas"))),
        str(_int(st.get("readyReplicas"))),
        _created(d, now),
    ]


def _sts_cells(d: Obj, now: datetime) -> list[str]:
    return [f"{_int(dig(d, 'status', 'readyReplicas'))}/{_desired(d)}", _created(d, now)]


def _ds_cells(d: Obj, now: datetime) -> list[str]:
    st = d.get("status") or {}
    node_sel = dig(d, "spec", "template", "spec", "nodeSelector") or {}
    return [
        str(_int(st.get(k)))
        for k in (
            "desiredNumberScheduled",
            "currentNumberScheduled",
            "numberReady",
            "updatedNumberScheduled",
            "numberAvailable",
        )
    ] + [join_labels(node_sel), _created(d, now)]


def service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    svc_type = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if svc_type == "ExternalName":
        return or_none(spec.get("externalName"))
    if svc_type == "LoadBalancer":
        lb = [
            i.get("ip") or i.get("hostname") or ""
            for i in dig(svc, "status", "loadBalancer", "ingress", default=[]) or []
        ]
        found = [x for x in lb + external if x]
        return ",".join(found) if found else "<pending>"
    return ",".join(external) if external else NONE


def service_ports(svc: Obj) -> str:
    parts = []
    for p in dig(svc, "spec", "ports", default=[]) or []:
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            parts.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            parts.append(f"{p.get('port')}/{proto}")
    return ",".join(parts) if parts else NONE


def _svc_cells(d: Obj, now: datetime) -> list[str]:
    spec = d.get("spec") or {}
    return [
        spec.get("type") or "ClusterIP",
        or_none(spec.get("clusterIP")),
        service_external_ip(d),
        service_ports(d),
        _created(d, now),
    ]


def _svc_wide(d: Obj, now: datetime) -> list[str]:
    return [join_labels(dig(d, "spec", "selector"))]


def node_status(node: Obj) -> str:
    cond = next(
        (
            c
            for c in dig(node, "status", "conditions", default=[]) or []
            if c.get("type") == "Ready"
        ),
        None,
    )
    if cond is None:
        text = "Unknown"
    elif cond.get("status") == "True":
        text = "Ready"
    elif cond.get("status") == "False":
        text = "NotReady"
    else:
        text = "Unknown"
    if dig(node, "spec", "unschedulable"):
        text += ",SchedulingDisabled"
    return text


def node_roles(node: Obj) -> str:
    roles = set()
    for key, value in (meta_of(node).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.removeprefix("node-role.kubernetes.io/")
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) if roles else NONE


def _node_cells(d: Obj, now: datetime) -> list[str]:
    return [
        node_status(d),
        node_roles(d),
        _created(d, now),
        dig(d, "status", "nodeInfo", "kubeletVersion") or "",
    ]


def _node_wide(d: Obj, now: datetime) -> list[str]:
    addrs = dig(d, "status", "addresses", default=[]) or []

    def addr(kind: str) -> str:
        return next((a.get("address", "") for a in addrs if a.get("type") == kind), NONE)

    info = dig(d, "status", "nodeInfo") or {}
    return [
        addr("InternalIP"),
        addr("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _ns_cells(d: Obj, now: datetime) -> list[str]:
    return [dig(d, "status", "phase") or "Active", _created(d, now)]


def _cm_cells(d: Obj, now: datetime) -> list[str]:
    return [str(len(d.get("data") or {}) + len(d.get("binaryData") or {})), _created(d, now)]


def _secret_cells(d: Obj, now: datetime) -> list[str]:
    count = len(d.get("data") or {}) + len(d.get("stringData") or {})
    return [d.get("type") or "Opaque", str(count), _created(d, now)]


def job_completions(job: Obj) -> str:
    spec, st = job.get("spec") or {}, job.get("status") or {}
    succeeded = _int(st.get("succeeded"))
    if spec.get("completions") is not None:
        return f"{succeeded}/{_int(spec['completions'])}"
    parallelism = _int(spec.get("parallelism"), 1) if spec.get("parallelism") is not None else 1
    if parallelism > 1:
        return f"{succeeded}/1 of {parallelism}"
    return f"{succeeded}/1"


def job_duration(job: Obj, now: datetime) -> str:
    start = parse_time(dig(job, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(dig(job, "status", "completionTime")) or now
    return human_duration((end - start).total_seconds())


def _job_cells(d: Obj, now: datetime) -> list[str]:
    return [job_completions(d), job_duration(d, now), _created(d, now)]


def _cj_cells(d: Obj, now: datetime) -> list[str]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    last = st.get("lastScheduleTime")
    return [
        spec.get("schedule", ""),
        "True" if spec.get("suspend") else "False",
        str(len(st.get("active") or [])),
        age(last, now) if last else NONE,
        _created(d, now),
    ]


def _cj_wide(d: Obj, now: datetime) -> list[str]:
    names, images = _template_containers(d, "spec", "jobTemplate", "spec", "template", "spec")
    return [names, images, selector_text(dig(d, "spec", "jobTemplate", "spec", "selector"))]


def _job_wide(d: Obj, now: datetime) -> list[str]:
    names, images = _template_containers(d, "spec", "template", "spec")
    return [names, images, selector_text(dig(d, "spec", "selector"))]


def _metric_target(target: Mapping[str, Any]) -> tuple[str, bool]:
    """(target text, is a utilization)."""
    if target.get("averageUtilization") is not None:
        return f"{target['averageUtilization']}%", True
    if target.get("averageValue") is not None:
        return f"{target['averageValue']}", False
    if target.get("value") is not None:
        return f"{target['value']}", False
    return "<unknown>", False


def hpa_targets(hpa: Obj) -> str:
    specs = dig(hpa, "spec", "metrics", default=[]) or []
    current = dig(hpa, "status", "currentMetrics", default=[]) or []
    parts = []
    for i, metric in enumerate(specs):
        mtype = metric.get("type", "")
        key = {
            "Resource": "resource",
            "Pods": "pods",
            "Object": "object",
            "External": "external",
            "ContainerResource": "containerResource",
        }.get(mtype, "")
        body = metric.get(key) or {}
        target = body.get("target") or {}
        want, util = _metric_target(target)
        cur_body = dig(current, i, key) or {}
        cur = cur_body.get("current") or {}
        if util:
            have = (
                f"{cur['averageUtilization']}%"
                if cur.get("averageUtilization") is not None
                else "<unknown>"
            )
        else:
            have = str(cur.get("averageValue") or cur.get("value") or "<unknown>")
        text = f"{have}/{want}"
        if target.get("type") == "AverageValue" and mtype in ("Object", "External"):
            text += " (avg)"
        if mtype in ("Resource", "ContainerResource"):
            text = f"{body.get('name', '')}: {text}"
        parts.append(text)
    if not parts:
        return NONE
    if len(parts) > 4:
        return ", ".join(parts[:4]) + f" + {len(parts) - 4} more..."
    return ", ".join(parts)


def _hpa_cells(d: Obj, now: datetime) -> list[str]:
    spec = d.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    min_pods = spec.get("minReplicas")
    return [
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        hpa_targets(d),
        str(_int(min_pods, 1)) if min_pods is not None else "<unset>",
        str(_int(spec.get("maxReplicas"))),
        str(_int(dig(d, "status", "currentReplicas"))),
        _created(d, now),
    ]


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def access_modes(modes: Iterable[str] | None) -> str:
    return ",".join(_ACCESS_MODES.get(m, m) for m in modes or [])


def _pv_cells(d: Obj, now: datetime) -> list[str]:
    spec = d.get("spec") or {}
    claim = spec.get("claimRef") or {}
    claim_text = f"{claim.get('namespace', '')}/{claim.get('name', '')}" if claim else ""
    return [
        str(dig(spec, "capacity", "storage", default="")),
        access_modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy") or "Retain",
        dig(d, "status", "phase") or "",
        claim_text,
        spec.get("storageClassName") or "",
        dig(d, "status", "reason") or "",
        _created(d, now),
    ]


def _pvc_cells(d: Obj, now: datetime) -> list[str]:
    spec, st = d.get("spec") or {}, d.get("status") or {}
    return [
        st.get("phase") or "Pending",
        spec.get("volumeName") or "",
        str(dig(st, "capacity", "storage", default="")),
        access_modes(st.get("accessModes")),
        spec.get("storageClassName") or "",
        _created(d, now),
    ]


def _volume_mode(d: Obj, now: datetime) -> list[str]:
    return [dig(d, "spec", "volumeMode") or "Filesystem"]


def event_last_seen(ev: Obj, now: datetime) -> str:
    last = (
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("firstTimestamp")
        or meta_of(ev).get("creationTimestamp")
    )
    count = _int(ev.get("count"), 1) if ev.get("count") is not None else 1
    if count > 1 and ev.get("firstTimestamp"):
        return f"{age(last, now)} (x{count} over {age(ev['firstTimestamp'], now)})"
    return age(last, now)


def event_time_key(ev: Obj) -> datetime:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        t = parse_time(ev.get(key))
        if t is not None:
            return t
    return parse_time(meta_of(ev).get("creationTimestamp")) or datetime.min.replace(tzinfo=UTC)


def _event_cells(d: Obj, now: datetime) -> list[str]:
    obj = d.get("involvedObject") or {}
    return [
        event_last_seen(d, now),
        d.get("type") or "",
        d.get("reason") or "",
        f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
        d.get("message") or "",
    ]


def _event_wide(d: Obj, now: datetime) -> list[str]:
    src = d.get("source") or {}
    source = ", ".join(x for x in (src.get("component"), src.get("host")) if x)
    return [
        dig(d, "involvedObject", "fieldPath") or "",
        source or d.get("reportingComponent") or "",
        age(d.get("firstTimestamp"), now),
        str(_int(d.get("count"), 1)),
        meta_of(d).get("name", ""),
    ]


def endpoints_text(ep: Obj, limit: int = 3) -> str:
    pairs = []
    for subset in ep.get("subsets") or []:
        ports = subset.get("ports") or []
        for port in ports or [{}]:
            for addr in subset.get("addresses") or []:
                ip = addr.get("ip", "")
                pairs.append(f"{ip}:{port['port']}" if port.get("port") else ip)
    if not pairs:
        return NONE
    if len(pairs) > limit:
        return ",".join(pairs[:limit]) + f" + {len(pairs) - limit} more..."
    return ",".join(pairs)


def _ep_cells(d: Obj, now: datetime) -> list[str]:
    return [endpoints_text(d), _created(d, now)]


def _lease_cells(d: Obj, now: datetime) -> list[str]:
    return [dig(d, "spec", "holderIdentity") or "", _created(d, now)]


def csr_condition(csr: Obj) -> str:
    conds = [
        c.get("type", "")
        for c in dig(csr, "status", "conditions", default=[]) or []
        if c.get("type") in ("Approved", "Denied", "Failed")
    ]
    if dig(csr, "status", "certificate"):
        conds.append("Issued")
    return ",".join(conds) if conds else "Pending"


def _csr_cells(d: Obj, now: datetime) -> list[str]:
    spec = d.get("spec") or {}
    return [
        _created(d, now),
        spec.get("signerName") or "",
        spec.get("username") or "",
        csr_condition(d),
    ]


def _sa_cells(d: Obj, now: datetime) -> list[str]:
    return [str(len(d.get("secrets") or [])), _created(d, now)]


def _ingress_cells(d: Obj, now: datetime) -> list[str]:
    spec = d.get("spec") or {}
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    addrs = [
        i.get("ip") or i.get("hostname") or ""
        for i in dig(d, "status", "loadBalancer", "ingress", default=[]) or []
    ]
    return [
        spec.get("ingressClassName") or NONE,
        ",".join(hosts) if hosts else "*",
        ",".join(a for a in addrs if a),
        "80, 443" if spec.get("tls") else "80",
        _created(d, now),
    ]


def _ingressclass_cells(d: Obj, now: datetime) -> list[str]:
    params = dig(d, "spec", "parameters")
    text = NONE
    if params:
        group = params.get("apiGroup")
        kind = f"{params.get('kind', '')}.{group}" if group else params.get("kind", "")
        text = f"{kind}/{params.get('name', '')}"
    return [dig(d, "spec", "controller") or "", text, _created(d, now)]


def _netpol_cells(d: Obj, now: datetime) -> list[str]:
    sel = selector_text(dig(d, "spec", "podSelector"))
    return [sel if sel != NONE else NONE, _created(d, now)]


def _pc_cells(d: Obj, now: datetime) -> list[str]:
    return [
        str(_int(d.get("value"))),
        "true" if d.get("globalDefault") else "false",
        _created(d, now),
        d.get("preemptionPolicy") or "PreemptLowerPriority",
    ]


def _role_cells(d: Obj, now: datetime) -> list[str]:
    return [str(meta_of(d).get("creationTimestamp", ""))]


def _binding_cells(d: Obj, now: datetime) -> list[str]:
    ref = d.get("roleRef") or {}
    return [f"{ref.get('kind', '')}/{ref.get('name', '')}", _created(d, now)]


def _binding_wide(d: Obj, now: datetime) -> list[str]:
    subjects = d.get("subjects") or []

    def of(kind: str) -> str:
        names = []
        for s in subjects:
            if s.get("kind") != kind:
                continue
            names.append(
                f"{s.get('namespace', '')}/{s.get('name', '')}"
                if kind == "ServiceAccount"
                else s.get("name", "")
            )
        return ", ".join(names)

    return [of("User"), of("Group"), of("ServiceAccount")]


def _quota_cells(d: Obj, now: datetime) -> list[str]:
    hard = dig(d, "status", "hard") or dig(d, "spec", "hard") or {}
    used = dig(d, "status", "used") or {}
    requests: list[str] = []
    limits: list[str] = []
    for key in sorted(hard):
        text = f"{key}: {used.get(key, '0')}/{hard[key]}"
        (limits if key.startswith("limits.") else requests).append(text)
    return [_created(d, now), ", ".join(requests), ", ".join(limits)]


def _revision_cells(d: Obj, now: datetime) -> list[str]:
    ctrl = next((r for r in meta_of(d).get("ownerReferences") or [] if r.get("controller")), None)
    text = NONE
    if ctrl:
        group = str(ctrl.get("apiVersion", "")).rpartition("/")[0]
        kind = str(ctrl.get("kind", "")).lower()
        text = (
            f"{kind}.{group}/{ctrl.get('name', '')}" if group else f"{kind}/{ctrl.get('name', '')}"
        )
    return [text, str(_int(d.get("revision"))), _created(d, now)]


def _age_only(d: Obj, now: datetime) -> list[str]:
    return [_created(d, now)]


_CONTAINERS_IMAGES_SELECTOR = ("CONTAINERS", "IMAGES", "SELECTOR")

TABLES: dict[str, Columns] = {
    "Pod": Columns(
        ("READY", "STATUS", "RESTARTS", "AGE"),
        _pod_cells,
        ("IP", "NODE", "NOMINATED NODE", "READINESS GATES"),
        _pod_wide,
    ),
    "Deployment": Columns(
        ("READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
        _deploy_cells,
        _CONTAINERS_IMAGES_SELECTOR,
        _template_wide,
    ),
    "ReplicaSet": Columns(
        ("DESIRED", "CURRENT", "READY", "AGE"),
        _rs_cells,
        _CONTAINERS_IMAGES_SELECTOR,
        _template_wide,
    ),
    "StatefulSet": Columns(
        ("READY", "AGE"), _sts_cells, ("CONTAINERS", "IMAGES"), _template_wide_no_selector
    ),
    "DaemonSet": Columns(
        ("DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"),
        _ds_cells,
        _CONTAINERS_IMAGES_SELECTOR,
        _template_wide,
    ),
    "Service": Columns(
        ("TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"),
        _svc_cells,
        ("SELECTOR",),
        _svc_wide,
    ),
    "Node": Columns(
        ("STATUS", "ROLES", "AGE", "VERSION"),
        _node_cells,
        ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"),
        _node_wide,
    ),
    "Namespace": Columns(("STATUS", "AGE"), _ns_cells),
    "ConfigMap": Columns(("DATA", "AGE"), _cm_cells),
    "Secret": Columns(("TYPE", "DATA", "AGE"), _secret_cells),
    "Job": Columns(
        ("COMPLETIONS", "DURATION", "AGE"), _job_cells, _CONTAINERS_IMAGES_SELECTOR, _job_wide
    ),
    "CronJob": Columns(
        ("SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"),
        _cj_cells,
        _CONTAINERS_IMAGES_SELECTOR,
        _cj_wide,
    ),
    "HorizontalPodAutoscaler": Columns(
        ("REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"), _hpa_cells
    ),
    "PersistentVolume": Columns(
        (
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "REASON",
            "AGE",
        ),
        _pv_cells,
        ("VOLUMEMODE",),
        _volume_mode,
    ),
    "PersistentVolumeClaim": Columns(
        ("STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"),
        _pvc_cells,
        ("VOLUMEMODE",),
        _volume_mode,
    ),
    "Event": Columns(
        ("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"),
        _event_cells,
        ("SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"),
        _event_wide,
        has_name=False,
    ),
    "Endpoints": Columns(("ENDPOINTS", "AGE"), _ep_cells),
    "Lease": Columns(("HOLDER", "AGE"), _lease_cells),
    "CertificateSigningRequest": Columns(
        ("AGE", "SIGNERNAME", "REQUESTOR", "CONDITION"), _csr_cells
    ),
    "ServiceAccount": Columns(("SECRETS", "AGE"), _sa_cells),
    "Ingress": Columns(("CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"), _ingress_cells),
    "IngressClass": Columns(("CONTROLLER", "PARAMETERS", "AGE"), _ingressclass_cells),
    "NetworkPolicy": Columns(("POD-SELECTOR", "AGE"), _netpol_cells),
    "PriorityClass": Columns(("VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"), _pc_cells),
    "Role": Columns(("CREATED AT",), _role_cells),
    "ClusterRole": Columns(("CREATED AT",), _role_cells),
    "RoleBinding": Columns(
        ("ROLE", "AGE"), _binding_cells, ("USERS", "GROUPS", "SERVICEACCOUNTS"), _binding_wide
    ),
    "ClusterRoleBinding": Columns(
        ("ROLE", "AGE"), _binding_cells, ("USERS", "GROUPS", "SERVICEACCOUNTS"), _binding_wide
    ),
    "ResourceQuota": Columns(("AGE", "REQUEST", "LIMIT"), _quota_cells),
    "ControllerRevision": Columns(("CONTROLLER", "REVISION", "AGE"), _revision_cells),
}

DEFAULT_COLUMNS = Columns(("AGE",), _age_only)


def columns_for(kind: str) -> Columns:
    return TABLES.get(kind, DEFAULT_COLUMNS)


# -- tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableOptions:
    wide: bool = False
    all_namespaces: bool = False
    show_labels: bool = False
    no_headers: bool = False
    with_kind: bool = False  # prefix names with `kind.group/`, as for several types at once
    label_columns: tuple[str, ...] = ()
    watch_events: bool = False  # an EVENT column first (get -w --output-watch-events)


def table_header(info: KindInfo, opts: TableOptions) -> list[str]:
    cols = columns_for(info.kind)
    header: list[str] = []
    if opts.watch_events:
        header.append("EVENT")
    if opts.all_namespaces and info.namespaced:
        header.append("NAMESPACE")
    if cols.has_name:
        header.append("NAME")
    header.extend(cols.headers)
    if opts.wide and cols.wide_cells is not None:
        header.extend(cols.wide_headers)
    header.extend(key.rsplit("/", 1)[-1].upper() for key in opts.label_columns)
    if opts.show_labels:
        header.append("LABELS")
    return header


def table_row(
    obj: Message | Obj, info: KindInfo, opts: TableOptions, now: datetime, event: str = ""
) -> list[str]:
    d = as_dict(obj)
    m = meta_of(d)
    cols = columns_for(info.kind)
    row: list[str] = []
    if opts.watch_events:
        row.append(event)
    if opts.all_namespaces and info.namespaced:
        row.append(str(m.get("namespace", "")))
    if cols.has_name:
        name = str(m.get("name", ""))
        row.append(resource_name(info, name) if opts.with_kind else name)
    row.extend(cols.cells(d, now))
    if opts.wide and cols.wide_cells is not None:
        row.extend(cols.wide_cells(d, now))
    labels = m.get("labels") or {}
    row.extend(str(labels.get(key, "")) for key in opts.label_columns)
    if opts.show_labels:
        row.append(join_labels(labels))
    return row


def table_rows(
    objects: Sequence[Message | Obj],
    info: KindInfo,
    opts: TableOptions,
    now: datetime | None = None,
) -> list[list[str]]:
    now = now or utcnow()
    rows = [] if opts.no_headers else [table_header(info, opts)]
    rows.extend(table_row(o, info, opts, now) for o in objects)
    return rows


def render_table(
    objects: Sequence[Message | Obj],
    info: KindInfo,
    opts: TableOptions | None = None,
    now: datetime | None = None,
) -> str:
    """The table kubectl prints for these objects, ending in a newline."""
    lines = tabwriter.table(table_rows(objects, info, opts or TableOptions(), now))
    return "".join(line + "\n" for line in lines)


# -- -o yaml|json|name --------------------------------------------------------------------------


def list_document(items: Sequence[Message | Obj]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "items": [as_dict(i) for i in items],
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


class _KubectlDumper(yaml.SafeDumper):
    """YAML as kubectl prints it: keys sorted, double quotes where quoting is
    needed (`resourceVersion: "49"`), multi-line text as a literal block."""

    def choose_scalar_style(self) -> Any:
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_KubectlDumper.add_representer(str, _represent_str)


def render_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.dump(
        dict(doc),
        Dumper=_KubectlDumper,
        sort_keys=True,
        default_flow_style=False,
        width=1 << 30,
        allow_unicode=True,
    )


def render_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


def render_objects(items: Sequence[Message | Obj], fmt: str, *, as_list: bool) -> str:
    """`-o yaml|json`: one object as itself, several (or any list) as a `kind: List`."""
    doc = list_document(items) if as_list or len(items) != 1 else as_dict(items[0])
    return render_yaml(doc) if fmt == "yaml" else render_json(doc)


def render_names(items: Sequence[Message | Obj], info: KindInfo) -> str:
    return "".join(
        resource_name(info, str(meta_of(as_dict(i)).get("name", ""))) + "\n" for i in items
    )
