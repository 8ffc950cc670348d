"""The Service proxy's sync loop in nftables mode, against a fake nft: full
then incremental transactions, failures keep the previous state, UDP
conntrack flushes, mode selection."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agent.network.proxy.fake import FakeConntrack
from agent.network.proxy.nft_rules import SERVICES, Existing, NftRuleset, svc_chain
from agent.network.proxy.nftables import NftError
from agent.network.proxy.proxier import MODES, ServiceProxy
from tests.unit.test_proxy_proxier import FakeInformer, eps, sp, svc

pytestmark = pytest.mark.unit


class FakeNft:
    """Keeps the names of our chains and sets the way nft -f would: all of a
    transaction or none of it."""

    def __init__(self) -> None:
        self.chains: set[str] = set()
        self.sets: set[str] = set()
        self.texts: list[str] = []
        self.listings = 0
        self.fail_on: str | None = None

    async def apply(self, text: str) -> None:
        self.texts.append(text)
        chains, sets = set(self.chains), set(self.sets)
        for n, line in enumerate(text.split("\n"), 1):
            if self.fail_on is not None and self.fail_on in line:
                raise NftError("syntax error (fake)", n, line)
            words = line.split()
            if line.startswith("add chain ip orch-proxy "):
                chains.add(words[4])
            elif line.startswith("delete chain ip orch-proxy "):
                chains.remove(words[4])  # KeyError: deleting what is not there
            elif line.startswith("add set ip orch-proxy aff-"):
                sets.add(words[4])
            elif line.startswith("delete set ip orch-proxy "):
                sets.remove(words[4])
        self.chains, self.sets = chains, sets

    async def existing(self) -> Existing:
        self.listings += 1
        own = frozenset(c for c in self.chains if c.startswith(("svc-", "ext-", "sep-")))
        return Existing(chains=own, sets=frozenset(self.sets), table=bool(self.chains))


def make(**kw: Any) -> tuple[ServiceProxy, FakeNft, FakeConntrack]:
    nft, ct = FakeNft(), FakeConntrack()
    proxy = ServiceProxy(
        None,
        "node-a",
        cluster_cidr="10.244.0.0/16",
        mode="nftables",
        nft=nft,
        conntrack=ct,
        informer_factory=FakeInformer,
        min_sync_interval=0.01,
        **kw,
    )
    return proxy, nft, ct


def test_modes() -> None:
    assert MODES == ("iptables", "nftables", "ipvs")
    with pytest.raises(ValueError, match="nftables"):
        ServiceProxy(None, "n", cluster_cidr="10.244.0.0/16", mode="nft")


async def test_first_sync_is_full_then_incremental() -> None:
    proxy, nft, _ = make()
    proxy.on_service("ADDED", svc("web", "10.96.0.20"))
    proxy.on_endpoints("ADDED", eps("web", "10.244.1.2"))
    proxy.on_service("ADDED", svc("api", "10.96.0.21"))
    proxy.on_endpoints("ADDED", eps("api", "10.244.1.3"))
    assert await proxy.sync()
    assert proxy.last_sync is not None and proxy.last_sync.full
    assert nft.listings == 1 and nft.texts[-1].startswith("add table ip orch-proxy")
    assert svc_chain(sp("web", "10.96.0.20")) in nft.chains

    proxy.on_endpoints("MODIFIED", eps("web", "10.244.1.2", "10.244.1.4"))
    assert await proxy.sync()
    assert not proxy.last_sync.full and proxy.last_sync.chains_written == 1
    assert nft.listings == 1  # an incremental sync lists nothing
    assert svc_chain(sp("api", "10.96.0.21")) not in nft.texts[-1]

    proxy.on_service("DELETED", svc("web", "10.96.0.20"))
    assert await proxy.sync()
    assert svc_chain(sp("web", "10.96.0.20")) not in nft.chains


async def test_failure_keeps_state_logs_the_line_and_retries_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, nft, _ = make()
    proxy.on_service("ADDED", svc("web", "10.96.0.20"))
    proxy.on_endpoints("ADDED", eps("web", "10.244.1.2"))
    assert await proxy.sync()
    chains = set(nft.chains)

    def inject(rs: NftRuleset) -> None:
        rs.fixed[SERVICES].append("bogus statement")

    proxy.render_hook = inject
    nft.fail_on = "bogus"
    proxy.on_service("ADDED", svc("api", "10.96.0.21"))
    with caplog.at_level(logging.ERROR):
        assert not await proxy.sync()
    assert "previous rules kept" in caplog.text and "bogus statement" in caplog.text
    assert nft.chains == chains and proxy.failures == 1

    proxy.render_hook = None
    nft.fail_on = None
    assert await proxy.sync()
    assert proxy.last_sync is not None and proxy.last_sync.full  # after a failure: full
    assert nft.listings == 2 and proxy.failures == 0


async def test_udp_endpoint_removal_flushes_conntrack() -> None:
    proxy, _, ct = make()
    proxy.on_service("ADDED", svc("dns", "10.96.0.10", port=53, protocol="UDP"))
    proxy.on_endpoints("ADDED", eps("dns", "10.244.1.2", port=53, protocol="UDP"))
    assert await proxy.sync()
    proxy.on_endpoints("MODIFIED", eps("dns", "10.244.1.3", port=53, protocol="UDP"))
    assert await proxy.sync()
    assert ("-p", "udp", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.1.2") in ct.deleted


async def test_affinity_sets_survive_full_resyncs() -> None:
    proxy, nft, _ = make()
    service = svc("sticky", "10.96.0.30")
    service.spec.session_affinity = "ClientIP"
    service.spec.session_affinity_config.client_ip.timeout_seconds = 60
    proxy.on_service("ADDED", service)
    proxy.on_endpoints("ADDED", eps("sticky", "10.244.1.2"))
    assert await proxy.sync()
    assert len(nft.sets) == 1
    assert await proxy.sync(full=True)
    assert "add set ip orch-proxy aff-" not in nft.texts[-1]  # already there: kept as is
    assert "flush set ip orch-proxy aff-" not in nft.texts[-1]
    proxy.on_service("DELETED", service)
    assert await proxy.sync()
    assert nft.sets == set()
