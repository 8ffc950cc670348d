"""The Service proxy's iptables rules, rendered as iptables-restore text.

Pure: Service ports and their ready endpoints in, chains of rule lines out;
nothing here touches the kernel (iptables.py does). The layout is
kube-proxy's, under our own prefix:

nat
  PREROUTING, OUTPUT -> ORCH-SERVICES
      one rule per Service port with endpoints: ClusterIP:port -> ORCH-SVC-x;
      last, addrtype LOCAL -> ORCH-NODEPORTS (a NodePort answers on every
      address of the node)
  ORCH-NODEPORTS: per NodePort, mark for masquerade, then -> ORCH-SVC-x
  ORCH-SVC-x: mark off-cluster clients for masquerade; affinity (-m recent);
      then endpoint i of n taken with probability 1/(n-i), so each of the n
      is equally likely
  ORCH-SEP-y: mark hairpin traffic (the endpoint calling itself) for
      masquerade, then DNAT to the endpoint
  ORCH-MARK-MASQ: sets the masquerade mark
  POSTROUTING -> ORCH-PROXY-POSTROUTING: masquerade marked packets
filter
  FORWARD, OUTPUT (new connections) -> ORCH-SERVICES: REJECT for Service
      ports without endpoints, so clients see "connection refused" at once
      rather than a hang
  INPUT (new connections) -> ORCH-EXTERNAL-SERVICES: the same for NodePorts
  FORWARD -> ORCH-PROXY-FORWARD: accept marked and established Service traffic
      (a dockerd in the node's namespace sets FORWARD's policy to DROP)

"ORCH-PROXY-" and not "ORCH-POSTROUTING"/"ORCH-FORWARD": those two belong to
the pod network's HostFirewall, which flushes anything in them that is not its
own. Stale-chain cleanup likewise only ever touches ORCH-SVC-/ORCH-SEP- chains.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.network.proxy.model import Endpoint, ServicePort

NAT = "nat"
FILTER = "filter"
TABLES = (NAT, FILTER)  # restore order: see build_restore

SERVICES = "ORCH-SERVICES"
NODEPORTS = "ORCH-NODEPORTS"
EXTERNAL_SERVICES = "ORCH-EXTERNAL-SERVICES"
MARK_MASQ = "ORCH-MARK-MASQ"
POSTROUTING = "ORCH-PROXY-POSTROUTING"
FORWARD = "ORCH-PROXY-FORWARD"
SVC_PREFIX = "ORCH-SVC-"
SEP_PREFIX = "ORCH-SEP-"
OWN_PREFIXES = (SVC_PREFIX, SEP_PREFIX)

MASQ_MARK = "0x4000"

# Written on every sync, whatever changed: they are small, and every Service
# port has a line in some of them.
TOP_CHAINS: dict[str, tuple[str, ...]] = {
    NAT: (SERVICES, NODEPORTS, MARK_MASQ, POSTROUTING),
    FILTER: (SERVICES, EXTERNAL_SERVICES, FORWARD),
}


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that leads to one of ours. Built-in chains
    are shared with everyone else, so these are checked and inserted one by one
    (iptables -C / -I) rather than restored."""

    table: str
    chain: str
    args: tuple[str, ...]


def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", text)


NEW = ("-m", "conntrack", "--ctstate", "NEW")
JUMPS: tuple[Jump, ...] = (
    Jump(NAT, "PREROUTING", (*_comment("orch service portals"), "-j", SERVICES)),
    Jump(NAT, "OUTPUT", (*_comment("orch service portals"), "-j", SERVICES)),
    Jump(NAT, "POSTROUTING", (*_comment("orch postrouting rules"), "-j", POSTROUTING)),
    Jump(FILTER, "INPUT", (*NEW, *_comment("orch external services"), "-j", EXTERNAL_SERVICES)),
    Jump(FILTER, "FORWARD", (*NEW, *_comment("orch service portals"), "-j", SERVICES)),
    Jump(FILTER, "OUTPUT", (*NEW, *_comment("orch service portals"), "-j", SERVICES)),
    Jump(FILTER, "FORWARD", (*_comment("orch forwarding rules"), "-j", FORWARD)),
)


def _hash(text: str) -> str:
    """16 base32 characters of sha256, as kube-proxy names its chains: stable
    across restarts and within iptables' 28-character chain-name limit."""
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def svc_chain(sp: ServicePort) -> str:
    return SVC_PREFIX + _hash(f"{sp}/{sp.protocol}")


def sep_chain(sp: ServicePort, ep: Endpoint) -> str:
    return SEP_PREFIX + _hash(f"{sp}/{sp.protocol}/{ep.ip}:{ep.port}")


