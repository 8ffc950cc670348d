"""ResourceQuota and LimitRange on the real control plane: admission refuses
what would exceed a quota, in Kubernetes' words, and the resourcequota
controller reports status. No node agent runs: pods stay unbound, so a
delete removes them at once, and the test writes phases itself."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.api.kinds import KINDS
from orchestrator.client.client import Client, ForbiddenError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[tuple[Client, str]]:
    ns = f"rq-{secrets.token_hex(3)}"
    async with control_plane.client() as c:
        await c.create(
            codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        try:
            yield c, ns
        finally:
            await c.delete("Namespace", ns)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not true within {timeout}s; last: {last}") from None


async def create_quota(c: Client, ns: str, hard: dict[str, str], name: str = "compute") -> Any:
    return await c.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"hard": hard},
            }
        )
    )


def pod_doc(ns: str, name: str, cpu: str = "", memory: str = "") -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if cpu or memory:
        amounts = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
        resources = {"requests": amounts, "limits": amounts}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]},
    }


async def create_pod(c: Client, ns: str, name: str, cpu: str = "", memory: str = "") -> Any:
    return await c.create(codec.from_dict(pod_doc(ns, name, cpu, memory)))


async def refused(c: Client, doc: dict[str, Any]) -> str:
    with pytest.raises(ForbiddenError) as exc:
        await c.create(codec.from_dict(doc))
    return exc.value.message


async def test_quota_refuses_the_pod_that_exceeds_it_and_admits_after_a_delete(
    api: tuple[Client, str],
) -> None:
    c, ns = api
    await create_quota(c, ns, {"requests.cpu": "2", "pods": "5"})
    await create_pod(c, ns, "a", cpu="1")
    message = await refused(c, pod_doc(ns, "x", cpu="2"))
    assert message == (
        'pods "x" is forbidden: exceeded quota: compute, requested: requests.cpu=2, '
        "used: requests.cpu=1, limited: requests.cpu=2"
    )
    await c.delete("Pod", "a", ns)
    admitted = await create_pod(c, ns, "x", cpu="2")
    assert admitted.metadata.name == "x"


async def test_a_pod_that_declares_nothing_is_told_what_to_declare(
    api: tuple[Client, str],
) -> None:
    c, ns = api
    await create_quota(c, ns, {"requests.cpu": "2", "limits.cpu": "2"})
    assert await refused(c, pod_doc(ns, "bare")) == (
        'pods "bare" is forbidden: failed quota: compute: must specify limits.cpu for: app; '
        "requests.cpu for: app"
    )


async def test_finished_pods_free_their_share(api: tuple[Client, str]) -> None:
    c, ns = api
    await create_quota(c, ns, {"pods": "1", "requests.memory": "1Gi"})
    first = await create_pod(c, ns, "first", memory="1Gi")
    assert "exceeded quota: compute" in await refused(c, pod_doc(ns, "second", memory="512Mi"))
    first.status.phase = "Succeeded"
    await c.update_status(first)
    await create_pod(c, ns, "second", memory="512Mi")


async def test_object_counts_are_enforced(api: tuple[Client, str]) -> None:
    c, ns = api
    await create_quota(c, ns, {"configmaps": "1", "count/secrets": "0"}, name="objects")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns}}
    await c.create(codec.from_dict(cm | {"metadata": {"name": "one", "namespace": ns}}))
    assert await refused(c, cm | {"metadata": {"name": "two", "namespace": ns}}) == (
        'configmaps "two" is forbidden: exceeded quota: objects, requested: configmaps=1, '
        "used: configmaps=1, limited: configmaps=1"
    )
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": ns}}
    assert "requested: count/secrets=1" in await refused(c, secret)


async def test_status_reports_hard_and_used(api: tuple[Client, str]) -> None:
    c, ns = api
    hard = {"requests.cpu": "4", "limits.memory": "4Gi", "pods": "10", "services": "2"}
    await create_quota(c, ns, hard)
    await create_pod(c, ns, "a", cpu="1500m", memory="1Gi")
    await create_pod(c, ns, "b", cpu="500m", memory="512Mi")

    async def status() -> Any:
        rq = await c.get("ResourceQuota", "compute", ns)
        return (
            dict(rq.status.used)
            == {
                "requests.cpu": "2",
                "limits.memory": "1536Mi",
                "pods": "2",
                "services": "0",
            }
            and rq
        )

    rq = await eventually(status)
    assert dict(rq.status.hard) == hard

    await c.delete("Pod", "a", ns)

    async def after_delete() -> bool:
        rq = await c.get("ResourceQuota", "compute", ns)
        return rq.status.used["requests.cpu"] == "500m" and rq.status.used["pods"] == "1"

    await eventually(after_delete)


needs_limit_range = pytest.mark.skipif(
    "LimitRange" not in KINDS, reason="the API has no LimitRange kind yet"
)


async def create_limit_range(c: Client, ns: str, limit: dict[str, Any]) -> Any:
    return await c.create(
        codec.from_dict(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "limits", "namespace": ns},
                "spec": {"limits": [limit]},
            }
        )
    )


@needs_limit_range
async def test_limit_range_defaults_appear_on_created_pods(api: tuple[Client, str]) -> None:
    c, ns = api
    await create_limit_range(
        c,
        ns,
        {
            "type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        },
    )
    p = await create_pod(c, ns, "plain")
    res = p.spec.containers[0].resources
    assert dict(res.requests) == {"cpu": "100m", "memory": "128Mi"}
    assert dict(res.limits) == {"cpu": "500m", "memory": "256Mi"}
    assert p.metadata.annotations["kubernetes.io/limit-ranger"] == (
        "LimitRanger plugin set: cpu, memory request for container app; "
        "cpu, memory limit for container app"
    )


@needs_limit_range
async def test_limit_range_refuses_a_pod_over_max(api: tuple[Client, str]) -> None:
    c, ns = api
    await create_limit_range(c, ns, {"type": "Container", "max": {"cpu": "1"}})
    assert await refused(c, pod_doc(ns, "big", cpu="2")) == (
        'pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
    )
    await create_pod(c, ns, "fits", cpu="1")


async def test_racing_creates_do_not_overshoot_the_quota(api: tuple[Client, str]) -> None:
    """Creates checked at once must not all see the same free room: the
    apiserver checks and writes them one at a time within a namespace."""
    c, ns = api
    await create_quota(c, ns, {"pods": "2"})
    results = await asyncio.gather(
        *(create_pod(c, ns, f"p{i}") for i in range(8)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, BaseException)]
    assert len(admitted) == 2
    assert all(isinstance(r, ForbiddenError) for r in refusals)
    assert len((await c.list("Pod", ns)).items) == 2
