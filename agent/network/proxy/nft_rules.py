"""The Service proxy's nftables ruleset, rendered as `nft -f` input.

Pure: Service ports and their ready endpoints in, nft commands out; nothing
here touches the kernel (nftables.py does). The layout follows kube-proxy's
nftables mode (KEP-3866) in a table of our own, `ip orch-proxy`, and nothing
outside it is ever touched:

nat
  nat-prerouting, nat-output -> services:
      ip daddr . proto . dport vmap @service-ips      -> svc-<hash>-<name>
      fib daddr type local: proto . dport vmap @service-nodeports -> ext-<hash>-<name>
  ext-x (NodePort): mark for masquerade, goto svc-x
  svc-x: mark off-cluster clients for masquerade; affinity lookups; then
      endpoint i of n taken when `numgen random mod (n-i)` is 0, so each of
      the n is equally likely; the rule DNATs straight to the endpoint
  nat-postrouting -> masquerading: hairpin (ct status dnat and
      saddr . daddr in @hairpin, the endpoint reaching itself) and marked
      packets are masqueraded
filter (priority -110, before anyone else's filter chains)
  filter-forward, filter-output -> service-endpoints-check:
      vmap @no-endpoint-services -> reject-chain (REJECT: clients see
      "connection refused" at once rather than a hang)
  filter-input -> nodeport-endpoints-check: the same for NodePorts

Why no per-Service sets or anonymous vmaps (kube-proxy's
`numgen random mod N vmap { 0 : goto a, ... }`): the kernel binds every
anonymous set by walking the whole transaction, and finds a named set by
walking the table's list of sets, so one transaction with thousands of them
costs time quadratic in their number (measured here: 5,000 Services x 10
endpoints, 37 s with one anonymous vmap per Service; chains are hashed, and
the same ruleset written as rule ladders loads in a few seconds). The only
sets are the five global maps and, for ClientIP affinity, one timeout set
per endpoint (rare; see below).

Session affinity (ClientIP), as kube-proxy: per endpoint a dynamic set
`aff-<hash>` of client addresses with the Service's timeout, refreshed by
the endpoint's chain `sep-<hash>` (`update @aff { ip saddr }`) before its
DNAT; the Service chain first sends a client found in an endpoint's set to
that endpoint. Only affinity Services have per-endpoint chains.

Hairpin: instead of a mark rule in every endpoint's chain (kube-proxy,
iptables mode), one set @hairpin of `ip . ip` for every endpoint address,
checked once in postrouting: after DNAT a packet whose source equals its
destination is an endpoint that reached itself through its Service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.network.proxy.model import Endpoint, ServicePort
from agent.network.proxy.rules import _hash

FAMILY = "ip"
TABLE = "orch-proxy"
T = f"{FAMILY} {TABLE}"  # every command names the table: nft -f needs it

MASQ_MARK = "0x4000"

SERVICES = "services"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"
REJECT = "reject-chain"
ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORTS_CHECK = "nodeport-endpoints-check"

SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_EP_SERVICES = "no-endpoint-services"
NO_EP_NODEPORTS = "no-endpoint-nodeports"
HAIRPIN = "hairpin"

IP_KEY = "ipv4_addr . inet_proto . inet_service"
PORT_KEY = "inet_proto . inet_service"
MAPS: dict[str, str] = {
    SERVICE_IPS: f"type {IP_KEY} : verdict ;",
    SERVICE_NODEPORTS: f"type {PORT_KEY} : verdict ;",
    NO_EP_SERVICES: f"type {IP_KEY} : verdict ;",
    NO_EP_NODEPORTS: f"type {PORT_KEY} : verdict ;",
    HAIRPIN: "type ipv4_addr . ipv4_addr ;",  # a set: keys only
}

# (chain, hook spec): the hooks. filter at -110 runs before iptables' filter
# chains (0), nat at dstnat/srcnat as iptables' nat.
BASE_CHAINS: dict[str, str] = {
    "nat-prerouting": "type nat hook prerouting priority -100 ;",
    "nat-output": "type nat hook output priority -100 ;",
    "nat-postrouting": "type nat hook postrouting priority 100 ;",
    "filter-forward": "type filter hook forward priority -110 ;",
    "filter-output": "type filter hook output priority -110 ;",
    "filter-input": "type filter hook input priority -110 ;",
}
FIXED_CHAINS = (SERVICES, MARK_MASQ, MASQUERADING, REJECT, ENDPOINTS_CHECK, NODEPORTS_CHECK)
OWN_PREFIXES = ("svc-", "ext-", "sep-")
AFFINITY_PREFIX = "aff-"

# Elements per `add element` line: one line per map would be megabytes, and
# nft's error messages quote the line.
ELEMENTS_PER_LINE = 500

_NAME_OK = re.compile(r"[A-Za-z0-9/_.\-]*")


def fixed_rules(cluster_cidr: str) -> dict[str, list[str]]:
    """The rules of the hooks and the fixed chains: rewritten on every sync
    (they are few), so whatever someone changed in them is repaired."""
    return {
        "nat-prerouting": [f"jump {SERVICES}"],
        "nat-output": [f"jump {SERVICES}"],
        "nat-postrouting": [f"jump {MASQUERADING}"],
        "filter-forward": [f"ct state new jump {ENDPOINTS_CHECK}"],
        "filter-output": [f"ct state new jump {ENDPOINTS_CHECK}"],
        "filter-input": [f"ct state new jump {NODEPORTS_CHECK}"],
        SERVICES: [
            f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
            # Last: a NodePort answers on every local address of the node.
            "fib daddr type local ip daddr != 127.0.0.0/8 "
            f"meta l4proto . th dport vmap @{SERVICE_NODEPORTS}",
        ],
        MARK_MASQ: [f"meta mark set meta mark | {MASQ_MARK}"],
        MASQUERADING: [
            f"ct status dnat ip saddr . ip daddr @{HAIRPIN} masquerade fully-random",
            f"meta mark & {MASQ_MARK} == 0 return",
            # Cleared before masquerading so the mark does not follow the
            # packet into an encapsulation (VXLAN) and masquerade that too.
            f"meta mark set meta mark ^ {MASQ_MARK}",
            "masquerade fully-random",
        ],
        # A TCP reset for TCP: ICMP errors are rate-limited per peer.
        REJECT: ["meta l4proto tcp reject with tcp reset", "reject"],
        ENDPOINTS_CHECK: [f"ip daddr . meta l4proto . th dport vmap @{NO_EP_SERVICES}"],
        NODEPORTS_CHECK: [
            f"ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{NO_EP_NODEPORTS}"
        ],
    }


def _readable(sp: ServicePort) -> str:
    """`ns/name/proto/port`, as kube-proxy appends to its chain names, when it
    is a valid nft identifier (it always is for valid API objects)."""
    text = f"{sp.namespace}/{sp.name}/{sp.protocol.lower()}/{sp.port_name or sp.port}"
    return text if _NAME_OK.fullmatch(text) else ""


def _name(prefix: str, key: str, readable: str) -> str:
    return f"{prefix}{_hash(key)}-{readable}" if readable else f"{prefix}{_hash(key)}"


def svc_chain(sp: ServicePort) -> str:
    return _name("svc-", f"{sp}/{sp.protocol}", _readable(sp))


def ext_chain(sp: ServicePort) -> str:
    return _name("ext-", f"{sp}/{sp.protocol}", _readable(sp))


def sep_chain(sp: ServicePort, ep: Endpoint) -> str:
    readable = _readable(sp)
    return _name("sep-", f"{sp}/{sp.protocol}/{ep}", f"{readable}__{ep.ip}/{ep.port}")


def affinity_set(sp: ServicePort, ep: Endpoint) -> str:
    # The timeout is part of the name: a set's timeout cannot be changed in
    # place, so a new timeout is a new set (and the old one goes as stale).
    return f"{AFFINITY_PREFIX}{_hash(f'{sp}/{sp.protocol}/{ep}/{sp.affinity_timeout}')}"


@dataclass
class ServiceNft:
    """Everything one Service port contributes, reused as is while its inputs
    (the port, its endpoints) stay the same."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    elements: dict[str, dict[str, str]] = field(default_factory=dict)  # map -> key -> value
    hairpin: dict[str, str] = field(default_factory=dict)  # "ip . ip" -> ""
    sets: dict[str, str] = field(default_factory=dict)  # affinity set -> its declaration


