"""A joined node registers its Node and keeps its Lease, with its own
credentials (so the node authorizer is exercised, not bypassed)."""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path

import pytest

from agent.join import join
from agent.node import NODE_LEASE_NAMESPACE, NodeFacts, NodeReporter
from orchestrator.client.client import Client, ForbiddenError
from orchestrator.client.config import ConfigFile
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

FACTS = NodeFacts(
    cpus=4,
    memory_bytes=8 * 1024**3,
    ephemeral_bytes=100 * 1024**3,
    kernel="6.1.0",
    os_image="Debian GNU/Linux 12",
    architecture="amd64",
    machine_id="abc",
    boot_id="def",
)


async def _runtime_version() -> str:
    return "docker://20.10.24"


async def _images() -> list[tuple[list[str], int]]:
    return [(["busybox:1.36"], 2_000_000)]


async def joined_client(cp: ControlPlane, tmp_path: Path, node: str) -> Client:
    args = shlex.split(cp.join_command)
    server, token, ca_hash = args[2], args[4], args[6]
    creds = await join(server, token, ca_hash, node_name=node, data_dir=tmp_path / node)
    return Client(ConfigFile.load(creds.config_path).connection())


async def test_node_registers_and_heartbeats(control_plane: ControlPlane, tmp_path: Path) -> None:
    name = f"node-{secrets.token_hex(3)}"
    async with await joined_client(control_plane, tmp_path, name) as client:
        reporter = NodeReporter(
            client, name, "192.0.2.11", FACTS, runtime_version=_runtime_version, images=_images
        )
        node = await reporter.register()
        assert node.metadata.labels["kubernetes.io/hostname"] == name
        assert node.metadata.labels["kubernetes.io/arch"] == "amd64"
        assert node.status.capacity["cpu"] == "4"
        assert node.status.capacity["pods"] == "110"
        assert node.status.allocatable["cpu"] == "3900m"
        assert {c.type: c.status for c in node.status.conditions} == {
            "Ready": "True",
            "MemoryPressure": "False",
            "DiskPressure": "False",
            "PIDPressure": "False",
        }
        assert node.status.addresses[0].address == "192.0.2.11"
        assert node.status.node_info.container_runtime_version == "docker://20.10.24"
        assert list(node.status.images[0].names) == ["busybox:1.36"]
        assert node.status.daemon_endpoints.kubelet_endpoint.port == 10250

        lease = await reporter.renew_lease()
        first = lease.spec.renew_time
        lease = await reporter.renew_lease()
        assert lease.spec.holder_identity == name
        assert lease.spec.renew_time > first

        # Registering again (an agent restart) updates rather than fails.
        again = await reporter.register()
        assert again.metadata.uid == node.metadata.uid
        await reporter.update_status()

        # The node may not touch another node's Lease.
        other = await client.get("Lease", name, NODE_LEASE_NAMESPACE)
        other.metadata.name = "someone-else"
        other.metadata.resource_version = ""
        with pytest.raises(ForbiddenError):
            await client.create(other)


async def test_runtime_failure_marks_the_node_not_ready(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    name = f"node-{secrets.token_hex(3)}"

    async def broken() -> str:
        raise ConnectionError("dockerd is not answering")

    async with await joined_client(control_plane, tmp_path, name) as client:
        reporter = NodeReporter(
            client, name, "192.0.2.12", FACTS, runtime_version=broken, images=_images
        )
        node = await reporter.register()
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "False"
        assert ready.reason == "ContainerRuntimeUnhealthy"
        assert "dockerd is not answering" in ready.message
