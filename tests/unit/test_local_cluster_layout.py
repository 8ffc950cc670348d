"""Names, addresses, paths and the state record of local clusters (deploy/local)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from deploy.local import layout as L
from deploy.local import procs
from deploy.local.state import ClusterState, ProcessRecord, StateError, list_states, load_state

pytestmark = pytest.mark.unit


def test_addresses_and_names() -> None:
    lay = L.Layout.make("demo", "192.0.2.0/24", 3)
    assert lay.lan_netns == "oc-demo-lan"
    assert lay.cp_netns == "oc-demo-cp"
    assert lay.lan_ip == "192.0.2.1"
    assert lay.registry == "192.0.2.1:5000"
    assert lay.cp_ip == "192.0.2.2"
    assert lay.api_server == "192.0.2.2:6443"
    assert lay.host_ip == "192.0.2.254"
    assert lay.host_link == "oc-demo"
    assert lay.cidr(lay.cp_ip) == "192.0.2.2/24"
    nodes = lay.all_nodes()
    assert [n.name for n in nodes] == ["demo-n1", "demo-n2", "demo-n3"]
    assert [n.netns for n in nodes] == ["oc-demo-n1", "oc-demo-n2", "oc-demo-n3"]
    assert [n.ip for n in nodes] == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert lay.netns_names() == [
        "oc-demo-lan",
        "oc-demo-cp",
        "oc-demo-n1",
        "oc-demo-n2",
        "oc-demo-n3",
    ]


def test_paths() -> None:
    lay = L.Layout.make("demo", "192.0.2.0/24", 2)
    assert lay.state_dir == Path("/var/lib/orch-local/demo")
    assert lay.state_file == Path("/var/lib/orch-local/demo/state.json")
    assert lay.cp_dir == Path("/var/lib/orch-local/demo/cp")
    assert lay.admin_conf == Path("/var/lib/orch-local/demo/cp/admin.conf")
    n2 = lay.node(2)
    assert n2.agent_dir == Path("/var/lib/orch-local/demo/nodes/n2/agent")
    assert n2.docker_data_root == Path("/var/lib/orch-local/demo/nodes/n2/docker")
    assert n2.docker_socket == Path("/run/orch-local/demo/n2/docker.sock")
    assert n2.docker_host == "unix:///run/orch-local/demo/n2/docker.sock"
    assert n2.docker_exec_root == Path("/run/orch-local/demo/n2/exec")


def test_longest_names_fit_the_kernel_limits() -> None:
    lay = L.Layout.make("a" * L.MAX_NAME, "192.0.2.0/24", L.MAX_NODES)
    assert len(lay.host_link) <= 15  # IFNAMSIZ - 1
    node = lay.node(L.MAX_NODES)
    # containerd's sockets live in the exec root; a unix socket path has 108 bytes.
    longest = node.docker_exec_root / "containerd" / "containerd.sock.ttrpc"
    assert len(str(longest)) < 100
    assert int(ipaddress.IPv4Address(node.ip).packed[-1]) < 254


@pytest.mark.parametrize("name", ["", "Demo", "-a", "a-", "a_b", "a.b", "a" * (L.MAX_NAME + 1)])
def test_bad_names(name: str) -> None:
    with pytest.raises(L.LayoutError):
        L.check_name(name)


@pytest.mark.parametrize("nodes", [0, -1, L.MAX_NODES + 1])
def test_bad_node_counts(nodes: int) -> None:
    with pytest.raises(L.LayoutError):
        L.check_nodes(nodes)


@pytest.mark.parametrize("subnet", ["192.0.2.0/23", "192.0.2.1/24", "nonsense", "fd00::/64"])
def test_bad_subnets(subnet: str) -> None:
    with pytest.raises(L.LayoutError):
        L.check_subnet(subnet)


def test_owns_netns_is_exact() -> None:
    assert L.owns_netns("a", "oc-a-lan")
    assert L.owns_netns("a", "oc-a-cp")
    assert L.owns_netns("a", "oc-a-n12")
    # Cluster "a" must never sweep cluster "a-n1"'s or "ab"'s namespaces.
    assert not L.owns_netns("a", "oc-a-n1-lan")
    assert not L.owns_netns("a", "oc-ab-lan")
    assert not L.owns_netns("a", "oc-a-n0")
    assert not L.owns_netns("a", "oc-a-")
    assert not L.owns_netns("a", "other")


def test_choose_subnet_prefers_the_default_then_skips_what_is_taken() -> None:
    assert str(L.choose_subnet([])) == "192.0.2.0/24"
    # A host whose uplink is 192.0.2.0/24 (as on some CI machines).
    taken = [ipaddress.ip_network("192.0.2.0/24")]
    assert str(L.choose_subnet(taken)) == "198.51.100.0/24"
    taken += [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/25")]
    assert str(L.choose_subnet(taken)) == "198.18.0.0/24"
    # A wide route covering a candidate rules it out too.
    taken.append(ipaddress.ip_network("198.18.0.0/16"))
    assert str(L.choose_subnet(taken)) == "198.19.0.0/24"
    assert str(L.choose_subnet([ipaddress.ip_network("fd00::/8")])) == "192.0.2.0/24"


def test_state_round_trip(tmp_path: Path) -> None:
    st = ClusterState(
        name="demo",
        subnet="198.51.100.0/24",
        nodes=2,
        state_root=str(tmp_path / "state"),
        run_root=str(tmp_path / "run"),
    )
    st.add_unique("namespaces", "oc-demo-lan")
    st.add_unique("namespaces", "oc-demo-lan")
    st.add_unique("links", "oc-demo")
    st.record_process(ProcessRecord("registry", 42, 1234, ["docker-registry"], "/x.log", "ns"))
    st.save()
    path = tmp_path / "state" / "demo" / "state.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    back = load_state("demo", tmp_path / "state")
    assert back == st
    assert back is not None and back.namespaces == ["oc-demo-lan"]
    assert back.layout.api_server == "198.51.100.2:6443"
    assert back.layout.run_dir == tmp_path / "run" / "demo"
    assert load_state("nope", tmp_path / "state") is None


def test_list_states_reports_unreadable_records(tmp_path: Path) -> None:
    ClusterState(name="good", subnet="192.0.2.0/24", nodes=1, state_root=str(tmp_path)).save()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    out = list_states(tmp_path)
    assert isinstance(out[0], tuple) and out[0][0] == "bad"
    assert isinstance(out[1], ClusterState) and out[1].name == "good"
    assert len(out) == 2
    with pytest.raises(StateError):
        ClusterState.from_json('{"name": "x", "subnet": "192.0.2.0/24", "nodes": 1, "version": 99}')


def test_process_identity_uses_the_start_time() -> None:
    me = os.getpid()
    st = procs.start_time(me)
    assert st is not None
    assert procs.is_alive(ProcessRecord("me", me, st, [], ""))
    # The same PID with another start time is a recycled PID: not ours.
    assert not procs.is_alive(ProcessRecord("me", me, st + 1, [], ""))
    assert not procs.is_alive(ProcessRecord("none", 0, 0, [], ""))


def test_clean_env_drops_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("DOCKER_HOST", "tcp://elsewhere:2375")
    env = procs.clean_env()
    assert not any(k.lower().endswith("_proxy") for k in env)
    assert "DOCKER_HOST" not in env
    assert "/usr/sbin" in env["PATH"].split(":")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(procs.REPO_ROOT)