def render_service_port(
    sp: ServicePort, endpoints: tuple[Endpoint, ...], cluster_cidr: str
) -> ServiceNft:
    out = ServiceNft()
    proto = sp.protocol.lower()
    ip_key = f"{sp.cluster_ip} . {proto} . {sp.port}"
    port_key = f"{proto} . {sp.node_port}"
    if not endpoints:
        out.elements[NO_EP_SERVICES] = {ip_key: f"goto {REJECT}"}
        if sp.node_port:
            out.elements[NO_EP_NODEPORTS] = {port_key: f"goto {REJECT}"}
        return out

    svc = svc_chain(sp)
    out.elements[SERVICE_IPS] = {ip_key: f"goto {svc}"}
    if sp.node_port:
        ext = ext_chain(sp)
        out.elements[SERVICE_NODEPORTS] = {port_key: f"goto {ext}"}
        out.chains[ext] = [f"jump {MARK_MASQ}", f"goto {svc}"]
    out.hairpin = {f"{ep.ip} . {ep.ip}": "" for ep in endpoints}

    # Clients outside the cluster CIDR (the node itself, other hosts) are
    # masqueraded so the endpoint's reply comes back through this node's NAT.
    lines = [f"ip saddr != {cluster_cidr} jump {MARK_MASQ}"]
    n = len(endpoints)
    if sp.affinity_timeout:
        targets = []
        for ep in endpoints:
            sep, aff = sep_chain(sp, ep), affinity_set(sp, ep)
            out.sets[aff] = (
                f"type ipv4_addr ; flags dynamic,timeout ; timeout {sp.affinity_timeout}s ;"
            )
            lines.append(f"ip saddr @{aff} goto {sep}")
            out.chains[sep] = [
                f"update @{aff} {{ ip saddr }}",
                f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}",
            ]
            targets.append(f"goto {sep}")
    else:
        targets = [f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}" for ep in endpoints]
    for i, target in enumerate(targets):
        lines.append(f"numgen random mod {n - i} 0 {target}" if i < n - 1 else target)
    out.chains[svc] = lines
    return out


