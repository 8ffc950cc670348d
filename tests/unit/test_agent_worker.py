"""Pod workers and the pod syncer over a fake runtime, network and API client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.pods.actions import BackOff
from agent.pods.sync import PodSyncer, render_hosts, render_resolv
from agent.pods.testing import FakeClient, FakeMounter, FakeNetwork, make_pod
from agent.pods.worker import PodWorkers
from agent.probes import ProbeManager
from agent.runtime.fake import FakeRuntime
from agent.runtime.types import ContainerState, ExecResult
from agent.volumes import VolumeManager
from orchestrator.api.codec import from_dict
from orchestrator.client.events import EventRecorder

pytestmark = pytest.mark.unit


def read(path: str) -> str:
    return Path(path).read_text()


# -- PodWorkers ------------------------------------------------------------------------------


async def test_worker_serializes_and_keeps_only_the_newest_pod() -> None:
    seen: list[str] = []
    running = 0
    overlap = False
    gate = asyncio.Event()

    async def sync(pod: Any) -> float | None:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        seen.append(pod.metadata.resource_version)
        if len(seen) == 1:
            await gate.wait()
        running -= 1
        return None

    async def kill(pod: Any) -> None:
        seen.append("kill")

    async def remove(uid: str, pod: Any) -> None:
        seen.append("remove")

    workers = PodWorkers(sync, kill, remove, resync=60)
    pod = make_pod(
        {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    pod.metadata.resource_version = "1"
    workers.update_pod(pod)
    await asyncio.sleep(0.05)
    for rv in ("2", "3", "4"):
        newer = type(pod)()
        newer.CopyFrom(pod)
        newer.metadata.resource_version = rv
        newer.metadata.annotations["change"] = rv
        workers.update_pod(newer)
    gate.set()
    await asyncio.sleep(0.1)
    assert seen == ["1", "4"], "intermediate specs are skipped"
    assert not overlap

    # A status-only update (the agent's own write coming back) wakes nobody.
    echoed = type(pod)()
    echoed.CopyFrom(newer)
    echoed.metadata.resource_version = "5"
    echoed.status.phase = "Running"
    workers.update_pod(echoed)
    await asyncio.sleep(0.05)
    assert seen == ["1", "4"]

    # A deletion is never dropped, even if an older-looking update follows.
    deleting = type(pod)()
    deleting.CopyFrom(pod)
    deleting.metadata.deletion_timestamp = "2026-01-01T00:00:00Z"
    workers.update_pod(deleting)
    workers.update_pod(pod)
    await asyncio.sleep(0.1)
    assert "kill" in seen
    assert workers.is_terminating(pod.metadata.uid)
    workers.remove_pod(pod.metadata.uid, pod)
    await workers.wait_idle(pod.metadata.uid)
    assert seen[-1] == "remove"
    assert pod.metadata.uid not in workers.known()
    await workers.stop()


async def test_worker_resyncs_on_timer_and_on_requested_delay() -> None:
    count = 0

    async def sync(pod: Any) -> float | None:
        nonlocal count
        count += 1
        return 0.05 if count < 3 else None

    async def noop(*_: Any) -> None:
        return None

    workers = PodWorkers(sync, noop, noop, resync=0.2)
    pod = make_pod(
        {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    workers.update_pod(pod)
    await asyncio.sleep(0.5)
    await workers.stop()
    assert count >= 4


async def test_worker_survives_sync_errors() -> None:
    count = 0

    async def sync(pod: Any) -> float | None:
        nonlocal count
        count += 1
        if count == 1:
            raise RuntimeError("boom")
        return None

    async def noop(*_: Any) -> None:
        return None

    workers = PodWorkers(sync, noop, noop, resync=60)
    pod = make_pod(
        {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    workers.update_pod(pod)
    await asyncio.sleep(0.05)
    workers.wake(pod.metadata.uid)
    await asyncio.sleep(0.05)
    await workers.stop()
    assert count == 2


# -- PodSyncer --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.client = FakeClient()
        self.runtime = FakeRuntime(self.clock)
        self.network = FakeNetwork()
        self.volumes = VolumeManager(tmp_path, self.client, mounter=FakeMounter())
        self.events = EventRecorder(self.client, "node-1", component="orch-agent", clock=self.clock)
        self.probes = ProbeManager(self.runtime, lambda uid: None, clock=self.clock)
        self.syncer = self.new_syncer(tmp_path)

    def new_syncer(self, tmp_path: Path) -> PodSyncer:
        return PodSyncer(
            self.client,
            self.runtime,
            self.network,
            self.volumes,
            self.probes,
            self.events,
            node_name="node-1",
            node_ip="192.0.2.11",
            root_dir=tmp_path,
            backoff=BackOff(),
            clock=self.clock,
            node_resolv_conf=str(tmp_path / "host-resolv.conf"),
        )

    def create(self, manifest: dict[str, Any]) -> Any:
        return self.client.put(make_pod(manifest))

    async def pod(self, p: Any) -> Any:
        return await self.client.get("Pod", p.metadata.name, p.metadata.namespace)

    async def sync(self, p: Any) -> tuple[Any, float | None]:
        requeue = await self.syncer.sync_pod(await self.pod(p))
        return await self.pod(p), requeue

    async def event_reasons(self) -> list[str]:
        for _ in range(100):
            if self.events._queue.empty():
                break
            await self.events.write(*self.events._queue.get_nowait())
            self.events._queue.task_done()
        return [e.reason for e in self.client.events()]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def simple(name: str = "web", restart: str = "Always", **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": restart,
            "containers": [{"name": "app", "image": "busybox:1.36", **container}],
        },
    }


async def test_pod_starts_and_reports_running(env: Env) -> None:
    p = env.create(
        simple(
            command=["sh", "-c"],
            args=["echo $(GREETING)"],
            env=[
                {"name": "GREETING", "value": "hi"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
        )
    )
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip == "10.244.9.2"
    assert pod.status.host_ip == "192.0.2.11"
    cs = pod.status.container_statuses[0]
    assert cs.ready and cs.state.running.started_at and cs.container_id.startswith("docker://")
    app = env.runtime.find(p.metadata.uid, "app")[0]
    assert app.spec.entrypoint == ["sh", "-c"] and app.spec.cmd == ["echo hi"]
    assert app.spec.env["POD"] == "web" and app.spec.env["IP"] == "10.244.9.2"
    assert app.spec.env["NODE"] == "node-1"
    mounts = {m.container_path: m.host_path for m in app.spec.mounts}
    hosts = read(mounts["/etc/hosts"])
    assert "10.244.9.2\tweb" in hosts
    resolv = read(mounts["/etc/resolv.conf"])
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "nameserver 10.96.0.10" in resolv and "options ndots:5" in resolv
    sandbox = env.runtime.find(p.metadata.uid, "POD")[0]
    assert sandbox.spec.hostname == "web"
    assert app.spec.sandbox_id == sandbox.info.id
    assert env.network.netns[p.metadata.uid] == f"/proc/{sandbox.info.pid}/ns/net"
    assert {"Created", "Started", "Pulled"} <= set(await env.event_reasons())

    # A second sync changes nothing and writes no status.
    updates = len(env.client.status_updates)
    await env.sync(p)
    assert len(env.runtime.containers) == 2
    assert len(env.client.status_updates) == updates


async def test_crashing_container_restarts_with_backoff(env: Env) -> None:
    env.runtime.exit_on_start["app"] = 1
    p = env.create(simple())
    pod, _ = await env.sync(p)
    assert pod.status.container_statuses[0].state.terminated.exit_code == 1
    env.clock.advance(1)
    pod, _ = await env.sync(p)  # first restart: immediate
    assert pod.status.container_statuses[0].restart_count == 1
    env.clock.advance(1)
    pod, requeue = await env.sync(p)
    cs = pod.status.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.last_state.terminated.exit_code == 1
    assert requeue is not None and 0 < requeue <= 10
    env.clock.advance(10)
    pod, _ = await env.sync(p)
    assert pod.status.container_statuses[0].restart_count == 2
    assert "BackOff" in await env.event_reasons()


async def test_never_policy_fails_the_pod_and_stops_the_sandbox(env: Env) -> None:
    env.runtime.exit_on_start["app"] = 3
    p = env.create(simple(restart="Never"))
    pod, _ = await env.sync(p)
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.reason == "Error"
    assert not env.runtime.running(p.metadata.uid)
    assert p.metadata.uid in env.network.teardowns
    assert pod.status.pod_ip == "10.244.9.2", "the address stays in the status"


async def test_config_errors_show_as_create_container_config_error(env: Env) -> None:
    env.client.put(
        from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "default"},
                "data": {"present": "yes"},
            }
        )
    )
    p = env.create(
        simple(
            env=[
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "present"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "missing"}}},
            ]
        )
    )
    pod, requeue = await env.sync(p)
    cs = pod.status.container_statuses[0]
    assert cs.state.waiting.reason == "CreateContainerConfigError"
    assert cs.state.waiting.message == "couldn't find key missing in ConfigMap default/cfg"
    assert requeue is not None
    assert "Failed" in await env.event_reasons()


async def test_image_pull_errors(env: Env) -> None:
    p = env.create(simple(image="registry.invalid/nope:1"))
    pod, requeue = await env.sync(p)
    assert pod.status.container_statuses[0].state.waiting.reason == "ErrImagePull"
    assert requeue == 10
    pod, _ = await env.sync(p)
    assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    never = env.create(simple("never", image="other:1", imagePullPolicy="Never"))
    pod, _ = await env.sync(never)
    assert pod.status.container_statuses[0].state.waiting.reason == "ErrImageNeverPull"


async def test_command_not_found(env: Env) -> None:
    env.runtime.fail_start["app"] = 'exec: "nope": executable file not found in $PATH'
    p = env.create(simple(command=["nope"]))
    pod, _ = await env.sync(p)
    term = pod.status.container_statuses[0].state.terminated
    assert term.reason == "ContainerCannotRun" and term.exit_code == 127
    assert "executable file not found" in term.message


async def test_liveness_failure_restarts(env: Env) -> None:
    p = env.create(simple())
    pod, _ = await env.sync(p)
    app = env.runtime.find(p.metadata.uid, "app")[0]
    env.probes._results[(p.metadata.uid, app.info.id)].unhealthy = "failed liveness probe"
    pod, requeue = await env.sync(p)
    assert requeue == 0
    pod, _ = await env.sync(p)
    assert pod.status.container_statuses[0].restart_count == 1
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 137
    assert "Killing" in await env.event_reasons()


async def test_adoption_creates_no_duplicates(env: Env, tmp_path: Path) -> None:
    p = env.create(simple())
    await env.sync(p)
    before = set(env.runtime.containers)
    restarted = env.new_syncer(tmp_path)
    await restarted.sync_pod(await env.pod(p))
    assert set(env.runtime.containers) == before


async def test_graceful_deletion_runs_pre_stop_then_deletes(env: Env) -> None:
    p = env.create(simple(lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "echo bye"]}}}))
    p.spec.termination_grace_period_seconds = 7
    env.client.put(p)
    await env.sync(p)
    execs: list[list[str]] = []
    env.runtime.exec_handler = lambda c, cmd: (execs.append(cmd), ExecResult(0, b""))[1]
    pod = await env.pod(p)
    pod.metadata.deletion_timestamp = "2026-01-01T00:00:30Z"
    pod.metadata.deletion_grace_period_seconds = 7
    await env.syncer.kill_pod(pod)
    assert execs == [["sh", "-c", "echo bye"]]
    stops = [args for name, args in env.runtime.calls if name == "stop"]
    assert stops[0][1] == pytest.approx(7, abs=0.5)
    assert env.client.deletes == [("Pod", "default", "web", 0)]
    await env.syncer.remove_pod(p.metadata.uid, pod)
    assert env.runtime.containers == {}
    assert not env.volumes.pod_dir(p.metadata.uid).exists()


async def test_init_containers_then_app(env: Env) -> None:
    manifest = simple()
    manifest["spec"]["initContainers"] = [{"name": "init", "image": "busybox:1.36"}]
    env.runtime.exit_on_start["init"] = 0
    p = env.create(manifest)
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Pending"
    assert pod.status.init_container_statuses[0].state.terminated.reason == "Completed"
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Running"
    assert [c.status for c in pod.status.conditions if c.type == "Initialized"] == ["True"]


async def test_status_update_retries_on_conflict(env: Env) -> None:
    p = env.create(simple())
    env.client.conflict_next_status_update = True
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Running"


async def test_events_are_deduplicated(env: Env) -> None:
    p = env.create(simple())
    for _ in range(3):
        await env.events.write(p, "Warning", "BackOff", "Back-off restarting failed container")
    events = [e for e in env.client.events() if e.reason == "BackOff"]
    assert len(events) == 1
    assert events[0].count == 3
    assert events[0].involved_object.uid == p.metadata.uid
    assert events[0].source.component == "orch-agent" and events[0].source.host == "node-1"
    assert events[0].metadata.name.startswith("web.")


def test_hosts_and_resolv_rendering() -> None:
    pod = make_pod(
        {
            "metadata": {"name": "db-0", "namespace": "prod"},
            "spec": {
                "hostname": "db-0",
                "subdomain": "db",
                "dnsConfig": {
                    "nameservers": ["1.1.1.1"],
                    "searches": ["example.org"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
                },
                "containers": [{"name": "c", "image": "i"}],
            },
        }
    )
    assert "10.244.1.5\tdb-0.db.prod.svc.cluster.local\tdb-0" in render_hosts(pod, "10.244.1.5")
    resolv = render_resolv(pod)
    assert resolv.splitlines() == [
        "search prod.svc.cluster.local svc.cluster.local cluster.local example.org",
        "nameserver 10.96.0.10",
        "nameserver 1.1.1.1",
        "options ndots:2 edns0",
    ]
    pod.spec.dns_policy = "Default"
    pod.spec.ClearField("dns_config")
    assert render_resolv(pod, "nameserver 192.0.2.1\nsearch lan\n") == (
        "search lan\nnameserver 192.0.2.1\n"
    )
    pod.spec.dns_policy = "None"
    pod.spec.dns_config.nameservers.append("9.9.9.9")
    assert render_resolv(pod) == "nameserver 9.9.9.9\n"


async def test_container_state_fake_controls(env: Env) -> None:
    p = env.create(simple())
    await env.sync(p)
    app = env.runtime.find(p.metadata.uid, "app")[0]
    env.runtime.exit(app.info.id, 137, oom=True)
    pod, _ = await env.sync(p)
    last = pod.status.container_statuses[0].last_state.terminated
    assert last.reason == "OOMKilled"
    assert env.runtime.containers[app.info.id].info.state == ContainerState.EXITED


async def test_runtime_down_marks_the_pod_not_ready(env: Env) -> None:
    from agent.runtime.types import RuntimeUnavailableError

    p = env.create(simple())
    pod, _ = await env.sync(p)
    assert [c.status for c in pod.status.conditions if c.type == "Ready"] == ["True"]
    env.runtime.unavailable = True
    with pytest.raises(RuntimeUnavailableError):
        await env.syncer.sync_pod(pod)
    pod = await env.pod(p)
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "ContainerRuntimeDown"
    assert not pod.status.container_statuses[0].ready
    assert "FailedSync" in await env.event_reasons()
    env.runtime.unavailable = False
    pod, _ = await env.sync(p)
    assert [c.status for c in pod.status.conditions if c.type == "Ready"] == ["True"]
