"""Leader election on a coordination.k8s.io Lease, with client-go's semantics,
so that of several replicas of a component (scheduler, controller manager)
exactly one acts at a time.

- The Lease records holderIdentity, leaseDurationSeconds, acquireTime,
  renewTime and leaseTransitions. Every write is a compare-and-swap on the
  resourceVersion: of two candidates writing at once, one gets a conflict.
- A candidate takes the Lease when nobody holds it, or when the record has
  not changed for leaseDurationSeconds *as measured on the candidate's own
  clock* since it last saw it change. Timestamps in the record are never
  compared across hosts, so clock skew cannot hand out two leaderships.
- The leader renews every retryPeriod; when it has not managed to within
  renewDeadline (shorter than the lease duration) it stops its work and
  steps down, before anyone else may consider the lease expired.
- On a clean stop the leader releases the Lease (empty holder, duration
  1 s) so a standby takes over at once instead of after a lease duration.

    elector = LeaderElector(client, "kube-system", "kube-scheduler", identity=host)
    lost = await elector.run(scheduler.run_forever)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.kinds import kind_info
from orchestrator.client.client import AlreadyExistsError, ApiError, ConflictError, NotFoundError

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2


def micro_time(when: datetime) -> str:
    """A MicroTime as Kubernetes writes it: RFC 3339 with microseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaderRecord:
    """The Lease's spec as the election reads it."""

    holder: str
    lease_duration: int
    acquire_time: str
    renew_time: str
    transitions: int

    @classmethod
    def of(cls, lease: Any) -> LeaderRecord:
        s = lease.spec
        return cls(
            holder=s.holder_identity if s.HasField("holder_identity") else "",
            lease_duration=s.lease_duration_seconds if s.HasField("lease_duration_seconds") else 0,
            acquire_time=s.acquire_time,
            renew_time=s.renew_time,
            transitions=s.lease_transitions if s.HasField("lease_transitions") else 0,
        )

    def write_to(self, lease: Any) -> None:
        s = lease.spec
        s.holder_identity = self.holder
        s.lease_duration_seconds = self.lease_duration
        s.acquire_time = self.acquire_time
        s.renew_time = self.renew_time
        s.lease_transitions = self.transitions


class LeaderElectionConfigError(ValueError):
    pass


