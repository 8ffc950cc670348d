"""Host-local IPAM over a node's pod CIDR."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.network.bridge import host_veth_name
from agent.network.hostfw import HostFirewall
from agent.network.ipam import HostLocalIPAM, IPAMError, PoolExhaustedError

pytestmark = pytest.mark.unit


def test_gateway_is_first_and_pods_start_at_two(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    assert ipam.gateway == "10.244.3.1"
    assert ipam.prefix_len == 24
    assert ipam.size == 253
    assert ipam.allocate("a") == "10.244.3.2"
    assert ipam.allocate("b") == "10.244.3.3"


def test_allocate_is_idempotent_per_pod(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    first = ipam.allocate("a")
    assert ipam.allocate("a") == first
    assert ipam.allocations() == {"a": first}
    assert (tmp_path / first).read_text() == "a"


def test_release_frees_the_address(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/28", tmp_path)  # .2 to .14: 13 addresses
    ips = [ipam.allocate(f"p{i}") for i in range(13)]
    assert ips[0] == "10.244.3.2" and ips[-1] == "10.244.3.14"
    assert ipam.release("p4") == "10.244.3.6"
    assert not (tmp_path / "10.244.3.6").exists()
    assert ipam.get("p4") is None
    assert ipam.release("p4") is None
    assert ipam.allocate("new") == "10.244.3.6"


def test_release_does_not_reuse_at_once(tmp_path: Path) -> None:
    """Round-robin from the last reservation, as CNI host-local does."""
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    assert ipam.allocate("a") == "10.244.3.2"
    ipam.release("a")
    assert ipam.allocate("b") == "10.244.3.3"


def test_round_robin_wraps_and_skips_taken(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/29", tmp_path)  # .2 to .6
    for uid in "abcde":
        ipam.allocate(uid)
    ipam.release("b")  # .3
    assert ipam.allocate("f") == "10.244.3.3"


def test_never_network_gateway_or_broadcast(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    ips = {ipam.allocate(f"p{i}") for i in range(253)}
    assert len(ips) == 253
    assert not ips & {"10.244.3.0", "10.244.3.1", "10.244.3.255"}


def test_exhaustion_is_a_clear_error(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/30", tmp_path)  # only .2
    assert ipam.allocate("a") == "10.244.3.2"
    with pytest.raises(PoolExhaustedError, match=r"10\.244\.3\.0/30"):
        ipam.allocate("b")
    assert ipam.get("b") is None
    assert ipam.allocate("a") == "10.244.3.2"  # the owner still gets its own


def test_allocations_survive_a_restart(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    a, b = ipam.allocate("a"), ipam.allocate("b")
    ipam.release("a")

    again = HostLocalIPAM("10.244.3.0/24", tmp_path)
    assert again.get("a") is None
    assert again.get("b") == b
    assert again.allocate("b") == b
    c = again.allocate("c")
    assert c not in (a, b), "the round-robin position survives too"


def test_stale_records_are_dropped_on_load(tmp_path: Path) -> None:
    (tmp_path / "10.244.9.5").write_text("old-cidr")  # a previous pod CIDR
    (tmp_path / "10.244.3.7").write_text("")  # a crash mid-claim
    (tmp_path / "10.244.3.8").write_text("dup")
    (tmp_path / "10.244.3.9").write_text("dup")
    (tmp_path / "not-an-ip").write_text("x")
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    assert ipam.allocations() == {"dup": "10.244.3.8"}
    assert not (tmp_path / "10.244.9.5").exists()
    assert not (tmp_path / "10.244.3.7").exists()
    assert not (tmp_path / "10.244.3.9").exists()
    assert (tmp_path / "not-an-ip").exists()


def test_a_claim_on_disk_is_never_taken(tmp_path: Path) -> None:
    """Another writer's file that we have not loaded still blocks the address."""
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    (tmp_path / "10.244.3.2").write_text("someone-else")
    assert ipam.allocate("a") == "10.244.3.3"
    ipam.release("someone-else")  # not ours to remove
    assert (tmp_path / "10.244.3.2").exists()


def test_concurrent_allocations_are_distinct(tmp_path: Path) -> None:
    ipam = HostLocalIPAM("10.244.3.0/24", tmp_path)
    got: list[str] = []
    lock = threading.Lock()

    def grab(i: int) -> None:
        ip = ipam.allocate(f"p{i}")
        with lock:
            got.append(ip)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 50


@pytest.mark.parametrize("cidr", ["nonsense", "10.244.3.0/31", "fd00::/64"])
def test_bad_pod_cidrs(tmp_path: Path, cidr: str) -> None:
    with pytest.raises(IPAMError):
        HostLocalIPAM(cidr, tmp_path)


def test_bad_pod_uid(tmp_path: Path) -> None:
    with pytest.raises(IPAMError):
        HostLocalIPAM("10.244.3.0/24", tmp_path).allocate("")


def test_host_veth_names_fit_ifnamsiz() -> None:
    name = host_veth_name("0b0e9a4c-5d7e-4a5e-9a53-1d2c3b4a5f60")
    assert name.startswith("veth") and len(name) == 12 and len(name) <= 15
    assert name == host_veth_name("0b0e9a4c-5d7e-4a5e-9a53-1d2c3b4a5f60")
    assert name != host_veth_name("0b0e9a4c-5d7e-4a5e-9a53-1d2c3b4a5f61")


