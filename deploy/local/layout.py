"""Names, addresses and paths of one local cluster: pure functions of its name,
its LAN subnet and its node count, so `up`, `down` and the tests agree.

    LAN namespace   oc-NAME-lan   bridge br0, .1 (the registry listens here)
    control plane   oc-NAME-cp    .2, `orchestrator serve` on 6443 (+6444 for tokens)
    node i          oc-NAME-n<i>  .(10+i), its own dockerd and agent
    host            link oc-NAME  .254 in the root namespace, so orchctl reaches .2
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

STATE_ROOT = Path("/var/lib/orch-local")
RUN_ROOT = Path("/run/orch-local")
NETNS_DIR = Path("/var/run/netns")

# The documentation and benchmarking ranges (RFC 5737, RFC 2544): never routed on the
# internet, so a cluster LAN taken from them cannot shadow a real destination.
# 192.0.2.0/24 is the default; the others serve when a host already uses it (some CI
# machines put their uplink there) or when several local clusters run side by side.
DEFAULT_SUBNET = "192.0.2.0/24"
_FALLBACK_SUBNETS = ("198.51.100.0/24", "203.0.113.0/24")
_BENCHMARK_NET = ipaddress.IPv4Network("198.18.0.0/15")

API_PORT = 6443
REGISTRY_PORT = 5000
MAX_NAME = 12  # "oc-" + name must fit a 15-character interface name
MAX_NODES = 50
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_NODE_SUFFIX_RE = re.compile(r"^n([1-9][0-9]*)$")


class LayoutError(ValueError):
    """A name, subnet or node count the local cluster cannot use."""


def check_name(name: str) -> str:
    if not name:
        raise LayoutError("a cluster name is required")
    if len(name) > MAX_NAME:
        raise LayoutError(
            f'cluster name "{name}" is too long: at most {MAX_NAME} characters '
            "(it becomes part of interface names)"
        )
    if not _NAME_RE.match(name):
        raise LayoutError(
            f'cluster name "{name}" must be lower-case letters, digits and "-", '
            "starting and ending with a letter or digit"
        )
    return name


def check_nodes(nodes: int) -> int:
    if not 1 <= nodes <= MAX_NODES:
        raise LayoutError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
    return nodes


def check_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise LayoutError(f'subnet "{subnet}" is not an IPv4 network: {exc}') from None
    if net.prefixlen != 24:
        raise LayoutError(f"the cluster LAN must be a /24, not {subnet}")
    return net


def subnet_candidates() -> Iterator[ipaddress.IPv4Network]:
    yield ipaddress.IPv4Network(DEFAULT_SUBNET)
    for s in _FALLBACK_SUBNETS:
        yield ipaddress.IPv4Network(s)
    yield from _BENCHMARK_NET.subnets(new_prefix=24)


def choose_subnet(
    taken: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> ipaddress.IPv4Network:
    """The first candidate that overlaps nothing already routed or used by a cluster."""
    busy = list(taken)
    for cand in subnet_candidates():
        if not any(cand.version == t.version and cand.overlaps(t) for t in busy):
            return cand
    raise LayoutError("no free /24 left for a cluster LAN; pass --subnet")


def netns_prefix(name: str) -> str:
    return f"oc-{name}-"


def owns_netns(name: str, netns: str) -> bool:
    """Whether a namespace is one this cluster makes: oc-NAME-{lan,cp,n<i>}, exactly,
    so cluster "a" never claims the namespaces of cluster "a-n1"."""
    prefix = netns_prefix(name)
    if not netns.startswith(prefix):
        return False
    rest = netns[len(prefix) :]
    return rest in ("lan", "cp") or bool(_NODE_SUFFIX_RE.match(rest))


@dataclass(frozen=True)
class NodeLayout:
    index: int
    name: str
    netns: str
    ip: str
    lan_port: str  # the veth end on the LAN bridge
    dir: Path
    run_dir: Path

    @property
    def agent_dir(self) -> Path:
        return self.dir / "agent"

    @property
    def docker_data_root(self) -> Path:
        return self.dir / "docker"

    @property
    def dockerd_log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def docker_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def docker_exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def docker_pidfile(self) -> Path:
        return self.run_dir / "docker.pid"


@dataclass(frozen=True)
class Layout:
    name: str
    subnet: ipaddress.IPv4Network
    nodes: int
    state_root: Path = STATE_ROOT
    run_root: Path = RUN_ROOT
    bridge: str = field(default="br0")

    @classmethod
    def make(
        cls,
        name: str,
        subnet: str | ipaddress.IPv4Network,
        nodes: int,
        *,
        state_root: Path = STATE_ROOT,
        run_root: Path = RUN_ROOT,
    ) -> Layout:
        net = subnet if isinstance(subnet, ipaddress.IPv4Network) else check_subnet(subnet)
        return cls(check_name(name), net, check_nodes(nodes), state_root, run_root)

    # -- addresses ---------------------------------------------------------------------

    def _host(self, n: int) -> str:
        return str(self.subnet.network_address + n)

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    @property
    def lan_ip(self) -> str:
        return self._host(1)

    @property
    def registry(self) -> str:
        """HOST:PORT of the cluster's registry, as image names and dockerd flags want it."""
        return f"{self.lan_ip}:{REGISTRY_PORT}"

    @property
    def cp_ip(self) -> str:
        return self._host(2)

    @property
    def api_server(self) -> str:
        return f"{self.cp_ip}:{API_PORT}"

    @property
    def host_ip(self) -> str:
        return self._host(254)

    def cidr(self, ip: str) -> str:
        return f"{ip}/{self.prefixlen}"

    # -- names ---------------------------------------------------------------------------

    @property
    def lan_netns(self) -> str:
        return f"oc-{self.name}-lan"

    @property
    def cp_netns(self) -> str:
        return f"oc-{self.name}-cp"

    @property
    def host_link(self) -> str:
        """The root namespace's end of the host veth."""
        return f"oc-{self.name}"

    @property
    def context(self) -> str:
        return self.name

    @property
    def config_cluster(self) -> str:
        return f"orch-local-{self.name}"

    @property
    def config_user(self) -> str:
        return f"orch-local-{self.name}-admin"

    def node(self, index: int) -> NodeLayout:
        if not 1 <= index <= MAX_NODES:
            raise LayoutError(f"node index {index} out of range")
        return NodeLayout(
            index=index,
            name=f"{self.name}-n{index}",
            netns=f"oc-{self.name}-n{index}",
            ip=self._host(10 + index),
            lan_port=f"n{index}",
            dir=self.state_dir / "nodes" / f"n{index}",
            run_dir=self.run_dir / f"n{index}",
        )

    def all_nodes(self) -> list[NodeLayout]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    def netns_names(self) -> list[str]:
        return [self.lan_netns, self.cp_netns, *(n.netns for n in self.all_nodes())]

    # -- paths ---------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def run_dir(self) -> Path:
        """Short paths for sockets (a unix socket path must stay under 108 bytes)."""
        return self.run_root / self.name

    @property
    def lock_file(self) -> Path:
        return self.run_root / f".{self.name}.lock"

    @property
    def cp_dir(self) -> Path:
        return self.state_dir / "cp"

    @property
    def cp_log(self) -> Path:
        return self.state_dir / "cp.log"

    @property
    def admin_conf(self) -> Path:
        return self.cp_dir / "admin.conf"

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry_dir / "config.yml"

    @property
    def registry_log(self) -> Path:
        return self.state_dir / "registry.log"
