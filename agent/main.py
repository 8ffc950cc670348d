"""`orch-agent`: the node agent.

orch-agent join SERVER --token TOKEN --ca-hash sha256:HASH [--node-name N] [--data-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from pathlib import Path

from agent.agent import Agent, AgentConfig
from agent.join import JoinError, default_node_name, join

DEFAULT_DATA_DIR = "/var/lib/orch-agent"


def cmd_join(args: argparse.Namespace) -> int:
    try:
        creds = asyncio.run(
            join(
                args.server,
                args.token,
                args.ca_hash,
                node_name=args.node_name or default_node_name(),
                data_dir=Path(args.data_dir),
                timeout=args.timeout,
            )
        )
    except JoinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"This node has joined the cluster as system:node:{args.node_name or default_node_name()}."
    )
    print(f"Credentials: {creds.config_path}")
    return 0


async def _run(config: AgentConfig) -> None:
    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # Start in the background so a SIGTERM while starting (e.g. still waiting
    # for a pod CIDR) stops the agent at once.
    starting = asyncio.create_task(agent.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # a failed start ends the agent with its error
            await stopping
    finally:
        for task in (starting, stopping):
            task.cancel()
        await agent.stop()


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own arena (up to 8 per core);
    the agent's Docker and gRPC worker threads would each keep megabytes of
    mostly idle heap. Two arenas cost nothing measurable here."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)


M_ARENA_MAX = -8  # from glibc's malloc.h


def cmd_run(args: argparse.Namespace) -> int:
    _limit_malloc_arenas()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    data_dir = Path(args.data_dir)
    if not (data_dir / "agent.conf").exists():
        print(
            f"error: {data_dir / 'agent.conf'} not found: run `orch-agent join` first",
            file=sys.stderr,
        )
        return 1
    config = AgentConfig(
        data_dir=data_dir,
        docker_host=args.docker_host,
        node_ip=args.node_ip,
        node_name=args.node_name,
        pause_image=args.pause_image,
        listen_port=args.port,
        overlay_backend=args.overlay,
        vxlan_vni=args.vxlan_vni,
        vxlan_port=args.vxlan_port,
        proxy_mode=args.proxy_mode,
        iptables_backend=args.iptables_backend,
        dns_upstream_resolv=None
        if args.dns_upstream_resolv == "none"
        else args.dns_upstream_resolv,
    )
    from agent.network.proxy import ProxyModeUnavailable

    try:
        asyncio.run(_run(config))
    except ProxyModeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orch-agent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    j = sub.add_parser("join", help="join a cluster with a bootstrap token")
    j.add_argument("server", help="the apiserver's HOST:PORT")
    j.add_argument("--token", required=True)
    j.add_argument("--ca-hash", required=True, help="sha256:<hex> of the cluster CA's public key")
    j.add_argument("--node-name", default="")
    j.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    j.add_argument("--timeout", type=float, default=60.0)
    j.set_defaults(func=cmd_join)
    r = sub.add_parser("run", help="run the agent (after join)")
    r.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    r.add_argument("--node-ip", required=True, help="this node's address on the cluster network")
    r.add_argument("--node-name", default="", help="default: the name used at join")
    r.add_argument("--docker-host", default="unix:///run/docker.sock")
    r.add_argument(
        "--pause-image",
        default="busybox:1.36",
        help="image of the sandbox container that holds a pod's network namespace",
    )
    r.add_argument("--port", type=int, default=10250, help="the agent API (logs, exec)")
    r.add_argument(
        "--overlay",
        choices=("vxlan", "host-gw", "none"),
        default="vxlan",
        help="how pods reach other nodes' pods (default vxlan; host-gw needs one L2 segment)",
    )
    r.add_argument(
        "--dns-upstream-resolv",
        default="/etc/resolv.conf",
        metavar="FILE|none",
        help="resolv.conf whose servers get names outside the cluster (default "
        "/etc/resolv.conf; none: answer them REFUSED)",
    )
    r.add_argument(
        "--proxy-mode",
        choices=("nftables", "iptables", "ipvs"),
        default="nftables",
        help="how Services are implemented (default nftables: one table, syncs that scale "
        "to thousands of Services; iptables as kube-proxy's classic mode; ipvs needs the "
        "ip_vs kernel module)",
    )
    r.add_argument(
        "--iptables-backend",
        choices=("", "nft", "legacy"),
        default="",
        help="iptables flavour for Service rules (default: the system's)",
    )
    r.add_argument("--vxlan-vni", type=int, default=1)
    r.add_argument("--vxlan-port", type=int, default=8472)
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
