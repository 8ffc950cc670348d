"""The endpoints gate: a deleted pod leaves its Services before its containers
are signalled, within its grace period. Virtual time, scripted Endpoints."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.pods.endpoints_gate import EndpointsGate, listed_ips, selects
from agent.pods.testing import make_pod
from orchestrator.api.codec import from_dict
from orchestrator.client.client import ApiError
from tests.unit.test_agent_worker import Env, simple

pytestmark = pytest.mark.unit

IP = "10.244.1.7"


def endpoints(ready: Iterable[str] = (), not_ready: Iterable[str] = (), name: str = "web") -> Any:
    return from_dict(
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": "default"},
            "subsets": [
                {
                    "addresses": [{"ip": ip} for ip in ready],
                    "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                    "ports": [{"port": 8080}],
                }
            ],
        }
    )


def service(selector: dict[str, str], name: str = "web") -> Any:
    return from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )


def web_pod() -> Any:
    return make_pod(
        {
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]},
        }
    )


class World:
    """Virtual time; the Endpoints drop the pod once `removed_at` has passed."""

    def __init__(
        self, *, removed_at: float | None = 0.0, services: list[Any] | None = None
    ) -> None:
        self.now = 100.0
        self.start = self.now
        self.removed_at = removed_at
        self.services = services if services is not None else [service({"app": "web"})]
        self.sleeps: list[float] = []
        self.lists: list[str] = []
        self.fail: ApiError | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def lister(self, kind: str, namespace: str) -> list[Any]:
        assert namespace == "default"
        self.lists.append(kind)
        if self.fail is not None:
            raise self.fail
        if kind == "Service":
            return self.services
        elapsed = self.now - self.start
        if self.removed_at is not None and elapsed >= self.removed_at:
            return [endpoints(ready=["10.244.2.3"]), endpoints(name="other")]
        return [endpoints(ready=["10.244.2.3", IP]), endpoints(name="other")]

    def gate(self, delay: float = 1.0) -> EndpointsGate:
        return EndpointsGate(
            self.lister,
            propagation_delay=delay,
            poll_interval=0.2,
            clock=self.clock,
            sleep=self.sleep,
        )


def test_listed_ips_and_selects() -> None:
    eps = [endpoints(ready=["a"], not_ready=["b"]), endpoints(ready=["c"], name="x")]
    assert listed_ips(eps, ready_only=True) == {"a", "c"}
    assert listed_ips(eps, ready_only=False) == {"a", "b", "c"}
    labels = {"app": "web", "tier": "front"}
    assert selects([service({"app": "web"})], labels)
    assert not selects([service({"app": "web", "tier": "back"})], labels)
    assert not selects([service({})], labels), "an empty selector selects nothing"


async def test_waits_until_the_pod_leaves_then_for_the_proxies() -> None:
    world = World(removed_at=0.9)
    spent = await world.gate(delay=1.0).wait_out_of_service(web_pod(), IP, 30)
    # polled every 0.2 s until the address was gone at 1.0 s, then 1 s for the proxies
    assert world.sleeps == pytest.approx([0.2] * 5 + [1.0])
    assert spent == pytest.approx(2.0)


async def test_already_removed_but_selected_still_waits_for_the_proxies() -> None:
    world = World(removed_at=0.0)
    spent = await world.gate(delay=1.5).wait_out_of_service(web_pod(), IP, 30)
    assert world.sleeps == [1.5]
    assert spent == pytest.approx(1.5)


async def test_not_ready_address_alone_needs_no_polling() -> None:
    world = World(services=[])

    async def lister(kind: str, namespace: str) -> list[Any]:
        return [endpoints(not_ready=[IP])] if kind == "Endpoints" else []

    world.lister = lister  # type: ignore[method-assign]
    spent = await world.gate(delay=1.0).wait_out_of_service(web_pod(), IP, 30)
    assert world.sleeps == [1.0]
    assert spent == pytest.approx(1.0)


async def test_no_wait_for_a_pod_that_serves_no_service() -> None:
    world = World(services=[service({"app": "db"})])
    spent = await world.gate().wait_out_of_service(web_pod(), IP, 30)
    assert world.sleeps == []
    assert spent == 0.0


async def test_no_wait_without_an_ip_or_a_grace_period() -> None:
    world = World(removed_at=None)
    assert await world.gate().wait_out_of_service(web_pod(), "", 30) == 0.0
    assert await world.gate().wait_out_of_service(web_pod(), IP, 0) == 0.0
    assert world.lists == [] and world.sleeps == []


async def test_never_waits_beyond_the_grace_period() -> None:
    world = World(removed_at=None)  # the endpoints controller never acts
    spent = await world.gate(delay=1.0).wait_out_of_service(web_pod(), IP, 3)
    assert spent == pytest.approx(3.0)
    assert sum(world.sleeps) == pytest.approx(3.0)


async def test_propagation_delay_is_cut_by_the_grace_period() -> None:
    world = World(removed_at=0.5)
    spent = await world.gate(delay=5.0).wait_out_of_service(web_pod(), IP, 2)
    assert spent == pytest.approx(2.0)
    assert world.sleeps[-1] == pytest.approx(2.0 - 0.6)


async def test_an_api_error_stops_the_wait() -> None:
    world = World(removed_at=None)
    world.fail = ApiError(grpc.StatusCode.UNAVAILABLE, "apiserver down")
    spent = await world.gate().wait_out_of_service(web_pod(), IP, 30)
    assert spent == 0.0 and world.sleeps == []


# -- in the pod syncer's kill path ------------------------------------------------------------


class RecordingGate:
    def __init__(self, env: Env, spend: float) -> None:
        self.env = env
        self.spend = spend
        self.calls: list[tuple[str, str, float, int]] = []

    async def wait_out_of_service(self, pod: Any, pod_ip: str, budget: float) -> float:
        stops = sum(1 for name, _ in self.env.runtime.calls if name == "stop")
        self.calls.append((pod.metadata.name, pod_ip, budget, stops))
        return self.spend


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


async def test_deleted_pod_leaves_its_endpoints_before_sigterm(env: Env) -> None:
    p = env.create(simple())
    await env.sync(p)
    gate = RecordingGate(env, spend=1.5)
    env.syncer.endpoints_gate = gate  # type: ignore[assignment]
    pod = await env.pod(p)
    pod.metadata.deletion_timestamp = "2026-01-01T00:00:30Z"
    pod.metadata.deletion_grace_period_seconds = 7
    ip = env.network.pod_ip(p.metadata.uid)
    assert ip
    await env.syncer.kill_pod(pod)
    assert gate.calls == [("web", ip, 7.0, 0)], "the gate runs before any container is stopped"
    stops = [args for name, args in env.runtime.calls if name == "stop"]
    assert stops[0][1] == pytest.approx(7 - 1.5, abs=0.5), "the rest of the grace period"
    assert env.client.deletes == [("Pod", "default", "web", 0)]
    # Once the containers are gone, a repeated kill does not wait again.
    await env.syncer.kill_pod(pod)
    assert len(gate.calls) == 1


async def test_no_gate_for_a_pod_that_is_not_being_deleted(env: Env) -> None:
    p = env.create(simple())
    await env.sync(p)
    gate = RecordingGate(env, spend=1.0)
    env.syncer.endpoints_gate = gate  # type: ignore[assignment]
    await env.syncer.kill_pod(await env.pod(p))
    assert gate.calls == []
    assert any(name == "stop" for name, _ in env.runtime.calls)
