"""Executing a pod's actions: images, volumes, sandbox, network, /etc/hosts and
resolv.conf, env, init and app containers, hooks, probes, status; and
tearing a pod down (preStop, SIGTERM, grace, SIGKILL, delete the object).

hostNetwork pods put their sandbox in the node's network namespace: the
network plugin is never called for them and their podIP is the node's.
activeDeadlineSeconds is enforced here (actions decide, this kills and fails
the pod). Each container gets a fresh node file bind-mounted at its
terminationMessagePath; what it holds when the container ends becomes the
status' terminated.message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.network.hostports import PortMapping, port_mappings
from agent.network.types import PodNetwork
from agent.pods.actions import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    BackOff,
    ContainerToStart,
    PodActions,
    backoff_key,
    compute_pod_actions,
)
from agent.pods.downward import ConfigError, field_value, resource_value
from agent.pods.endpoints_gate import EndpointsGate
from agent.pods.podutil import (
    container_hash,
    exit_failed,
    fmt_time,
    has_exited,
    parse_time,
    pod_hostname,
)
from agent.pods.status import compute_pod_status, status_equal
from agent.probes import ProbeManager, run_handler
from agent.runtime.types import (
    LABEL_GRACE_PERIOD,
    LABEL_HOST_NETWORK,
    LABEL_TERMINATION_MESSAGE_PATH,
    SANDBOX_NAME,
    ContainerCreateError,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    ImageNotPresentError,
    ImagePullError,
    Mount,
    PodRuntime,
    RuntimeUnavailableError,
)
from agent.volumes import (
    VolumeError,
    VolumeManager,
    VolumeSource,
    node_memory_bytes,
    secret_data,
)
from orchestrator.api.quantity import QuantityError, cpu_millis, memory_bytes
from orchestrator.client.client import ApiError, ConflictError, NotFoundError
from orchestrator.client.events import EventRecorder

log = logging.getLogger(__name__)

# busybox: sleep forever, but leave at once on SIGTERM (PID 1 ignores
# signals it has no handler for).
PAUSE_COMMAND = ["sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
DEFAULT_GRACE = 30
MIN_KILL_GRACE = 2
RETRY_SOON = 5.0
# The kubelet's limits on a termination message: the file's first 4 KiB; with
# FallbackToLogsOnError, the log's last 80 lines, at most 2 KiB of them.
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096
MAX_MESSAGE_LOG_LINES = 80
MAX_MESSAGE_LOG_BYTES = 2048

_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class SandboxError(Exception):
    pass


# -- pure pieces ---------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _ENV_REF.sub(sub, text)


def render_hosts(pod: Any, pod_ip: str, domain: str = CLUSTER_DOMAIN) -> str:
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    hostname = pod_hostname(pod)
    if pod_ip:
        if pod.spec.subdomain:
            fqdn = f"{hostname}.{pod.spec.subdomain}.{pod.metadata.namespace}.svc.{domain}"
            lines.append(f"{pod_ip}\t{fqdn}\t{hostname}")
        else:
            lines.append(f"{pod_ip}\t{hostname}")
    if pod.spec.host_aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in pod.spec.host_aliases:
            lines.append(f"{alias.ip}\t{chr(9).join(alias.hostnames)}")
    return "\n".join(lines) + "\n"


def parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if fields[0] == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return nameservers, searches, options


def _merge_options(base: list[str], extra: list[tuple[str, str]]) -> list[str]:
    merged: dict[str, str] = {}
    for opt in base:
        name, _, value = opt.partition(":")
        merged[name] = value
    for name, value in extra:
        merged[name] = value
    return [f"{k}:{v}" if v else k for k, v in merged.items()]


def render_resolv(
    pod: Any,
    node_resolv: str = "",
    cluster_dns: str = CLUSTER_DNS,
    domain: str = CLUSTER_DOMAIN,
) -> str:
    policy = pod.spec.dns_policy or "ClusterFirst"
    if policy == "ClusterFirst" and pod.spec.host_network:
        policy = "Default"  # as upstream: ClusterFirst with host network falls back
    ns = pod.metadata.namespace
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        nameservers = [cluster_dns]
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain]
        options = ["ndots:5"]
    elif policy == "Default":
        nameservers, searches, options = parse_resolv(node_resolv)
    else:  # None
        nameservers, searches, options = [], [], []
    cfg = pod.spec.dns_config
    nameservers = list(dict.fromkeys([*nameservers, *cfg.nameservers]))[:3]
    searches = list(dict.fromkeys([*searches, *cfg.searches]))[:32]
    options = _merge_options(options, [(o.name, o.value) for o in cfg.options])
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {n}" for n in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def render_host_network_hosts(pod: Any, node_hosts: str) -> str:
    """/etc/hosts of a hostNetwork pod: the node's own file (the pod shares its
    network identity), plus the pod's hostAliases, as the kubelet writes it."""
    lines = ["# Kubernetes-managed hosts file (host network).", node_hosts.rstrip("\n")]
    if pod.spec.host_aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in pod.spec.host_aliases:
            lines.append(f"{alias.ip}\t{chr(9).join(alias.hostnames)}")
    return "\n".join(lines) + "\n"


