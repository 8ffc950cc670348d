"""Running the scheduler and the controller manager: alone, or as one of
several replicas of which only the Lease holder acts.

A component is anything with `start()` and `stop()`. With leader election
(the default, as in Kubernetes) a fresh component is made for every term of
leadership: a replica that loses its Lease stops acting at once, drops what
it knew (its caches may be stale by then) and stands again as a candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Protocol

from orchestrator.client.client import Client
from orchestrator.client.leaderelection import LeaderElector

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-system"


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def identity() -> str:
    """Unique per process and readable by people: host name, PID (which process
    on that host leads) and a random suffix (PIDs are reused)."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


async def run_component(
    name: str,
    make: Callable[[], Component],
    stop: asyncio.Event,
    *,
    client: Client | None = None,
    lease_name: str = "",
    lease_duration: float = 15.0,
    renew_deadline: float = 10.0,
    retry_period: float = 2.0,
) -> None:
    """Run the component until stop is set; with a client and lease_name, only
    while this process holds that Lease in kube-system."""
    if client is None or not lease_name:
        component = make()
        await component.start()
        try:
            await stop.wait()
        finally:
            await component.stop()
        return

    elector = LeaderElector(
        client,
        LEASE_NAMESPACE,
        lease_name,
        identity=identity(),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        on_new_leader=lambda who: log.info("%s: the leader is now %s", name, who),
    )

    async def lead() -> None:
        component = make()
        log.info("%s: leading as %s", name, elector.identity)
        await component.start()
        try:
            await asyncio.Event().wait()
        finally:
            await component.stop()

    while not stop.is_set():
        term = asyncio.create_task(elector.run(lead), name=f"{name}-term")
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({term, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            stopping.cancel()
        if term not in done:
            term.cancel()  # a clean stop: the elector releases the Lease
            with contextlib.suppress(asyncio.CancelledError):
                await term
            return
        try:
            term.result()
            log.warning("%s: lost the lease %s; standing again", name, lease_name)
        except Exception:
            log.exception("%s failed while leading; standing again", name)
            await asyncio.sleep(retry_period)
