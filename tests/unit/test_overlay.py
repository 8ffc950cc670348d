"""The overlay's decisions (peers, entries, order) and its reconcile loop over a
fake netlink: no root, no kernel."""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Iterable
from typing import Any

import pytest

from agent.network.overlay import (
    ANNOTATION_BACKEND,
    ANNOTATION_PORT,
    ANNOTATION_UNDERLAY_IP,
    ANNOTATION_VNI,
    ANNOTATION_VTEP_MAC,
    HostGwOverlay,
    Op,
    OverlaySyncer,
    Peer,
    SyncReport,
    VxlanOverlay,
    make_overlay,
    peers_from_nodes,
    plan,
    refuse_off_subnet,
    vtep_mac,
    vxlan_entries,
)
from agent.network.overlay_fake import FakeOverlayNetlink
from agent.network.overlay_types import (
    RTPROT_ORCH,
    Fdb,
    LinkInfo,
    Neigh,
    OverlayError,
    Route,
    Underlay,
    VxlanSpec,
)
from orchestrator.api.kinds import kind_info

pytestmark = pytest.mark.unit

DEV = "orch.vxlan"
UNDERLAY = Underlay(name="eth0", index=2, ip="198.51.100.1", network="198.51.100.0/24", mtu=1500)


def node(name: str, cidr: str = "", annotations: dict[str, str] | None = None) -> Any:
    n = kind_info("Node").new()
    n.metadata.name = name
    n.spec.pod_cidr = cidr
    n.metadata.annotations.update(annotations or {})
    return n


def vxlan_node(name: str, octet: int, **override: str) -> Any:
    """A node that has published its VXLAN overlay: 10.244.<octet>.0/24 on
    underlay 198.51.100.<octet>."""
    cidr = f"10.244.{octet}.0/24"
    annotations = {
        ANNOTATION_BACKEND: "vxlan",
        ANNOTATION_UNDERLAY_IP: f"198.51.100.{octet}",
        ANNOTATION_VTEP_MAC: vtep_mac(cidr),
        ANNOTATION_VNI: "1",
        ANNOTATION_PORT: "8472",
    }
    annotations.update(override)
    return node(name, cidr, annotations)


def hostgw_node(name: str, octet: int, underlay: str = "") -> Any:
    return node(
        name,
        f"10.244.{octet}.0/24",
        {
            ANNOTATION_BACKEND: "host-gw",
            ANNOTATION_UNDERLAY_IP: underlay or f"198.51.100.{octet}",
        },
    )


def peer_entries(octet: int) -> list[str]:
    """The three entries for the peer vxlan_node(..., octet), in adding order."""
    mac = vtep_mac(f"10.244.{octet}.0/24")
    return [
        f"neigh 10.244.{octet}.0 lladdr {mac} dev {DEV} permanent",
        f"fdb {mac} dst 198.51.100.{octet} dev {DEV} self permanent",
        f"route 10.244.{octet}.0/24 via 10.244.{octet}.0 dev {DEV} onlink",
    ]


@pytest.fixture
def fake() -> FakeOverlayNetlink:
    return FakeOverlayNetlink(UNDERLAY)


def vxlan(fake: FakeOverlayNetlink, **kw: Any) -> VxlanOverlay:
    return VxlanOverlay("node-1", "10.244.1.0/24", "198.51.100.1", netlink=fake.open, **kw)


ME = vxlan_node("node-1", 1)


# -- annotations and peers -------------------------------------------------------------


def test_vtep_mac_is_stable_and_distinct_from_the_bridge() -> None:
    assert vtep_mac("10.244.7.0/24") == "0a:58:0a:f4:07:00"
    assert vtep_mac("10.244.7.0/24") == vtep_mac("10.244.7.0/24")
    assert vtep_mac("10.244.8.0/24") != vtep_mac("10.244.7.0/24")


def test_node_annotations() -> None:
    fake = FakeOverlayNetlink(UNDERLAY)
    assert vxlan(fake, vni=7, port=4789).node_annotations() == {
        "orchestrator.io/overlay-backend": "vxlan",
        "orchestrator.io/underlay-ip": "198.51.100.1",
        "orchestrator.io/vtep-mac": "0a:58:0a:f4:01:00",
        "orchestrator.io/vxlan-vni": "7",
        "orchestrator.io/vxlan-port": "4789",
    }
    gw = HostGwOverlay("node-1", "10.244.1.0/24", "198.51.100.1", netlink=fake.open)
    assert gw.node_annotations() == {
        "orchestrator.io/overlay-backend": "host-gw",
        "orchestrator.io/underlay-ip": "198.51.100.1",
    }


