"""Endpoints for every Service with a selector: which pods, on which ports.

As Kubernetes' endpoints controller:
- a pod counts once it has an IP and is neither finished (Succeeded/Failed)
  nor being deleted: a pod on its way out leaves the Endpoints at once, so
  proxies stop sending to it while it still serves out its grace period;
- Ready pods are `addresses`, the others `notReadyAddresses` (all of them
  `addresses` with publishNotReadyAddresses, for peers that must find each
  other before they are ready);
- a named targetPort is looked up in each pod's own container ports, so pods
  of one Service may serve it on different numbers; pods that share a port
  set share a subset;
- hostname is set for pods whose spec.hostname and spec.subdomain (= the
  Service name) give them a DNS name of their own (StatefulSets);
- Services without a selector are left alone: their Endpoints are the user's.

Endpoints are written only when they change; a Service's Endpoints go with it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import AlreadyExistsError, Client, NotFoundError
from orchestrator.client.informer import cache_key
from orchestrator.controllers.base import Controller

log = logging.getLogger(__name__)

# Kubernetes tells its own Endpoints from hand-made ones by this label.
MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
MANAGED_BY = "endpoint-controller"
TOLERATE_UNREADY = "service.alpha.kubernetes.io/tolerate-unready-endpoints"


def _selector_matches(selector: Any, labels: Any) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def serves(pod: Any) -> bool:
    """Whether a pod may be an endpoint at all (ready or not)."""
    return (
        bool(pod.status.pod_ip)
        and pod.status.phase not in ("Succeeded", "Failed")
        and not pod.metadata.deletion_timestamp
    )


def resolve_port(pod: Any, port: Any) -> int | None:
    """The pod's port number for one Service port, or None if it has none."""
    target = port.target_port or str(port.port)
    if target.isdigit():
        return int(target)
    protocol = port.protocol or "TCP"
    for c in pod.spec.containers:
        for cp in c.ports:
            if cp.name == target and (cp.protocol or "TCP") == protocol:
                return int(cp.container_port)
    return None


def _address(pod: Any, service_name: str) -> core.EndpointAddress:
    addr = core.EndpointAddress(ip=pod.status.pod_ip)
    if pod.spec.hostname and pod.spec.subdomain == service_name:
        addr.hostname = pod.spec.hostname
    if pod.spec.node_name:
        addr.node_name = pod.spec.node_name
    ref = addr.target_ref
    ref.kind = "Pod"
    ref.namespace = pod.metadata.namespace
    ref.name = pod.metadata.name
    ref.uid = pod.metadata.uid
    return addr


def _by_ip(pods: list[Any]) -> list[Any]:
    return sorted(pods, key=lambda p: (p.status.pod_ip, p.metadata.name))


def desired_subsets(service: Any, pods: list[Any]) -> list[core.EndpointSubset]:
    """The subsets a Service's Endpoints should hold, in a stable order."""
    publish_all = service.spec.publish_not_ready_addresses or (
        service.metadata.annotations.get(TOLERATE_UNREADY) == "true"
    )
    # Pods with the same resolved ports form one subset.
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[Any], list[Any]]] = defaultdict(
        lambda: ([], [])
    )
    for pod in pods:
        if not serves(pod):
            continue
        resolved: list[tuple[str, int, str]] = []
        for sp in service.spec.ports:
            number = resolve_port(pod, sp)
            if number is not None:
                resolved.append((sp.name, number, sp.protocol or "TCP"))
        if service.spec.ports and not resolved:
            continue  # serves none of the Service's ports
        ready, not_ready = groups[tuple(resolved)]
        (ready if publish_all or _pod_ready(pod) else not_ready).append(pod)
    subsets = []
    for ports, (ready, not_ready) in sorted(groups.items()):
        subset = core.EndpointSubset()
        subset.addresses.extend(_address(p, service.metadata.name) for p in _by_ip(ready))
        subset.not_ready_addresses.extend(
            _address(p, service.metadata.name) for p in _by_ip(not_ready)
        )
        subset.ports.extend(core.EndpointPort(name=n, port=p, protocol=pr) for n, p, pr in ports)
        subsets.append(subset)
    return subsets


class EndpointsController(Controller):
    name = "endpoints"
    workers = 4

    def __init__(self, client: Client) -> None:
        super().__init__(client)

    def setup(self) -> None:
        self.services = self.informer("Service")
        self.pods = self.informer("Pod")
        self.endpoints = self.informer("Endpoints")
        self.services.add_handler(lambda _t, svc, _old: self.enqueue(svc))
        self.pods.add_handler(self._on_pod)
        self.endpoints.add_handler(self._on_endpoints)

    def _on_pod(self, _type: str, pod: Any, old: Any) -> None:
        """Requeue the Services that select the pod now or did before."""
        ns = pod.metadata.namespace
        for svc in self.services.list():
            if svc.metadata.namespace != ns:
                continue
            selector = svc.spec.selector
            if _selector_matches(selector, pod.metadata.labels) or (
                old is not None and _selector_matches(selector, old.metadata.labels)
            ):
                self.enqueue(svc)

    def _on_endpoints(self, _type: str, ep: Any, _old: Any) -> None:
        # Someone else changed (or removed) our Endpoints: put them back.
        if ep.metadata.labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
            self.queue.add(cache_key(ep))

    async def sync(self, key: str) -> None:
        ns, _, name = key.partition("/")
        svc = self.services.get(key)
        current = self.endpoints.get(key)
        if svc is None:
            if current is not None and current.metadata.labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
                try:
                    await self.client.delete("Endpoints", name, ns)
                except NotFoundError:
                    pass
            return
        if not svc.spec.selector:
            return  # hand-managed Endpoints
        pods = [
            p
            for p in self.pods.list()
            if p.metadata.namespace == ns
            and _selector_matches(svc.spec.selector, p.metadata.labels)
        ]
        subsets = desired_subsets(svc, pods)
        labels = dict(svc.metadata.labels)
        labels[MANAGED_BY_LABEL] = MANAGED_BY
        if current is not None:
            if list(current.subsets) == subsets and dict(current.metadata.labels) == labels:
                return
            ep = core.Endpoints()
            ep.CopyFrom(current)
            ep.metadata.labels.clear()
            ep.metadata.labels.update(labels)
            del ep.subsets[:]
            ep.subsets.extend(subsets)
            await self.client.update(ep)
            return
        ep = core.Endpoints(api_version="v1", kind="Endpoints")
        ep.metadata.name = name
        ep.metadata.namespace = ns
        ep.metadata.labels.update(labels)
        ep.subsets.extend(subsets)
        try:
            await self.client.create(ep)
        except AlreadyExistsError:
            self.queue.add_rate_limited(key)  # our cache is behind: look again
