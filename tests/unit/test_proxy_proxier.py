"""The Service proxy's sync loop against fake iptables/conntrack and fake
informers: what gets applied when, and what happens when a restore fails."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agent.network.proxy.fake import FakeConntrack, FakeIptables
from agent.network.proxy.model import Endpoint, ServicePort
from agent.network.proxy.proxier import ServiceProxy
from agent.network.proxy.rules import JUMPS, NAT, SERVICES, Ruleset, sep_chain, svc_chain
from orchestrator.api.pb import core_v1_pb2 as core

pytestmark = pytest.mark.unit


class FakeInformer:
    def __init__(self, _client: Any, kind: str) -> None:
        self.kind = kind
        self.handlers: list[Any] = []
        self.synced = asyncio.Event()

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    def start(self) -> None:
        self.synced.set()

    async def stop(self) -> None:
        return None


def svc(name: str, ip: str, *, port: int = 80, protocol: str = "TCP") -> core.Service:
    return core.Service(
        metadata={"namespace": "default", "name": name},
        spec={"cluster_ip": ip, "ports": [{"name": "p", "port": port, "protocol": protocol}]},
    )


def eps(name: str, *ips: str, port: int = 8080, protocol: str = "TCP") -> core.Endpoints:
    return core.Endpoints(
        metadata={"namespace": "default", "name": name},
        subsets=[
            {
                "addresses": [{"ip": ip} for ip in ips],
                "ports": [{"name": "p", "port": port, "protocol": protocol}],
            }
        ]
        if ips
        else [],
    )


def sp(name: str, ip: str, *, port: int = 80, protocol: str = "TCP") -> ServicePort:
    return ServicePort("default", name, "p", protocol, ip, port)


def make(**kw: Any) -> tuple[ServiceProxy, FakeIptables, FakeConntrack]:
    ipt, ct = FakeIptables(), FakeConntrack()
    proxy = ServiceProxy(
        None,
        "node-a",
        cluster_cidr="10.244.0.0/16",
        iptables=ipt,
        conntrack=ct,
        informer_factory=FakeInformer,
        min_sync_interval=0.01,
        **kw,
    )
    return proxy, ipt, ct


async def test_first_sync_is_full_and_adds_the_jumps_once() -> None:
    proxy, ipt, _ = make()
    proxy.on_service("ADDED", svc("web", "10.96.0.20"))
    proxy.on_endpoints("ADDED", eps("web", "10.244.1.2"))
    assert await proxy.sync()
    assert proxy.last_sync is not None and proxy.last_sync.full
    assert ipt.saves == 1 and ipt.jumps == list(JUMPS)
    web = sp("web", "10.96.0.20")
    assert ipt.tables[NAT][sep_chain(web, Endpoint("10.244.1.2", 8080))][-1].endswith(
        "-j DNAT --to-destination 10.244.1.2:8080"
    )
    assert await proxy.sync(full=True)
    assert ipt.jumps == list(JUMPS)  # checked again, not duplicated


async def test_incremental_sync_touches_only_the_changed_service() -> None:
    proxy, ipt, _ = make()
    for i in range(3):
        proxy.on_service("ADDED", svc(f"s{i}", f"10.96.0.{i + 1}"))
        proxy.on_endpoints("ADDED", eps(f"s{i}", "10.244.1.2", "10.244.1.3"))
    assert await proxy.sync()
    proxy.on_endpoints("MODIFIED", eps("s1", "10.244.1.2"))
    assert await proxy.sync()
    assert proxy.last_sync is not None and not proxy.last_sync.full
    text = ipt.restores[-1]
    s1, s0 = sp("s1", "10.96.0.2"), sp("s0", "10.96.0.1")
    assert f":{svc_chain(s1)} - [0:0]" in text
    assert f"-X {sep_chain(s1, Endpoint('10.244.1.3', 8080))}" in text
    assert svc_chain(s0) not in text.split(f":{SERVICES}")[0]  # not declared
    assert f":{svc_chain(s0)} " not in text
    assert ipt.saves == 1  # incremental syncs do not read the kernel's rules back
    assert sep_chain(s1, Endpoint("10.244.1.3", 8080)) not in ipt.tables[NAT]


async def test_full_sync_removes_stale_chains_left_by_an_earlier_run() -> None:
    proxy, ipt, _ = make()
    ipt.tables[NAT]["ORCH-SVC-LEFTOVERLEFTOVE"] = ["-A ORCH-SVC-LEFTOVERLEFTOVE -j ACCEPT"]
    ipt.tables[NAT]["ORCH-POSTROUTING"] = ["-A ORCH-POSTROUTING -j MASQUERADE"]  # hostfw's
    assert await proxy.sync()
    assert "ORCH-SVC-LEFTOVERLEFTOVE" not in ipt.tables[NAT]
    assert ipt.tables[NAT]["ORCH-POSTROUTING"] == ["-A ORCH-POSTROUTING -j MASQUERADE"]


async def test_failed_restore_keeps_rules_logs_the_line_and_resyncs_fully(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = "-A ORCH-SERVICES -m bogus -j ACCEPT"
    inject = {"on": False}

    def hook(rs: Ruleset) -> None:
        if inject["on"]:
            rs.tables[NAT][SERVICES].insert(0, bad)

    proxy, ipt, _ = make(render_hook=hook)
    proxy.on_service("ADDED", svc("web", "10.96.0.20"))
    proxy.on_endpoints("ADDED", eps("web", "10.244.1.2"))
    assert await proxy.sync()
    before = {t: {c: list(r) for c, r in chains.items()} for t, chains in ipt.tables.items()}

    inject["on"] = True
    ipt.fail_on = bad
    proxy.on_endpoints("MODIFIED", eps("web", "10.244.1.2", "10.244.1.3"))
    with caplog.at_level(logging.ERROR):
        assert not await proxy.sync()
    assert ipt.tables == before
    line_no = ipt.restores[-1].split("\n").index(bad) + 1
    assert f"line {line_no}" in caplog.text and bad in caplog.text

    inject["on"] = False
    saves = ipt.saves
    assert await proxy.sync()
    assert proxy.last_sync is not None and proxy.last_sync.full and ipt.saves == saves + 1


async def test_burst_of_changes_is_one_restore_and_headless_gets_nothing() -> None:
    proxy, ipt, _ = make(full_resync_interval=3600)
    await proxy.start()
    try:
        await proxy.wait_applied()
        first = len(ipt.restores)
        headless = svc("db", "None")
        proxy.on_service("ADDED", headless)
        proxy.on_endpoints("ADDED", eps("db", "10.244.1.9"))
        for i in range(20):
            proxy.on_service("ADDED", svc(f"s{i}", f"10.96.1.{i + 1}"))
        await proxy.wait_applied()
        assert len(ipt.restores) - first <= 2  # the burst, debounced
        assert not any("10.244.1.9" in r for c in ipt.tables[NAT].values() for r in c)
        assert len([r for r in ipt.tables["filter"][SERVICES] if "REJECT" in r]) == 20
    finally:
        await proxy.stop()


async def test_udp_endpoint_removal_flushes_conntrack() -> None:
    proxy, _, ct = make()
    proxy.on_service("ADDED", svc("dns", "10.96.0.10", port=53, protocol="UDP"))
    proxy.on_endpoints("ADDED", eps("dns", "10.244.1.2", "10.244.1.3", port=53, protocol="UDP"))
    assert await proxy.sync()
    proxy.on_endpoints("MODIFIED", eps("dns", "10.244.1.2", port=53, protocol="UDP"))
    assert await proxy.sync()
    assert ("-p", "udp", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.1.3") in ct.deleted


async def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown proxy mode 'userspace'"):
        make(mode="userspace")
