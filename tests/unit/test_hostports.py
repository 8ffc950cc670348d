"""hostPort mappings: which ports a pod publishes, the nftables table that
publishes them, and reading that table back after an agent restart."""

from __future__ import annotations

import pytest

from agent.network.hostports import (
    TABLE,
    HostPorts,
    PortMapping,
    parse_table,
    port_mappings,
    render,
)
from orchestrator.api import codec

pytestmark = pytest.mark.unit


def pod(ports: list[dict[str, object]], **spec: object) -> object:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "containers": [{"name": "app", "image": "busybox", "ports": ports}],
                **spec,
            },
        }
    )


def test_mappings_from_the_pod_spec() -> None:
    p = pod(
        [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "192.0.2.7"},
            {"containerPort": 443, "hostPort": 8443, "hostIP": "0.0.0.0"},
            {"containerPort": 9000},
        ]
    )
    assert port_mappings(p) == (
        PortMapping("tcp", 8080, 80),
        PortMapping("tcp", 8443, 443),
        PortMapping("udp", 53, 53, "192.0.2.7"),
    )
    # A hostNetwork pod's ports are the node's already.
    assert port_mappings(pod([{"containerPort": 80, "hostPort": 80}], hostNetwork=True)) == ()
    # IPv6 host addresses are not published (the table is IPv4).
    assert port_mappings(pod([{"containerPort": 80, "hostPort": 80, "hostIP": "::1"}])) == ()


def test_render_dnats_specific_addresses_first_and_masquerades_hairpin() -> None:
    text = render(
        {
            "uid-a": ("10.244.1.5", (PortMapping("tcp", 8080, 80),)),
            "uid-b": ("10.244.1.6", (PortMapping("udp", 53, 5353, "192.0.2.7"),)),
        }
    )
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:3] == [
        f"add table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
    ]
    dnat = [line for line in lines if " dnat to " in line]
    assert dnat == [
        'ip daddr 192.0.2.7 udp dport 53 dnat to 10.244.1.6:5353 comment "uid-b 10.244.1.6 '
        'udp:53:5353:192.0.2.7"',
        'tcp dport 8080 dnat to 10.244.1.5:80 comment "uid-a 10.244.1.5 tcp:8080:80:"',
    ]
    assert 'ip saddr 10.244.1.5 ip daddr 10.244.1.5 ct status dnat masquerade comment "uid-a"' in (
        lines
    )
    assert lines.count("fib daddr type local jump hostports") == 2  # prerouting and output


def test_the_table_reads_back_as_written() -> None:
    pods = {
        "uid-a": ("10.244.1.5", (PortMapping("tcp", 8080, 80), PortMapping("sctp", 9, 9))),
        "uid-b": ("10.244.1.6", (PortMapping("udp", 53, 5353, "192.0.2.7"),)),
    }
    # nft lists rules as it stores them; the comments carry everything.
    listed = render(pods).replace("dnat to", "dnat ip to")
    assert parse_table(listed) == {
        "uid-a": ("10.244.1.5", (PortMapping("sctp", 9, 9), PortMapping("tcp", 8080, 80))),
        "uid-b": pods["uid-b"],
    }
    assert parse_table("") == {}


class FakeNft:
    def __init__(self, kernel: str = "") -> None:
        self.kernel = kernel
        self.applied: list[str] = []
        self.refuse = False

    async def apply(self, text: str) -> None:
        if self.refuse:
            raise RuntimeError("nft refused")
        self.applied.append(text)
        self.kernel = text

    async def table_text(self, table: str) -> str:
        assert table == TABLE
        return self.kernel


async def test_set_and_remove_rewrite_only_on_change() -> None:
    nft = FakeNft()
    hp = HostPorts(nft)
    web = (PortMapping("tcp", 8080, 80),)
    await hp.set_pod("uid-a", "10.244.1.5", web)
    await hp.set_pod("uid-a", "10.244.1.5", web)  # the same: nothing to write
    assert len(nft.applied) == 1
    await hp.remove_pod("uid-unknown")
    assert len(nft.applied) == 1
    await hp.remove_pod("uid-a")
    assert len(nft.applied) == 2 and await hp.mappings() == {}


async def test_a_restarted_agent_keeps_what_the_kernel_has() -> None:
    before = render({"uid-a": ("10.244.1.5", (PortMapping("tcp", 8080, 80),))})
    nft = FakeNft(kernel=before)
    hp = HostPorts(nft)
    await hp.set_pod("uid-b", "10.244.1.6", (PortMapping("tcp", 9090, 90),))
    assert set(parse_table(nft.kernel)) == {"uid-a", "uid-b"}


async def test_a_refused_write_changes_nothing() -> None:
    nft = FakeNft()
    hp = HostPorts(nft)
    nft.refuse = True
    with pytest.raises(RuntimeError):
        await hp.set_pod("uid-a", "10.244.1.5", (PortMapping("tcp", 8080, 80),))
    assert await hp.mappings() == {}