def probability(i: int, n: int) -> str:
    """The chance rule i of n (0-based) is taken, given that the i before it were
    not: 1/(n-i). Ten decimals, as kube-proxy writes them."""
    return f"{1.0 / (n - i):.10f}"


@dataclass
class ServiceRules:
    """Everything one Service port contributes, so an unchanged port's rules can
    be reused as they are on the next sync."""

    nat_services: list[str] = field(default_factory=list)
    nat_nodeports: list[str] = field(default_factory=list)
    filter_services: list[str] = field(default_factory=list)
    filter_external: list[str] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)  # own nat chains


def render_service_port(
    sp: ServicePort, endpoints: tuple[Endpoint, ...], cluster_cidr: str
) -> ServiceRules:
    out = ServiceRules()
    name = str(sp)  # formatted once: it is in nearly every line
    proto = sp.protocol.lower()
    match = f"-p {proto} -m {proto} --dport"
    dst = f"-d {sp.cluster_ip}/32"
    if not endpoints:
        # A TCP reset: ICMP errors are rate-limited per peer (about one a second
        # after a burst), so a client retrying would wait instead of being refused.
        how = "tcp-reset" if proto == "tcp" else "icmp-port-unreachable"
        reject = f"-j REJECT --reject-with {how}"
        note = f'-m comment --comment "{name} has no endpoints"'
        out.filter_services.append(f"-A {SERVICES} {dst} {note} {match} {sp.port} {reject}")
        if sp.node_port:
            out.filter_external.append(
                f"-A {EXTERNAL_SERVICES} -m addrtype --dst-type LOCAL {note} "
                f"{match} {sp.node_port} {reject}"
            )
        return out

    svc = svc_chain(sp)
    label = f'-m comment --comment "{name} cluster IP"'
    out.nat_services.append(f"-A {SERVICES} {dst} {label} {match} {sp.port} -j {svc}")
    if sp.node_port:
        np_label = f'-m comment --comment "{name} node port"'
        out.nat_nodeports.append(f"-A {NODEPORTS} {np_label} {match} {sp.node_port} -j {MARK_MASQ}")
        out.nat_nodeports.append(f"-A {NODEPORTS} {np_label} {match} {sp.node_port} -j {svc}")

    # Clients outside the cluster CIDR (the node itself, other hosts) are
    # masqueraded so the endpoint's reply comes back through this node's NAT.
    svc_lines = [f"-A {svc} {dst} ! -s {cluster_cidr} {label} {match} {sp.port} -j {MARK_MASQ}"]
    key = f"{name}/{sp.protocol}/"
    seps = [SEP_PREFIX + _hash(f"{key}{ep.ip}:{ep.port}") for ep in endpoints]
    if sp.affinity_timeout:
        for ep, sep in zip(endpoints, seps, strict=True):
            svc_lines.append(
                f'-A {svc} -m comment --comment "{name} -> {ep.ip}:{ep.port}" '
                f"-m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} --reap -j {sep}"
            )
    n = len(endpoints)
    for i, (ep, sep) in enumerate(zip(endpoints, seps, strict=True)):
        chance = ""
        if i < n - 1:
            chance = f" -m statistic --mode random --probability {probability(i, n)}"
        svc_lines.append(
            f'-A {svc} -m comment --comment "{name} -> {ep.ip}:{ep.port}"{chance} -j {sep}'
        )
    out.chains[svc] = svc_lines

    sep_label = f'-m comment --comment "{name}"'
    for ep, sep in zip(endpoints, seps, strict=True):
        recent = f" -m recent --name {sep} --set" if sp.affinity_timeout else ""
        out.chains[sep] = [
            # Hairpin: a pod reaching itself through its Service would otherwise
            # get a reply from its own address to its own address and drop it.
            f"-A {sep} -s {ep.ip}/32 {sep_label} -j {MARK_MASQ}",
            f"-A {sep} {sep_label} -p {proto}{recent} -m {proto} "
            f"-j DNAT --to-destination {ep.ip}:{ep.port}",
        ]
    return out


@dataclass
class Ruleset:
    """The whole desired state: table -> chain -> its "-A" lines, and which
    Service port owns each of our per-Service chains (for error messages)."""

    tables: dict[str, dict[str, list[str]]]
    owners: dict[str, ServicePort]

    def own_chains(self) -> set[tuple[str, str]]:
        return {
            (table, chain)
            for table, chains in self.tables.items()
            for chain in chains
            if chain.startswith(OWN_PREFIXES)
        }


