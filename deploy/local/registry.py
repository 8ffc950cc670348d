"""The cluster's image registry: Debian's docker-registry (distribution 2.x) on the
LAN, storing under the cluster's state directory. Every node's dockerd uses it as
its registry mirror, so `busybox:1.36` resolves to REGISTRY/library/busybox:1.36."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REGISTRY_BIN = "/usr/bin/docker-registry"
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
# Never through a proxy: the registry lives on a LAN inside this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def render_config(storage: Path, listen: str) -> str:
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": listen, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def argv(config: Path) -> list[str]:
    return [REGISTRY_BIN, "serve", str(config)]


def answers(registry: str, timeout: float = 2.0) -> bool:
    """Whether the registry's /v2/ endpoint answers (HOST:PORT)."""
    try:
        with _OPENER.open(f"http://{registry}/v2/", timeout=timeout) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(registry: str, timeout: float = 20.0, alive: object = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(registry):
            return True
        if callable(alive) and not alive():
            return False
        time.sleep(0.1)
    return False


def has_manifest(registry: str, repository: str, tag: str, timeout: float = 5.0) -> bool:
    req = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": _MANIFEST_TYPES},
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