class LeaderElector:
    def __init__(
        self,
        client: Any,
        namespace: str,
        name: str,
        *,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
        on_new_leader: Callable[[str], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not identity:
            raise LeaderElectionConfigError("leader election: identity must not be empty")
        if lease_duration <= renew_deadline:
            raise LeaderElectionConfigError(
                f"leader election: leaseDuration ({lease_duration}s) must be greater than "
                f"renewDeadline ({renew_deadline}s)"
            )
        if renew_deadline <= JITTER_FACTOR * retry_period:
            raise LeaderElectionConfigError(
                f"leader election: renewDeadline ({renew_deadline}s) must be greater than "
                f"{JITTER_FACTOR} x retryPeriod ({retry_period}s)"
            )
        if retry_period <= 0:
            raise LeaderElectionConfigError("leader election: retryPeriod must be positive")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.on_new_leader = on_new_leader
        self.on_stopped_leading = on_stopped_leading
        self.monotonic = monotonic
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.sleep = sleep
        self.jitter = jitter
        self.observed: LeaderRecord | None = None
        self.observed_at = 0.0
        self._reported_leader = ""
        self.leading = False

    # -- one attempt ----------------------------------------------------------------------

    def _observe(self, record: LeaderRecord) -> None:
        if record != self.observed:
            self.observed = record
            self.observed_at = self.monotonic()
        if record.holder and record.holder != self._reported_leader:
            self._reported_leader = record.holder
            if self.on_new_leader is not None:
                try:
                    self.on_new_leader(record.holder)
                except Exception:
                    log.exception("leader election: on_new_leader callback failed")

    def _held_by_other(self, record: LeaderRecord) -> bool:
        if not record.holder or record.holder == self.identity:
            return False
        return self.observed_at + record.lease_duration > self.monotonic()

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease; True when we hold it now."""
        now = micro_time(self.wall_clock())
        try:
            lease = await self.client.get("Lease", self.name, self.namespace)
        except NotFoundError:
            lease = kind_info("Lease").new()
            lease.metadata.name = self.name
            lease.metadata.namespace = self.namespace
            record = LeaderRecord(self.identity, int(self.lease_duration), now, now, 0)
            record.write_to(lease)
            try:
                await self.client.create(lease)
            except (AlreadyExistsError, ConflictError):
                return False
            self._observe(record)
            return True
        current = LeaderRecord.of(lease)
        self._observe(current)
        if self._held_by_other(current):
            return False
        if current.holder == self.identity:
            record = LeaderRecord(
                self.identity,
                int(self.lease_duration),
                current.acquire_time,
                now,
                current.transitions,
            )
        else:
            record = LeaderRecord(
                self.identity, int(self.lease_duration), now, now, current.transitions + 1
            )
        fresh = type(lease)()
        fresh.CopyFrom(lease)  # keeps resourceVersion: the update is a compare-and-swap
        record.write_to(fresh)
        try:
            await self.client.update(fresh)
        except (ConflictError, NotFoundError):
            return False
        self._observe(record)
        return True

    async def _attempt(self, timeout: float) -> bool:
        try:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
            # cancellation that races with completion, and a leader that
            # ignores being stopped is exactly what must not happen here.
            async with asyncio.timeout(max(timeout, 0.001)):
                return await self.try_acquire_or_renew()
        except TimeoutError:
            log.warning(
                "leader election: lease %s/%s: attempt timed out", self.namespace, self.name
            )
        except ApiError as exc:
            log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, exc.message)
        return False

    # -- the loops --------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once we hold the Lease, trying every retryPeriod (jittered)."""
        while True:
            if await self._attempt(self.renew_deadline):
                log.info(
                    "leader election: %s acquired lease %s/%s",
                    self.identity,
                    self.namespace,
                    self.name,
                )
                return
            await self.sleep(self.retry_period * (1 + JITTER_FACTOR * self.jitter()))

    async def renew_until_lost(self) -> None:
        """Keep renewing every retryPeriod; return when a renewal has not
        succeeded within renewDeadline (leadership lost)."""
        while True:
            deadline = self.monotonic() + self.renew_deadline
            renewed = False
            while not renewed:
                remaining = deadline - self.monotonic()
                if remaining <= 0:
                    break
                renewed = await self._attempt(remaining)
                if not renewed:
                    await self.sleep(min(self.retry_period, max(deadline - self.monotonic(), 0)))
            if not renewed:
                log.warning(
                    "leader election: %s failed to renew lease %s/%s within %.1fs",
                    self.identity,
                    self.namespace,
                    self.name,
                    self.renew_deadline,
                )
                return
            await self.sleep(self.retry_period)

    async def release(self) -> bool:
        """Give the Lease up if we still hold it, so a standby need not wait."""
        try:
            lease = await self.client.get("Lease", self.name, self.namespace)
        except (NotFoundError, ApiError):
            return False
        current = LeaderRecord.of(lease)
        if current.holder != self.identity:
            return False
        now = micro_time(self.wall_clock())
        fresh = type(lease)()
        fresh.CopyFrom(lease)
        LeaderRecord("", 1, now, now, current.transitions).write_to(fresh)
        try:
            await self.client.update(fresh)
        except ApiError as exc:
            log.warning("leader election: releasing %s/%s: %s", self.namespace, self.name, exc)
            return False
        log.info(
            "leader election: %s released lease %s/%s", self.identity, self.namespace, self.name
        )
        return True

    async def run(self, work: Callable[[], Awaitable[Any]]) -> bool:
        """Wait for leadership, then run `work` while leading.

        Returns True when leadership was lost (work was cancelled: the caller
        should exit or start over as a candidate), False when work returned by
        itself. If work raises, the exception propagates after stepping down.
        Cancelling run() cancels work and releases the Lease (release_on_cancel)."""
        await self.acquire()
        self.leading = True
        work_task = asyncio.ensure_future(work())
        renew_task = asyncio.ensure_future(self.renew_until_lost())
        try:
            done, _ = await asyncio.wait(
                {work_task, renew_task}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.leading = False
            for task in (work_task, renew_task):
                task.cancel()
            for task in (work_task, renew_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.release_on_cancel:
                await self.release()
            if self.on_stopped_leading is not None:
                try:
                    self.on_stopped_leading()
                except Exception:
                    log.exception("leader election: on_stopped_leading callback failed")
        if work_task in done:
            work_task.result()  # re-raise what the work raised
            return False
        return True
