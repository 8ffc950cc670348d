"""`orchctl image load IMAGE`: push a local image into a local cluster's registry,
from which every node pulls it (deploy/local)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from orchestrator.cli.errors import CliError
from orchestrator.cli.session import Session


def add_parsers(
    parent: argparse.ArgumentParser,
    common: argparse.ArgumentParser,
    parser_class: type[argparse.ArgumentParser],
) -> None:
    sub = parent.add_subparsers(dest="what", metavar="ACTION", parser_class=parser_class)
    p = sub.add_parser(
        "load",
        parents=[common],
        help="Push an image into a local cluster's registry",
        description="Take IMAGE from this host's dockerd ($DOCKER_HOST, else "
        "/var/run/docker.sock) or from a `docker save` tarball and push it into the "
        "registry of a local cluster, from which every node pulls it.",
    )
    p.add_argument("image", metavar="IMAGE", help="e.g. myapp:1.0")
    p.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="the local cluster (default: the only one)",
    )
    p.add_argument(
        "--from-tar",
        default=None,
        metavar="FILE",
        help="a `docker save` tarball; with one image in it, IMAGE becomes its name",
    )
    p.set_defaults(func=run_load)


async def run_load(session: Session, args: argparse.Namespace) -> int:
    # Imported here, not at the top: see orchestrator/cli/cluster.py.
    from deploy.local import cluster as local
    from deploy.local import images, progress
    from deploy.local.layout import LayoutError
    from deploy.local.state import StateError

    reporter = progress.for_stream(sys.stderr)
    try:
        pushed = await asyncio.to_thread(
            local.load_image,
            args.cluster,
            args.image,
            from_tar=args.from_tar,
            reporter=reporter,
        )
    except (local.ClusterError, images.ImageError, LayoutError, StateError, OSError) as exc:
        raise CliError(str(exc)) from None
    for name in pushed:
        print(f"Image {args.image} pushed as {name}; pods can use image: {args.image}")
    return 0
