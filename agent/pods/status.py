"""A pod's status from its spec, its containers and its probes (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from agent.pods.actions import init_progress
from agent.pods.podutil import (
    exit_failed,
    fmt_time,
    has_exited,
    history,
    in_sandbox,
    is_terminal,
    latest_sandbox,
    restart_policy,
)
from agent.runtime.types import ContainerInfo, ContainerState
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.api.quantity import QuantityError, parse_quantity

CONDITION_ORDER = ("Initialized", "Ready", "ContainersReady", "PodScheduled")


@dataclass(frozen=True)
class ProbeState:
    """What the probes say about one container (keyed by container id)."""

    ready: bool = True
    started: bool = True


def container_id(c: ContainerInfo) -> str:
    return f"docker://{c.id}"


def _terminated(c: ContainerInfo, out: Any, messages: Mapping[str, str]) -> None:
    """`messages` maps container ids to what they left at their
    terminationMessagePath (or their log's tail, per the policy)."""
    t = out.terminated
    t.exit_code = c.exit_code
    t.container_id = container_id(c)
    if c.state == ContainerState.CREATED and c.error:
        t.reason = "ContainerCannotRun"
        t.message = c.error
        t.exit_code = c.exit_code or 128
    elif c.oom_killed:
        t.reason = "OOMKilled"
    elif c.exit_code == 0:
        t.reason = "Completed"
    else:
        t.reason = "Error"
    if not t.message and messages.get(c.id):
        t.message = messages[c.id]
    if c.error and not t.message:
        t.message = c.error
    t.started_at = fmt_time(c.started_at)
    t.finished_at = fmt_time(c.finished_at or c.started_at or c.created_at)
    if c.exit_code > 128 and not c.oom_killed:
        t.signal = c.exit_code - 128


def container_status(
    spec: Any,
    type_: str,
    past: list[ContainerInfo],
    probes: Mapping[str, ProbeState],
    waiting: Mapping[str, tuple[str, str]],
    default_waiting: str,
    messages: Mapping[str, str] | None = None,
) -> Any:
    messages = messages or {}
    cs = core.ContainerStatus(name=spec.name, image=spec.image)
    cs.started = False
    cur = past[0] if past else None
    prev = past[1] if len(past) > 1 else None
    if cur is not None:
        cs.restart_count = cur.restart_count
        cs.container_id = container_id(cur)
        cs.image_id = cur.image_id
    reason = waiting.get(spec.name)
    if cur is not None and cur.state == ContainerState.RUNNING:
        cs.state.running.started_at = fmt_time(cur.started_at)
        probe = probes.get(cur.id)
        has_readiness = type_ == "app" and spec.HasField("readiness_probe")
        has_startup = type_ == "app" and spec.HasField("startup_probe")
        started = probe.started if probe else not has_startup
        ready = (probe.ready if probe else not has_readiness) and started
        cs.started = started
        cs.ready = ready if type_ == "app" else False
        if prev is not None and has_exited(prev):
            _terminated(prev, cs.last_state, messages)
    elif cur is not None and has_exited(cur):
        if reason is not None:
            cs.state.waiting.reason, cs.state.waiting.message = reason
            _terminated(cur, cs.last_state, messages)
        else:
            _terminated(cur, cs.state, messages)
            if prev is not None and has_exited(prev):
                _terminated(prev, cs.last_state, messages)
        # An init container that completed counts as ready, as upstream.
        cs.ready = type_ == "init" and not exit_failed(cur) and reason is None
    else:
        r, msg = reason or (default_waiting, "")
        cs.state.waiting.reason = r
        if msg:
            cs.state.waiting.message = msg
        if prev is not None and has_exited(prev):
            _terminated(prev, cs.last_state, messages)
    return cs


def pod_qos_class(spec: Any) -> str:
    """Guaranteed, Burstable or BestEffort, as Kubernetes' ComputePodQOS."""

    def positive(v: str) -> Fraction:
        try:
            q = parse_quantity(v)
        except QuantityError:
            return Fraction(0)
        return q if q > 0 else Fraction(0)

    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for c in (*spec.containers, *spec.init_containers):
        for name in ("cpu", "memory"):
            req = positive(c.resources.requests.get(name, "0"))
            if req:
                requests[name] = requests.get(name, Fraction(0)) + req
            lim = positive(c.resources.limits.get(name, "0"))
            if lim:
                limits[name] = limits.get(name, Fraction(0)) + lim
        if not all(positive(c.resources.limits.get(n, "0")) for n in ("cpu", "memory")):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests.keys() == limits.keys() and requests == limits:
        return "Guaranteed"
    return "Burstable"


def _phase(
    pod: Any,
    statuses: list[Any],
    init_statuses: list[Any],
    initialized: bool,
    init_failed: bool,
) -> str:
    if is_terminal(pod):
        return str(pod.status.phase)
    policy = restart_policy(pod)
    if not initialized:
        if init_failed and policy == "Never":
            return "Failed"
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for cs in statuses:
        if cs.state.HasField("running"):
            running += 1
        elif cs.state.HasField("terminated"):
            stopped += 1
            if cs.state.terminated.exit_code == 0:
                succeeded += 1
        elif cs.state.HasField("waiting"):
            if cs.last_state.HasField("terminated"):
                stopped += 1
                if cs.last_state.terminated.exit_code == 0:
                    succeeded += 1
            else:
                waiting += 1
    if not statuses or waiting == len(statuses):
        return "Pending"
    if running > 0:
        return "Running"
    if waiting == 0 and stopped > 0:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    old: Mapping[str, Any], type_: str, ok: bool, now: datetime, reason: str = "", message: str = ""
) -> Any:
    status = "True" if ok else "False"
    cond = core.PodCondition(type=type_, status=status)
    before = old.get(type_)
    if before is not None and before.status == status and before.last_transition_time:
        cond.last_transition_time = before.last_transition_time
    else:
        cond.last_transition_time = fmt_time(now)
    if not ok:
        if reason:
            cond.reason = reason
        if message:
            cond.message = message
    return cond