def read_termination_file(path: str) -> str:
    """The first MAX_MESSAGE_BYTES of a container's termination message file
    ("" when it is missing: the pod directory may have been cleaned)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MESSAGE_BYTES)
    except OSError:
        return ""
    return data.decode(errors="replace")


def log_tail_message(log_bytes: bytes) -> str:
    """FallbackToLogsOnError's message: the last MAX_MESSAGE_LOG_LINES lines
    of the log, cut to its last MAX_MESSAGE_LOG_BYTES bytes."""
    lines = log_bytes.splitlines(keepends=True)[-MAX_MESSAGE_LOG_LINES:]
    tail = b"".join(lines)[-MAX_MESSAGE_LOG_BYTES:]
    return tail.decode(errors="replace")


def build_container_spec(
    pod: Any,
    c: Any,
    type_: str,
    restart_count: int,
    sandbox_id: str,
    env: Mapping[str, str],
    mounts: list[Mount],
) -> ContainerSpec:
    entrypoint = [expand(x, env) for x in c.command] if c.command else None
    cmd = [expand(x, env) for x in c.args] if c.args else None
    sc = c.security_context
    psc = pod.spec.security_context
    uid = (
        sc.run_as_user
        if sc.HasField("run_as_user")
        else (psc.run_as_user if psc.HasField("run_as_user") else None)
    )
    gid = (
        sc.run_as_group
        if sc.HasField("run_as_group")
        else (psc.run_as_group if psc.HasField("run_as_group") else None)
    )
    user = ""
    if uid is not None:
        user = str(uid) if gid is None else f"{uid}:{gid}"
    limits = c.resources.limits
    requests = c.resources.requests
    try:
        cpu_limit = cpu_millis(limits["cpu"]) if "cpu" in limits else 0
        mem_limit = memory_bytes(limits["memory"]) if "memory" in limits else 0
        cpu_request = cpu_millis(requests["cpu"]) if "cpu" in requests else 0
    except QuantityError as exc:
        raise ConfigError(str(exc)) from None
    return ContainerSpec(
        pod_uid=pod.metadata.uid,
        pod_name=pod.metadata.name,
        pod_namespace=pod.metadata.namespace,
        name=c.name,
        type=type_,
        image=c.image,
        entrypoint=entrypoint,
        cmd=cmd,
        working_dir=c.working_dir,
        env=dict(env),
        mounts=mounts,
        sandbox_id=sandbox_id,
        cpu_limit_millis=cpu_limit,
        memory_limit_bytes=mem_limit,
        cpu_request_millis=cpu_request,
        privileged=bool(sc.privileged) if sc.HasField("privileged") else False,
        user=user,
        read_only_rootfs=bool(sc.read_only_root_filesystem)
        if sc.HasField("read_only_root_filesystem")
        else False,
        cap_add=tuple(sc.capabilities.add),
        cap_drop=tuple(sc.capabilities.drop),
        tty=c.tty,
        stdin=c.stdin,
        stop_signal=c.lifecycle.stop_signal if c.lifecycle.HasField("stop_signal") else "",
        restart_count=restart_count,
        spec_hash=container_hash(c),
        share_pid=bool(pod.spec.share_process_namespace)
        if pod.spec.HasField("share_process_namespace")
        else False,
        host_network=pod.spec.host_network,
        host_pid=pod.spec.host_pid,
        host_ipc=pod.spec.host_ipc,
    )


def field_path(c: Any, type_: str) -> str:
    return f"spec.{'initContainers' if type_ == 'init' else 'containers'}{{{c.name}}}"


@dataclass
class _SyncState:
    waiting: dict[str, tuple[str, str]]
    requeue: float | None = None

    def retry(self, after: float) -> None:
        if self.requeue is None or after < self.requeue:
            self.requeue = after


# -- the syncer ----------------------------------------------------------------------------


class PodSyncer:
    def __init__(
        self,
        client: Any,
        runtime: PodRuntime,
        network: PodNetwork,
        volumes: VolumeManager,
        probes: ProbeManager,
        events: EventRecorder,
        *,
        node_name: str,
        node_ip: str,
        root_dir: Path,
        pause_image: str = "busybox:1.36",
        pause_command: list[str] | None = None,
        backoff: BackOff | None = None,
        clock: Callable[[], datetime] | None = None,
        cluster_dns: str = CLUSTER_DNS,
        cluster_domain: str = CLUSTER_DOMAIN,
        node_resolv_conf: str = "/etc/resolv.conf",
        node_hosts_file: str = "/etc/hosts",
        endpoints_gate: EndpointsGate | None = None,
    ) -> None:
        self.client = client
        self.endpoints_gate = endpoints_gate
        self.runtime = runtime
        self.network = network
        self.volumes = volumes
        self.probes = probes
        self.events = events
        self.node_name = node_name
        self.node_ip = node_ip
        self.root_dir = Path(root_dir)
        self.pause_image = pause_image
        self.pause_command = pause_command if pause_command is not None else PAUSE_COMMAND
        self.backoff = backoff or BackOff()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        self.node_resolv_conf = node_resolv_conf
        self._last_status: dict[str, Any] = {}
        self._image_failed_at: dict[str, datetime] = {}
        self.node_cpus = os.cpu_count() or 1
        self.node_memory = node_memory_bytes()
        self.node_hosts_file = node_hosts_file
        # container id -> termination message, for containers that have exited
        # (their files and logs no longer change), per pod uid.
        self._messages: dict[str, dict[str, str]] = {}
        # pod uid -> volume warnings already reported as events.
        self._volume_warnings: dict[str, set[str]] = {}

    # -- sync ----------------------------------------------------------------------------

    async def sync_pod(self, pod: Any) -> float | None:
        """Drive the pod's containers toward its spec once and report its status.
        Returns seconds after which it wants another sync (back-off), if any."""
        uid = pod.metadata.uid
        now = self.clock()
        try:
            containers = await self.runtime.list_containers(uid)
        except RuntimeUnavailableError as exc:
            await self._report_runtime_down(pod, exc)
            raise
        actions = compute_pod_actions(
            pod,
            containers,
            now,
            self.backoff,
            unhealthy=self.probes.unhealthy(uid),
            started=self._start_time(pod),
        )
        if actions.deadline_exceeded:
            await self._fail_deadline(pod, containers, actions)
            return None
        st = _SyncState({n: ("CrashLoopBackOff", m) for n, m in actions.backoff.items()})
        for name in actions.backoff:
            self.events.record(
                pod,
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {name} in pod {_pod_label(pod)}",
                _field_path_of(pod, name),
            )
        st.requeue = actions.requeue_after
        changed = False
        pod_ip: str | None = None

        for info, reason in actions.kill:
            await self._kill_container(pod, info, reason)
            changed = True
        running_sandboxes = [
            c for c in containers if c.type == "sandbox" and c.state == ContainerState.RUNNING
        ]
        if actions.create_sandbox or actions.stop_sandbox:
            for sb in running_sandboxes:
                if actions.stop_sandbox or sb is not actions.sandbox:
                    await self._stop_sandbox(pod, sb)
                    changed = True

        if not actions.finished:
            known_ip = self._pod_ip(pod) or ""
            try:
                volumes = await self.volumes.setup(pod, pod_ip=known_ip, host_ip=self.node_ip)
            except VolumeError as exc:
                self.events.record(pod, "Warning", exc.reason, exc.message)
                for c in (*pod.spec.init_containers, *pod.spec.containers):
                    st.waiting.setdefault(c.name, ("ContainerCreating", exc.message))
                st.retry(RETRY_SOON)
                await self._report(pod, containers, None, st)
                return st.requeue
            sandbox = actions.sandbox
            try:
                if actions.create_sandbox:
                    if actions.attempt > 0 and not pod.spec.host_network:
                        # The old sandbox died (dockerd restart, a kill): release its
                        # interface before the new one gets the pod's address.
                        with contextlib.suppress(Exception):
                            await self.network.teardown(uid, None)
                    sandbox, pod_ip = await self._create_sandbox(pod, actions.attempt)
                    changed = True
                elif sandbox is not None:
                    pod_ip = await self._ensure_network(pod, sandbox)
            except SandboxError as exc:
                for c in (*pod.spec.init_containers, *pod.spec.containers):
                    st.waiting.setdefault(c.name, ("ContainerCreating", str(exc)))
                st.retry(RETRY_SOON)
                await self._report(pod, await self.runtime.list_containers(uid), None, st)
                return st.requeue
            if sandbox is not None and (actions.start_init or actions.start):
                self._report_volume_warnings(pod, volumes)
                if pod_ip and pod_ip != known_ip and _uses_downward_volumes(pod):
                    # The address is new: downwardAPI files naming status.podIP
                    # must hold it before the containers start.
                    try:
                        volumes = await self.volumes.setup(pod, pod_ip=pod_ip, host_ip=self.node_ip)
                    except VolumeError as exc:
                        self.events.record(pod, "Warning", exc.reason, exc.message)
                await asyncio.to_thread(self._write_dns_files, pod, pod_ip or "")
                todo = [actions.start_init] if actions.start_init else []
                todo += actions.start
                for start in todo:
                    if start is None:
                        continue
                    await self._start_container(pod, start, sandbox, volumes, pod_ip or "", st)
                    changed = True

        if changed:
            containers = await self.runtime.list_containers(uid)
        if pod_ip is None and not actions.finished:
            pod_ip = self._pod_ip(pod)
        self.probes.update(pod, containers, pod_ip)
        await self._report(pod, containers, pod_ip, st)
        return st.requeue

    async def _report(
        self,
        pod: Any,
        containers: list[ContainerInfo],
        pod_ip: str | None,
        st: _SyncState,
        *,
        failed: tuple[str, str] | None = None,
    ) -> None:
        uid = pod.metadata.uid
        base = pod
        last = self._last_status.get(uid)
        if last is not None:
            base = type(pod)()
            base.CopyFrom(pod)
            base.status.CopyFrom(last)
        status = compute_pod_status(
            base,
            containers,
            self.probes.states(uid),
            pod_ip,
            self.node_ip,
            self.clock(),
            waiting=st.waiting,
            messages=await self._termination_messages(pod, containers),
            failed=failed,
        )
        await self.write_status(pod, status)

    def _start_time(self, pod: Any) -> datetime:
        """status.startTime as last written (the informer's copy may lag);
        a pod not yet reported starts now, which its first status will say."""
        last = self._last_status.get(pod.metadata.uid)
        stamp = (last.start_time if last is not None else "") or pod.status.start_time
        return parse_time(stamp) or self.clock()

    async def _fail_deadline(
        self, pod: Any, containers: list[ContainerInfo], actions: PodActions
    ) -> None:
        """activeDeadlineSeconds ran out: the pod fails first (so nothing
        restarts it meanwhile), then its containers are killed with its grace
        period, the sandbox stopped, and the final container states reported."""
        uid = pod.metadata.uid
        last = self._last_status.get(uid)
        if last is None or last.reason != DEADLINE_REASON:
            self.events.record(pod, "Normal", DEADLINE_REASON, DEADLINE_MESSAGE)
        failed = (DEADLINE_REASON, DEADLINE_MESSAGE)
        await self._report(pod, containers, None, _SyncState({}), failed=failed)
        await asyncio.gather(
            *(self._kill_container(pod, info, reason) for info, reason in actions.kill),
            return_exceptions=True,
        )
        if actions.stop_sandbox:
            for sb in containers:
                if sb.type == "sandbox" and sb.state == ContainerState.RUNNING:
                    await self._stop_sandbox(pod, sb)
        self.probes.remove_pod(uid)
        containers = await self.runtime.list_containers(uid)
        await self._report(pod, containers, None, _SyncState({}), failed=failed)

    def _pod_ip(self, pod: Any) -> str | None:
        """A hostNetwork pod's address is the node's; others get theirs from
        the network plugin."""
        if pod.spec.host_network:
            return self.node_ip
        return self.network.pod_ip(pod.metadata.uid)

    def _report_volume_warnings(self, pod: Any, volumes: Mapping[str, VolumeSource]) -> None:
        """Once per pod: what a volume had to leave out (serviceAccountToken)."""
        seen = self._volume_warnings.setdefault(pod.metadata.uid, set())
        for src in volumes.values():
            for warning in src.warnings:
                if warning not in seen:
                    seen.add(warning)
                    self.events.record(pod, "Warning", "UnsupportedVolumeSource", warning)

    async def _termination_messages(
        self, pod: Any, containers: list[ContainerInfo]
    ) -> dict[str, str]:
        """Termination messages of the pod's exited containers by container id.
        Read once per container: an exited container's file and log are final."""
        cache = self._messages.setdefault(pod.metadata.uid, {})
        specs = {c.name: c for c in (*pod.spec.init_containers, *pod.spec.containers)}
        for c in containers:
            if c.type == "sandbox" or c.id in cache or not has_exited(c):
                continue
            spec = specs.get(c.name)
            policy = spec.termination_message_policy if spec is not None else ""
            cache[c.id] = await self._termination_message(c, policy)
        live = {c.id for c in containers}
        for cid in [k for k in cache if k not in live]:
            del cache[cid]
        return dict(cache)

    async def _termination_message(self, c: ContainerInfo, policy: str) -> str:
        message = ""
        path = c.labels.get(LABEL_TERMINATION_MESSAGE_PATH, "")
        if path:
            message = await asyncio.to_thread(read_termination_file, path)
        if not message and policy == "FallbackToLogsOnError" and exit_failed(c):
            chunks: list[bytes] = []
            try:
                async for chunk in self.runtime.logs(c.id, tail=MAX_MESSAGE_LOG_LINES):
                    chunks.append(chunk)
            except (LookupError, OSError, RuntimeUnavailableError) as exc:
                log.info("logs of container %s for its termination message: %s", c.name, exc)
            message = log_tail_message(b"".join(chunks))
        return message

    async def _report_runtime_down(self, pod: Any, exc: Exception) -> None:
        """Without the runtime nothing is known about the containers: say so
        on the pod (not ready, with the reason) rather than keep a stale Ready."""
        self.events.record(pod, "Warning", "FailedSync", f"error determining status: {exc}")
        status = type(pod.status)()
        status.CopyFrom(self._last_status.get(pod.metadata.uid) or pod.status)
        for cond in status.conditions:
            if cond.type in ("Ready", "ContainersReady") and cond.reason != "ContainerRuntimeDown":
                cond.status = "False"
                cond.reason = "ContainerRuntimeDown"
                cond.message = f"the node's container runtime is unreachable: {exc}"
                cond.last_transition_time = fmt_time(self.clock())
        for cs in status.container_statuses:
            cs.ready = False
        with contextlib.suppress(ApiError):
            await self.write_status(pod, status)

    async def write_status(self, pod: Any, status: Any) -> None:
        """update_status when it differs from what the API (or our last write) has."""
        uid = pod.metadata.uid
        last = self._last_status.get(uid)
        if last is not None and status_equal(last, status):
            return
        if last is None and status_equal(pod.status, status):
            self._last_status[uid] = status
            return
        current = type(pod)()
        current.CopyFrom(pod)
        for _attempt in range(5):
            current.status.CopyFrom(status)
            try:
                await self.client.update_status(current)
                self._last_status[uid] = status
                return
            except ConflictError:
                try:
                    current = await self.client.get(
                        "Pod", pod.metadata.name, pod.metadata.namespace
                    )
                except NotFoundError:
                    return
                if current.metadata.uid != uid:
                    return
            except NotFoundError:
                return
        log.warning(
            "status of pod %s/%s: too many conflicts", pod.metadata.namespace, pod.metadata.name
        )

    # -- sandbox ----------------------------------------------------------------------------

    async def _create_sandbox(self, pod: Any, attempt: int) -> tuple[ContainerInfo, str]:
        uid = pod.metadata.uid
        try:
            await self.runtime.ensure_image(self.pause_image, "IfNotPresent")
        except (ImagePullError, ImageNotPresentError) as exc:
            self.events.record(pod, "Warning", "FailedCreatePodSandBox", str(exc))
            raise SandboxError(f"failed to get sandbox image {self.pause_image}: {exc}") from None
        grace = _grace(pod)
        host_network = pod.spec.host_network
        labels = {LABEL_GRACE_PERIOD: str(grace)}
        if host_network:
            labels[LABEL_HOST_NETWORK] = "true"
        spec = ContainerSpec(
            pod_uid=uid,
            pod_name=pod.metadata.name,
            pod_namespace=pod.metadata.namespace,
            name=SANDBOX_NAME,
            type="sandbox",
            image=self.pause_image,
            entrypoint=list(self.pause_command) or None,
            cmd=[] if self.pause_command else None,
            # A host-network pod has the node's hostname (UTS "host").
            hostname="" if host_network else pod_hostname(pod),
            restart_count=attempt,
            host_network=host_network,
            host_pid=pod.spec.host_pid,
            host_ipc=pod.spec.host_ipc,
            labels=labels,
        )
        sid = ""
        try:
            sid = await self.runtime.create_container(spec)
            await self.runtime.start_container(sid)
            info = await self.runtime.inspect_container(sid)
            if info is None or info.state != ContainerState.RUNNING or not info.pid:
                raise SandboxError("the pod sandbox exited right after it started")
            if host_network:
                ip = self.node_ip
            else:
                netns = f"/proc/{info.pid}/ns/net"
                try:
                    ip = (await self.network.setup(uid, netns, self._host_ports(pod))).ip
                except Exception as exc:
                    raise SandboxError(f"failed to set up the pod network: {exc}") from exc
        except (ContainerCreateError, SandboxError) as exc:
            self.events.record(
                pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}"
            )
            if sid:
                with contextlib.suppress(Exception):
                    await self.runtime.remove_container(sid)
            raise SandboxError(f"Failed to create pod sandbox: {exc}") from None
        if attempt > 0:
            self.events.record(
                pod,
                "Normal",
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            )
        self._warn_host_ports(pod)
        return info, ip

    def _host_ports(self, pod: Any) -> tuple[PortMapping, ...]:
        if not getattr(self.network, "supports_host_ports", False):
            return ()
        return port_mappings(pod)

    def _warn_host_ports(self, pod: Any) -> None:
        """hostPort outside hostNetwork needs a port mapping (CNI's portmap): on
        a node whose network cannot publish one (no nft), say so rather than
        leave it silently unreachable."""
        if pod.spec.host_network or getattr(self.network, "supports_host_ports", False):
            return
        for c in (*pod.spec.init_containers, *pod.spec.containers):
            for port in c.ports:
                if port.host_port:
                    self.events.record(
                        pod,
                        "Warning",
                        "HostPortNotSupported",
                        f"container {c.name}: hostPort {port.host_port} is not published: "
                        "this node maps host ports only for hostNetwork pods",
                        field_path(c, "app"),
                    )

    async def _ensure_network(self, pod: Any, sandbox: ContainerInfo) -> str | None:
        ip = self._pod_ip(pod)
        if ip:
            return ip
        if not sandbox.pid:
            return None
        try:
            net = await self.network.setup(
                pod.metadata.uid, f"/proc/{sandbox.pid}/ns/net", self._host_ports(pod)
            )
        except Exception as exc:
            raise SandboxError(f"failed to set up the pod network: {exc}") from exc
        return net.ip

    async def _stop_sandbox(self, pod: Any, sandbox: ContainerInfo) -> None:
        if not _host_network(sandbox):
            netns = f"/proc/{sandbox.pid}/ns/net" if sandbox.pid else None
            try:
                await self.network.teardown(pod.metadata.uid, netns)
            except Exception as exc:
                log.warning("network teardown of pod %s: %s", pod.metadata.name, exc)
        await self.runtime.stop_container(sandbox.id, MIN_KILL_GRACE)

    def _write_dns_files(self, pod: Any, pod_ip: str) -> None:
        pod_dir = self.volumes.pod_dir(pod.metadata.uid)
        pod_dir.mkdir(parents=True, exist_ok=True)
        try:
            node_resolv = Path(self.node_resolv_conf).read_text()
        except OSError:
            node_resolv = ""
        if pod.spec.host_network:
            try:
                node_hosts = Path(self.node_hosts_file).read_text()
            except OSError:
                node_hosts = "127.0.0.1\tlocalhost\n"
            hosts = render_host_network_hosts(pod, node_hosts)
        else:
            hosts = render_hosts(pod, pod_ip, self.cluster_domain)
        for name, text in (
            ("etc-hosts", hosts),
            ("resolv.conf", render_resolv(pod, node_resolv, self.cluster_dns, self.cluster_domain)),
        ):
            path = pod_dir / name
            try:
                if path.read_text() == text:
                    continue
            except OSError:
                pass
            # Rewrite in place: the file is bind-mounted into running containers.
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)

    # -- containers ---------------------------------------------------------------------

    async def _start_container(
        self,
        pod: Any,
        start: ContainerToStart,
        sandbox: ContainerInfo,
        volumes: Mapping[str, VolumeSource],
        pod_ip: str,
        st: _SyncState,
    ) -> None:
        c = start.container
        uid = pod.metadata.uid
        fp = field_path(c, start.type)
        if not await self._pull(pod, c, fp, st):
            return
        try:
            env = await self.resolve_env(pod, c, pod_ip)
            mounts = self._mounts(pod, c, volumes)
            spec = build_container_spec(
                pod, c, start.type, start.restart_count, sandbox.id, env, mounts
            )
        except ConfigError as exc:
            st.waiting[c.name] = ("CreateContainerConfigError", str(exc))
            self.events.record(pod, "Warning", "Failed", f"Error: {exc}", fp)
            st.retry(RETRY_SOON * 2)
            return
        message_file = ""
        target = c.termination_message_path or DEFAULT_TERMINATION_MESSAGE_PATH
        if target not in {m.container_path for m in mounts}:
            message_file = await asyncio.to_thread(self._new_message_file, uid, c.name)
            spec = replace(
                spec,
                mounts=[*spec.mounts, Mount(message_file, target)],
                labels={**spec.labels, LABEL_TERMINATION_MESSAGE_PATH: message_file},
            )
        now = self.clock()
        if start.restart_count > 0:
            self.backoff.next(backoff_key(uid, c.name), now, start.ran_for)
        try:
            cid = await self.runtime.create_container(spec)
        except ContainerCreateError as exc:
            if message_file:
                with contextlib.suppress(OSError):
                    os.unlink(message_file)
            st.waiting[c.name] = ("CreateContainerError", str(exc))
            self.events.record(pod, "Warning", "Failed", f"Error: {exc}", fp)
            st.retry(RETRY_SOON * 2)
            return
        self.events.record(pod, "Normal", "Created", f"Created container {c.name}", fp)
        try:
            await self.runtime.start_container(cid)
        except ContainerCreateError as exc:
            self.events.record(pod, "Warning", "Failed", f"Error: {exc}", fp)
            st.retry(0.5)
            return
        self.events.record(pod, "Normal", "Started", f"Started container {c.name}", fp)
        if c.lifecycle.HasField("post_start"):
            outcome = await run_handler(
                c.lifecycle.post_start,
                runtime=self.runtime,
                container_id=cid,
                container=c,
                pod_ip=pod_ip,
                timeout=float(_grace(pod) or DEFAULT_GRACE),
            )
            if not outcome.ok:
                msg = f"PostStartHook failed: {outcome.message}"
                self.events.record(pod, "Warning", "FailedPostStartHook", msg, fp)
                info = await self.runtime.inspect_container(cid)
                if info is not None:
                    await self._kill_container(pod, info, msg, run_pre_stop=False)
                st.retry(0.5)

    async def _pull(self, pod: Any, c: Any, fp: str, st: _SyncState) -> bool:
        policy = c.image_pull_policy or "IfNotPresent"
        key = "image/" + backoff_key(pod.metadata.uid, c.name)
        now = self.clock()
        failed_at = self._image_failed_at.get(key)
        left = self.backoff.remaining(key, failed_at, now)
        if left > 0:
            st.waiting[c.name] = ("ImagePullBackOff", f'Back-off pulling image "{c.image}"')
            self.events.record(pod, "Normal", "BackOff", f'Back-off pulling image "{c.image}"', fp)
            st.retry(left)
            return False
        present = policy != "Always" and await self.runtime.image_present(c.image)
        if present:
            self.events.record(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{c.image}" already present on machine',
                fp,
            )
            return True
        if policy != "Never":
            self.events.record(pod, "Normal", "Pulling", f'Pulling image "{c.image}"', fp)
        started = time.monotonic()
        try:
            await self.runtime.ensure_image(c.image, policy)
        except ImageNotPresentError as exc:
            st.waiting[c.name] = ("ErrImageNeverPull", str(exc))
            self.events.record(pod, "Warning", "ErrImageNeverPull", str(exc), fp)
            st.retry(RETRY_SOON * 2)
            return False
        except ImagePullError as exc:
            st.waiting[c.name] = ("ErrImagePull", str(exc))
            self.events.record(pod, "Warning", "Failed", str(exc), fp)
            self.events.record(pod, "Warning", "Failed", "Error: ErrImagePull", fp)
            delay = self.backoff.next(key, now)
            self._image_failed_at[key] = now
            st.retry(delay)
            return False
        self._image_failed_at.pop(key, None)
        self.backoff.forget(key)
        self.events.record(
            pod,
            "Normal",
            "Pulled",
            f'Successfully pulled image "{c.image}" in {time.monotonic() - started:.3f}s',
            fp,
        )
        return True

    def _new_message_file(self, uid: str, name: str) -> str:
        """An empty, world-writable file for one container instance's
        termination message (any user the container runs as may write it)."""
        directory = self.volumes.pod_dir(uid) / "containers" / name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / secrets.token_hex(4)
        path.touch()
        os.chmod(path, 0o666)
        return str(path)

    def _mounts(self, pod: Any, c: Any, volumes: Mapping[str, VolumeSource]) -> list[Mount]:
        mounts: list[Mount] = []
        for vm in c.volume_mounts:
            src = volumes.get(vm.name)
            if src is None:
                raise ConfigError(
                    f'cannot find volume "{vm.name}" to mount into container "{c.name}"'
                )
            host = src.host_path
            if vm.sub_path:
                sub = os.path.normpath(vm.sub_path)
                if sub.startswith("..") or os.path.isabs(sub):
                    raise ConfigError(
                        f'subPath "{vm.sub_path}" must be a relative path inside the volume'
                    )
                host = os.path.join(host, sub)
                if not os.path.exists(host):
                    os.makedirs(host, 0o777, exist_ok=True)
            mounts.append(Mount(host, vm.mount_path, bool(vm.read_only or src.read_only)))
        pod_dir = self.volumes.pod_dir(pod.metadata.uid)
        taken = {m.container_path for m in mounts}
        if "/etc/hosts" not in taken:
            mounts.append(Mount(str(pod_dir / "etc-hosts"), "/etc/hosts"))
        if "/etc/resolv.conf" not in taken:
            mounts.append(Mount(str(pod_dir / "resolv.conf"), "/etc/resolv.conf"))
        return mounts

    async def resolve_env(self, pod: Any, c: Any, pod_ip: str) -> dict[str, str]:
        ns = pod.metadata.namespace
        env: dict[str, str] = {}
        cache: dict[tuple[str, str], dict[str, str] | None] = {}

        async def source(kind: str, name: str) -> dict[str, str] | None:
            if (kind, name) not in cache:
                try:
                    obj = await self.client.get(kind, name, ns)
                except NotFoundError:
                    cache[(kind, name)] = None
                except ApiError as exc:
                    raise ConfigError(f'{kind.lower()} "{name}": {exc.message}') from None
                else:
                    if kind == "ConfigMap":
                        data = dict(obj.data)
                        data.update(
                            {
                                k: bytes(v).decode(errors="replace")
                                for k, v in obj.binary_data.items()
                            }
                        )
                    else:
                        data = {k: v.decode(errors="replace") for k, v in secret_data(obj).items()}
                    cache[(kind, name)] = data
            return cache[(kind, name)]

        for ef in c.env_from:
            if ef.HasField("config_map_ref"):
                kind, ref = "ConfigMap", ef.config_map_ref
            elif ef.HasField("secret_ref"):
                kind, ref = "Secret", ef.secret_ref
            else:
                continue
            data = await source(kind, ref.name)
            if data is None:
                if ref.optional:
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.name}" not found')
            for key, value in data.items():
                name = ef.prefix + key
                if _ENV_NAME.match(name):
                    env[name] = value
        for e in c.env:
            if not e.HasField("value_from"):
                env[e.name] = expand(e.value, env)
                continue
            vf = e.value_from
            if vf.HasField("config_map_key_ref") or vf.HasField("secret_key_ref"):
                if vf.HasField("config_map_key_ref"):
                    kind, sel = "ConfigMap", vf.config_map_key_ref
                else:
                    kind, sel = "Secret", vf.secret_key_ref
                data = await source(kind, sel.name)
                if data is None:
                    if sel.optional:
                        continue
                    raise ConfigError(f'{kind.lower()} "{sel.name}" not found')
                if sel.key not in data:
                    if sel.optional:
                        continue
                    raise ConfigError(f"couldn't find key {sel.key} in {kind} {ns}/{sel.name}")
                env[e.name] = data[sel.key]
            elif vf.HasField("field_ref"):
                env[e.name] = field_value(pod, vf.field_ref.field_path, pod_ip, self.node_ip)
            elif vf.HasField("resource_field_ref"):
                env[e.name] = resource_value(
                    pod, c, vf.resource_field_ref, self.node_cpus, self.node_memory
                )
            else:
                raise ConfigError(f'env "{e.name}": unsupported valueFrom')
        return env

    async def _kill_container(
        self,
        pod: Any,
        info: ContainerInfo,
        message: str,
        *,
        grace: float | None = None,
        run_pre_stop: bool = True,
    ) -> None:
        specs = {c.name: c for c in (*pod.spec.containers, *pod.spec.init_containers)}
        spec = specs.get(info.name)
        if grace is None:
            grace = float(_grace(pod))
            if spec is not None and "liveness" in message and spec.HasField("liveness_probe"):
                lp = spec.liveness_probe
                if lp.HasField("termination_grace_period_seconds"):
                    grace = float(lp.termination_grace_period_seconds)
        fp = field_path(spec, info.type) if spec is not None else ""
        self.events.record(
            pod, "Normal", "Killing", message or f"Stopping container {info.name}", fp
        )
        started = time.monotonic()
        if (
            run_pre_stop
            and spec is not None
            and spec.lifecycle.HasField("pre_stop")
            and info.state == ContainerState.RUNNING
            and grace > 0
        ):
            pod_ip = self._pod_ip(pod) or ""
            try:
                outcome = await asyncio.wait_for(
                    run_handler(
                        spec.lifecycle.pre_stop,
                        runtime=self.runtime,
                        container_id=info.id,
                        container=spec,
                        pod_ip=pod_ip,
                        timeout=grace,
                    ),
                    grace,
                )
                if not outcome.ok:
                    self.events.record(
                        pod,
                        "Warning",
                        "FailedPreStopHook",
                        f"PreStopHook failed: {outcome.message}",
                        fp,
                    )
            except TimeoutError:
                self.events.record(
                    pod,
                    "Warning",
                    "FailedPreStopHook",
                    f"PreStopHook did not finish within the {grace:g}s grace period",
                    fp,
                )
        remaining = max(float(MIN_KILL_GRACE), grace - (time.monotonic() - started))
        await self.runtime.stop_container(info.id, remaining)

    # -- termination ---------------------------------------------------------------------

    async def kill_pod(self, pod: Any, grace: int | None = None) -> None:
        """Stop the pod (preStop, SIGTERM, grace, SIGKILL), release its network and
        volumes and, if it is being deleted, delete its object with grace 0. A
        deleted pod first leaves its Services' endpoints (endpoints_gate), within
        its grace period."""
        uid = pod.metadata.uid
        if grace is None:
            m = pod.metadata
            grace = (
                m.deletion_grace_period_seconds
                if m.HasField("deletion_grace_period_seconds")
                else _grace(pod)
            )
        containers = await self.runtime.list_containers(uid)
        running = [
            c for c in containers if c.type != "sandbox" and c.state == ContainerState.RUNNING
        ]
        left = float(grace)
        if running and pod.metadata.deletion_timestamp and self.endpoints_gate is not None:
            # Out of every Service first, then the grace period: the signal must not
            # reach a server the proxies still send new connections to.
            pod_ip = self._pod_ip(pod) or pod.status.pod_ip
            left -= await self.endpoints_gate.wait_out_of_service(pod, pod_ip, left)
        if running:
            await asyncio.gather(
                *(
                    self._kill_container(pod, c, f"Stopping container {c.name}", grace=left)
                    for c in running
                ),
                return_exceptions=True,
            )
        for sb in containers:
            if sb.type == "sandbox" and sb.state == ContainerState.RUNNING:
                await self._stop_sandbox(pod, sb)
        if not pod.spec.host_network:
            with contextlib.suppress(Exception):
                await self.network.teardown(uid, None)
        self.probes.remove_pod(uid)
        if pod.metadata.deletion_timestamp:
            try:
                await self.volumes.teardown(uid)
            except OSError as exc:
                log.warning("volumes of pod %s: %s", pod.metadata.name, exc)
            try:
                await self.client.delete(
                    "Pod",
                    pod.metadata.name,
                    pod.metadata.namespace,
                    grace_period=0,
                    precondition_uid=uid,
                )
            except (NotFoundError, ConflictError):
                pass
        else:
            if containers:
                containers = await self.runtime.list_containers(uid)
            await self._report(pod, containers, None, _SyncState({}))

    async def remove_pod(self, uid: str, pod: Any | None = None) -> None:
        """The pod is gone from the API (or unknown): stop and remove everything of it."""
        containers = await self.runtime.list_containers(uid)
        running = [c for c in containers if c.state == ContainerState.RUNNING]
        if pod is not None and running:
            await self.kill_pod_containers_only(pod)
        elif running:
            await asyncio.gather(
                *(
                    self.runtime.stop_container(c.id, MIN_KILL_GRACE)
                    for c in running
                    if c.type != "sandbox"
                ),
                return_exceptions=True,
            )
        sandboxes = [c for c in containers if c.type == "sandbox"]
        host_network = (
            pod.spec.host_network
            if pod is not None
            else bool(sandboxes) and all(_host_network(c) for c in sandboxes)
        )
        if not host_network:
            with contextlib.suppress(Exception):
                await self.network.teardown(uid, None)
        for c in containers:
            if c.type == "sandbox" and c.state == ContainerState.RUNNING:
                await self.runtime.stop_container(c.id, MIN_KILL_GRACE)
        for c in containers:
            try:
                await self.runtime.remove_container(c.id)
            except Exception as exc:
                log.warning("removing container %s: %s", c.id[:12], exc)
        self.probes.remove_pod(uid)
        try:
            await self.volumes.teardown(uid)
        except OSError as exc:
            log.warning("volumes of pod %s: %s", uid, exc)
        self.backoff.forget(uid + "/")
        self.backoff.forget("image/" + uid + "/")
        self._last_status.pop(uid, None)
        self._messages.pop(uid, None)
        self._volume_warnings.pop(uid, None)
        for key in [k for k in self._image_failed_at if k.startswith("image/" + uid + "/")]:
            del self._image_failed_at[key]

    async def kill_pod_containers_only(self, pod: Any) -> None:
        m = pod.metadata
        grace = (
            m.deletion_grace_period_seconds
            if m.HasField("deletion_grace_period_seconds")
            else _grace(pod)
        )
        containers = await self.runtime.list_containers(m.uid)
        await asyncio.gather(
            *(
                self._kill_container(pod, c, f"Stopping container {c.name}", grace=float(grace))
                for c in containers
                if c.type != "sandbox" and c.state == ContainerState.RUNNING
            ),
            return_exceptions=True,
        )

    def forget(self, uid: str) -> None:
        self._last_status.pop(uid, None)


def _pod_label(pod: Any) -> str:
    m = pod.metadata
    return f"{m.name}_{m.namespace}({m.uid})"


def _field_path_of(pod: Any, name: str) -> str:
    for c in pod.spec.init_containers:
        if c.name == name:
            return field_path(c, "init")
    for c in pod.spec.containers:
        if c.name == name:
            return field_path(c, "app")
    return ""


def _host_network(sandbox: ContainerInfo) -> bool:
    return sandbox.labels.get(LABEL_HOST_NETWORK) == "true"


def _uses_downward_volumes(pod: Any) -> bool:
    return any(v.HasField("downward_api") or v.HasField("projected") for v in pod.spec.volumes)


def _grace(pod: Any) -> int:
    spec = pod.spec
    if spec.HasField("termination_grace_period_seconds"):
        return int(spec.termination_grace_period_seconds)
    return DEFAULT_GRACE