def vxlan_peers(nodes: Iterable[Any]) -> Any:
    return peers_from_nodes(
        nodes,
        self_name="node-1",
        backend="vxlan",
        own_pod_cidr="10.244.1.0/24",
        own_underlay_ip="198.51.100.1",
    )


def test_peers_are_other_nodes_with_a_pod_cidr_and_a_published_overlay() -> None:
    result = vxlan_peers(
        [
            ME,
            vxlan_node("node-2", 2),
            node("fresh"),
            node("unannotated", "10.244.5.0/24"),
            hostgw_node("other-backend", 6),
            vxlan_node("bad-mac", 7, **{ANNOTATION_VTEP_MAC: "nope"}),
            vxlan_node("bad-ip", 8, **{ANNOTATION_UNDERLAY_IP: "198.51.100.x"}),
            vxlan_node("other-vni", 9, **{ANNOTATION_VNI: "2"}),
            vxlan_node("other-port", 10, **{ANNOTATION_PORT: "4789"}),
        ]
    )
    assert result.peers == {
        "node-2": Peer("node-2", "10.244.2.0/24", "198.51.100.2", vtep_mac("10.244.2.0/24"))
    }
    assert result.skipped == {
        "fresh": "it has no pod CIDR yet",
        "unannotated": "it has not published its overlay yet "
        "(no orchestrator.io/overlay-backend annotation)",
        "other-backend": "it uses the host-gw overlay backend, this node vxlan",
        "bad-mac": "its orchestrator.io/vtep-mac annotation is not a MAC address",
        "bad-ip": "its orchestrator.io/underlay-ip annotation is not an IPv4 address",
        "other-vni": "its orchestrator.io/vxlan-vni is 2, this node's 1",
        "other-port": "its orchestrator.io/vxlan-port is 4789, this node's 8472",
    }


def test_conflicting_peers_are_all_left_out() -> None:
    twin_cidr = vxlan_node("twin", 3)
    twin_cidr.spec.pod_cidr = "10.244.2.0/23"  # overlaps node-2's
    shared_mac = vxlan_node("copycat", 4, **{ANNOTATION_VTEP_MAC: vtep_mac("10.244.5.0/24")})
    result = vxlan_peers(
        [
            vxlan_node("node-2", 2),
            twin_cidr,
            vxlan_node("node-5", 5),
            shared_mac,
            vxlan_node("mine", 1, **{ANNOTATION_UNDERLAY_IP: "198.51.100.9"}),
            vxlan_node("same-host", 6, **{ANNOTATION_UNDERLAY_IP: "198.51.100.1"}),
            vxlan_node("node-7", 7),
        ]
    )
    assert sorted(result.peers) == ["node-7"]
    assert "overlaps another's (node-2, twin)" in result.skipped["node-2"]
    assert "overlaps another's (node-2, twin)" in result.skipped["twin"]
    assert result.skipped["node-5"] == (
        "its VTEP MAC 0a:58:0a:f4:05:00 is shared by copycat, node-5"
    )
    assert "copycat" in result.skipped
    assert result.skipped["mine"] == (
        "its pod CIDR 10.244.1.0/24 overlaps this node's 10.244.1.0/24"
    )
    assert result.skipped["same-host"] == "its underlay IP 198.51.100.1 is this node's"


def test_host_gw_refuses_peers_off_the_underlay_subnet() -> None:
    peers = peers_from_nodes(
        [hostgw_node("near", 2), hostgw_node("far", 3, underlay="203.0.113.3")],
        self_name="node-1",
        backend="host-gw",
        own_pod_cidr="10.244.1.0/24",
        own_underlay_ip="198.51.100.1",
    )
    result = refuse_off_subnet(peers, "198.51.100.0/24")
    assert list(result.peers) == ["near"]
    assert result.skipped["far"].startswith(
        "host-gw refuses it: its underlay IP 203.0.113.3 is not on this node's "
        "underlay subnet 198.51.100.0/24"
    )


# -- plan ------------------------------------------------------------------------------


