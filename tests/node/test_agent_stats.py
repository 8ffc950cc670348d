"""The agent's usage collector on a real dockerd: a container spinning one
CPU shows about a core, an idle one about nothing, memory it holds shows in
its working set, and the agent's Stats call serves the result over mTLS."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from agent.runtime import types as rt
from agent.server import AgentServer
from agent.stats import DockerStatsSource, StatsCollector
from certs import pki
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import agent_pb2_grpc as apb_grpc
from tests.support.dockerd import Dockerd, build_busybox_image, dockerd_available

pytestmark = [
    pytest.mark.node,
    pytest.mark.timeout(300),
    pytest.mark.skipif(dockerd_available() is not None, reason=str(dockerd_available())),
]

IMAGE = "busybox:1.36"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    with Dockerd() as d:
        build_busybox_image(d.host, IMAGE)
        yield d


@pytest.fixture(scope="module")
def docker_api(dockerd: Dockerd) -> Iterator[Any]:
    import docker

    api = docker.APIClient(base_url=dockerd.host, version="auto", timeout=60)
    yield api
    api.close()


def run(api: Any, uid: str, pod: str, container: str, command: list[str]) -> str:
    labels = {
        rt.LABEL_POD_UID: uid,
        rt.LABEL_POD_NAME: pod,
        rt.LABEL_POD_NAMESPACE: "default",
        rt.LABEL_CONTAINER_NAME: container,
        rt.LABEL_CONTAINER_TYPE: "app",
    }
    created = api.create_container(
        IMAGE, command, labels=labels, host_config=api.create_host_config(network_mode="none")
    )
    api.start(created["Id"])
    return str(created["Id"])


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def test_collector_measures_real_containers(docker_api: Any, dockerd: Dockerd) -> None:
    busy_uid, idle_uid = str(uuid.uuid4()), str(uuid.uuid4())
    # One pod spinning a core; one holding 48 MiB (in its /dev/shm tmpfs) and idle.
    spin_id = run(docker_api, busy_uid, "busy", "spin", ["sh", "-c", "while :; do :; done"])
    run(
        docker_api,
        idle_uid,
        "idle",
        "hold",
        ["sh", "-c", "dd if=/dev/zero of=/dev/shm/held bs=1M count=48 && exec sleep 3600"],
    )
    source = DockerStatsSource(dockerd.host)
    collector = StatsCollector(source, interval=2.0)
    spin_pid = int(docker_api.inspect_container(spin_id)["State"]["Pid"])
    try:
        # Until the idle pod has written its 48 MiB and gone quiet.
        for _ in range(30):
            await collector.collect_once()
            hold = {p.name: p for p in collector.snapshot().pods}.get("idle")
            if (
                hold is not None
                and hold.containers[0].memory_working_set_bytes > 40 * MIB
                and hold.containers[0].cpu_millicores < 50
            ):
                break
            await asyncio.sleep(1.0)
        # One measured window, checked against the kernel's own account of the
        # spinning process (/proc/PID/stat), read independently of Docker.
        ticks_before, at_before = cpu_ticks(spin_pid), time.monotonic()
        await collector.collect_once()
        await asyncio.sleep(3.0)
        ticks_after, at_after = cpu_ticks(spin_pid), time.monotonic()
        await collector.collect_once()
        kernel_millicores = (
            (ticks_after - ticks_before) / os.sysconf("SC_CLK_TCK") / (at_after - at_before) * 1000
        )
        snap = collector.snapshot()
        pods = {p.name: p for p in snap.pods}
        assert set(pods) >= {"busy", "idle"}, snap
        spin = pods["busy"].containers[0]
        assert spin.name == "spin" and pods["busy"].uid == busy_uid
        # The machine is shared, so a busy loop gets what it gets: the collector
        # must agree with the kernel on it, within scheduling noise.
        assert spin.cpu_millicores > 100, spin
        assert abs(spin.cpu_millicores - kernel_millicores) <= max(100, 0.2 * kernel_millicores), (
            spin.cpu_millicores,
            kernel_millicores,
        )
        hold = pods["idle"].containers[0]
        assert hold.cpu_millicores < 50, hold
        assert hold.memory_working_set_bytes > 40 * MIB, hold
        assert 2.5 < pods["busy"].window_seconds < 6
        assert snap.node.cpu_millicores >= spin.cpu_millicores - 100
        assert snap.node.memory_working_set_bytes > hold.memory_working_set_bytes
        print(
            f"measured: spin {spin.cpu_millicores}m (kernel {kernel_millicores:.0f}m), "
            f"hold {hold.cpu_millicores}m {hold.memory_working_set_bytes // MIB}Mi, "
            f"node {snap.node.cpu_millicores}m {snap.node.memory_working_set_bytes // MIB}Mi"
        )

        # Served by the agent's Stats call to the apiserver's identity only.
        ca = pki.create_ca("stats-test-ca")
        serving = pki.issue_certificate(
            ca, common_name="system:node:n1", ip_addresses=["127.0.0.1"], server=True
        )
        server = AgentServer(
            dockerd.host,
            ca_pem=ca.cert_pem,
            cert_pem=serving.cert_pem,
            key_pem=serving.key_pem,
            listen="127.0.0.1:0",
            stats=collector,
        )
        await server.start()
        try:
            for cn, orgs, ok in (
                ("orchestrator-apiserver-agent-client", ["system:masters"], True),
                ("alice", ["system:masters"], False),
            ):
                client = pki.issue_certificate(ca, common_name=cn, organizations=orgs, client=True)
                creds = grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem)
                async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
                    stub = apb_grpc.AgentStub(channel)
                    if ok:
                        answer = await stub.Stats(apb.StatsRequest(), timeout=5)
                        assert {p.name for p in answer.pods} >= {"busy", "idle"}
                    else:
                        with pytest.raises(grpc.aio.AioRpcError) as err:
                            await stub.Stats(apb.StatsRequest(), timeout=5)
                        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await server.stop()
    finally:
        await collector.stop()
        dockerd.remove_all_containers()
