"""Leader election on a real apiserver: of two candidates, each with its own
connection, exactly one leads; when the leader dies without a word the other
takes over within a lease duration, and when it stops cleanly (releasing the
Lease) the other takes over at once."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator

import pytest

from orchestrator.client.client import Client
from orchestrator.client.leaderelection import LeaderElector, LeaderRecord
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

LEASE = 3.0
RENEW = 2.0
RETRY = 0.5


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(
        tmp_path_factory.mktemp("leader-election"), serve_args=("--controllers", "csrsigning")
    )
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


class Candidate:
    """One replica: its own client, an elector, and work that records when it leads."""

    def __init__(self, plane: ControlPlane, lease_name: str, identity: str) -> None:
        self.client = Client(plane.connection(), timeout=2.0)
        self.identity = identity
        self.elector = LeaderElector(
            self.client,
            "kube-system",
            lease_name,
            identity=identity,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
        )
        self.leading_since: float | None = None
        self.task: asyncio.Task[bool] | None = None

    async def _work(self) -> None:
        self.leading_since = time.monotonic()
        try:
            await asyncio.Event().wait()
        finally:
            self.leading_since = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self._work))

    async def crash(self) -> None:
        """Die without releasing: the task and the connection just go."""
        self.elector.release_on_cancel = False
        await self.stop()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.close()


async def wait_for_leader(candidates: list[Candidate], timeout: float) -> Candidate:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [c for c in candidates if c.leading_since is not None]
        assert len(leaders) <= 1, "two leaders at once"
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"nobody became leader within {timeout}s")


async def watch_single_leader(candidates: list[Candidate], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert sum(c.leading_since is not None for c in candidates) <= 1, "two leaders at once"
        await asyncio.sleep(0.05)


async def test_one_leader_and_failover_when_it_dies(plane: ControlPlane) -> None:
    lease_name = f"le-{secrets.token_hex(3)}"
    a, b = Candidate(plane, lease_name, "a"), Candidate(plane, lease_name, "b")
    try:
        a.start()
        b.start()
        leader = await wait_for_leader([a, b], 10)
        standby = b if leader is a else a
        await watch_single_leader([a, b], 2 * LEASE)  # renewals keep it; standby waits
        assert leader.leading_since is not None

        async with plane.client() as admin:
            before = LeaderRecord.of(await admin.get("Lease", lease_name, "kube-system"))
        assert before.holder == leader.identity and before.lease_duration == int(LEASE)

        await leader.crash()
        died = time.monotonic()
        new = await wait_for_leader([standby], LEASE + 2 * RETRY + 3)
        took = time.monotonic() - died
        assert new is standby
        assert took <= LEASE + 2 * RETRY + 1.5, f"took over after {took:.1f}s"

        async with plane.client() as admin:
            after = LeaderRecord.of(await admin.get("Lease", lease_name, "kube-system"))
        assert after.holder == standby.identity
        assert after.transitions == before.transitions + 1
    finally:
        await a.stop()
        await b.stop()


async def test_clean_stop_releases_and_the_standby_takes_over_at_once(
    plane: ControlPlane,
) -> None:
    lease_name = f"le-{secrets.token_hex(3)}"
    a, b = Candidate(plane, lease_name, "a"), Candidate(plane, lease_name, "b")
    try:
        a.start()
        await wait_for_leader([a], 10)
        b.start()
        await watch_single_leader([a, b], 1.0)
        assert b.leading_since is None

        await a.stop()  # releases the Lease
        stopped = time.monotonic()
        await wait_for_leader([b], LEASE + 3)
        # The standby retries every retryPeriod (jittered up to 2.2x): well
        # under a lease duration.
        assert time.monotonic() - stopped < 2.2 * RETRY + 1.0
    finally:
        await a.stop()
        await b.stop()
