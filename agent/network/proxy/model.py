"""What the proxy needs of a Service and its Endpoints, as small frozen values.

Converting the API objects once, when the informer reports them, keeps the
sync loop away from protobuf: a sync walks plain tuples, and comparing one
Service port's inputs with the last sync's is a tuple comparison (that is
what lets the renderer reuse the chains of everything that did not change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Kubernetes' default for sessionAffinityConfig.clientIP.timeoutSeconds (3 h).
DEFAULT_AFFINITY_TIMEOUT = 10800


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, order=True)
class ServicePort:
    """One port of one Service: the unit that gets a chain of its own."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # "TCP", "UDP" or "SCTP"
    cluster_ip: str
    port: int
    node_port: int = 0
    affinity_timeout: int = 0  # seconds of ClientIP affinity; 0 for none

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        """`ns/name:port`, as kube-proxy names a Service port in its comments."""
        return f"{self.namespace}/{self.name}:{self.port_name or self.port}"


# As kube-proxy: a Service with this label belongs to another proxy (here the
# node-local DNS server answering on kube-dns's address).
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"


def proxied(service: Any) -> bool:
    """Whether a Service gets rules: headless (clusterIP None) and ExternalName
    Services are DNS-only, one without a ClusterIP yet has nothing to match, and
    one labelled for another proxy is that proxy's."""
    spec = service.spec
    if spec.type == "ExternalName" or SERVICE_PROXY_NAME_LABEL in service.metadata.labels:
        return False
    return bool(spec.cluster_ip) and spec.cluster_ip != "None"


def service_ports(service: Any) -> tuple[ServicePort, ...]:
    """The Service's ports as ServicePort values (empty for unproxied Services)."""
    if not proxied(service):
        return ()
    spec, meta = service.spec, service.metadata
    timeout = 0
    if spec.session_affinity == "ClientIP":
        timeout = spec.session_affinity_config.client_ip.timeout_seconds or DEFAULT_AFFINITY_TIMEOUT
    return tuple(
        ServicePort(
            namespace=meta.namespace,
            name=meta.name,
            port_name=p.name,
            protocol=(p.protocol or "TCP").upper(),
            cluster_ip=spec.cluster_ip,
            port=int(p.port),
            node_port=int(p.node_port) if spec.type in ("NodePort", "LoadBalancer") else 0,
            affinity_timeout=timeout,
        )
        for p in spec.ports
    )


def ready_endpoints(endpoints: Any) -> dict[tuple[str, str], tuple[Endpoint, ...]]:
    """(port name, protocol) -> the ready endpoints serving it, sorted.

    Only `addresses`: `notReadyAddresses` are pods that failed their readiness
    probe or are still starting, and must get no traffic. Sorting makes the
    rendered chains stable, so an unchanged set renders to unchanged rules."""
    found: dict[tuple[str, str], set[Endpoint]] = {}
    for subset in endpoints.subsets:
        for port in subset.ports:
            key = (port.name, (port.protocol or "TCP").upper())
            bucket = found.setdefault(key, set())
            bucket.update(Endpoint(a.ip, int(port.port)) for a in subset.addresses)
    return {key: tuple(sorted(eps)) for key, eps in found.items()}
