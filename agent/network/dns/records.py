"""The cluster's DNS records as a table: name -> records, kept from API objects.

Follows the Kubernetes DNS-based service discovery specification (schema
1.1.0), as CoreDNS's kubernetes plugin serves it:

- `<svc>.<ns>.svc.<zone>`: A/AAAA to the ClusterIP; for a headless Service one
  A per ready endpoint (all endpoints with publishNotReadyAddresses); a CNAME
  to spec.externalName for ExternalName Services;
- `<hostname>.<svc>.<ns>.svc.<zone>` for each endpoint of a headless Service,
  where hostname is the endpoint's own (StatefulSet pods: spec.hostname with
  spec.subdomain = the Service) or, failing that, its dashed IP, as CoreDNS
  names it, so every SRV target below resolves;
- `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for each named port: one
  record to the Service name, or one per endpoint of a headless Service;
- PTR for ClusterIPs and for headless endpoints;
- `<a-b-c-d>.<ns>.pod.<zone>` A for pods that exist with that IP (CoreDNS's
  "pods verified" mode: an arbitrary dashed IP does not resolve);
- `dns-version.<zone>` TXT, and SOA/NS at the apex.

Which names exist matters as much as what they hold: a name with no records
of the asked type, including a name that only has names below it (`svc.<zone>`,
`_tcp.<svc>...`), is NODATA, not NXDOMAIN: a stub resolver stops walking its
search list on NXDOMAIN for the wrong reasons otherwise, and caches negatives.

Each API object owns the records it produced. A change to one object rebuilds
only its own records and applies the difference, so a cluster with thousands
of Services pays per change for one Service, not for all of them. Objects are
converted to small tuples on arrival and never kept as protobuf.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TTL = 5
SCHEMA_VERSION = "1.1.0"
# The reverse zones this server is the authority for: the service and pod
# ranges. A PTR query there that matches nothing is NXDOMAIN, not forwarded.
DEFAULT_REVERSE_CIDRS = ("10.96.0.0/12", "10.244.0.0/16")
TOLERATE_UNREADY = "service.alpha.kubernetes.io/tolerate-unready-endpoints"
REVERSE_SUFFIXES = (".in-addr.arpa", ".ip6.arpa")


@dataclass(frozen=True)
class Record:
    """One resource record. `value` is the address (A/AAAA), the target name
    (CNAME/PTR/NS/SRV), the text (TXT) or the SOA's primary name server."""

    name: str
    rtype: str
    value: str
    priority: int = 0  # SRV
    weight: int = 0  # SRV
    port: int = 0  # SRV


@dataclass(frozen=True)
class Answer:
    """What to reply, before any wire format.

    rcode is "NOERROR", "NXDOMAIN" or "SERVFAIL". external_target is set when
    the answer ends in a CNAME out of our zones (ExternalName): the server may
    resolve that name upstream and append what it finds."""

    rcode: str
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    authoritative: bool = True
    external_target: str | None = None


