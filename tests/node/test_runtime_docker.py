"""DockerRuntime against a private dockerd with a locally built busybox image."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.pods.sync import PAUSE_COMMAND
from agent.runtime.docker import DockerRuntime
from agent.runtime.types import (
    LABEL_POD_UID,
    SANDBOX_NAME,
    ContainerCreateError,
    ContainerSpec,
    ContainerState,
    ImageNotPresentError,
    ImagePullError,
    Mount,
)
from tests.support.dockerd import Dockerd, build_busybox_image, dockerd_available

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(dockerd_available() is not None, reason=dockerd_available() or ""),
]

IMAGE = "busybox:1.36"


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    with Dockerd() as d:
        build_busybox_image(d.host, IMAGE)
        yield d


@pytest.fixture
async def runtime(dockerd: Dockerd) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(dockerd.host)
    yield rt
    for c in await rt.list_containers():
        await rt.remove_container(c.id)
    await rt.close()


def spec(uid: str, name: str, type_: str = "app", **kw: object) -> ContainerSpec:
    return ContainerSpec(
        pod_uid=uid,
        pod_name="p",
        pod_namespace="default",
        name=name,
        type=type_,
        image=IMAGE,
        **kw,  # type: ignore[arg-type]
    )


async def start(rt: DockerRuntime, s: ContainerSpec) -> str:
    cid = await rt.create_container(s)
    await rt.start_container(cid)
    return cid


async def wait_exit(rt: DockerRuntime, cid: str, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await rt.inspect_container(cid)
        assert info is not None
        if info.state == ContainerState.EXITED:
            return info
        await asyncio.sleep(0.1)
    raise AssertionError(f"container {cid} did not exit")


async def sandbox(rt: DockerRuntime, uid: str) -> str:
    return await start(
        rt,
        spec(uid, SANDBOX_NAME, "sandbox", entrypoint=PAUSE_COMMAND, cmd=[], hostname="mypod"),
    )


async def test_version_images_and_pull_policies(runtime: DockerRuntime) -> None:
    assert (await runtime.version()).startswith("docker://20.")
    names = [n for names, _size in await runtime.list_images() for n in names]
    assert IMAGE in names
    assert (await runtime.ensure_image(IMAGE, "IfNotPresent")).startswith("sha256:")
    assert await runtime.image_present(IMAGE)
    with pytest.raises(ImageNotPresentError, match="not present with pull policy of Never"):
        await runtime.ensure_image("nothere:1", "Never")
    # A registry on a closed local port: fails fast, never leaves the machine.
    pull_error = re.escape('Failed to pull image "127.0.0.1:1/nope:1"')
    with pytest.raises(ImagePullError, match=pull_error):
        await runtime.ensure_image("127.0.0.1:1/nope:1", "IfNotPresent")


async def test_sandbox_and_app_round_trip(runtime: DockerRuntime, tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    sid = await sandbox(runtime, uid)
    (tmp_path / "in.txt").write_text("from the host\n")
    cid = await start(
        runtime,
        spec(
            uid,
            "app",
            sandbox_id=sid,
            entrypoint=["sh", "-c"],
            cmd=["echo started; hostname; cat /data/in.txt; echo $FOO; pwd; exec sleep 300"],
            env={"FOO": "bar"},
            working_dir="/tmp",
            mounts=[Mount(str(tmp_path), "/data", read_only=True)],
            cpu_limit_millis=500,
            memory_limit_bytes=64 * 1024 * 1024,
            restart_count=3,
            spec_hash="abc",
        ),
    )
    info = await runtime.inspect_container(cid)
    assert info is not None
    assert info.state == ContainerState.RUNNING and info.pid > 0
    assert (info.pod_uid, info.name, info.type) == (uid, "app", "app")
    assert info.restart_count == 3 and info.spec_hash == "abc"
    assert info.started_at is not None and info.image_id.startswith("sha256:")
    listed = await runtime.list_containers(uid)
    assert {c.id for c in listed} == {sid, cid}
    assert all(c.labels[LABEL_POD_UID] == uid for c in listed)

    result = await runtime.exec(cid, ["sh", "-c", "echo out; touch /data/x 2>&1; exit 3"])
    assert result.exit_code == 3
    assert b"out" in result.output and b"Read-only file system" in result.output
    cgroup = await runtime.exec(cid, ["cat", "/sys/fs/cgroup/cpu.max"])
    if cgroup.exit_code == 0:
        assert cgroup.output.split()[0] == b"50000"
    with pytest.raises(TimeoutError):
        await runtime.exec(cid, ["sleep", "5"], timeout=0.5)

    chunks = []
    async for chunk in runtime.logs(cid):
        chunks.append(chunk)
    text = b"".join(chunks).decode()
    assert "started\nmypod\nfrom the host\nbar\n/tmp\n" in text

    t0 = time.monotonic()
    await runtime.stop_container(cid, 1)
    await runtime.stop_container(sid, 5)
    assert time.monotonic() - t0 < 4.5, "the sandbox leaves at once on SIGTERM"
    stopped = await runtime.inspect_container(cid)
    assert stopped is not None and stopped.state == ContainerState.EXITED
    assert stopped.exit_code == 137 and stopped.finished_at is not None
    sb = await runtime.inspect_container(sid)
    assert sb is not None and sb.exit_code == 0
    await runtime.remove_container(cid)
    await runtime.remove_container(cid)  # idempotent
    assert await runtime.inspect_container(cid) is None


async def test_logs_follow_and_tail(runtime: DockerRuntime) -> None:
    uid = str(uuid.uuid4())
    sid = await sandbox(runtime, uid)
    cid = await start(
        runtime,
        spec(
            uid,
            "app",
            sandbox_id=sid,
            entrypoint=["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"],
        ),
    )
    got = b""
    async for chunk in runtime.logs(cid, follow=True):
        got += chunk
    assert got == b"line1\nline2\nline3\n"
    tail = b"".join([c async for c in runtime.logs(cid, tail=1)])
    assert tail == b"line3\n"


async def test_command_and_args_semantics(runtime: DockerRuntime) -> None:
    uid = str(uuid.uuid4())
    sid = await sandbox(runtime, uid)
    # args only: the image's entrypoint (none) with these as CMD
    a = await start(runtime, spec(uid, "a", sandbox_id=sid, cmd=["echo", "args-only"]))
    # command only: the image's CMD ("sh") is dropped
    b = await start(runtime, spec(uid, "b", sandbox_id=sid, entrypoint=["echo", "cmd-only"]))
    for cid, want in ((a, b"args-only\n"), (b, b"cmd-only\n")):
        await wait_exit(runtime, cid)
        assert b"".join([c async for c in runtime.logs(cid)]) == want


async def test_command_not_found(runtime: DockerRuntime) -> None:
    uid = str(uuid.uuid4())
    sid = await sandbox(runtime, uid)
    cid = await runtime.create_container(spec(uid, "bad", sandbox_id=sid, entrypoint=["nope"]))
    with pytest.raises(ContainerCreateError, match="executable file not found"):
        await runtime.start_container(cid)
    info = await runtime.inspect_container(cid)
    assert info is not None
    assert info.state == ContainerState.CREATED and info.exit_code == 127
    assert "executable file not found" in info.error


async def test_oom_killed(runtime: DockerRuntime) -> None:
    uid = str(uuid.uuid4())
    sid = await sandbox(runtime, uid)
    cid = await start(
        runtime,
        spec(
            uid,
            "hog",
            sandbox_id=sid,
            entrypoint=["sh", "-c", 'x=$(head -c 64m /dev/zero | tr "\\0" x); echo survived'],
            memory_limit_bytes=8 * 1024 * 1024,
        ),
    )
    info = await wait_exit(runtime, cid)
    assert info.oom_killed and info.exit_code == 137  # type: ignore[attr-defined]


async def test_security_and_sandbox_sharing(runtime: DockerRuntime) -> None:
    uid = str(uuid.uuid4())
    sid = await sandbox(runtime, uid)
    cid = await start(
        runtime,
        spec(
            uid,
            "sec",
            sandbox_id=sid,
            entrypoint=["sh", "-c", "id -u; hostname; touch /x 2>/dev/null || echo ro; sleep 300"],
            user="65534",
            read_only_rootfs=True,
        ),
    )
    await asyncio.sleep(0.5)
    out = b"".join([c async for c in runtime.logs(cid)]).decode()
    assert out.splitlines()[:3] == ["65534", "mypod", "ro"]
    await runtime.stop_container(cid, 0)