def test_plan_adds_neigh_fdb_route_per_peer_and_removes_route_fdb_neigh() -> None:
    a = Peer("a", "10.244.2.0/24", "198.51.100.2", "0a:58:0a:f4:02:00")
    b = Peer("b", "10.244.3.0/24", "198.51.100.3", "0a:58:0a:f4:03:00")
    gone = Peer("gone", "10.244.4.0/24", "198.51.100.4", "0a:58:0a:f4:04:00")
    old = vxlan_entries([gone], DEV)
    ops = plan(old, vxlan_entries([a, b], DEV), owners=old)
    assert [(op.action, type(op.entry).__name__, op.peer) for op in ops] == [
        ("remove", "Route", "gone"),
        ("remove", "Fdb", "gone"),
        ("remove", "Neigh", "gone"),
        ("add", "Neigh", "a"),
        ("add", "Fdb", "a"),
        ("add", "Route", "a"),
        ("add", "Neigh", "b"),
        ("add", "Fdb", "b"),
        ("add", "Route", "b"),
    ]
    assert plan(vxlan_entries([a, b], DEV), vxlan_entries([a, b], DEV)) == []


def test_plan_for_a_peer_whose_vtep_changed_replaces_only_what_changed() -> None:
    before = Peer("a", "10.244.2.0/24", "198.51.100.2", "0a:58:0a:f4:02:00")
    after = Peer("a", "10.244.2.0/24", "198.51.100.22", "0a:58:0a:f4:02:99")
    ops = plan(vxlan_entries([before], DEV), vxlan_entries([after], DEV))
    assert [str(op.entry) for op in ops] == [
        f"fdb 0a:58:0a:f4:02:00 dst 198.51.100.2 dev {DEV} self permanent",
        f"neigh 10.244.2.0 lladdr 0a:58:0a:f4:02:00 dev {DEV} permanent",
        f"neigh 10.244.2.0 lladdr 0a:58:0a:f4:02:99 dev {DEV} permanent",
        f"fdb 0a:58:0a:f4:02:99 dst 198.51.100.22 dev {DEV} self permanent",
    ]
    assert [op.action for op in ops] == ["remove", "remove", "add", "add"]
    assert str(ops[0]).endswith("(for a node no longer known)")


# -- VxlanOverlay over the fake --------------------------------------------------------


async def test_setup_creates_the_device_flannel_style(fake: FakeOverlayNetlink) -> None:
    overlay = vxlan(fake)
    with pytest.raises(OverlayError, match="node-1: overlay not set up"):
        _ = overlay.pod_mtu
    await overlay.setup()
    assert overlay.pod_mtu == 1450
    link = fake.links[DEV]
    assert (link.vni, link.port, link.local, link.lower, link.learning) == (
        1,
        8472,
        "198.51.100.1",
        2,
        False,
    )
    assert (link.mac, link.mtu, link.up) == ("0a:58:0a:f4:01:00", 1450, True)
    assert link.addresses == {("10.244.1.0", 32)}
    calls = list(fake.calls)
    await overlay.setup()
    assert fake.calls == calls, "a second setup must change nothing"


async def test_sync_adds_peers_in_order_and_is_idempotent(fake: FakeOverlayNetlink) -> None:
    overlay = vxlan(fake)
    await overlay.setup()
    fake.calls.clear()
    report = await overlay.sync([ME, vxlan_node("node-2", 2), vxlan_node("node-3", 3)])
    assert report.peers == ["node-2", "node-3"]
    assert fake.calls == [f"add {e}" for e in peer_entries(2) + peer_entries(3)]
    assert not report.failed and not report.created_device

    fake.calls.clear()
    again = await overlay.sync([ME, vxlan_node("node-2", 2), vxlan_node("node-3", 3)])
    assert fake.calls == [] and again.applied == []


async def test_a_vanished_node_leaves_every_table(fake: FakeOverlayNetlink) -> None:
    overlay = vxlan(fake)
    await overlay.sync([ME, vxlan_node("node-2", 2), vxlan_node("node-3", 3)])
    fake.calls.clear()
    report = await overlay.sync([ME, vxlan_node("node-3", 3)])
    assert fake.calls == [f"remove {e}" for e in reversed(peer_entries(2))]
    assert {op.peer for op in report.applied} == {"node-2"}
    assert {str(e) for e in fake.entries} == set(peer_entries(3))


async def test_a_restarted_agent_removes_entries_of_nodes_gone_meanwhile(
    fake: FakeOverlayNetlink,
) -> None:
    await vxlan(fake).sync([ME, vxlan_node("node-2", 2), vxlan_node("node-3", 3)])
    fake.calls.clear()
    fresh = vxlan(fake)  # knows nothing of node-2
    report = await fresh.sync([ME, vxlan_node("node-3", 3)])
    assert fake.calls == [f"remove {e}" for e in reversed(peer_entries(2))]
    assert all(op.peer == "" for op in report.applied)