@dataclass(frozen=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int = 7200
    retry: int = 1800
    expire: int = 86400
    minimum: int = DEFAULT_TTL


# -- API objects as plain values --------------------------------------------------------

PortTuple = tuple[str, str, int]  # (name, protocol, number)
AddressTuple = tuple[str, str]  # (ip, hostname)


@dataclass(frozen=True)
class ServiceInfo:
    namespace: str
    name: str
    type: str  # "ClusterIP" (also NodePort/LoadBalancer), "Headless", "ExternalName", "Pending"
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[PortTuple, ...]
    publish_not_ready: bool


@dataclass(frozen=True)
class SubsetInfo:
    addresses: tuple[AddressTuple, ...]
    not_ready: tuple[AddressTuple, ...]
    ports: tuple[PortTuple, ...]


def service_info(svc: Any) -> ServiceInfo:
    spec = svc.spec
    if spec.type == "ExternalName":
        kind = "ExternalName"
    elif spec.cluster_ip == "None":
        kind = "Headless"
    elif spec.cluster_ip:
        kind = "ClusterIP"
    else:
        kind = "Pending"  # no address allocated yet: the name exists, empty
    ips = tuple(dict.fromkeys([spec.cluster_ip, *spec.cluster_ips])) if kind == "ClusterIP" else ()
    return ServiceInfo(
        namespace=svc.metadata.namespace,
        name=svc.metadata.name,
        type=kind,
        cluster_ips=tuple(ip for ip in ips if _is_ip(ip)),
        external_name=spec.external_name.rstrip(".").lower(),
        ports=tuple((p.name, p.protocol or "TCP", p.port) for p in spec.ports),
        publish_not_ready=spec.publish_not_ready_addresses
        or svc.metadata.annotations.get(TOLERATE_UNREADY) == "true",
    )


def subsets_info(ep: Any) -> tuple[SubsetInfo, ...]:
    return tuple(
        SubsetInfo(
            addresses=tuple((a.ip, a.hostname) for a in s.addresses if _is_ip(a.ip)),
            not_ready=tuple((a.ip, a.hostname) for a in s.not_ready_addresses if _is_ip(a.ip)),
            ports=tuple((p.name, p.protocol or "TCP", p.port) for p in s.ports),
        )
        for s in ep.subsets
    )


def pod_ips(pod: Any) -> tuple[str, ...]:
    """The addresses a pod answers to, empty once it has finished or is going."""
    status = pod.status
    if status.phase in ("Succeeded", "Failed") or pod.metadata.deletion_timestamp:
        return ()
    ips = dict.fromkeys([status.pod_ip, *(p.ip for p in status.pod_ips)])
    return tuple(ip for ip in ips if _is_ip(ip))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def dashed(ip: str) -> str:
    """10.244.1.5 -> 10-244-1-5 (IPv6: colons to dashes), a DNS label for an IP."""
    return ip.replace(".", "-").replace(":", "-")


def address_type(ip: str) -> str:
    return "AAAA" if ":" in ip else "A"


def canonical(name: str) -> str:
    return name.rstrip(".").lower()


def parent_names(name: str, apex: str) -> Iterable[str]:
    """name and every name above it, down to and including apex."""
    while True:
        yield name
        if name == apex or "." not in name:
            return
        name = name.split(".", 1)[1]


# -- the table --------------------------------------------------------------------------


@dataclass
class _Owned:
    records: Counter[Record] = field(default_factory=Counter)
    names: frozenset[str] = frozenset()


class DNSTable:
    """Records for one cluster domain, kept from Service, Endpoints and Pod objects.

    Not thread-safe: feed and query it from one event loop. `synced` is False
    until the caller says the informers have listed everything; until then
    lookups in our zones answer SERVFAIL, which resolvers retry, rather than
    NXDOMAIN, which they would cache."""

    def __init__(
        self,
        domain: str = "cluster.local",
        *,
        ttl: int = DEFAULT_TTL,
        nameserver_ip: str = "10.96.0.10",
        reverse_cidrs: Sequence[str] = DEFAULT_REVERSE_CIDRS,
        synced: bool = True,
    ) -> None:
        self.domain = canonical(domain)
        self.ttl = ttl
        self.synced = synced
        self.reverse_networks = tuple(ipaddress.ip_network(c) for c in reverse_cidrs)
        self.serial = 1
        self._services: dict[str, ServiceInfo] = {}
        self._subsets: dict[str, tuple[SubsetInfo, ...]] = {}
        self._owned: dict[str, _Owned] = {}
        # name -> rtype -> record -> how many owners produced it
        self._rrsets: dict[str, dict[str, Counter[Record]]] = {}
        # name -> how many owners have a name at or below it
        self._names: Counter[str] = Counter()
        self.ns_name = f"ns.dns.{self.domain}"
        static = [
            self.soa_record(),
            Record(f"dns-version.{self.domain}", "TXT", SCHEMA_VERSION),
            Record(self.domain, "NS", self.ns_name),
        ]
        if _is_ip(nameserver_ip):
            static.append(Record(self.ns_name, address_type(nameserver_ip), nameserver_ip))
        self._replace("static", static)

    # -- feeding -----------------------------------------------------------------------

    def set_service(self, svc: Any) -> None:
        info = service_info(svc)
        key = f"{info.namespace}/{info.name}"
        if self._services.get(key) == info:
            return
        self._services[key] = info
        self._rebuild_service(key)

    def delete_service(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        self._services.pop(key, None)
        self._rebuild_service(key)

    def set_endpoints(self, ep: Any) -> None:
        key = f"{ep.metadata.namespace}/{ep.metadata.name}"
        subsets = subsets_info(ep)
        if self._subsets.get(key) == subsets:
            return
        self._subsets[key] = subsets
        self._rebuild_service(key)

    def delete_endpoints(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        if self._subsets.pop(key, None) is not None:
            self._rebuild_service(key)

    def set_pod(self, pod: Any) -> None:
        ns = pod.metadata.namespace.lower()
        records = [
            Record(f"{dashed(ip)}.{ns}.pod.{self.domain}", address_type(ip), ip)
            for ip in pod_ips(pod)
        ]
        self._replace(f"pod/{pod.metadata.namespace}/{pod.metadata.name}", records)

    def delete_pod(self, namespace: str, name: str) -> None:
        self._replace(f"pod/{namespace}/{name}", ())

    def _rebuild_service(self, key: str) -> None:
        info = self._services.get(key)
        if info is None:
            self._replace(f"svc/{key}", ())
            return
        records = self.service_records(info, self._subsets.get(key, ()))
        base = self.service_name(info)
        # A Service's name exists even with nothing to return (a headless
        # Service without ready endpoints, a ClusterIP not yet allocated).
        self._replace(f"svc/{key}", records, extra_names=(base,))

    def service_name(self, info: ServiceInfo) -> str:
        return f"{info.name}.{info.namespace}.svc.{self.domain}".lower()

    def service_records(self, info: ServiceInfo, subsets: Sequence[SubsetInfo]) -> list[Record]:
        """Every record one Service (with its Endpoints' subsets) produces."""
        base = self.service_name(info)
        if info.type == "ExternalName":
            return [Record(base, "CNAME", info.external_name)] if info.external_name else []
        records: list[Record] = []
        if info.type == "ClusterIP":
            for ip in info.cluster_ips:
                records.append(Record(base, address_type(ip), ip))
                records.append(Record(ipaddress.ip_address(ip).reverse_pointer, "PTR", base))
            srv = [
                Record(_srv_name(name, proto, base), "SRV", base, port=port)
                for name, proto, port in info.ports
                if name
            ]
            return records + _weighted(srv)
        if info.type != "Headless":
            return records
        srv = []
        for subset in subsets:
            ready = subset.addresses + (subset.not_ready if info.publish_not_ready else ())
            for ip, hostname in ready:
                host = f"{(hostname or dashed(ip)).lower()}.{base}"
                records.append(Record(base, address_type(ip), ip))
                records.append(Record(host, address_type(ip), ip))
                records.append(Record(ipaddress.ip_address(ip).reverse_pointer, "PTR", host))
                srv.extend(
                    Record(_srv_name(name, proto, base), "SRV", host, port=port)
                    for name, proto, port in subset.ports
                    if name
                )
        return records + _weighted(srv)

    def _replace(
        self, owner: str, records: Iterable[Record], extra_names: Iterable[str] = ()
    ) -> None:
        """Make owner's records exactly `records`, touching only what changed."""
        new = Counter(records)
        # An owner counts once per name it has at or below, however many records.
        # Reverse names are looked up by address, never walked: not counted.
        names = frozenset(
            parent
            for name in {r.name for r in new} | set(extra_names)
            if self.in_zone(name)
            for parent in parent_names(name, self.domain)
        )
        old = self._owned.get(owner, _Owned())
        if old.records == new and old.names == names:
            return
        for record, count in (old.records - new).items():
            rrset = self._rrsets[record.name]
            rrset[record.rtype][record] -= count
            if rrset[record.rtype][record] <= 0:
                del rrset[record.rtype][record]
                if not rrset[record.rtype]:
                    del rrset[record.rtype]
                    if not rrset:
                        del self._rrsets[record.name]
        for record, count in (new - old.records).items():
            self._rrsets.setdefault(record.name, {}).setdefault(record.rtype, Counter())[
                record
            ] += count
        for name in old.names - names:
            self._names[name] -= 1
            if self._names[name] <= 0:
                del self._names[name]
        for name in names - old.names:
            self._names[name] += 1
        if new or names:
            self._owned[owner] = _Owned(new, names)
        else:
            self._owned.pop(owner, None)
        self.serial = (self.serial + 1) % 2**32 or 1

    # -- answering ---------------------------------------------------------------------

    def soa(self) -> Soa:
        return Soa(self.ns_name, f"hostmaster.{self.domain}", self.serial, minimum=self.ttl)

    def soa_record(self) -> Record:
        return Record(self.domain, "SOA", self.ns_name)

    def in_zone(self, name: str) -> bool:
        return name == self.domain or name.endswith("." + self.domain)

    def lookup(self, qname: str, qtype: str) -> Answer | None:
        """The answer for one question, or None when the name is not ours to
        answer (the server forwards it upstream or refuses it)."""
        name = canonical(qname)
        if self.in_zone(name):
            if not self.synced:
                return Answer("SERVFAIL", authoritative=False)
            return self._lookup_zone(name, qtype)
        if name.endswith(REVERSE_SUFFIXES):
            return self._lookup_reverse(name, qtype)
        return None

    def _lookup_zone(self, name: str, qtype: str) -> Answer:
        if name not in self._names:
            return Answer("NXDOMAIN", authority=(self.soa_record(),))
        answers: list[Record] = []
        external: str | None = None
        seen = {name}
        current = name
        # Follow CNAMEs within the zone (an ExternalName pointing at another
        # Service); a loop or a chain out of the zone ends the walk.
        while True:
            rrsets = self._rrsets.get(current, {})
            cname = rrsets.get("CNAME")
            if cname and qtype not in ("CNAME", "ANY"):
                target = next(iter(cname))
                answers.append(target)
                if not self.in_zone(target.value):
                    external = target.value
                    break
                if target.value in seen or len(seen) > 8:
                    break
                seen.add(target.value)
                current = target.value
                continue
            if qtype == "ANY":
                answers.extend(r for rrset in rrsets.values() for r in rrset)
            else:
                answers.extend(rrsets.get(qtype, ()))
            break
        if current != name and current not in self._names:
            return Answer("NXDOMAIN", answers=tuple(answers), authority=(self.soa_record(),))
        if not answers:
            return Answer("NOERROR", authority=(self.soa_record(),))
        return Answer(
            "NOERROR",
            answers=tuple(answers),
            additional=self._additional(answers),
            external_target=external,
        )

    def _additional(self, answers: Sequence[Record]) -> tuple[Record, ...]:
        """Addresses of SRV and NS targets, so clients need no second query."""
        extra: list[Record] = []
        for target in dict.fromkeys(r.value for r in answers if r.rtype in ("SRV", "NS")):
            rrsets = self._rrsets.get(target, {})
            extra.extend(rrsets.get("A", ()))
            extra.extend(rrsets.get("AAAA", ()))
        return tuple(extra)

    def _lookup_reverse(self, name: str, qtype: str) -> Answer | None:
        ip = ip_from_reverse(name)
        if ip is None:
            return None
        ptrs = self._rrsets.get(name, {}).get("PTR")
        if not ptrs:
            # Addresses in our ranges are ours to deny; others (the node's
            # LAN, the internet) belong upstream.
            if not any(ip in net for net in self.reverse_networks):
                return None
            if not self.synced:
                return Answer("SERVFAIL", authoritative=False)
            return Answer("NXDOMAIN")
        if qtype not in ("PTR", "ANY"):
            return Answer("NOERROR")
        return Answer("NOERROR", answers=tuple(ptrs))


def ip_from_reverse(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a full in-addr.arpa/ip6.arpa name stands for, else None."""
    if name.endswith(".in-addr.arpa"):
        labels = name.removesuffix(".in-addr.arpa").split(".")
        if len(labels) != 4:
            return None
        try:
            return ipaddress.IPv4Address(".".join(reversed(labels)))
        except ValueError:
            return None
    if name.endswith(".ip6.arpa"):
        nibbles = name.removesuffix(".ip6.arpa").split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        digits = "".join(reversed(nibbles))
        try:
            return ipaddress.IPv6Address(int(digits, 16))
        except ValueError:
            return None
    return None


def _srv_name(port_name: str, protocol: str, base: str) -> str:
    return f"_{port_name.lower()}._{protocol.lower()}.{base}"


def _weighted(srv: Sequence[Record]) -> list[Record]:
    """Equal shares of 100 among the records of each SRV name (as CoreDNS):
    clients pick among same-priority targets in proportion to weight."""
    counts = Counter(r.name for r in srv)
    return [
        Record(r.name, r.rtype, r.value, r.priority, max(1, 100 // counts[r.name]), r.port)
        for r in srv
    ]
