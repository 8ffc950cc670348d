"""The endpoints controller keeps a Service's Endpoints in step with its pods
(the test plays the node agent: it sets pod IPs and readiness)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[tuple[Client, str]]:
    ns = f"ep-{secrets.token_hex(3)}"
    async with control_plane.client() as c:
        await c.create(
            codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        try:
            yield c, ns
        finally:
            await c.delete("Namespace", ns)


async def make_pod(c: Client, ns: str, name: str, ip: str, ready: bool, app: str = "web") -> Any:
    p = await c.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "busybox",
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            }
        )
    )
    return await set_ready(c, p, ip, ready)


async def set_ready(c: Client, p: Any, ip: str, ready: bool) -> Any:
    p.status.phase = "Running"
    p.status.pod_ip = ip
    del p.status.conditions[:]
    cond = p.status.conditions.add()
    cond.type, cond.status = "Ready", "True" if ready else "False"
    return await c.update_status(p)


async def endpoints_until(
    c: Client, ns: str, name: str, want: Callable[[Any], bool], timeout: float = 10.0
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await c.get("Endpoints", name, ns)
            if want(last):
                return last
        except NotFoundError:
            last = None
        await asyncio.sleep(0.1)
    raise AssertionError(f"Endpoints {ns}/{name} never matched; last: {last}")


def addresses(ep: Any) -> tuple[list[str], list[str]]:
    ready = sorted(a.ip for s in ep.subsets for a in s.addresses)
    not_ready = sorted(a.ip for s in ep.subsets for a in s.not_ready_addresses)
    return ready, not_ready


async def test_endpoints_follow_pods_readiness_and_deletion(api: tuple[Client, str]) -> None:
    c, ns = api
    await c.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": ns, "labels": {"tier": "front"}},
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            }
        )
    )
    a = await make_pod(c, ns, "a", "10.244.1.2", ready=True)
    await make_pod(c, ns, "b", "10.244.1.3", ready=False)
    await make_pod(c, ns, "other", "10.244.1.9", ready=True, app="db")

    ep = await endpoints_until(
        c, ns, "web", lambda e: addresses(e) == (["10.244.1.2"], ["10.244.1.3"])
    )
    assert [p.port for p in ep.subsets[0].ports] == [8080]  # the named port, resolved
    assert ep.metadata.labels["tier"] == "front"

    # b turns ready, a loses readiness.
    b = await c.get("Pod", "b", ns)
    await set_ready(c, b, "10.244.1.3", True)
    a = await c.get("Pod", "a", ns)
    await set_ready(c, a, "10.244.1.2", False)
    await endpoints_until(c, ns, "web", lambda e: addresses(e) == (["10.244.1.3"], ["10.244.1.2"]))

    # A pod being deleted (held for its node agent) leaves at once.
    await c.delete("Pod", "b", ns)
    await endpoints_until(c, ns, "web", lambda e: addresses(e) == ([], ["10.244.1.2"]))

    # The Service goes, and its Endpoints with it.
    await c.delete("Service", "web", ns)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await c.get("Endpoints", "web", ns)
        except NotFoundError:
            break
        assert asyncio.get_running_loop().time() < deadline, "Endpoints outlived their Service"
        await asyncio.sleep(0.1)


async def test_services_without_selector_keep_hand_made_endpoints(
    api: tuple[Client, str],
) -> None:
    c, ns = api
    await c.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "external", "namespace": ns},
                "spec": {"ports": [{"port": 5432}]},
            }
        )
    )
    await c.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "external", "namespace": ns},
                "subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 5432}]}],
            }
        )
    )
    await asyncio.sleep(1.0)
    ep = await c.get("Endpoints", "external", ns)
    assert addresses(ep) == (["10.0.0.5"], [])