async def test_a_deleted_device_is_recreated_with_all_entries(fake: FakeOverlayNetlink) -> None:
    overlay = vxlan(fake)
    nodes = [ME, vxlan_node("node-2", 2)]
    await overlay.sync(nodes)
    fake.delete_link(DEV)  # an admin's `ip link del orch.vxlan`
    fake.calls.clear()
    report = await overlay.sync(nodes)
    assert report.created_device
    assert fake.calls == [
        f"add vxlan {DEV}",
        f"add address 10.244.1.0/32 dev {DEV}",
        f"set {DEV} up",
        *(f"add {e}" for e in peer_entries(2)),
    ]
    assert fake.links[DEV].mac == "0a:58:0a:f4:01:00", "the same VTEP MAC as before"


async def test_a_flushed_neighbour_is_added_back(fake: FakeOverlayNetlink) -> None:
    overlay = vxlan(fake)
    nodes = [ME, vxlan_node("node-2", 2)]
    await overlay.sync(nodes)
    (neigh,) = [e for e in fake.entries if isinstance(e, Neigh)]
    fake.entries.discard(neigh)
    fake.calls.clear()
    await overlay.sync(nodes)
    assert fake.calls == [f"add {neigh}"]


async def test_an_incompatible_device_is_recreated(fake: FakeOverlayNetlink) -> None:
    fake.add_vxlan(VxlanSpec(DEV, 9, 8472, "198.51.100.1", 2, "0a:58:0a:f4:01:00", 1450))
    fake.calls.clear()
    report = await vxlan(fake).sync([ME])
    assert report.created_device
    assert fake.calls[:2] == [f"delete link {DEV}", f"add vxlan {DEV}"]
    assert fake.links[DEV].vni == 1


async def test_a_foreign_device_with_our_name_is_refused(fake: FakeOverlayNetlink) -> None:
    fake.links[DEV] = LinkInfo(
        name=DEV, index=50, kind="bridge", mac="", mtu=1500, up=True, addresses=frozenset()
    )
    with pytest.raises(OverlayError, match=re.escape("node-1: orch.vxlan exists but is a bridge")):
        await vxlan(fake).setup()
    assert fake.links[DEV].kind == "bridge"


async def test_a_missing_underlay_is_named(fake: FakeOverlayNetlink) -> None:
    overlay = VxlanOverlay("node-1", "10.244.1.0/24", "192.0.2.99", netlink=fake.open)
    why = "node-1: no interface holds its underlay IP 192.0.2.99"
    with pytest.raises(OverlayError, match=re.escape(why)):
        await overlay.setup()


async def test_a_failing_entry_stops_that_peer_only(fake: FakeOverlayNetlink) -> None:
    overlay = vxlan(fake)
    await overlay.setup()
    mac2 = vtep_mac("10.244.2.0/24")
    fake.fail[Fdb(DEV, mac2, "198.51.100.2")] = OSError(errno.EINVAL, "Invalid argument")
    fake.calls.clear()
    report = await overlay.sync([ME, vxlan_node("node-2", 2), vxlan_node("node-3", 3)])
    assert fake.calls == [f"add {peer_entries(2)[0]}"] + [f"add {e}" for e in peer_entries(3)]
    assert list(report.failed) == ["node-2"]
    assert report.failed["node-2"].startswith(
        f"node node-1: add fdb {mac2} dst 198.51.100.2 dev {DEV} self permanent (for peer node-2): "
    )
    # Fixed: the next sync completes node-2.
    fake.fail.clear()
    fake.calls.clear()
    await overlay.sync([ME, vxlan_node("node-2", 2), vxlan_node("node-3", 3)])
    assert fake.calls == [f"add {e}" for e in peer_entries(2)[1:]]


async def test_routes_of_others_are_left_alone(fake: FakeOverlayNetlink) -> None:
    theirs = Route("eth0", "10.9.0.0/16", "198.51.100.254", onlink=False)
    fake.add_foreign_route(theirs, proto=4)
    overlay = vxlan(fake)
    await overlay.sync([ME, vxlan_node("node-2", 2)])
    await overlay.teardown()
    assert fake.entries == {theirs}
    assert DEV not in fake.links


