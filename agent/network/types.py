"""What the pod workers need from the node's pod network (CNI-like)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.network.hostports import PortMapping


@dataclass(frozen=True)
class PodNetworkStatus:
    ip: str
    gateway: str
    prefix_len: int


class PodNetwork(Protocol):
    # Whether setup() publishes port_mappings (hostPort) on the node.
    supports_host_ports: bool

    async def setup(
        self, pod_uid: str, netns_path: str, port_mappings: Sequence[PortMapping] = ()
    ) -> PodNetworkStatus:
        """Give the network namespace at netns_path (e.g. /proc/<pid>/ns/net of
        the pod's sandbox) an interface and an IP from the node's pod CIDR,
        and publish its host ports. Idempotent: a second call for the same pod
        returns the same address."""
        ...

    async def teardown(self, pod_uid: str, netns_path: str | None) -> None:
        """Release the pod's address, unpublish its host ports and remove its
        interfaces (netns may be gone)."""
        ...

    def pod_ip(self, pod_uid: str) -> str | None:
        """The address given to a pod, if any (survives agent restarts)."""
        ...
