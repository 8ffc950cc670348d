"""The node's kernel settings and iptables rules for the pod network.

- `net.ipv4.ip_forward=1`: pods reach anything beyond the bridge through the node.
- `net.bridge.bridge-nf-call-iptables=1`: bridged pod-to-pod traffic passes
  iptables, which Service NAT (and hairpin to oneself through a Service) needs.
- FORWARD accepts for the pod CIDR in our own chain, jumped to first: a
  dockerd in the same namespace sets the FORWARD policy to DROP.
- MASQUERADE for pod traffic leaving the pod CIDR (or the cluster CIDR, when
  given), in our own nat chain.
- NOTRACK, in our own raw chain, for the overlay's encapsulation (VXLAN's UDP
  port) when the overlay has one: the pod traffic inside is tracked (Service
  NAT needs that) when it is forwarded; tracking the outer UDP too costs every
  packet a second conntrack pass on each node for state nothing reads.
  Measured in the network benchmark: VXLAN/LAN throughput +0.03 (paired runs,
  four of four). A host firewall that accepts the port by number (ufw,
  firewalld) still accepts these packets; one that accepts only
  `--ctstate NEW` for it would not, since they are UNTRACKED.

Everything runs in the node's network namespace: the current one (the agent
runs inside it), or a named one through `nsenter` (tests).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

FORWARD_CHAIN = "ORCH-FORWARD"
NAT_CHAIN = "ORCH-POSTROUTING"
RAW_CHAIN = "ORCH-NOTRACK"
# Our chains and where they are jumped to from.
_CHAINS = (
    ("filter", FORWARD_CHAIN, ("FORWARD",)),
    ("nat", NAT_CHAIN, ("POSTROUTING",)),
    ("raw", RAW_CHAIN, ("PREROUTING", "OUTPUT")),
)
COMMENT = "orch pod network"

SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class HostNetworkError(Exception):
    pass


def netns_path(netns: str) -> str:
    """A netns name (as `ip netns add` makes) or a path, as a path."""
    return netns if "/" in netns else f"/var/run/netns/{netns}"


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)


class HostFirewall:
    def __init__(
        self,
        pod_cidr: str,
        *,
        cluster_cidr: str | None = None,
        node_netns: str | None = None,
        untracked_udp_port: int | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.pod_cidr = pod_cidr
        # The overlay's encapsulation port, whose packets skip conntrack.
        self.untracked_udp_port = untracked_udp_port
        # Traffic to other pods is never masqueraded: the node's own range, or
        # the whole cluster's once pods on other nodes are reachable.
        self.no_masquerade_cidr = cluster_cidr or pod_cidr
        self.node_netns = node_netns
        self._runner = runner or _run

    # -- plumbing ------------------------------------------------------------------

    def _prefix(self) -> list[str]:
        if self.node_netns is None:
            return []
        return ["nsenter", f"--net={netns_path(self.node_netns)}"]

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return self._runner([*self._prefix(), *cmd])

    def _iptables(self, *args: str) -> subprocess.CompletedProcess[str]:
        # -w: wait for the xtables lock rather than fail when another writer holds it.
        return self.run("iptables", "-w", "5", *args)

    def _must(self, *args: str) -> None:
        out = self._iptables(*args)
        if out.returncode != 0:
            raise HostNetworkError(f"iptables {' '.join(args)}: {out.stderr.strip()}")

    # -- sysctls -------------------------------------------------------------------

    def ensure_sysctls(self) -> None:
        for key, value in SYSCTLS.items():
            path = Path("/proc/sys") / key
            if key.startswith("net/bridge/") and not path.exists():
                # The knob exists only once br_netfilter is loaded (a module is global).
                self._runner(["modprobe", "br_netfilter"])
                if not path.exists():
                    log.warning(
                        "br_netfilter is not available: bridged pod traffic will bypass "
                        "iptables (Services to a pod on the same node may not work)"
                    )
                    continue
            self._write_sysctl(path, value)

    def _write_sysctl(self, path: Path, value: str) -> None:
        if self.node_netns is None:
            # /proc/sys/net shows the namespace of whoever opens it: ours.
            if path.read_text().strip() != value:
                path.write_text(value)
            return
        out = self.run("sh", "-c", 'echo "$1" > "$2"', "sh", value, str(path))
        if out.returncode != 0:
            raise HostNetworkError(f"setting {path} to {value}: {out.stderr.strip()}")

    # -- iptables ------------------------------------------------------------------

    def _ensure_chain(self, table: str, chain: str) -> None:
        if self._iptables("-t", table, "-S", chain).returncode != 0:
            self._must("-t", table, "-N", chain)

    def _ensure_rule(self, table: str, chain: str, rule: list[str], *, first: bool) -> None:
        if self._iptables("-t", table, "-C", chain, *rule).returncode == 0:
            return
        if first:
            self._must("-t", table, "-I", chain, "1", *rule)
        else:
            self._must("-t", table, "-A", chain, *rule)

    def rules(self) -> list[tuple[str, str, list[str], bool]]:
        """(table, chain, rule, insert first?) for every rule we own."""
        cidr = self.pod_cidr
        # Forwarding is accepted for every pod of the cluster, not only ours: traffic
        # between overlay and bridge, and Service traffic DNATed to a pod on another
        # node, would otherwise meet a FORWARD DROP policy (dockerd sets one).
        pods = self.no_masquerade_cidr
        comment = ["-m", "comment", "--comment", COMMENT]
        rules = [
            ("filter", "FORWARD", [*comment, "-j", FORWARD_CHAIN], True),
            ("filter", FORWARD_CHAIN, ["-s", pods, *comment, "-j", "ACCEPT"], False),
            ("filter", FORWARD_CHAIN, ["-d", pods, *comment, "-j", "ACCEPT"], False),
            ("nat", "POSTROUTING", [*comment, "-j", NAT_CHAIN], True),
            (
                "nat",
                NAT_CHAIN,
                ["-s", cidr, "!", "-d", self.no_masquerade_cidr, *comment, "-j", "MASQUERADE"],
                False,
            ),
        ]
        if self.untracked_udp_port is not None:
            port = str(self.untracked_udp_port)
            rules += [
                ("raw", "PREROUTING", [*comment, "-j", RAW_CHAIN], True),
                ("raw", "OUTPUT", [*comment, "-j", RAW_CHAIN], True),
                (
                    "raw",
                    RAW_CHAIN,
                    ["-p", "udp", "--dport", port, *comment, "-j", "NOTRACK"],
                    False,
                ),
            ]
        return rules

    def ensure_rules(self) -> None:
        """Idempotent: each rule is checked (-C) before it is added. Our chains
        hold exactly the wanted rules; one no longer wanted (the raw chain,
        after a switch to an overlay without encapsulation) goes."""
        rules = self.rules()
        for table, chain, parents in _CHAINS:
            if not any((t, c) == (table, chain) for t, c, _, _ in rules):
                self._remove_chain(table, chain, parents)
                continue
            self._ensure_chain(table, chain)
            wanted = [r for t, c, r, _ in rules if (t, c) == (table, chain)]
            self._prune_chain(table, chain, wanted)
        for table, chain, rule, first in rules:
            self._ensure_rule(table, chain, rule, first=first)

    def _prune_chain(self, table: str, chain: str, wanted: list[list[str]]) -> None:
        """Our chains hold exactly our rules: anything else (an earlier pod CIDR's,
        a duplicate) goes, by flushing the chain for a clean refill."""
        out = self._iptables("-t", table, "-S", chain)
        present = [line for line in out.stdout.splitlines() if line.startswith("-A ")]
        if len(present) == len(wanted) and all(
            self._iptables("-t", table, "-C", chain, *rule).returncode == 0 for rule in wanted
        ):
            return
        if present:
            self._must("-t", table, "-F", chain)

    def ensure(self) -> None:
        self.ensure_sysctls()
        self.ensure_rules()

    def remove_rules(self) -> None:
        """Remove our chains and the jumps to them (the sysctls stay)."""
        for table, chain, parents in _CHAINS:
            self._remove_chain(table, chain, parents)

    def _remove_chain(self, table: str, chain: str, parents: tuple[str, ...]) -> None:
        jump = ["-m", "comment", "--comment", COMMENT, "-j", chain]
        for parent in parents:
            for _ in range(16):  # duplicates, if any, go too
                if self._iptables("-t", table, "-D", parent, *jump).returncode != 0:
                    break
        if self._iptables("-t", table, "-S", chain).returncode == 0:
            self._must("-t", table, "-F", chain)
            self._must("-t", table, "-X", chain)
