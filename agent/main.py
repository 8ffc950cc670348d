"""`orch-agent`: the node agent.

orch-agent join SERVER --token TOKEN --ca-hash sha256:HASH [--node-name N] [--data-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
