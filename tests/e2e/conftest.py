"""One local cluster (real namespaces, dockerd per node, agents that joined
with a bootstrap token) shared by every e2e test of the session."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client.client import Client
from orchestrator.client.config import ConfigFile

E2E_NODES = int(os.environ.get("E2E_NODES", "3"))


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "e2e tests need root (network namespaces, dockerd)"
    try:
        from deploy.local.cluster import missing_prerequisites
    except ImportError as exc:  # pragma: no cover - the package is part of the tree
        return f"deploy.local is not importable: {exc}"
    missing = missing_prerequisites()
    return f"missing prerequisites: {', '.join(missing)}" if missing else None


@dataclass
class LocalCluster:
    name: str
    config_path: Path
    result: Any  # deploy.local.cluster.UpResult

    @property
    def layout(self) -> Any:
        return self.result.layout

    def node_name(self, index: int) -> str:
        return str(self.layout.node(index).name)

    def docker_host(self, index: int) -> str:
        return str(self.layout.node(index).docker_host)

    def connection(self) -> Any:
        return ConfigFile.load(self.config_path).connection(self.name)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ORCHCONFIG"] = str(self.config_path)
        return env


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from deploy.local import cluster

    # E2E_CLUSTER_NAME with E2E_KEEP_CLUSTER=1 reuses one cluster across runs
    # (`up` is idempotent); `orchctl cluster down --name NAME` removes it.
    name = os.environ.get("E2E_CLUSTER_NAME") or f"e2e{secrets.token_hex(2)}"
    config = tmp_path_factory.mktemp("e2e") / "config"
    try:
        result = cluster.up(name, E2E_NODES, config_path=config, timeout=180)
        if not result.ok:
            logs = "\n".join(f"{n.name}: {n.error}\n{n.log}" for n in result.failed)
            pytest.fail(f"local cluster {name} came up with failed nodes:\n{logs}")
        yield LocalCluster(name, config, result)
    finally:
        if os.environ.get("E2E_KEEP_CLUSTER") != "1":  # keep it to debug a failure
            cluster.down(name, config_path=config)


@pytest.fixture
async def client(local_cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(local_cluster.connection(), timeout=30) as c:
        yield c


@pytest.fixture
async def namespace(client: Client) -> AsyncIterator[str]:
    from orchestrator.api import codec

    ns = f"e2e-{secrets.token_hex(3)}"
    await client.create(
        codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    )
    yield ns
    # Background deletion: the namespace empties itself; no need to wait here.
    await client.delete("Namespace", ns)


async def wait_for(
    predicate: Any, timeout: float = 60.0, interval: float = 0.5, what: str = "condition"
) -> Any:
    """Poll an async predicate until it returns something truthy."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    last = await predicate()
                except Exception as exc:  # transient: keep polling, report the last one
                    last = exc
                else:
                    if last:
                        return last
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}") from None
