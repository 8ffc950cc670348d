"""orchctl cordon, drain and uncordon against a real control plane, with a
stand-in agent that confirms pod deletions on its node (as the real agent
does once containers are stopped)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.cli import drain, main
from orchestrator.cli.session import Session
from orchestrator.client.client import Client, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    # No workload controllers or garbage collector: the pods here stay as made.
    cp = ControlPlane(tmp_path_factory.mktemp("drain"), serve_args=("--controllers", "csrsigning"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[Client]:
    async with plane.client() as c:
        yield c


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="verb")
    drain.add_cordon_arguments(sub.add_parser("cordon"))
    drain.add_cordon_arguments(sub.add_parser("uncordon"))
    drain.add_drain_arguments(sub.add_parser("drain"), main._duration_seconds)
    return parser.parse_args(argv)


async def orchctl(plane: ControlPlane, argv: list[str]) -> int:
    session = Session(config=str(plane.admin_conf))
    func = {"cordon": drain.run_cordon, "uncordon": drain.run_uncordon, "drain": drain.run_drain}
    try:
        return await func[argv[0]](session, parse(argv))
    finally:
        await session.close()


async def confirm_deletions(client: Client, node: str) -> None:
    """The agent's part: a pod marked for deletion on our node is confirmed gone."""
    while True:
        pods = await client.list("Pod", all_namespaces=True, field_selector=f"spec.nodeName={node}")
        for p in pods.items:
            if p.metadata.deletion_timestamp:
                with contextlib.suppress(NotFoundError):
                    await client.delete(
                        "Pod", p.metadata.name, p.metadata.namespace, grace_period=0
                    )
        await asyncio.sleep(0.2)


async def make_pod(client: Client, ns: str, name: str, node: str, owner: Any | None) -> None:
    pod = core.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = ns
    pod.spec.node_name = node
    pod.spec.containers.add(name="app", image="busybox")
    if owner is not None:
        pod.metadata.owner_references.add(
            api_version=owner.api_version,
            kind=owner.kind,
            name=owner.metadata.name,
            uid=owner.metadata.uid,
            controller=True,
        )
    await client.create(pod)


async def test_drain_cordons_evicts_and_refuses_what_it_must(
    plane: ControlPlane, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    ns_obj = core.Namespace(api_version="v1", kind="Namespace")
    ns_obj.metadata.name = ns = f"drain-{secrets.token_hex(3)}"
    await client.create(ns_obj)
    node_name = f"n-{secrets.token_hex(3)}"
    node = core.Node(api_version="v1", kind="Node")
    node.metadata.name = node_name
    await client.create(node)
    labels = {"app": "proxy"}
    ds, _ = await client.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "proxy", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "proxy", "image": "busybox"}]},
                },
            },
        }
    )
    rs, _ = await client.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox"}]},
                },
            },
        }
    )
    await make_pod(client, ns, "web-1", node_name, rs)
    await make_pod(client, ns, "web-2", node_name, rs)
    await make_pod(client, ns, "proxy-x", node_name, ds)
    await make_pod(client, ns, "bare", node_name, None)
    agent = asyncio.create_task(confirm_deletions(client, node_name))
    try:
        # Refused: an unmanaged pod and a DaemonSet pod. Nothing is evicted.
        assert await orchctl(plane, ["drain", node_name]) == 1
        out, err = capsys.readouterr()
        assert out.splitlines() == [f"node/{node_name} cordoned"]
        assert f'error: unable to drain node "{node_name}"' in err
        assert f"DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {ns}/proxy-x" in err
        assert f"declare no controller (use --force to override): {ns}/bare" in err
        assert len((await client.list("Pod", ns)).items) == 4
        assert (await client.get("Node", node_name)).spec.unschedulable

        argv = ["drain", node_name, "--ignore-daemonsets", "--force", "--timeout", "30s"]
        assert await orchctl(plane, argv) == 0
        out, err = capsys.readouterr()
        lines = out.splitlines()
        assert lines[0] == f"node/{node_name} already cordoned"
        assert lines[-1] == f"node/{node_name} drained"
        for pod in ("web-1", "web-2", "bare"):
            assert f"evicting pod {ns}/{pod}" in lines
            assert f"pod/{pod} evicted" in lines
            assert lines.index(f"evicting pod {ns}/{pod}") < lines.index(f"pod/{pod} evicted")
        assert f"Warning: ignoring DaemonSet-managed Pods: {ns}/proxy-x" in err
        assert f"Warning: deleting Pods that declare no controller: {ns}/bare" in err
        left = [p.metadata.name for p in (await client.list("Pod", ns)).items]
        assert left == ["proxy-x"]

        assert await orchctl(plane, ["uncordon", node_name]) == 0
        assert await orchctl(plane, ["uncordon", node_name]) == 0
        out, _ = capsys.readouterr()
        assert out.splitlines() == [
            f"node/{node_name} uncordoned",
            f"node/{node_name} already uncordoned",
        ]
        assert not (await client.get("Node", node_name)).spec.unschedulable
    finally:
        agent.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await agent
        with contextlib.suppress(NotFoundError):
            await client.delete("Node", node_name)


async def test_drain_gives_up_after_its_timeout_when_nobody_confirms(
    plane: ControlPlane, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    ns_obj = core.Namespace(api_version="v1", kind="Namespace")
    ns_obj.metadata.name = ns = f"drain-{secrets.token_hex(3)}"
    await client.create(ns_obj)
    node_name = f"dead-{secrets.token_hex(3)}"
    node = core.Node(api_version="v1", kind="Node")
    node.metadata.name = node_name
    await client.create(node)
    await make_pod(client, ns, "stuck", node_name, None)
    try:
        assert await orchctl(plane, ["drain", node_name, "--force", "--timeout", "1s"]) == 1
        out, err = capsys.readouterr()
        assert f"evicting pod {ns}/stuck" in out.splitlines()
        assert err.splitlines()[-1] == (
            f'error: unable to drain node "{node_name}" due to error: error when waiting for '
            f'pod "stuck" in namespace "{ns}" to terminate: global timeout reached: 1s'
        )
        assert (await client.get("Pod", "stuck", ns)).metadata.deletion_timestamp
        assert await orchctl(plane, ["cordon", "no-such-node"]) == 1
        _, err = capsys.readouterr()
        assert err.strip() == 'Error from server (NotFound): nodes "no-such-node" not found'
    finally:
        with contextlib.suppress(NotFoundError):
            await client.delete("Node", node_name)