class Renderer:
    """Renders a Ruleset, reusing the rules of every Service port whose inputs
    (the port, its endpoints) are the same as last time: a sync after one
    endpoint change costs a dictionary walk, not 5,000 Services' strings."""

    def __init__(self, cluster_cidr: str) -> None:
        self.cluster_cidr = cluster_cidr
        self._cache: dict[ServicePort, tuple[tuple[Endpoint, ...], ServiceRules]] = {}

    def render(self, ports: Mapping[ServicePort, tuple[Endpoint, ...]]) -> Ruleset:
        nat_services: list[str] = []
        nat_nodeports: list[str] = []
        filter_services: list[str] = []
        filter_external: list[str] = []
        nat: dict[str, list[str]] = {}
        owners: dict[str, ServicePort] = {}
        cache: dict[ServicePort, tuple[tuple[Endpoint, ...], ServiceRules]] = {}
        for sp in sorted(ports):
            eps = ports[sp]
            hit = self._cache.get(sp)
            if hit is not None and hit[0] == eps:
                rules = hit[1]
            else:
                rules = render_service_port(sp, eps, self.cluster_cidr)
            cache[sp] = (eps, rules)
            nat_services += rules.nat_services
            nat_nodeports += rules.nat_nodeports
            filter_services += rules.filter_services
            filter_external += rules.filter_external
            nat.update(rules.chains)
            for chain in rules.chains:
                owners[chain] = sp
        self._cache = cache
        nat_services.append(
            f'-A {SERVICES} -m comment --comment "orch service nodeports; must be last" '
            f"-m addrtype --dst-type LOCAL -j {NODEPORTS}"
        )
        top_nat = {
            SERVICES: nat_services,
            NODEPORTS: nat_nodeports,
            MARK_MASQ: [f"-A {MARK_MASQ} -j MARK --or-mark {MASQ_MARK}"],
            POSTROUTING: [
                f"-A {POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
                # Cleared before masquerading so the mark does not follow the
                # packet into an encapsulation (VXLAN) and masquerade that too.
                f"-A {POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
                f'-A {POSTROUTING} -m comment --comment "orch service traffic requiring SNAT" '
                "-j MASQUERADE --random-fully",
            ],
        }
        filter_ = {
            SERVICES: filter_services,
            EXTERNAL_SERVICES: filter_external,
            FORWARD: [
                f'-A {FORWARD} -m comment --comment "orch forwarding rules" '
                f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
                f'-A {FORWARD} -m comment --comment "orch forwarding conntrack rule" '
                "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ],
        }
        return Ruleset(tables={NAT: {**top_nat, **nat}, FILTER: filter_}, owners=owners)


def build_restore(
    desired: Ruleset,
    previous: Ruleset | None,
    existing: Iterable[tuple[str, str]],
) -> tuple[str, int]:
    """iptables-restore --noflush input turning `existing` into `desired`:
    (text, number of chains written).

    previous None: a full sync, every chain written. Otherwise incremental: the
    top-level chains and only the per-Service chains whose lines differ from
    `previous` (the last ruleset applied). `existing`: our per-Service chains
    now in the kernel (from iptables-save on a full sync, else previous's);
    those not desired are flushed and deleted in the same transaction.

    nat comes first: iptables-restore commits table by table, and nat holds
    nearly everything, so a bad line there leaves both tables as they were."""
    stale: dict[str, list[str]] = {t: [] for t in TABLES}
    for table, chain in existing:
        if table in stale and chain not in desired.tables.get(table, {}):
            stale[table].append(chain)
    out: list[str] = []
    written = 0
    for table in TABLES:
        chains = desired.tables.get(table, {})
        prev = previous.tables.get(table, {}) if previous is not None else None
        top = TOP_CHAINS[table]
        if prev is None:
            write = list(chains)
        else:
            write = [
                c
                for c, lines in chains.items()
                if c in top or ((old := prev.get(c)) is not lines and old != lines)
            ]
        gone = sorted(stale[table])
        out.append(f"*{table}")
        out.extend(f":{c} - [0:0]" for c in write)
        out.extend(f":{c} - [0:0]" for c in gone)
        for c in write:
            out.extend(chains[c])
        out.extend(f"-X {c}" for c in gone)
        out.append("COMMIT")
        written += len(write)
    out.append("")
    return "\n".join(out), written


def parse_own_chains(save_output: str) -> set[tuple[str, str]]:
    """Our per-Service chains (table, chain) in `iptables-save` output."""
    found: set[tuple[str, str]] = set()
    table = ""
    for line in save_output.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line[1:].startswith(OWN_PREFIXES):
            found.add((table, line[1:].split(" ", 1)[0]))
    return found


def describe_line(line: str, owners: Mapping[str, ServicePort]) -> str:
    """Which Service a restore line belongs to, for error messages."""
    words = line.split()
    for word in words[1:2] + words:
        chain = word.lstrip(":")
        if chain in owners:
            return f"Service {owners[chain].service} port {owners[chain]}"
    if '--comment "' in line:
        return line.split('--comment "', 1)[1].split('"', 1)[0]
    return "no Service"
