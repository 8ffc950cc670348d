"""The scheduler and controller manager as processes of their own, several of
each, with leader election: one acts, and a standby takes over when it goes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, NotFoundError
from tests.support.controlplane import REPO, ControlPlane

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Component:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.server_main", *args],
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """The API (and, for the scheduler test, the controllers) without a scheduler."""
    cp = ControlPlane(tmp_path / "cp", serve_args=("--no-scheduler",))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def node(name: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )


def pod(name: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        }
    )


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = await check()
            if last:
                return last
        except NotFoundError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def holder(c: Client, lease: str) -> str:
    got = await c.get("Lease", lease, "kube-system")
    return str(got.spec.holder_identity)


async def test_two_schedulers_one_acts_and_the_standby_takes_over(
    plane: ControlPlane, tmp_path: Path
) -> None:
    conf = plane.data_dir / "scheduler.conf"
    assert conf.exists(), "init writes scheduler.conf"
    procs = [
        Component(["scheduler", "--kubeconfig", str(conf)], tmp_path / f"sched-{i}.log")
        for i in range(2)
    ]
    try:
        async with plane.client() as c:
            await c.create(node("proc-n1"))
            await c.create(pod("first"))
            first = await until(lambda: _bound(c, "first"), 30, "a scheduler to bind the first pod")
            assert first == "proc-n1"
            leader = await holder(c, "kube-scheduler")
            assert leader, "the leader holds the Lease"

            # Stop the leader (a clean stop releases the Lease at once).
            (leading,) = [p for p in procs if f"_{p.proc.pid}_" in leader]
            leading.stop()

            await c.create(pod("second"))
            second = await until(
                lambda: _bound(c, "second"), 30, "the standby to take over and bind"
            )
            assert second == "proc-n1"
            assert await holder(c, "kube-scheduler") not in ("", leader)
    finally:
        for p in procs:
            p.stop(signal.SIGKILL)


async def _bound(c: Client, name: str) -> str:
    got = await c.get("Pod", name, "default")
    return str(got.spec.node_name)


async def test_controller_manager_alone_runs_the_controllers(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path / "cp", serve_args=("--controllers", "", "--no-scheduler"))
    cp.start()
    cm = Component(
        [
            "controller-manager",
            "--kubeconfig",
            str(cp.data_dir / "controller-manager.conf"),
            "--data-dir",
            str(cp.data_dir),
            "--controllers",
            "*,-nodelifecycle,-podgc",
        ],
        tmp_path / "cm.log",
    )
    try:
        async with cp.client() as c:
            rs = codec.from_dict(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {"name": "alone", "namespace": "default"},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "alone"}},
                        "template": {
                            "metadata": {"labels": {"app": "alone"}},
                            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                        },
                    },
                }
            )
            await c.create(rs)

            async def two_pods() -> bool:
                pods = (await c.list("Pod", "default", label_selector="app=alone")).items
                return len(pods) == 2

            await until(two_pods, 30, "the ReplicaSet controller to make 2 pods")
            assert await holder(c, "kube-controller-manager")
    finally:
        cm.stop()
        cp.stop()