def compute_pod_status(
    pod: Any,
    containers: list[ContainerInfo],
    probe_results: Mapping[str, ProbeState],
    pod_ip: str | None,
    host_ip: str,
    now: datetime,
    *,
    waiting: Mapping[str, tuple[str, str]] | None = None,
    messages: Mapping[str, str] | None = None,
    failed: tuple[str, str] | None = None,
) -> Any:
    """The PodStatus message. `waiting` maps container names to a (reason,
    message) to show while they wait (ErrImagePull, CrashLoopBackOff, ...);
    `pod_ip` None keeps the address the status already has; `messages` maps
    container ids to their termination messages; `failed` (reason, message)
    fails the pod whatever its containers say (activeDeadlineSeconds)."""
    waiting = waiting or {}
    messages = messages or {}
    old = pod.status
    status = core.PodStatus()
    sandbox = latest_sandbox(containers)
    current = in_sandbox(containers, sandbox) if sandbox else []
    # Status shows the newest attempt; a fresh sandbox without containers yet
    # still reports what the previous attempt's containers did.
    others = [c for c in containers if c.type != "sandbox"]

    def past_of(name: str, type_: str) -> list[ContainerInfo]:
        mine = history(current, name, type_)
        older = [c for c in history(others, name, type_) if c not in mine]
        return mine + older if mine else older

    init_specs = list(pod.spec.init_containers)
    _, failed_init, init_done = init_progress(pod, current)
    init_failed = failed_init is not None
    incomplete: list[str] = []
    if not init_done:
        for spec in init_specs:
            past = history(current, spec.name, "init")
            if not past or not has_exited(past[0]) or exit_failed(past[0]):
                incomplete.append(spec.name)

    for spec in init_specs:
        status.init_container_statuses.append(
            container_status(
                spec,
                "init",
                past_of(spec.name, "init"),
                probe_results,
                waiting,
                "PodInitializing",
                messages,
            )
        )
    default_app_waiting = "ContainerCreating" if init_done else "PodInitializing"
    for spec in pod.spec.containers:
        status.container_statuses.append(
            container_status(
                spec,
                "app",
                past_of(spec.name, "app"),
                probe_results,
                waiting,
                default_app_waiting,
                messages,
            )
        )

    phase = _phase(
        pod,
        list(status.container_statuses),
        list(status.init_container_statuses),
        init_done,
        init_failed,
    )
    if failed is not None and not is_terminal(pod):
        phase = "Failed"
        status.reason, status.message = failed
    elif is_terminal(pod):
        # A terminal pod keeps why it ended (DeadlineExceeded, ...).
        status.reason, status.message = old.reason, old.message
    status.phase = phase

    old_conditions = {c.type: c for c in old.conditions}
    unready = [cs.name for cs in status.container_statuses if not cs.ready]
    conds: dict[str, Any] = {}
    if phase == "Succeeded" or (is_terminal(pod) and not unready):
        reason = "PodCompleted"
    else:
        reason = ""
    conds["Initialized"] = _condition(
        old_conditions,
        "Initialized",
        init_done or phase == "Succeeded",
        now,
        reason or "ContainersNotInitialized",
        f"containers with incomplete status: [{' '.join(incomplete)}]" if not reason else "",
    )
    ready = not unready and phase == "Running"
    gates = [g.condition_type for g in pod.spec.readiness_gates]
    failing_gates = [
        g for g in gates if old_conditions.get(g) is None or old_conditions[g].status != "True"
    ]
    unready_msg = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    conds["ContainersReady"] = _condition(
        old_conditions,
        "ContainersReady",
        ready,
        now,
        reason or "ContainersNotReady",
        "" if reason else unready_msg,
    )
    ready_msg = unready_msg
    if ready and failing_gates:
        ready_msg = (
            f"corresponding condition of pod readiness gate {failing_gates[0]!r} does not exist."
        )
    conds["Ready"] = _condition(
        old_conditions,
        "Ready",
        ready and not failing_gates,
        now,
        reason or ("ReadinessGatesNotReady" if ready else "ContainersNotReady"),
        "" if reason else ready_msg,
    )
    conds["PodScheduled"] = _condition(old_conditions, "PodScheduled", True, now)
    for type_ in CONDITION_ORDER:
        status.conditions.append(conds[type_])
    for c in old.conditions:
        if c.type not in conds:
            status.conditions.append(c)

    status.host_ip = host_ip
    if host_ip:
        status.host_ips.add(ip=host_ip)
    ip = pod_ip if pod_ip is not None else old.pod_ip
    if ip:
        status.pod_ip = ip
        status.pod_ips.add(ip=ip)
    status.start_time = old.start_time or fmt_time(now)
    status.qos_class = old.qos_class or pod_qos_class(pod.spec)
    if old.nominated_node_name:
        status.nominated_node_name = old.nominated_node_name
    status.observed_generation = pod.metadata.generation
    return status


def status_equal(a: Any, b: Any) -> bool:
    return bool(a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True))