@dataclass
class NftRuleset:
    """The whole desired state of our table.

    fixed: the hooks' and fixed chains' rules, fresh each sync (a test may
    edit them); chains: the per-Service chains; elements: map -> key -> value
    ("" for the hairpin set); sets: affinity set -> declaration; owners: which
    Service port each per-Service chain and set belongs to."""

    fixed: dict[str, list[str]]
    chains: dict[str, list[str]]
    elements: dict[str, dict[str, str]]
    sets: dict[str, str]
    owners: dict[str, ServicePort]


class NftRenderer:
    """Renders an NftRuleset, reusing what every unchanged Service port
    contributed last time: a sync after one endpoint change walks dictionaries
    rather than formatting 5,000 Services' rules."""

    def __init__(self, cluster_cidr: str) -> None:
        self.cluster_cidr = cluster_cidr
        self._cache: dict[ServicePort, tuple[tuple[Endpoint, ...], ServiceNft]] = {}

    def render(self, ports: Mapping[ServicePort, tuple[Endpoint, ...]]) -> NftRuleset:
        chains: dict[str, list[str]] = {}
        elements: dict[str, dict[str, str]] = {name: {} for name in MAPS}
        hairpin = elements[HAIRPIN]
        sets: dict[str, str] = {}
        owners: dict[str, ServicePort] = {}
        cache: dict[ServicePort, tuple[tuple[Endpoint, ...], ServiceNft]] = {}
        # In the order the Services were reported, not sorted: sorting 5,000
        # dataclasses costs more than everything else an incremental sync does,
        # and nothing here depends on order (chains and elements are keyed).
        old_cache = self._cache
        for sp, eps in ports.items():
            hit = old_cache.get(sp)
            if hit is not None and hit[0] == eps:
                rendered = hit[1]
            else:
                rendered = render_service_port(sp, eps, self.cluster_cidr)
            cache[sp] = (eps, rendered)
            chains.update(rendered.chains)
            for chain in rendered.chains:
                owners[chain] = sp
            for name, elems in rendered.elements.items():
                target = elements[name]
                for key, value in elems.items():
                    # Two Services claiming one address:port (a conflict the
                    # API should not allow): the first wins, as nft would
                    # refuse the duplicate element.
                    if key not in target:
                        target[key] = value
            hairpin.update(rendered.hairpin)
            if rendered.sets:
                sets.update(rendered.sets)
                for name in rendered.sets:
                    owners[name] = sp
        self._cache = cache
        return NftRuleset(
            fixed=fixed_rules(self.cluster_cidr),
            chains=chains,
            elements=elements,
            sets=sets,
            owners=owners,
        )


def _element_lines(verb: str, name: str, items: list[tuple[str, str]]) -> list[str]:
    out = []
    for start in range(0, len(items), ELEMENTS_PER_LINE):
        chunk = items[start : start + ELEMENTS_PER_LINE]
        body = ", ".join(f"{k} : {v}" if v else k for k, v in chunk)
        out.append(f"{verb} element {T} {name} {{ {body} }}")
    return out


def _delete_element_lines(name: str, keys: list[str]) -> list[str]:
    return _element_lines("delete", name, [(k, "") for k in keys])


@dataclass(frozen=True)
class Existing:
    """Our per-Service chains and affinity sets now in the kernel."""

    chains: frozenset[str] = frozenset()
    sets: frozenset[str] = frozenset()
    table: bool = False  # whether the table exists at all


