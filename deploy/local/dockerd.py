"""A node's dockerd: its own data root, exec root, socket and pidfile, no bridge and
no iptables (the agent owns the node's network), the cluster registry as mirror."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from deploy.local.layout import NodeLayout

DOCKERD = "dockerd"


def argv(node: NodeLayout, registry: str) -> list[str]:
    return [
        DOCKERD,
        "--data-root",
        str(node.docker_data_root),
        "--exec-root",
        str(node.docker_exec_root),
        "-H",
        node.docker_host,
        "--pidfile",
        str(node.docker_pidfile),
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--registry-mirror",
        f"http://{registry}",
        "--insecure-registry",
        registry,
    ]


def _client(docker_host: str, timeout: float) -> Any:
    import docker

    return docker.APIClient(base_url=docker_host, version="auto", timeout=timeout)


def ping(docker_host: str, timeout: float = 2.0) -> bool:
    try:
        client = _client(docker_host, timeout)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def wait_ready(docker_host: str, timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(docker_host):
            return True
        if not alive():
            return False
        time.sleep(0.1)
    return False


def remove_all_containers(docker_host: str, timeout: float = 30.0) -> int:
    """Force-remove every container (so dockerd's shutdown does not wait on them)."""
    try:
        client = _client(docker_host, timeout)
    except Exception:
        return 0
    removed = 0
    try:
        for c in client.containers(all=True):
            with contextlib.suppress(Exception):
                client.remove_container(c["Id"], force=True, v=True)
                removed += 1
    except Exception:
        pass
    finally:
        client.close()
    return removed
