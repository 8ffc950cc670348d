"""The node agent: wires the node's parts together and keeps them running.

register Node -> heartbeat Lease -> wait for the node's pod CIDR -> pod
network -> kubelet (pods as Docker containers) -> usage collector and agent
API (logs/exec/stats) -> renew the node certificate before it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.join import needs_renewal, renew
from agent.node import NodeReporter, machine_facts
from orchestrator.client.client import Client
from orchestrator.client.config import ConfigFile

log = logging.getLogger(__name__)
# The cluster-wide pod range: traffic within it is not masqueraded.
CLUSTER_CIDR = "10.244.0.0/16"


@dataclass
class AgentConfig:
    data_dir: Path
    docker_host: str
    node_ip: str
    node_name: str = ""
    pause_image: str = "busybox:1.36"
    listen_port: int = 10250
    heartbeat_interval: float = 10.0
    renew_check_interval: float = 3600.0
    stats_interval: float = 10.0
    overlay_backend: str = "vxlan"  # "vxlan", "host-gw" or "none"
    vxlan_vni: int = 1
    vxlan_port: int = 8472
    overlay_resync_interval: float = 10.0
    # Where the cluster DNS forwards names outside the cluster (None: refuse them).
    dns_upstream_resolv: str | None = "/etc/resolv.conf"
    proxy_mode: str = "nftables"  # or "iptables"; "ipvs" is refused where the kernel lacks it
    iptables_backend: str = ""  # "" = the system's; "legacy" for thousands of Services


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.conf_path = config.data_dir / "agent.conf"
        conf = ConfigFile.load(self.conf_path)
        self.connection = conf.connection()
        self.node_name = config.node_name or conf.current_context.removeprefix("system:node:")
        self.client = Client(self.connection)
        self._tasks: list[asyncio.Task[Any]] = []
        self._stoppers: list[Any] = []
        self.stats: Any = None

    async def start(self) -> None:
        from agent.runtime.docker import DockerRuntime

        cfg = self.config
        runtime = DockerRuntime(cfg.docker_host)
        reporter = NodeReporter(
            self.client,
            self.node_name,
            cfg.node_ip,
            machine_facts(cfg.data_dir),
            runtime_version=runtime.version,
            images=runtime.list_images,
            heartbeat_interval=cfg.heartbeat_interval,
            agent_port=cfg.listen_port,
        )
        await reporter.register()
        self._tasks.append(asyncio.create_task(reporter.run(), name="node-reporter"))
        self._tasks.append(asyncio.create_task(self._renew_loop(), name="cert-renewal"))
        pod_cidr = await self._wait_for_pod_cidr()
        overlay = await self._overlay(pod_cidr, reporter)
        network = await self._pod_network(
            pod_cidr,
            overlay.pod_mtu if overlay else 1500,
            overlay.encapsulation_udp_port if overlay else None,
        )
        self._stoppers.append(await self._service_proxy())
        self._stoppers.append(await self._cluster_dns())
        kubelet = await self._kubelet(runtime, network)
        self._stoppers.append(kubelet)
        self.stats = self._stats_collector()
        self._stoppers.append(self.stats)
        server = await self._agent_server()
        if server is not None:
            self._stoppers.append(server)
        log.info("agent for node %s is up (pod CIDR %s)", self.node_name, pod_cidr)

    async def _wait_for_pod_cidr(self) -> str:
        """The control plane's node IPAM controller assigns it after registration."""
        delay = 0.2
        while True:
            node = await self.client.get("Node", self.node_name)
            if node.spec.pod_cidr:
                return str(node.spec.pod_cidr)
            log.info("waiting for node %s to be given a pod CIDR", self.node_name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _overlay(self, pod_cidr: str, reporter: NodeReporter) -> Any:
        """Routes to every other node's pods (VXLAN or host-gw), set up before the
        pod network because pods get the overlay's smaller MTU."""
        cfg = self.config
        if cfg.overlay_backend == "none":
            return None
        from agent.network.overlay import OverlaySyncer, make_overlay
        from orchestrator.client.informer import Informer

        overlay = make_overlay(
            cfg.overlay_backend,
            self.node_name,
            pod_cidr,
            cfg.node_ip,
            vni=cfg.vxlan_vni,
            port=cfg.vxlan_port,
        )
        await overlay.setup()
        await reporter.annotate(overlay.node_annotations())
        nodes = Informer(self.client, "Node")
        syncer = OverlaySyncer(overlay, nodes.list, interval=cfg.overlay_resync_interval)
        nodes.add_handler(syncer.on_node_event)
        nodes.start()
        await nodes.synced.wait()
        syncer.start()
        self._stoppers.append(nodes)
        self._stoppers.append(syncer)  # stop() runs in reverse: the syncer goes first
        return overlay

    async def _service_proxy(self) -> Any:
        """Service rules (iptables); ProxyModeUnavailable stops the agent with the reason."""
        from agent.network.proxy import ServiceProxy

        proxy = ServiceProxy(
            self.client,
            self.node_name,
            cluster_cidr=CLUSTER_CIDR,
            mode=self.config.proxy_mode,
            iptables_backend=self.config.iptables_backend,
        )
        await proxy.start()
        return proxy

    async def _cluster_dns(self) -> Any:
        """The node-local DNS server pods reach at 10.96.0.10."""
        from agent.network.dns.cluster import ClusterDNS

        # No <ip>.<ns>.pod names: they need every pod of the cluster, and the
        # node authorizer (as Kubernetes') lets a node read only its own pods.
        dns = ClusterDNS(
            self.client, upstream_resolv=self.config.dns_upstream_resolv, pod_records=False
        )
        await dns.start()
        return dns

    async def _pod_network(self, pod_cidr: str, mtu: int, untracked_udp_port: int | None) -> Any:
        from agent.network.bridge import BridgeNetwork
        from agent.network.hostports import HostPorts
        from agent.network.proxy.nftables import NftCommands, nft_available

        # hostPorts are nftables DNAT rules (CNI portmap's job); without nft the
        # kubelet says so on each pod that asks for one.
        hostports = HostPorts(NftCommands()) if nft_available() else None
        network = BridgeNetwork(
            pod_cidr,
            self.config.data_dir / "network",
            mtu=mtu,
            cluster_cidr=CLUSTER_CIDR,
            hostports=hostports,
            untracked_udp_port=untracked_udp_port,
        )
        await network.ensure_bridge()
        return network

    async def _kubelet(self, runtime: Any, network: Any) -> Any:
        from agent.kubelet import Kubelet

        kubelet = Kubelet(
            self.client,
            runtime,
            network,
            self.node_name,
            self.config.node_ip,
            self.config.data_dir,
            pause_image=self.config.pause_image,
        )
        await kubelet.start()
        return kubelet

    def _stats_collector(self) -> Any:
        from agent.stats import DockerStatsSource, StatsCollector

        collector = StatsCollector(
            DockerStatsSource(self.config.docker_host), interval=self.config.stats_interval
        )
        collector.start()
        return collector

    async def _agent_server(self) -> Any:
        try:
            from agent.server import start_agent_server
        except ImportError:
            log.warning("the agent API (logs/exec) is not available in this build")
            return None
        return await start_agent_server(self)

    async def _renew_loop(self) -> None:
        """Renew the node certificate once 80% of its life has passed."""
        while True:
            await asyncio.sleep(self.config.renew_check_interval)
            try:
                if needs_renewal(self.connection.cert_pem):
                    await renew(self.config.data_dir, self.node_name)
                    self.connection = ConfigFile.load(self.conf_path).connection()
                    await self.client.reconnect(self.connection)
                    log.info("node certificate renewed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("certificate renewal failed, will retry: %s", exc)

    async def stop(self) -> None:
        for part in reversed(self._stoppers):
            with contextlib.suppress(Exception):
                await part.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()