def build_transaction(
    desired: NftRuleset, previous: NftRuleset | None, existing: Existing
) -> tuple[str, int]:
    """`nft -f` input turning the table into `desired`: (text, chains written).
    One transaction: nft applies all of it or none.

    previous None: a full sync. The table, hooks, maps and every chain are
    (re)declared, every map refilled, and whatever `existing` holds that is
    not desired is removed. Otherwise incremental: only the per-Service chains
    whose rules differ from `previous` (the last ruleset applied) are
    rewritten, and only the map elements that differ are deleted and added.

    Order matters within the transaction: a chain or set must be declared
    before a rule or element refers to it, and a stale chain can only be
    deleted once nothing refers to it (its map elements are gone, the chains
    that jumped to it rewritten or flushed)."""
    out: list[str] = []
    full = previous is None
    if full:
        out.append(f"add table {T}")
        out.extend(f"add chain {T} {c} {{ {spec} }}" for c, spec in BASE_CHAINS.items())
        out.extend(f"add chain {T} {c}" for c in FIXED_CHAINS)
        out.extend(f"add map {T} {m} {{ {spec} }}" for m, spec in MAPS.items() if m != HAIRPIN)
        out.append(f"add set {T} {HAIRPIN} {{ {MAPS[HAIRPIN]} }}")
    # Affinity sets keep their contents (the clients' current endpoints)
    # across syncs: declared if new, never flushed.
    old_sets = existing.sets if full else frozenset(previous.sets if previous else ())
    out.extend(f"add set {T} {s} {{ {d} }}" for s, d in desired.sets.items() if s not in old_sets)

    chains = desired.chains
    if previous is None:
        write = list(chains)
        old = existing.chains
    else:
        before = previous.chains
        write = [
            c for c, lines in chains.items() if (p := before.get(c)) is not lines and p != lines
        ]
        old = frozenset(before)
    out.extend(f"add chain {T} {c}" for c in write if c not in old)

    for chain, lines in desired.fixed.items():
        out.append(f"flush chain {T} {chain}")
        out.extend(f"add rule {T} {chain} {line}" for line in lines)
    for chain in write:
        if chain in old:
            out.append(f"flush chain {T} {chain}")
        out.extend(f"add rule {T} {chain} {line}" for line in chains[chain])

    for name in MAPS:
        want = desired.elements.get(name, {})
        if previous is None:
            kind = "set" if name == HAIRPIN else "map"
            out.append(f"flush {kind} {T} {name}")
            out.extend(_element_lines("add", name, list(want.items())))
            continue
        had = previous.elements.get(name, {})
        if had == want:  # the common case, compared at C speed
            continue
        gone = [k for k, v in had.items() if want.get(k, None) != v]
        new = [(k, v) for k, v in want.items() if had.get(k, None) != v]
        out.extend(_delete_element_lines(name, gone))
        out.extend(_element_lines("add", name, new))

    stale = sorted(old - chains.keys())
    out.extend(f"flush chain {T} {c}" for c in stale)
    out.extend(f"delete chain {T} {c}" for c in stale)
    out.extend(f"delete set {T} {s}" for s in sorted(old_sets - desired.sets.keys()))
    out.append("")
    return "\n".join(out), len(write)


def delete_table() -> str:
    """Input removing our table and everything in it (used to switch modes)."""
    return f"add table {T}\ndelete table {T}\n"


_CHAIN_LINE = re.compile(r"^\s*chain (\S+) \{")
_SET_LINE = re.compile(r"^\s*set (\S+) \{")


def parse_existing(chains_listing: str, sets_listing: str) -> Existing:
    """Our per-Service chains and affinity sets from `nft list chains ip` and
    `nft -t list sets ip` (both list every table of the family; only the
    block of our table counts)."""

    def names(text: str, pattern: re.Pattern[str], prefixes: tuple[str, ...]) -> set[str]:
        found: set[str] = set()
        ours = False
        for line in text.splitlines():
            if line.startswith("table "):
                ours = line.split()[1:3] == [FAMILY, TABLE]
            elif ours and (m := pattern.match(line)) and m.group(1).startswith(prefixes):
                found.add(m.group(1))
        return found

    table = any(
        line.startswith("table ") and line.split()[1:3] == [FAMILY, TABLE]
        for line in chains_listing.splitlines()
    )
    return Existing(
        chains=frozenset(names(chains_listing, _CHAIN_LINE, OWN_PREFIXES)),
        sets=frozenset(names(sets_listing, _SET_LINE, (AFFINITY_PREFIX,))),
        table=table,
    )


def describe_line(line: str, owners: Mapping[str, ServicePort]) -> str:
    """Which Service an nft input line belongs to, for error messages."""
    for word in line.split():
        name = word.lstrip("@")
        if name in owners:
            return f"Service {owners[name].service} port {owners[name]}"
    return "no Service"
