"""Out of service before the signal: a deleted pod leaves every Endpoints
object (and every node's proxy rules) before its containers get SIGTERM.

The endpoints controller drops a pod from `addresses` as soon as it has a
deletionTimestamp, but that is a race with this agent, which sees the same
deletion and would otherwise signal the containers at once: for a moment the
proxies on other nodes still send new connections to a pod whose server is
already gone, and the clients see refusals. So before the grace period's
preStop/SIGTERM the kill path asks the gate to wait:

1. whether the pod is a backend at all: an Endpoints object in its namespace
   lists its IP (ready or not), or a Service there selects its labels (its
   address may already have been removed when we look). Neither: no wait.
2. until no Endpoints object lists the IP in `addresses` (polled: the agent's
   node identity may read Endpoints, and a dying pod is rare enough that a
   list every `poll_interval` costs nothing worth a watch);
3. then `propagation_delay` more, for every node's proxy to resync its rules.

The whole wait is bounded by `budget` (the pod's grace period): the gate
never delays a kill beyond it, and it returns how long it waited so the
containers get only what is left of the grace period. An API error ends the
wait early (a kill must never hang on the control plane).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_PROPAGATION_DELAY = 1.0
DEFAULT_POLL_INTERVAL = 0.2

# (kind, namespace) -> the objects of that kind in that namespace
Lister = Callable[[str, str], Awaitable[Iterable[Any]]]


def listed_ips(endpoints: Iterable[Any], *, ready_only: bool) -> set[str]:
    """The IPs the Endpoints objects list: in `addresses`, and unless
    ready_only also in `notReadyAddresses`."""
    ips: set[str] = set()
    for ep in endpoints:
        for subset in ep.subsets:
            ips.update(a.ip for a in subset.addresses)
            if not ready_only:
                ips.update(a.ip for a in subset.not_ready_addresses)
    return ips


def selects(services: Iterable[Any], labels: Any) -> bool:
    """Whether any Service's (non-empty) selector matches the labels."""
    for svc in services:
        selector = svc.spec.selector
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            return True
    return False


def client_lister(client: Any) -> Lister:
    async def lister(kind: str, namespace: str) -> Iterable[Any]:
        return list((await client.list(kind, namespace)).items)

    return lister


class EndpointsGate:
    """lister: returns the Endpoints or Services of a namespace (client_lister
    in the agent, a fake in tests). clock and sleep: seams for tests."""

    def __init__(
        self,
        lister: Lister,
        *,
        propagation_delay: float = DEFAULT_PROPAGATION_DELAY,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.lister = lister
        self.propagation_delay = propagation_delay
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep

    async def wait_out_of_service(self, pod: Any, pod_ip: str, budget: float) -> float:
        """Wait (at most `budget` seconds) until the pod at pod_ip is in no
        Endpoints' addresses and the proxies have had time to follow.
        Returns the seconds spent."""
        if not pod_ip or budget <= 0:
            return 0.0
        started = self.clock()
        deadline = started + budget
        ns = pod.metadata.namespace
        name = f"{ns}/{pod.metadata.name}"
        try:
            endpoints = list(await self.lister("Endpoints", ns))
            if pod_ip not in listed_ips(endpoints, ready_only=False) and not selects(
                await self.lister("Service", ns), pod.metadata.labels
            ):
                return self.clock() - started  # never a backend: nothing to drain
            while pod_ip in listed_ips(endpoints, ready_only=True):
                left = deadline - self.clock()
                if left <= 0:
                    log.warning(
                        "pod %s is still an endpoint after %.1fs: stopping it anyway",
                        name,
                        budget,
                    )
                    return self.clock() - started
                await self.sleep(min(self.poll_interval, left))
                endpoints = list(await self.lister("Endpoints", ns))
        except Exception as exc:  # ApiError, a lost connection: never hang a kill on them
            log.warning("pod %s: cannot check its endpoints (%s): stopping it now", name, exc)
            return self.clock() - started
        left = deadline - self.clock()
        if left > 0 and self.propagation_delay > 0:
            await self.sleep(min(self.propagation_delay, left))
        spent = self.clock() - started
        log.info("pod %s left its endpoints %.2fs before its containers are stopped", name, spent)
        return spent
