"""The local cluster's infrastructure, for real: namespaces, LAN, registry, control
plane and per-node dockerd, brought up and torn down by deploy.local.cluster.

Agents are started but not required to succeed here (that is the e2e tier's job).
The tests run in file order against one cluster; the last one takes it down and
checks that nothing is left, and the fixture takes it down again regardless.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import cluster, dockerd, images, netns, procs
from deploy.local.cluster import UpResult
from deploy.local.state import ProcessRecord, load_state

pytestmark = [pytest.mark.node, pytest.mark.timeout(240)]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, dockerd)"
    for tool in ("dockerd", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/bin/docker-registry").exists():
        return "docker-registry is not installed (Debian package docker-registry)"
    if not Path("/bin/busybox").exists():
        return "busybox-static is not installed"
    return None


if _why_not():
    pytest.skip(_why_not() or "", allow_module_level=True)

NAME = "t" + secrets.token_hex(3)


class Cluster:
    def __init__(self, result: UpResult, config: Path) -> None:
        self.result = result
        self.layout = result.layout
        self.config = config
        self.processes: list[ProcessRecord] = list(result.state.processes.values())


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    config = tmp_path_factory.mktemp("orch-config") / "config"
    try:
        result = cluster.up(NAME, 2, config_path=config, wait_for_nodes=False)
        yield Cluster(result, config)
    finally:
        cluster.down(NAME, config_path=config)


def test_up_records_what_it_made(local_cluster: Cluster) -> None:
    lay = local_cluster.layout
    st = local_cluster.result.state
    assert set(st.namespaces) == {
        lay.lan_netns,
        lay.cp_netns,
        "oc-" + NAME + "-n1",
        "oc-" + NAME + "-n2",
    }
    assert st.links == [lay.host_link]
    assert {"registry", "apiserver", "dockerd:n1", "dockerd:n2", "agent:n1", "agent:n2"} <= set(
        st.processes
    )
    for role in ("registry", "apiserver", "dockerd:n1", "dockerd:n2"):
        assert procs.is_alive(st.processes[role]), role
    assert lay.state_file.exists()
    summaries = {s.name: s for s in cluster.list_clusters()}
    assert summaries[NAME].api_server == lay.api_server
    assert summaries[NAME].nodes == 2


def test_lan_reaches_the_apiserver_from_a_node(local_cluster: Cluster) -> None:
    lay = local_cluster.layout
    n1 = lay.node(1)
    assert netns.tcp_connects(n1.netns, lay.cp_ip, 6443)
    assert netns.tcp_connects(n1.netns, lay.lan_ip, 5000)  # the registry


def test_nodes_have_no_way_off_the_machine(local_cluster: Cluster) -> None:
    for node in local_cluster.layout.all_nodes():
        routes = netns.run(["ip", "-n", node.netns, "-4", "route", "show"])
        assert "default" not in routes, routes
        assert (
            netns.run(netns.nsenter(node.netns, ["cat", "/proc/sys/net/ipv4/ip_forward"])).strip()
            == "1"
        )


def test_apiserver_answers_the_host_through_the_admin_context(local_cluster: Cluster) -> None:
    from orchestrator.client.client import Client
    from orchestrator.client.config import ConfigFile

    conf = ConfigFile.load(local_cluster.config)
    assert conf.current_context == NAME
    conn = conf.connection(NAME)
    assert conn.server == local_cluster.layout.api_server

    async def whoami() -> tuple[str, list[str]]:
        async with Client(conn, timeout=10) as c:
            v = await c.version()
            assert v.version
            return str(v.user), list(v.groups)

    user, groups = asyncio.run(whoami())
    assert "system:masters" in groups, (user, groups)


def test_each_node_pulls_busybox_through_the_mirror_and_runs_it(local_cluster: Cluster) -> None:
    import docker

    for node in local_cluster.layout.all_nodes():
        client = docker.DockerClient(base_url=node.docker_host, version="auto", timeout=60)
        try:
            assert client.ping()
            # Node 1 built the image; remove its copies so it, too, pulls from the registry.
            for tag in ("busybox:1.36", "busybox:latest"):
                try:
                    client.images.remove(tag, force=True)
                except docker.errors.ImageNotFound:
                    pass
            client.images.pull("busybox", tag="1.36")
            out = client.containers.run(
                "busybox:1.36", ["echo", "ok"], network_mode="none", remove=True
            )
            assert out == b"ok\n"
        finally:
            client.close()


def test_image_load_from_a_tarball_reaches_every_node(
    local_cluster: Cluster, tmp_path: Path
) -> None:
    import docker

    lay = local_cluster.layout
    tar = tmp_path / "box.tar"
    images.save_image(lay.node(1).docker_host, "busybox:1.36", tar)
    pushed = cluster.load_image(NAME, "tools/box:v1", from_tar=tar)
    assert pushed == [f"{lay.registry}/tools/box:v1"]
    client = docker.DockerClient(base_url=lay.node(2).docker_host, version="auto", timeout=60)
    try:
        client.images.pull("tools/box", tag="v1")  # through node 2's registry mirror
        out = client.containers.run(
            "tools/box:v1", ["echo", "ok"], network_mode="none", remove=True
        )
        assert out == b"ok\n"
    finally:
        client.close()


def test_second_up_changes_nothing_that_runs(local_cluster: Cluster) -> None:
    again = cluster.up(NAME, 2, config_path=local_cluster.config, wait_for_nodes=False)
    # Agents may be restarted (they are not required to work here); nothing else is.
    assert [c for c in again.changed if not c.startswith("process agent:")] == []
    for role in ("registry", "apiserver", "dockerd:n1", "dockerd:n2"):
        assert again.state.processes[role] == local_cluster.result.state.processes[role]


# Processes the runtime tests below started or saw (PID, start time): `down` must end them.
_runtime_procs: list[tuple[int, int]] = []


def _note(pid: int) -> None:
    st = procs.start_time(pid)
    if st is not None:
        _runtime_procs.append((pid, st))


def _run_sleeper(docker_host: str, name: str) -> str:
    import docker

    client = docker.DockerClient(base_url=docker_host, version="auto", timeout=60)
    try:
        c = client.containers.run(
            "busybox:1.36", ["sleep", "3600"], name=name, network_mode="none", detach=True
        )
        return str(c.id)
    finally:
        client.close()


def _container_state(docker_host: str, cid: str) -> str:
    import docker

    client = docker.APIClient(base_url=docker_host, version="auto", timeout=60)
    try:
        return str(client.inspect_container(cid)["State"]["Status"])
    finally:
        client.close()


def test_killed_dockerd_comes_back_on_the_same_data_root(local_cluster: Cluster) -> None:
    lay = local_cluster.layout
    node = lay.node(1)
    cid = _run_sleeper(node.docker_host, "survivor")
    old = cluster.dockerd_pid(NAME, 1)
    old_containerd = dockerd.node_containerds(node)
    assert old_containerd, "dockerd runs a containerd of its own"
    # A crash. This process started that dockerd, so until someone reaps it, it stays
    # a zombie whose /proc entry makes a new dockerd refuse its pidfile.
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and dockerd.ping(node.docker_host, timeout=0.5):
        time.sleep(0.1)
    assert not dockerd.ping(node.docker_host)
    assert node.docker_pidfile.exists(), "a killed dockerd leaves its pidfile"

    rec = cluster.start_node_runtime(NAME, 1)
    _note(rec.pid)
    assert rec.pid != old and procs.is_alive(rec)
    assert load_state(NAME).processes["dockerd:n1"] == rec  # type: ignore[union-attr]
    assert procs.start_time(old) is None, "the killed dockerd was reaped"
    assert procs.read_pidfile(node.docker_pidfile) == rec.pid
    # dockerd has no live-restore: it stopped the container when it came back; the
    # container itself, on the same data root, is there for the agent to act on.
    assert _container_state(node.docker_host, cid) == "exited"
    for pid in dockerd.node_containerds(node):
        _note(pid)
        assert pid not in old_containerd
    # Nothing to do when it runs: the same process comes back.
    assert cluster.start_node_runtime(NAME, 1) == rec


def test_containerd_that_outlived_its_dockerd_is_stopped(local_cluster: Cluster) -> None:
    """If dockerd's containerd survives it (the parent-death signal is per thread),
    it keeps the node's containerd socket and pidfile; a new dockerd would "reuse" it
    and hang. The restart stops it first."""
    node = local_cluster.layout.node(1)
    cluster.stop_node_runtime(NAME, 1, kill=True)
    assert dockerd.running_dockerd(node) is None
    assert dockerd.node_containerds(node) == []
    # What a surviving containerd looks like: serving the node's config, named by
    # the pidfile dockerd reads.
    orphan = procs.start(
        "containerd-orphan",
        ["containerd", "--config", str(dockerd.containerd_config(node))],
        node.dir / "orphan-containerd.log",
        netns_path=netns.path(node.netns),
        netns=node.netns,
    )
    _note(orphan.pid)
    dockerd.containerd_pidfile(node).write_text(str(orphan.pid))
    sock = dockerd.containerd_dir(node) / "containerd.sock"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not sock.exists():
        time.sleep(0.1)
    assert procs.is_alive(orphan) and sock.exists(), procs.log_tail(orphan.log)
    assert dockerd.node_containerds(node) == [orphan.pid]

    rec = cluster.start_node_runtime(NAME, 1)
    _note(rec.pid)
    assert not procs.is_alive(orphan)
    assert dockerd.ping(node.docker_host)
    mine = dockerd.node_containerds(node)
    assert len(mine) == 1 and mine[0] != orphan.pid
    assert f"PPid:\t{rec.pid}\n" in Path(f"/proc/{mine[0]}/status").read_text()


def test_stopped_dockerd_takes_its_containerd_and_comes_back(local_cluster: Cluster) -> None:
    node = local_cluster.layout.node(2)
    cid = _run_sleeper(node.docker_host, "stopped")
    stopped = cluster.stop_node_runtime(NAME, 2)
    assert stopped, "something was running"
    assert not dockerd.ping(node.docker_host)
    assert dockerd.running_dockerd(node) is None
    assert dockerd.node_containerds(node) == []
    with pytest.raises(cluster.ClusterError, match="no running dockerd"):
        cluster.dockerd_pid(NAME, 2)
    rec = cluster.start_node_runtime(NAME, 2)
    _note(rec.pid)
    assert cluster.dockerd_pid(NAME, 2) == rec.pid
    assert _container_state(node.docker_host, cid) == "exited"
    with pytest.raises(cluster.ClusterError, match="has no node 3"):
        cluster.start_node_runtime(NAME, 3)


def test_down_leaves_nothing_behind(local_cluster: Cluster) -> None:
    lay = local_cluster.layout
    state = load_state(NAME)
    recorded = list(state.processes.values()) if state else []
    assert cluster.down(NAME, config_path=local_cluster.config)
    assert [ns for ns in netns.list_all() if ns.startswith(f"oc-{NAME}-")] == []
    for rec in [*recorded, *local_cluster.processes]:
        assert not procs.is_alive(rec), rec.role
    for pid, started in _runtime_procs:
        assert procs.start_time(pid) != started, f"PID {pid} outlived down"
    assert not lay.state_dir.exists()
    assert not lay.run_dir.exists()
    assert not netns.link_exists(lay.host_link)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(lay.state_dir) not in mounts and str(lay.run_dir) not in mounts
    from orchestrator.client.config import ConfigFile

    assert NAME not in ConfigFile.load(local_cluster.config).context_names()
    # And again: safe to repeat.
    assert not cluster.down(NAME, config_path=local_cluster.config)