async def test_switching_from_host_gw_removes_its_routes(fake: FakeOverlayNetlink) -> None:
    gw = HostGwOverlay("node-1", "10.244.1.0/24", "198.51.100.1", netlink=fake.open)
    await gw.sync([hostgw_node("node-2", 2)])
    fake.calls.clear()
    await vxlan(fake).sync([ME, vxlan_node("node-2", 2)])
    assert fake.calls == [
        f"add vxlan {DEV}",
        f"add address 10.244.1.0/32 dev {DEV}",
        f"set {DEV} up",
        "remove route 10.244.2.0/24 via 198.51.100.2 dev eth0",
        *(f"add {e}" for e in peer_entries(2)),
    ]


# -- HostGwOverlay ---------------------------------------------------------------------


async def test_host_gw_routes_via_peers_underlay(fake: FakeOverlayNetlink) -> None:
    fake.add_vxlan(VxlanSpec(DEV, 1, 8472, "198.51.100.1", 2, "0a:58:0a:f4:01:00", 1450))
    overlay = make_overlay("host-gw", "node-1", "10.244.1.0/24", "198.51.100.1")
    assert isinstance(overlay, HostGwOverlay)
    overlay = HostGwOverlay("node-1", "10.244.1.0/24", "198.51.100.1", netlink=fake.open)
    await overlay.setup()
    assert overlay.pod_mtu == 1500
    assert DEV not in fake.links, "a VXLAN device left from the other backend goes"
    fake.calls.clear()
    report = await overlay.sync(
        [hostgw_node("node-1", 1), hostgw_node("node-2", 2), hostgw_node("far", 3, "203.0.113.3")]
    )
    assert fake.calls == ["add route 10.244.2.0/24 via 198.51.100.2 dev eth0"]
    assert report.peers == ["node-2"] and "host-gw refuses it" in report.skipped["far"]

    fake.calls.clear()
    await overlay.sync([hostgw_node("node-1", 1)])
    assert fake.calls == ["remove route 10.244.2.0/24 via 198.51.100.2 dev eth0"]
    await overlay.sync([hostgw_node("node-2", 2)])
    await overlay.teardown()
    assert fake.routes(RTPROT_ORCH) == set()


def test_unknown_backend() -> None:
    with pytest.raises(OverlayError, match="unknown overlay backend 'gre'"):
        make_overlay("gre", "node-1", "10.244.1.0/24", "198.51.100.1")


# -- OverlaySyncer ---------------------------------------------------------------------


class RecordingOverlay:
    backend = "vxlan"
    pod_mtu = 1450

    def __init__(self, fail_first: bool = False) -> None:
        self.seen: list[list[str]] = []
        self.fail_first = fail_first
        self.called = asyncio.Event()

    def node_annotations(self) -> dict[str, str]:
        return {}

    async def setup(self) -> None:
        pass

    async def sync(self, nodes: Iterable[Any]) -> SyncReport:
        self.seen.append([n.metadata.name for n in nodes])
        self.called.set()
        if self.fail_first and len(self.seen) == 1:
            raise OverlayError("boom")
        return SyncReport(peers=self.seen[-1])

    async def teardown(self) -> None:
        pass


async def wait_for_calls(overlay: RecordingOverlay, count: int) -> None:
    async with asyncio.timeout(2):
        while len(overlay.seen) < count:
            overlay.called.clear()
            await overlay.called.wait()


async def test_syncer_runs_on_node_events_and_periodically() -> None:
    overlay = RecordingOverlay(fail_first=True)
    nodes = [node("a")]
    syncer = OverlaySyncer(overlay, lambda: nodes, interval=3600)
    syncer.start()
    try:
        await wait_for_calls(overlay, 1)  # failed: logged, the loop goes on
        nodes.append(node("b"))
        syncer.on_node_event("ADDED", nodes[-1], None)
        await wait_for_calls(overlay, 2)
        assert overlay.seen == [["a"], ["a", "b"]]
        assert syncer.last is not None and syncer.last.peers == ["a", "b"]
    finally:
        await syncer.stop()

    periodic = RecordingOverlay()
    syncer = OverlaySyncer(periodic, lambda: nodes, interval=0.01)
    syncer.start()
    try:
        await wait_for_calls(periodic, 3)  # no events: the timer alone
    finally:
        await syncer.stop()


def test_op_names_its_peer() -> None:
    op = Op("add", Neigh(DEV, "10.244.2.0", "0a:58:0a:f4:02:00"), "node-2")
    assert str(op) == (
        f"add neigh 10.244.2.0 lladdr 0a:58:0a:f4:02:00 dev {DEV} permanent (for peer node-2)"
    )
