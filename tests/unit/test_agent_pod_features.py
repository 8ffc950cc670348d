"""hostNetwork/hostPID/hostIPC, activeDeadlineSeconds and termination messages:
the pure decisions, then the pod syncer over the fake runtime and network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.kubelet import Kubelet
from agent.network.hostports import PortMapping
from agent.pods.actions import (
    DEADLINE_MESSAGE,
    BackOff,
    compute_pod_actions,
    deadline_left,
)
from agent.pods.status import compute_pod_status
from agent.pods.sync import (
    log_tail_message,
    read_termination_file,
    render_host_network_hosts,
    render_resolv,
)
from agent.pods.testing import FakeMounter, make_pod
from agent.runtime.docker import namespace_modes
from agent.runtime.types import (
    LABEL_TERMINATION_MESSAGE_PATH,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
)
from tests.unit.test_agent_worker import Env, simple

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.syncer.node_hosts_file = str(tmp_path / "node-hosts")
    Path(e.syncer.node_hosts_file).write_text("127.0.0.1\tlocalhost\n192.0.2.11\tnode-1\n")
    return e


def info(name: str, type_: str, state: ContainerState, **kw: Any) -> ContainerInfo:
    return ContainerInfo(
        id=kw.pop("id", f"id-{name}"),
        pod_uid="uid-p",
        pod_name="p",
        pod_namespace="default",
        name=name,
        type=type_,
        state=state,
        created_at=kw.pop("created_at", T0),
        **kw,
    )


# -- pure pieces --------------------------------------------------------------------------


def test_namespace_modes_for_host_namespaces() -> None:
    def spec(type_: str, **kw: Any) -> ContainerSpec:
        return ContainerSpec("u", "p", "ns", "c", type_, "img", sandbox_id="sb", **kw)

    assert namespace_modes(spec("sandbox")) == {"network_mode": "none", "ipc_mode": "shareable"}
    assert namespace_modes(spec("app", share_pid=True)) == {
        "network_mode": "container:sb",
        "ipc_mode": "container:sb",
        "pid_mode": "container:sb",
    }
    assert namespace_modes(spec("sandbox", host_network=True, host_pid=True, host_ipc=True)) == {
        "network_mode": "host",
        "ipc_mode": "host",
        "pid_mode": "host",
        "uts_mode": "host",
    }
    # App containers join the (host-network) sandbox but take the node's
    # hostname, and name the node's PID/IPC namespaces directly.
    assert namespace_modes(
        spec("app", host_network=True, host_pid=True, host_ipc=True, share_pid=True)
    ) == {
        "network_mode": "container:sb",
        "ipc_mode": "host",
        "pid_mode": "host",
        "uts_mode": "host",
    }


def test_host_network_hosts_file_and_dns_policy() -> None:
    pod = make_pod(
        {
            "metadata": {"name": "hn"},
            "spec": {
                "hostNetwork": True,
                "hostAliases": [{"ip": "192.0.2.50", "hostnames": ["db", "db.local"]}],
                "containers": [{"name": "a", "image": "i"}],
            },
        }
    )
    text = render_host_network_hosts(pod, "127.0.0.1\tlocalhost\n192.0.2.11\tnode-1\n")
    assert text.startswith("# Kubernetes-managed hosts file (host network).\n")
    assert "192.0.2.11\tnode-1\n" in text
    assert text.endswith("# Entries added by HostAliases.\n192.0.2.50\tdb\tdb.local\n")
    node_resolv = "nameserver 192.0.2.1\nsearch lan\n"
    # ClusterFirst on the host network falls back to the node's resolver...
    assert render_resolv(pod, node_resolv) == "search lan\nnameserver 192.0.2.1\n"
    # ...unless the pod asks for the cluster's explicitly.
    pod.spec.dns_policy = "ClusterFirstWithHostNet"
    assert "nameserver 10.96.0.10" in render_resolv(pod, node_resolv)


def test_deadline_decisions() -> None:
    pod = make_pod(
        {
            "metadata": {"name": "p", "uid": "uid-p"},
            "spec": {"activeDeadlineSeconds": 60, "containers": [{"name": "app", "image": "i"}]},
        }
    )
    assert deadline_left(pod, None, T0) is None
    assert deadline_left(pod, T0, T0 + timedelta(seconds=15)) == 45
    sandbox = info("POD", "sandbox", ContainerState.RUNNING, pid=1)
    app = info("app", "app", ContainerState.RUNNING, labels={})
    running = [sandbox, app]

    before = compute_pod_actions(pod, running, T0 + timedelta(seconds=20), BackOff(), started=T0)
    assert not before.deadline_exceeded and not before.kill
    assert before.requeue_after == 40, "a timer brings the next sync on time"

    after = compute_pod_actions(pod, running, T0 + timedelta(seconds=60), BackOff(), started=T0)
    assert after.deadline_exceeded and after.finished and after.stop_sandbox
    assert after.kill == [(app, DEADLINE_MESSAGE)]
    assert not after.wants_containers()

    no_deadline = make_pod(
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "i"}]}}
    )
    late = compute_pod_actions(no_deadline, running, T0 + timedelta(days=9), BackOff(), started=T0)
    assert not late.deadline_exceeded and late.requeue_after is None


def test_status_failed_by_deadline_and_termination_messages() -> None:
    pod = make_pod(
        {
            "metadata": {"name": "p", "uid": "uid-p"},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "app", "image": "i"}]},
        }
    )
    sandbox = info("POD", "sandbox", ContainerState.RUNNING, pid=1)
    old = info(
        "app", "app", ContainerState.EXITED, id="old", exit_code=2, created_at=T0, finished_at=T0
    )
    cur = info(
        "app",
        "app",
        ContainerState.EXITED,
        id="cur",
        exit_code=0,
        created_at=T0 + timedelta(seconds=5),
        finished_at=T0 + timedelta(seconds=9),
        restart_count=1,
    )
    messages = {"old": "first words", "cur": "last words"}
    st = compute_pod_status(pod, [sandbox, old, cur], {}, "10.0.0.1", "h", T0, messages=messages)
    cs = st.container_statuses[0]
    assert cs.state.terminated.message == "last words"
    assert cs.last_state.terminated.message == "first words"

    failed = compute_pod_status(
        pod,
        [sandbox, cur],
        {},
        "10.0.0.1",
        "h",
        T0,
        failed=("DeadlineExceeded", DEADLINE_MESSAGE),
    )
    assert failed.phase == "Failed"
    assert (failed.reason, failed.message) == ("DeadlineExceeded", DEADLINE_MESSAGE)
    # Once failed, later statuses keep the reason.
    pod.status.CopyFrom(failed)
    again = compute_pod_status(pod, [sandbox, cur], {}, None, "h", T0)
    assert (again.phase, again.reason) == ("Failed", "DeadlineExceeded")


def test_termination_file_and_log_tail_limits(tmp_path: Path) -> None:
    path = tmp_path / "msg"
    path.write_bytes(b"x" * 5000)
    assert read_termination_file(str(path)) == "x" * 4096
    assert read_termination_file(str(tmp_path / "missing")) == ""
    log = b"".join(b"line %d\n" % i for i in range(100))
    tail = log_tail_message(log)
    assert tail.startswith("line 20\n") and tail.endswith("line 99\n"), "the last 80 lines"
    long_lines = b"".join(b"%03d" % i + b"y" * 97 + b"\n" for i in range(50))
    assert len(log_tail_message(long_lines).encode()) == 2048, "at most 2 KiB of them"
    assert log_tail_message(long_lines).endswith("049" + "y" * 97 + "\n")


# -- the syncer ---------------------------------------------------------------------------


async def test_host_network_pod_uses_the_node_network(env: Env) -> None:
    p = env.create(
        {
            "metadata": {"name": "hn", "namespace": "default"},
            "spec": {
                "hostNetwork": True,
                "hostPID": True,
                "hostIPC": True,
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:1.36",
                        "ports": [{"containerPort": 8080, "hostPort": 8080}],
                        "env": [
                            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                        ],
                    }
                ],
            },
        }
    )
    uid = p.metadata.uid
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip == "192.0.2.11" == pod.status.host_ip
    assert [i.ip for i in pod.status.pod_ips] == ["192.0.2.11"]
    assert uid not in env.network.netns, "the network plugin is not called"
    sandbox = env.runtime.find(uid, "POD")[0]
    assert sandbox.spec.host_network and sandbox.spec.host_pid and sandbox.spec.host_ipc
    assert sandbox.spec.hostname == "", "the node's hostname"
    app = env.runtime.find(uid, "app")[0]
    assert app.spec.host_network and app.spec.env["IP"] == "192.0.2.11"
    mounts = {m.container_path: m.host_path for m in app.spec.mounts}
    hosts = Path(mounts["/etc/hosts"]).read_text()
    assert "192.0.2.11\tnode-1" in hosts and "host network" in hosts
    assert "HostPortNotSupported" not in await env.event_reasons()

    # A second sync keeps the node's address without asking the plugin.
    pod, _ = await env.sync(p)
    assert pod.status.pod_ip == "192.0.2.11" and uid not in env.network.netns

    await env.syncer.kill_pod(pod, grace=1)
    await env.syncer.remove_pod(uid, pod)
    assert uid not in env.network.teardowns, "no teardown for the host network"


async def test_orphaned_host_network_pod_skips_the_network_plugin(env: Env) -> None:
    p = env.create(
        {
            "metadata": {"name": "hn", "namespace": "default"},
            "spec": {"hostNetwork": True, "containers": [{"name": "app", "image": "busybox:1.36"}]},
        }
    )
    await env.sync(p)
    # The object is gone (garbage collection): the sandbox's label tells.
    await env.syncer.remove_pod(p.metadata.uid)
    assert not env.runtime.containers
    assert p.metadata.uid not in env.network.teardowns


async def test_host_ports_go_to_the_pod_network(env: Env) -> None:
    p = env.create(
        simple(
            ports=[
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "192.0.2.11"},
                {"containerPort": 9000},  # no hostPort: not published
            ]
        )
    )
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Running"
    assert env.network.host_ports[p.metadata.uid] == (
        PortMapping("tcp", 8080, 80),
        PortMapping("udp", 5353, 53, "192.0.2.11"),
    )
    assert "HostPortNotSupported" not in await env.event_reasons()
    await env.syncer.kill_pod(pod, grace=1)
    await env.syncer.remove_pod(p.metadata.uid, pod)
    assert p.metadata.uid not in env.network.host_ports


async def test_host_port_on_a_network_without_them_is_reported(env: Env) -> None:
    env.network.supports_host_ports = False
    p = env.create(simple(ports=[{"containerPort": 80, "hostPort": 8080}]))
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Running" and pod.status.pod_ip == "10.244.9.2"
    assert p.metadata.uid not in env.network.host_ports
    assert "HostPortNotSupported" in await env.event_reasons()
    warning = next(e for e in env.client.events() if e.reason == "HostPortNotSupported")
    assert "hostPort 8080" in warning.message and "container app" in warning.message


async def test_active_deadline_kills_and_fails_the_pod(env: Env) -> None:
    manifest = simple()
    manifest["spec"]["activeDeadlineSeconds"] = 30
    manifest["spec"]["terminationGracePeriodSeconds"] = 7
    p = env.create(manifest)
    uid = p.metadata.uid
    pod, requeue = await env.sync(p)
    assert pod.status.phase == "Running" and pod.status.start_time
    assert requeue == 30
    env.clock.advance(20)
    pod, requeue = await env.sync(p)
    assert requeue == 10
    env.clock.advance(10)
    pod, requeue = await env.sync(p)
    assert requeue is None
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.message == "Pod was active on the node longer than the specified deadline"
    assert not env.runtime.running(uid), "containers and sandbox are stopped"
    app = env.runtime.find(uid, "app")[0]
    stops = [
        args[1] for call, args in env.runtime.calls if call == "stop" and args[0] == app.info.id
    ]
    assert stops and 6.5 < stops[0] <= 7, "killed with the pod's grace period"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137
    assert uid in env.network.teardowns
    reasons = await env.event_reasons()
    assert "DeadlineExceeded" in reasons and "Killing" in reasons
    assert not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)

    # Nothing comes back, whatever the next syncs see.
    env.clock.advance(60)
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Failed" and pod.status.reason == "DeadlineExceeded"
    assert len(env.runtime.containers) == 2


async def test_deadline_counts_from_the_start_time(env: Env) -> None:
    manifest = simple()
    manifest["spec"]["activeDeadlineSeconds"] = 100
    p = make_pod(manifest)
    p.status.start_time = "2025-12-31T23:59:00Z"  # 60 s before the clock
    env.client.put(p)
    pod, requeue = await env.sync(p)
    assert pod.status.phase == "Running" and requeue == 40


async def test_termination_message_file_is_mounted_and_reported(env: Env) -> None:
    p = env.create(simple(restart="Always"))
    uid = p.metadata.uid
    await env.sync(p)
    app = env.runtime.find(uid, "app")[0]
    mounts = {m.container_path: m for m in app.spec.mounts}
    file = Path(mounts["/dev/termination-log"].host_path)
    assert not mounts["/dev/termination-log"].read_only
    assert file.read_text() == "" and oct(file.stat().st_mode & 0o777) == "0o666"
    assert app.info.labels[LABEL_TERMINATION_MESSAGE_PATH] == str(file)

    file.write_text("bye: " + "z" * 5000)
    env.runtime.exit(app.info.id, 3)
    pod, _ = await env.sync(p)  # the first restart is immediate
    cs = pod.status.container_statuses[0]
    assert cs.state.HasField("running")
    assert cs.last_state.terminated.exit_code == 3
    assert cs.last_state.terminated.message == ("bye: " + "z" * 5000)[:4096]

    # The restart got a file of its own; its message replaces the old one.
    second = env.runtime.find(uid, "app")[-1]
    second_file = Path(second.info.labels[LABEL_TERMINATION_MESSAGE_PATH])
    assert second_file != file and second_file.read_text() == ""
    second_file.write_text("again")
    env.runtime.exit(second.info.id, 4)
    env.clock.advance(1)
    pod, _ = await env.sync(p)
    cs = pod.status.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert (cs.last_state.terminated.exit_code, cs.last_state.terminated.message) == (4, "again")


async def test_termination_message_custom_path_and_log_fallback(env: Env) -> None:
    manifest = simple(restart="Never")
    manifest["spec"]["containers"] = [
        {
            "name": "a",
            "image": "busybox:1.36",
            "terminationMessagePath": "/tmp/why",
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
        {"name": "b", "image": "busybox:1.36", "terminationMessagePolicy": "FallbackToLogsOnError"},
        {"name": "c", "image": "busybox:1.36", "terminationMessagePolicy": "File"},
    ]
    p = env.create(manifest)
    uid = p.metadata.uid
    await env.sync(p)
    a, b, c = (env.runtime.find(uid, n)[0] for n in "abc")
    assert "/tmp/why" in {m.container_path for m in a.spec.mounts}
    for ctr in (a, b, c):
        ctr.logs = [b"%d\n" % i for i in range(100)] + [b"boom\n"]
    Path(a.info.labels[LABEL_TERMINATION_MESSAGE_PATH]).write_text("from the file")
    env.runtime.exit(a.info.id, 1)
    env.runtime.exit(b.info.id, 1)  # empty file, failed: the log's tail
    env.runtime.exit(c.info.id, 1)  # policy File: nothing
    pod, _ = await env.sync(p)
    msgs = {cs.name: cs.state.terminated.message for cs in pod.status.container_statuses}
    assert msgs["a"] == "from the file"
    assert msgs["b"].endswith("99\nboom\n") and msgs["b"].startswith("21\n")
    assert msgs["c"] == ""
    assert pod.status.phase == "Failed"


async def test_termination_message_fallback_needs_a_failure(env: Env) -> None:
    p = env.create(simple(restart="Never", terminationMessagePolicy="FallbackToLogsOnError"))
    await env.sync(p)
    app = env.runtime.find(p.metadata.uid, "app")[0]
    app.logs = [b"all good\n"]
    env.runtime.exit(app.info.id, 0)
    pod, _ = await env.sync(p)
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.message == ""


async def test_volume_mount_at_the_message_path_wins(env: Env) -> None:
    manifest = simple(volumeMounts=[{"name": "logs", "mountPath": "/dev/termination-log"}])
    manifest["spec"]["volumes"] = [{"name": "logs", "emptyDir": {}}]
    p = env.create(manifest)
    await env.sync(p)
    app = env.runtime.find(p.metadata.uid, "app")[0]
    targets = [m.container_path for m in app.spec.mounts]
    assert targets.count("/dev/termination-log") == 1
    assert LABEL_TERMINATION_MESSAGE_PATH not in app.info.labels


async def test_downward_volume_gets_the_new_pod_ip_before_containers_start(env: Env) -> None:
    manifest = simple(volumeMounts=[{"name": "info", "mountPath": "/info"}])
    manifest["metadata"]["labels"] = {"app": "web"}
    manifest["spec"]["volumes"] = [
        {
            "name": "info",
            "projected": {
                "sources": [
                    {
                        "downwardAPI": {
                            "items": [
                                {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
                                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            ]
                        }
                    },
                    {"serviceAccountToken": {"path": "token"}},
                ]
            },
        }
    ]
    p = env.create(manifest)
    await env.sync(p)
    app = env.runtime.find(p.metadata.uid, "app")[0]
    host = Path({m.container_path: m.host_path for m in app.spec.mounts}["/info"])
    assert (host / "ip").read_text() == "10.244.9.2"
    assert (host / "labels").read_text() == 'app="web"'
    assert await env.event_reasons() and "UnsupportedVolumeSource" in await env.event_reasons()

    # A label change reaches the file on the next sync; the container stays.
    current = await env.pod(p)
    current.metadata.labels["app"] = "api"
    env.client.put(current)
    await env.sync(p)
    assert (host / "labels").read_text() == 'app="api"'
    assert len(env.runtime.find(p.metadata.uid, "app")) == 1


async def test_garbage_collection_removes_old_message_files(tmp_path: Path) -> None:
    e = Env(tmp_path)
    kubelet = Kubelet(
        e.client,
        e.runtime,
        e.network,
        "node-1",
        "192.0.2.11",
        tmp_path,
        mounter=FakeMounter(),
        clock=e.clock,
        backoff=BackOff(initial=0.0),
    )
    kubelet.volumes = e.volumes
    kubelet.syncer = e.syncer
    e.syncer.backoff = BackOff(initial=0.0)
    p = e.create(simple())
    files = []
    for _ in range(3):
        await e.sync(p)
        app = e.runtime.find(p.metadata.uid, "app", running=True)[0]
        files.append(Path(app.info.labels[LABEL_TERMINATION_MESSAGE_PATH]))
        e.runtime.exit(app.info.id, 1)
        e.clock.advance(1)
    await kubelet._remove_dead(await e.runtime.list_containers(p.metadata.uid))
    # The newest dead container and its file stay; older ones go with theirs.
    assert [f.exists() for f in files] == [False, False, True]
    assert len(e.runtime.find(p.metadata.uid, "app")) == 1
