"""The node's Service proxy: Services and Endpoints in, iptables rules out.

kube-proxy's loop: informers keep the Services and Endpoints cached and mark
the state dirty; a single sync task renders the whole ruleset and applies it
in one iptables-restore. Syncs are debounced (at most one per
min_sync_interval, so a burst of changes is one restore), incremental (only
the chains that changed are written) and, every full_resync_interval and
after any failure, full (every chain written, stale ones found through
iptables-save and removed, the jumps from the built-in chains re-checked),
which repairs whatever someone else changed underneath us.

Mode "nftables" is the same loop with nft_rules.py/nftables.py in place of
rules.py/iptables.py: one `nft -f` transaction per sync into our own table.

A failed restore changes nothing: the kernel keeps the previous rules, the
error is logged with the offending line and its Service, and a full sync is
retried with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.network.proxy.conntrack import Conntrack, ConntrackTool, stale_udp_filters
from agent.network.proxy.iptables import Iptables, IptablesCommands, IptablesError, RestoreError
from agent.network.proxy.ipvs import ProxyModeUnavailable, check_ipvs
from agent.network.proxy.model import Endpoint, ServicePort, ready_endpoints, service_ports
from agent.network.proxy.nft_rules import NftRuleset
from agent.network.proxy.nft_rules import describe_line as describe_nft_line
from agent.network.proxy.nftables import (
    Nft,
    NftablesBackend,
    NftCommands,
    NftError,
    nft_available,
)
from agent.network.proxy.rules import (
    JUMPS,
    Renderer,
    Ruleset,
    build_restore,
    describe_line,
    parse_own_chains,
)

log = logging.getLogger(__name__)

MODES = ("iptables", "nftables", "ipvs")


@dataclass
class SyncStats:
    full: bool
    seconds: float
    render_seconds: float
    chains_written: int
    restore_bytes: int


def _key(obj: Any) -> str:
    return f"{obj.metadata.namespace}/{obj.metadata.name}"


class ServiceProxy:
    """client: an orchestrator Client (for the informers); node_name: for logs.
    cluster_cidr: pod traffic from inside it is not masqueraded.
    node_netns: None in the agent (it runs in the node's namespace); a netns
    name in tests. iptables_backend: "" (the system's iptables), "nft" or
    "legacy" (see IptablesCommands). mode "nftables": one `nft -f` transaction
    per sync into our own table (nft_rules.py), for systems whose iptables is
    iptables-nft, which loads thousands of chains in quadratic time.
    iptables/nft/conntrack/informer_factory: seams for tests.
    render_hook: called with each rendered Ruleset (NftRuleset in nftables
    mode) before it is applied (the top-level chains' lists, `fixed` in
    nftables mode, are fresh each sync and may be edited; tests use it to
    inject a bad rule)."""

    def __init__(
        self,
        client: Any,
        node_name: str,
        *,
        cluster_cidr: str,
        mode: str = "iptables",
        min_sync_interval: float = 0.25,
        full_resync_interval: float = 60.0,
        node_netns: str | None = None,
        iptables_backend: str = "",
        iptables: Iptables | None = None,
        nft: Nft | None = None,
        conntrack: Conntrack | None = None,
        informer_factory: Callable[..., Any] | None = None,
        render_hook: Callable[[Any], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}: use one of {', '.join(MODES)}")
        self.client = client
        self.node_name = node_name
        self.mode = mode
        self.cluster_cidr = cluster_cidr
        self.node_netns = node_netns
        self.min_sync_interval = min_sync_interval
        self.full_resync_interval = full_resync_interval
        self.iptables: Iptables = iptables or IptablesCommands(
            netns=node_netns, backend=iptables_backend
        )
        if conntrack is None and ConntrackTool.available():
            conntrack = ConntrackTool(netns=node_netns)
        self.conntrack = conntrack
        self.render_hook = render_hook
        self._nft: NftablesBackend | None = None
        if mode == "nftables":
            self._nft = NftablesBackend(nft or NftCommands(netns=node_netns), cluster_cidr)
        self._informer_factory = informer_factory
        self._renderer = Renderer(cluster_cidr)
        self._ports: dict[str, tuple[ServicePort, ...]] = {}
        self._endpoints: dict[str, dict[tuple[str, str], tuple[Endpoint, ...]]] = {}
        self._applied: Ruleset | None = None
        self._applied_ports: dict[ServicePort, tuple[Endpoint, ...]] = {}
        self._need_full = True
        self._changed = asyncio.Event()
        self._version = 0  # bumped by every informer event
        self._applied_version = -1
        self._applied_cond = asyncio.Condition()
        self._informers: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        # One sync at a time: a forced sync (tests, benchmarks) racing the loop's
        # could read the kernel's state while the other rewrites it.
        self._sync_lock = asyncio.Lock()
        self.last_sync: SyncStats | None = None
        self.last_full_sync: SyncStats | None = None
        self.failures = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the informers and the sync loop; returns at once (the first
        sync follows the informers' initial lists). ProxyModeUnavailable if the
        mode cannot run on this node."""
        if self.mode == "ipvs":
            await asyncio.to_thread(check_ipvs)  # raises: see ipvs.py
        if self._nft is not None and isinstance(self._nft.nft, NftCommands) and not nft_available():
            raise ProxyModeUnavailable(
                "nftables mode needs nft(8) (Debian package nftables); use --proxy-mode iptables"
            )
        if not self.conntrack_available:
            log.warning(
                "conntrack(8) is not installed: stale UDP flows to removed endpoints "
                "will not be flushed (install the conntrack package)"
            )
        factory = self._informer_factory
        if factory is None:
            from orchestrator.client.informer import Informer

            factory = Informer
        services = factory(self.client, "Service")
        endpoints = factory(self.client, "Endpoints")
        services.add_handler(self.on_service)
        endpoints.add_handler(self.on_endpoints)
        self._informers = [services, endpoints]
        for inf in self._informers:
            inf.start()
        self._task = asyncio.create_task(self._run(), name="service-proxy")

    async def stop(self) -> None:
        """Stop syncing. The rules stay: Services keep working while the agent
        restarts, and the next start's full sync brings them up to date."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for inf in self._informers:
            await inf.stop()

    @property
    def conntrack_available(self) -> bool:
        return self.conntrack is not None

    # -- informer events ---------------------------------------------------------

    def on_service(self, type_: str, svc: Any, _old: Any = None) -> None:
        key = _key(svc)
        ports = () if type_ == "DELETED" else service_ports(svc)
        if ports:
            self._ports[key] = ports
        elif self._ports.pop(key, None) is None:
            return  # headless or unproxied before and after: nothing to do
        self._mark_changed()

    def on_endpoints(self, type_: str, ep: Any, _old: Any = None) -> None:
        key = _key(ep)
        if type_ == "DELETED":
            self._endpoints.pop(key, None)
        else:
            self._endpoints[key] = ready_endpoints(ep)
        self._mark_changed()

    def _mark_changed(self) -> None:
        self._version += 1
        self._changed.set()

    async def wait_applied(self, timeout: float = 10.0) -> None:
        """Until every change reported so far is in the kernel's rules."""
        want = self._version

        async def reached() -> None:
            async with self._applied_cond:
                await self._applied_cond.wait_for(lambda: self._applied_version >= want)

        await asyncio.wait_for(reached(), timeout)

    # -- syncing -----------------------------------------------------------------

    def desired(self) -> dict[ServicePort, tuple[Endpoint, ...]]:
        out: dict[ServicePort, tuple[Endpoint, ...]] = {}
        for key, ports in self._ports.items():
            eps = self._endpoints.get(key, {})
            for sp in ports:
                out[sp] = eps.get((sp.port_name, sp.protocol), ())
        return out

    async def sync(self, *, full: bool = False) -> bool:
        """One sync; True if the rules were applied. Never raises for an
        iptables failure: it is logged and the next sync is a full one."""
        async with self._sync_lock:
            return await self._sync_once(full=full)

    async def _sync_once(self, *, full: bool) -> bool:
        if self._nft is not None:
            return await self._sync_nft(self._nft, full=full)
        full = full or self._need_full or self._applied is None
        version = self._version
        started = time.monotonic()
        ports = self.desired()
        ruleset = self._renderer.render(ports)
        if self.render_hook is not None:
            self.render_hook(ruleset)
        rendered = time.monotonic()
        try:
            if full:
                existing = parse_own_chains(await self.iptables.save())
                text, written = build_restore(ruleset, None, existing)
            else:
                assert self._applied is not None
                text, written = build_restore(ruleset, self._applied, self._applied.own_chains())
            await self.iptables.restore(text)
            if full:
                # After the restore: a jump needs its target chain to exist.
                for jump in JUMPS:
                    if await self.iptables.ensure_jump(jump):
                        log.info("jump to %s added to %s/%s", jump.args[-1], jump.table, jump.chain)
        except RestoreError as exc:
            self._failed()
            where = describe_line(exc.line, ruleset.owners) if exc.line_no else ""
            log.error(
                "iptables-restore failed (%s); previous rules kept%s",
                exc.message,
                f"; line {exc.line_no} ({where}): {exc.line}" if exc.line_no else "",
            )
            return False
        except IptablesError as exc:
            self._failed()
            log.error("Service proxy sync failed; previous rules kept: %s", exc)
            return False
        self._applied = ruleset
        await self._synced(ports, full, version, started, rendered - started, written, len(text))
        return True

    async def _sync_nft(self, backend: NftablesBackend, *, full: bool) -> bool:
        full = full or self._need_full or backend.applied is None
        version = self._version
        started = time.monotonic()
        ports = self.desired()
        ruleset: NftRuleset = backend.render(ports)
        if self.render_hook is not None:
            self.render_hook(ruleset)
        rendered = time.monotonic()
        try:
            written, nbytes = await backend.apply(ruleset, full=full)
        except NftError as exc:
            self._failed()
            where = describe_nft_line(exc.line, ruleset.owners) if exc.line_no else ""
            log.error(
                "nft -f failed (%s); previous rules kept%s",
                exc.message,
                f"; line {exc.line_no} ({where}): {exc.line}" if exc.line_no else "",
            )
            return False
        await self._synced(ports, full, version, started, rendered - started, written, nbytes)
        return True

    async def _synced(
        self,
        ports: dict[ServicePort, tuple[Endpoint, ...]],
        full: bool,
        version: int,
        started: float,
        render_seconds: float,
        written: int,
        nbytes: int,
    ) -> None:
        """Bookkeeping after rules were applied, whichever the backend."""
        before, self._applied_ports = self._applied_ports, ports
        self._need_full = False
        self.failures = 0
        await self._flush_conntrack(before, ports)
        stats = SyncStats(
            full=full,
            seconds=time.monotonic() - started,
            render_seconds=render_seconds,
            chains_written=written,
            restore_bytes=nbytes,
        )
        self.last_sync = stats
        if full:
            self.last_full_sync = stats
        log.debug(
            "%s sync of %d Service ports: %d chains in %.3fs (render %.3fs)",
            "full" if full else "incremental",
            len(ports),
            written,
            stats.seconds,
            stats.render_seconds,
        )
        async with self._applied_cond:
            self._applied_version = version
            self._applied_cond.notify_all()

    def _failed(self) -> None:
        self._need_full = True
        self.failures += 1

    async def _flush_conntrack(
        self,
        before: dict[ServicePort, tuple[Endpoint, ...]],
        after: dict[ServicePort, tuple[Endpoint, ...]],
    ) -> None:
        if self.conntrack is None:
            return
        for filters in stale_udp_filters(before, after):
            await self.conntrack.delete(*filters)

    async def _remove_other_mode(self) -> None:
        """A node switched between iptables and nftables mode must not keep the
        other mode's rules: both would DNAT the same Service."""
        try:
            if self._nft is not None:
                existing = parse_own_chains(await self.iptables.save())
                if any(chain.startswith(("ORCH-SVC-", "ORCH-SEP-")) for _t, chain in existing):
                    text, _ = build_restore(Renderer(self.cluster_cidr).render({}), None, existing)
                    await self.iptables.restore(text)
                    log.info("removed the Service rules left by iptables mode")
            elif nft_available():
                with contextlib.suppress(NftError):  # no table: nothing to remove
                    await NftCommands(netns=self.node_netns).remove_table()
                    log.info("removed the Service rules left by nftables mode")
        except (IptablesError, RestoreError) as exc:
            log.warning("could not remove the other proxy mode's rules: %s", exc)

    async def _run(self) -> None:
        for inf in self._informers:
            await inf.synced.wait()
        log.info("Service proxy (%s mode) on node %s: first sync", self.mode, self.node_name)
        await self._remove_other_mode()
        next_full = 0.0
        last_start = 0.0
        retry_at: float | None = None
        while True:
            now = time.monotonic()
            if retry_at is None or now >= retry_at:
                self._changed.clear()
                last_start = now
                full = now >= next_full
                try:
                    ok = await self.sync(full=full)
                except Exception:
                    log.exception("Service proxy sync failed")
                    self._failed()
                    ok = False
                if ok:
                    retry_at = None
                    if self.last_sync is not None and self.last_sync.full:
                        next_full = now + self.full_resync_interval
                else:
                    backoff = min(self.min_sync_interval * 2**self.failures, 30.0)
                    retry_at = time.monotonic() + backoff
            deadline = next_full if retry_at is None else min(next_full, retry_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            # Debounce: a burst of events within min_sync_interval is one sync.
            wait = last_start + self.min_sync_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._changed.is_set():
                retry_at = None  # a change is worth trying at once
