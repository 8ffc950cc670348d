"""Leader election's state machine against an in-memory Lease store and a fake
clock: acquiring, respecting a live holder, expiry on the candidate's own
clock, compare-and-swap, renewal, release, and stepping down when renewals fail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from orchestrator.client.client import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    UnavailableError,
)
from orchestrator.client.leaderelection import (
    LeaderElectionConfigError,
    LeaderElector,
    LeaderRecord,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


class LeaseStore:
    """One Lease with resourceVersion compare-and-swap; can be made to fail."""

    def __init__(self) -> None:
        self.lease: Any | None = None
        self.rv = 0
        self.down = False

    def _fail_if_down(self) -> None:
        if self.down:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "apiserver unreachable")

    def _copy(self) -> Any:
        assert self.lease is not None
        out = type(self.lease)()
        out.CopyFrom(self.lease)
        return out

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        self._fail_if_down()
        if self.lease is None:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"lease {namespace}/{name} not found")
        return self._copy()

    async def create(self, obj: Any) -> Any:
        self._fail_if_down()
        if self.lease is not None:
            raise AlreadyExistsError(grpc.StatusCode.ALREADY_EXISTS, "exists")
        self.rv += 1
        self.lease = type(obj)()
        self.lease.CopyFrom(obj)
        self.lease.metadata.resource_version = str(self.rv)
        return self._copy()

    async def update(self, obj: Any) -> Any:
        self._fail_if_down()
        assert self.lease is not None
        if obj.metadata.resource_version != self.lease.metadata.resource_version:
            raise ConflictError(grpc.StatusCode.ABORTED, "the object has been modified")
        self.rv += 1
        self.lease.CopyFrom(obj)
        self.lease.metadata.resource_version = str(self.rv)
        return self._copy()

    def record(self) -> LeaderRecord:
        return LeaderRecord.of(self.lease)


def elector(store: LeaseStore, clock: Clock, identity: str, **kw: Any) -> LeaderElector:
    return LeaderElector(
        store,
        "kube-system",
        "scheduler",
        identity=identity,
        monotonic=clock.mono,
        wall_clock=clock.wall,
        sleep=clock.sleep,
        jitter=lambda: 0.0,
        **kw,
    )


async def test_first_candidate_creates_the_lease_and_renews_it() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")
    assert await a.try_acquire_or_renew()
    first = store.record()
    assert (first.holder, first.lease_duration, first.transitions) == ("a", 15, 0)
    assert first.acquire_time == first.renew_time == "2026-01-01T00:00:00.000000Z"
    clock.t = 2
    assert await a.try_acquire_or_renew()
    renewed = store.record()
    assert renewed.acquire_time == first.acquire_time
    assert renewed.renew_time == "2026-01-01T00:00:02.000000Z"
    assert renewed.transitions == 0


async def test_standby_waits_a_lease_duration_on_its_own_clock() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew()
    clock.t = 1
    assert not await b.try_acquire_or_renew()  # b sees the record first at 1 s
    clock.t = 15.9
    assert not await b.try_acquire_or_renew()
    clock.t = 16.1  # 15 s after b saw it change: expired
    assert await b.try_acquire_or_renew()
    taken = store.record()
    assert (taken.holder, taken.transitions) == ("b", 1)
    assert taken.acquire_time == "2026-01-01T00:00:16.100000Z"
    # a notices it lost: it may not take it back while b renews.
    assert not await a.try_acquire_or_renew()


async def test_a_renewal_seen_resets_the_standbys_expiry() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.t = 10
    await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()  # observed the change at 10 s
    clock.t = 20
    assert not await b.try_acquire_or_renew()
    clock.t = 25.5
    assert await b.try_acquire_or_renew()


async def test_compare_and_swap_lets_only_one_of_two_racers_win() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.try_acquire_or_renew()
    await store.update(_released(store))  # a let go: anyone may take it
    real_get = store.get
    snapshots: list[Any] = []

    async def stale_get(kind: str, name: str, namespace: str | None = None) -> Any:
        # Both read before either writes.
        if not snapshots:
            snapshots.append(await real_get(kind, name, namespace))
        copy = type(snapshots[0])()
        copy.CopyFrom(snapshots[0])
        return copy

    store.get = stale_get  # type: ignore[method-assign]
    results = [await a.try_acquire_or_renew(), await b.try_acquire_or_renew()]
    assert results == [True, False]
    assert store.record().holder == "a"


def _released(store: LeaseStore) -> Any:
    lease = store._copy()
    LeaderRecord("", 1, "", "", store.record().transitions).write_to(lease)
    return lease


async def test_release_lets_a_standby_take_over_at_once() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    rec = store.record()
    assert (rec.holder, rec.lease_duration) == ("", 1)
    assert await b.try_acquire_or_renew()
    assert store.record().transitions == 1
    assert not await a.release()  # not ours any more: left alone
    assert store.record().holder == "b"


async def test_run_steps_down_when_renewals_fail_before_the_lease_expires() -> None:
    store, clock = LeaseStore(), Clock()
    stopped: list[float] = []
    leaders: list[str] = []
    a = elector(
        store,
        clock,
        "a",
        on_stopped_leading=lambda: stopped.append(clock.t),
        on_new_leader=leaders.append,
    )
    working = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> None:
        working.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def cut_off() -> None:
        await working.wait()
        while clock.t < 20:
            await asyncio.sleep(0)
        store.down = True

    cutter = asyncio.create_task(cut_off())
    lost = await a.run(work)
    await cutter
    assert lost is True
    assert cancelled.is_set()
    assert leaders == ["a"]
    assert len(stopped) == 1
    last_renew = datetime.fromisoformat(store.record().renew_time.replace("Z", "+00:00"))
    renewed_at = (last_renew - T0).total_seconds()
    # Stepped down within renewDeadline (+ one retry) of the last renewal, which
    # is before the 15 s lease could look expired to anyone else.
    assert stopped[0] - renewed_at <= 10 + 2
    assert stopped[0] - renewed_at < 15


async def test_run_returns_and_releases_when_the_work_ends() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")
    ran: list[bool] = []

    async def work() -> None:
        ran.append(a.leading)

    assert await a.run(work) is False
    assert ran == [True]
    assert store.record().holder == ""


async def test_run_reraises_what_the_work_raised_after_stepping_down() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")

    async def work() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await a.run(work)
    assert store.record().holder == ""


async def test_a_candidate_keeps_trying_until_the_lease_is_free() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.try_acquire_or_renew()
    await b.acquire()  # a never renews: b gets it once 15 s have passed for b
    assert store.record().holder == "b"
    assert 15 <= clock.t <= 15 + 2


def test_invalid_timings_are_refused_with_the_reason() -> None:
    store, clock = LeaseStore(), Clock()
    with pytest.raises(LeaderElectionConfigError, match="leaseDuration"):
        elector(store, clock, "a", lease_duration=10, renew_deadline=10)
    with pytest.raises(LeaderElectionConfigError, match="retryPeriod"):
        elector(store, clock, "a", renew_deadline=4, retry_period=4)
    with pytest.raises(LeaderElectionConfigError, match="identity"):
        elector(store, clock, "")
