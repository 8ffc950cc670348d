"""Every write the apiserver acknowledged survives `kill -9` of the control plane."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from orchestrator.api import codec
from orchestrator.client.client import ApiError, Client
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

WRITERS = 32


def config_map(name: str) -> object:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "durable"},
            "data": {"payload": name * 20},
        }
    )


async def write_until_killed(client: Client, acked: set[str], stop: asyncio.Event) -> None:
    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"cm-{w}-{i}"
            i += 1
            try:
                await client.create(config_map(name))  # type: ignore[arg-type]
            except (ApiError, Exception):
                return  # the server is gone: stop this writer
            acked.add(name)

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))


async def test_acknowledged_writes_survive_kill_9(fresh_control_plane: ControlPlane) -> None:
    cp = fresh_control_plane
    async with cp.client() as client:
        await client.create(
            codec.from_dict(
                {  # type: ignore[arg-type]
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": "durable"},
                }
            )
        )
    acked: set[str] = set()
    stop = asyncio.Event()
    client = Client(cp.connection(), timeout=5.0)
    try:
        writers = asyncio.create_task(write_until_killed(client, acked, stop))
        async with asyncio.timeout(30):
            while len(acked) < 300:  # well into a steady stream of group commits
                await asyncio.sleep(0.02)
        await asyncio.to_thread(cp.kill9)  # mid-stream: writes are in flight right now
        stop.set()
        async with asyncio.timeout(30):
            await writers
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    assert len(acked) >= 300

    await asyncio.to_thread(cp.start)
    async with cp.client() as client:
        stored = {cm.metadata.name for cm in (await client.list("ConfigMap", "durable")).items}
        lost = acked - stored
        assert not lost, (
            f"{len(lost)} acknowledged writes lost after kill -9, e.g. {sorted(lost)[:5]}"
        )
        # And the store is healthy afterwards: new writes and reads work.
        await client.create(config_map("after-restart"))  # type: ignore[arg-type]
        got = await client.get("ConfigMap", "after-restart", "durable")
        assert got.data["payload"].startswith("after-restart")
