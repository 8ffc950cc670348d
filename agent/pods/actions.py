"""What a pod needs done, decided from its spec and its containers (pure).

The kubelet's computePodActions: (re)create the sandbox when it is missing or
dead; run init containers in order; start the app containers that should be
running per restartPolicy; kill containers whose spec changed or that failed
their liveness or startup probe; wait out the CrashLoopBackOff. Running
containers with the right spec hash satisfy the pod, which is how a restarted
agent adopts them instead of starting duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.pods.podutil import (
    container_hash,
    exit_failed,
    has_exited,
    history,
    in_sandbox,
    is_terminal,
    latest_sandbox,
    restart_policy,
    seconds,
)
from agent.runtime.types import ContainerInfo, ContainerState

# The kubelet's words for activeDeadlineSeconds, which Jobs and users match on.
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
INITIAL_BACKOFF = 10.0
MAX_BACKOFF = 300.0
# A container that ran this long before it exited starts its back-off afresh.
BACKOFF_RESET_AFTER = 600.0


class BackOff:
    """Per-container restart back-off: 10 s doubling to 5 min, as the kubelet's.

    `remaining` only reads; `next` is called when a restart actually happens."""

    def __init__(
        self,
        initial: float = INITIAL_BACKOFF,
        maximum: float = MAX_BACKOFF,
        reset_after: float = BACKOFF_RESET_AFTER,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._entries: dict[str, tuple[float, datetime]] = {}

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def remaining(
        self, key: str, since: datetime | None, now: datetime, ran_for: float = 0
    ) -> float:
        """Seconds left before a container that stopped at `since` may restart."""
        entry = self._entries.get(key)
        if entry is None or since is None or ran_for >= self.reset_after:
            return 0.0
        return max(0.0, entry[0] - seconds(now, since))

    def next(self, key: str, now: datetime, ran_for: float = 0) -> float:
        entry = self._entries.get(key)
        if (
            entry is None
            or ran_for >= self.reset_after
            or seconds(now, entry[1]) > 2 * self.maximum
        ):
            delay = self.initial
        else:
            delay = min(entry[0] * 2, self.maximum)
        self._entries[key] = (delay, now)
        return delay

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


def backoff_key(pod_uid: str, name: str) -> str:
    return f"{pod_uid}/{name}"


def ran_for(c: ContainerInfo) -> float:
    if c.started_at and c.finished_at:
        return max(0.0, seconds(c.finished_at, c.started_at))
    return 0.0


@dataclass(frozen=True)
class ContainerToStart:
    container: Any  # core_v1 Container
    type: str  # init | app
    restart_count: int
    message: str = ""
    # How long the container it replaces ran (a long run resets the back-off).
    ran_for: float = 0.0


@dataclass
class PodActions:
    create_sandbox: bool = False
    # The running sandbox containers join (None when one must be created first).
    sandbox: ContainerInfo | None = None
    # Every sandbox attempt so far (0 for the first).
    attempt: int = 0
    stop_sandbox: bool = False
    kill: list[tuple[ContainerInfo, str]] = field(default_factory=list)
    start_init: ContainerToStart | None = None
    start: list[ContainerToStart] = field(default_factory=list)
    # container name -> CrashLoopBackOff message
    backoff: dict[str, str] = field(default_factory=dict)
    requeue_after: float | None = None
    init_failed: bool = False
    finished: bool = False
    # activeDeadlineSeconds has passed: kill everything, the pod fails.
    deadline_exceeded: bool = False

    def wants_containers(self) -> bool:
        return self.create_sandbox or self.start_init is not None or bool(self.start)


def should_restart(policy: str, c: ContainerInfo) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_failed(c)
    return False


def _next_restart_count(containers: list[ContainerInfo], name: str, type_: str) -> int:
    past = history(containers, name, type_)
    return past[0].restart_count + 1 if past else 0


def _requeue(actions: PodActions, after: float) -> None:
    if actions.requeue_after is None or after < actions.requeue_after:
        actions.requeue_after = after


def _backoff_message(pod: Any, name: str, delay: float) -> str:
    m = pod.metadata
    return (
        f"back-off {delay:g}s restarting failed container={name} "
        f"pod={m.name}_{m.namespace}({m.uid})"
    )


def deadline_left(pod: Any, started: datetime | None, now: datetime) -> float | None:
    """Seconds until the pod's activeDeadlineSeconds runs out, counted from
    status.startTime as the kubelet does (None: no deadline, or not started)."""
    if not pod.spec.HasField("active_deadline_seconds") or started is None:
        return None
    return pod.spec.active_deadline_seconds - seconds(now, started)


def init_progress(
    pod: Any, current: list[ContainerInfo]
) -> tuple[Any | None, ContainerInfo | None, bool]:
    """(next init container to run, a failed init container, all done), as the
    kubelet's findNextInitContainerToRun, over the current sandbox's containers."""
    inits = list(pod.spec.init_containers)
    if not inits:
        return None, None, True
    # Any app container in this sandbox means the init containers have run.
    if any(c.type == "app" for c in current):
        return None, None, True
    for i in range(len(inits) - 1, -1, -1):
        past = history(current, inits[i].name, "init")
        if not past:
            continue
        latest = past[0]
        if latest.state == ContainerState.RUNNING:
            return None, None, False
        if has_exited(latest):
            if exit_failed(latest):
                return None, latest, False
            if i == len(inits) - 1:
                return None, None, True
            return inits[i + 1], None, False
        return None, None, False  # created, not yet started
    return inits[0], None, False


def compute_pod_actions(
    pod: Any,
    containers: list[ContainerInfo],
    now: datetime,
    backoff: BackOff,
    *,
    unhealthy: Mapping[str, str] | None = None,
    started: datetime | None = None,
) -> PodActions:
    """`unhealthy` maps container ids that failed liveness/startup to why;
    `started` is the pod's status.startTime (activeDeadlineSeconds)."""
    unhealthy = unhealthy or {}
    policy = restart_policy(pod)
    actions = PodActions()
    sandbox = latest_sandbox(containers)
    sandboxes = [c for c in containers if c.type == "sandbox"]
    alive = sandbox is not None and sandbox.state == ContainerState.RUNNING
    actions.attempt = len(sandboxes) - 1 if alive else len(sandboxes)
    others = [c for c in containers if c.type != "sandbox"]
    running_others = [c for c in others if c.state == ContainerState.RUNNING]
    current = in_sandbox(containers, sandbox) if sandbox else []

    if is_terminal(pod):
        actions.finished = True
        for c in running_others:
            actions.kill.append((c, "pod has finished"))
        if sandbox is not None and sandbox.state == ContainerState.RUNNING:
            actions.stop_sandbox = True
        return actions

    left = deadline_left(pod, started, now)
    if left is not None and left <= 0:
        actions.deadline_exceeded = True
        actions.finished = True
        for c in running_others:
            actions.kill.append((c, DEADLINE_MESSAGE))
        if sandbox is not None and sandbox.state == ContainerState.RUNNING:
            actions.stop_sandbox = True
        return actions
    if left is not None:
        _requeue(actions, left)

    if sandbox is None or sandbox.state != ContainerState.RUNNING:
        finished = _all_finished(pod, current, policy) if sandbox is not None else False
        if sandbox is not None and (finished or (policy == "Never" and others)):
            # The pod ran to its end (or may not restart): leave it stopped.
            actions.finished = True
            for c in running_others:
                actions.kill.append((c, "pod sandbox is gone and the pod may not restart"))
            return actions
        actions.create_sandbox = True
        for c in running_others:
            actions.kill.append((c, "pod sandbox changed, it will be killed and re-created"))
        if pod.spec.init_containers:
            first = pod.spec.init_containers[0]
            actions.start_init = ContainerToStart(
                first, "init", _next_restart_count(containers, first.name, "init")
            )
        else:
            for spec in pod.spec.containers:
                actions.start.append(
                    ContainerToStart(spec, "app", _next_restart_count(containers, spec.name, "app"))
                )
        return actions

    actions.sandbox = sandbox

    # Init containers, one at a time, in order.
    next_init, failed_init, init_done = init_progress(pod, current)
    if not init_done:
        if failed_init is not None:
            if policy == "Never":
                actions.init_failed = True
                actions.finished = True
                actions.stop_sandbox = True
                return actions
            spec = next(c for c in pod.spec.init_containers if c.name == failed_init.name)
            _restart_with_backoff(actions, pod, spec, "init", failed_init, now, backoff)
            return actions
        if next_init is not None:
            actions.start_init = ContainerToStart(
                next_init, "init", _next_restart_count(containers, next_init.name, "init")
            )
        return actions  # an init container is running: wait for it

    # App containers.
    for spec in pod.spec.containers:
        past = history(current, spec.name, "app")
        latest = past[0] if past else None
        if latest is None:
            actions.start.append(
                ContainerToStart(spec, "app", _next_restart_count(containers, spec.name, "app"))
            )
            continue
        if latest.state == ContainerState.RUNNING:
            if latest.spec_hash and latest.spec_hash != container_hash(spec):
                actions.kill.append(
                    (latest, f"Container {spec.name} definition changed, will be restarted")
                )
                actions.start.append(
                    ContainerToStart(spec, "app", latest.restart_count + 1, "spec changed")
                )
            elif latest.id in unhealthy:
                actions.kill.append((latest, unhealthy[latest.id]))
                _requeue(actions, 0.0)
            continue
        if latest.state == ContainerState.CREATED and not has_exited(latest):
            continue  # being started right now
        if should_restart(policy, latest):
            _restart_with_backoff(actions, pod, spec, "app", latest, now, backoff)

    if not actions.start and not actions.kill and _all_finished(pod, current, policy):
        actions.finished = True
        actions.stop_sandbox = True
    return actions


def _restart_with_backoff(
    actions: PodActions,
    pod: Any,
    spec: Any,
    type_: str,
    latest: ContainerInfo,
    now: datetime,
    backoff: BackOff,
) -> None:
    key = backoff_key(pod.metadata.uid, spec.name)
    since = latest.finished_at or latest.created_at
    left = backoff.remaining(key, since, now, ran_for(latest))
    if left > 0:
        actions.backoff[spec.name] = _backoff_message(pod, spec.name, backoff.delay(key))
        _requeue(actions, left)
        return
    start = ContainerToStart(spec, type_, latest.restart_count + 1, "restart", ran_for(latest))
    if type_ == "init":
        actions.start_init = start
    else:
        actions.start.append(start)


def _all_finished(pod: Any, current: list[ContainerInfo], policy: str) -> bool:
    """Every app container stopped and none will restart under the policy."""
    if policy == "Always":
        return False
    for spec in pod.spec.containers:
        past = history(current, spec.name, "app")
        if not past:
            return False
        latest = past[0]
        if not has_exited(latest) or should_restart(policy, latest):
            return False
    return True
