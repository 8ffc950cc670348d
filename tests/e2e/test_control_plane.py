"""The local cluster's control plane as kubeadm lays it out: apiserver,
controller manager and scheduler as processes of their own, and a standby
controller manager taking over when the leader dies."""

from __future__ import annotations

import os
import signal
import time

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client
from tests.e2e.conftest import LocalCluster, wait_for

pytestmark = pytest.mark.e2e


async def lease_holder(client: Client, name: str) -> str:
    lease = await client.get("Lease", name, "kube-system")
    return str(lease.spec.holder_identity)


async def test_controller_manager_fails_over_to_a_standby(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    from deploy.local import cluster

    name = local_cluster.name
    leader_pid = cluster.component_pid(name, "controller-manager")
    standby_pid = cluster.add_controller_manager(name)
    holder = await wait_for(
        lambda: lease_holder(client, "kube-controller-manager"), what="a lease holder"
    )
    assert f"_{leader_pid}_" in holder, f"the first controller manager leads, not {holder}"

    os.kill(leader_pid, signal.SIGKILL)  # no clean release: the standby waits the lease out
    killed = time.monotonic()

    async def standby_leads() -> bool:
        return f"_{standby_pid}_" in await lease_holder(client, "kube-controller-manager")

    try:
        await wait_for(standby_leads, timeout=40, what="the standby to take the lease")
        took_over = time.monotonic() - killed
        print(f"standby took over {took_over:.1f}s after the leader was killed")
        assert took_over < 30, "within the 15 s lease duration plus a retry or two"

        # The new leader acts: a ReplicaSet gets its pods.
        await client.create(
            codec.from_dict(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {"name": "after-failover", "namespace": namespace},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "after-failover"}},
                        "template": {
                            "metadata": {"labels": {"app": "after-failover"}},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "c",
                                        "image": "busybox:1.36",
                                        "command": ["sleep", "3600"],
                                    }
                                ]
                            },
                        },
                    },
                }
            )
        )

        async def two_running() -> bool:
            pods = (await client.list("Pod", namespace, label_selector="app=after-failover")).items
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        await wait_for(two_running, timeout=60, what="the ReplicaSet's pods to run")
    finally:
        # Repair: `up` restarts the killed controller manager (now a standby).
        cluster.up(name, config_path=local_cluster.config_path, timeout=120)