class FakeIptables:
    """Just enough iptables to check that rules are added once, in order."""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str], list[list[str]]] = {
            ("filter", "FORWARD"): [],
            ("nat", "POSTROUTING"): [],
            ("raw", "PREROUTING"): [],
            ("raw", "OUTPUT"): [],
        }
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(cmd)
        self.calls.append(argv)
        if argv[0] == "nsenter":
            argv = argv[2:]
        if argv[0] != "iptables":
            return subprocess.CompletedProcess(argv, 0, "", "")
        args = argv[3:]  # after "iptables -w 5"
        table, op, chain, rest = args[1], args[2], args[3], args[4:]
        key = (table, chain)
        ok, out = True, ""
        if op == "-N":
            self.chains[key] = []
        elif key not in self.chains:
            ok = False
        elif op == "-S":
            out = "".join(f"-A {chain} {' '.join(r)}\n" for r in self.chains[key])
        elif op == "-C":
            ok = rest in self.chains[key]
        elif op == "-A":
            self.chains[key].append(rest)
        elif op == "-I":
            self.chains[key].insert(int(rest[0]) - 1, rest[1:])
        elif op == "-F":
            self.chains[key] = []
        elif op == "-X":
            del self.chains[key]
        elif op == "-D":
            ok = rest in self.chains[key]
            if ok:
                self.chains[key].remove(rest)
        return subprocess.CompletedProcess(argv, 0 if ok else 1, out, "" if ok else "no")


def test_firewall_rules_are_added_once_and_follow_the_cidr() -> None:
    fake = FakeIptables()
    fw = HostFirewall("10.244.3.0/24", node_netns="t-x", runner=fake)
    fw.ensure_rules()
    fw.ensure_rules()
    assert fake.calls[0][:2] == ["nsenter", "--net=/var/run/netns/t-x"]
    assert fake.chains[("filter", "FORWARD")] == [
        ["-m", "comment", "--comment", "orch pod network", "-j", "ORCH-FORWARD"]
    ]
    assert [r[:2] for r in fake.chains[("filter", "ORCH-FORWARD")]] == [
        ["-s", "10.244.3.0/24"],
        ["-d", "10.244.3.0/24"],
    ]
    assert fake.chains[("nat", "ORCH-POSTROUTING")][0][:5] == [
        "-s",
        "10.244.3.0/24",
        "!",
        "-d",
        "10.244.3.0/24",
    ]

    HostFirewall("10.244.4.0/24", runner=fake).ensure_rules()  # type: ignore[arg-type]
    assert [r[1] for r in fake.chains[("filter", "ORCH-FORWARD")]] == ["10.244.4.0/24"] * 2
    assert len(fake.chains[("filter", "FORWARD")]) == 1

    HostFirewall("10.244.4.0/24", cluster_cidr="10.244.0.0/16", runner=fake).ensure_rules()
    (masq,) = fake.chains[("nat", "ORCH-POSTROUTING")]
    assert masq[:5] == ["-s", "10.244.4.0/24", "!", "-d", "10.244.0.0/16"]

    fw.remove_rules()
    assert ("filter", "ORCH-FORWARD") not in fake.chains
    assert ("nat", "ORCH-POSTROUTING") not in fake.chains
    assert fake.chains[("filter", "FORWARD")] == []


def test_the_overlay_port_skips_conntrack_and_the_rule_goes_with_the_overlay() -> None:
    fake = FakeIptables()
    fw = HostFirewall("10.244.3.0/24", untracked_udp_port=8472, runner=fake)
    fw.ensure_rules()
    fw.ensure_rules()
    jump = ["-m", "comment", "--comment", "orch pod network", "-j", "ORCH-NOTRACK"]
    assert fake.chains[("raw", "PREROUTING")] == [jump]
    assert fake.chains[("raw", "OUTPUT")] == [jump]
    comment = ["-m", "comment", "--comment", "orch pod network"]
    assert fake.chains[("raw", "ORCH-NOTRACK")] == [
        ["-p", "udp", "--dport", "8472", *comment, "-j", "NOTRACK"]
    ]
    # Another port (the agent restarted with --vxlan-port): the old rule goes.
    HostFirewall("10.244.3.0/24", untracked_udp_port=4789, runner=fake).ensure_rules()
    assert [r[3] for r in fake.chains[("raw", "ORCH-NOTRACK")]] == ["4789"]
    # No encapsulation (host-gw): no raw chain and no jumps to it.
    HostFirewall("10.244.3.0/24", runner=fake).ensure_rules()
    assert ("raw", "ORCH-NOTRACK") not in fake.chains
    assert fake.chains[("raw", "PREROUTING")] == fake.chains[("raw", "OUTPUT")] == []
    assert len(fake.chains[("filter", "FORWARD")]) == 1  # the rest is untouched

    fw.ensure_rules()
    fw.remove_rules()
    assert ("raw", "ORCH-NOTRACK") not in fake.chains
    assert fake.chains[("raw", "PREROUTING")] == []
