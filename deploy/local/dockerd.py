"""A node's dockerd: its own data root, exec root, socket and pidfile, no bridge and
no iptables (the agent owns the node's network), the cluster registry as mirror.

Each dockerd starts and owns its containerd (`containerd --config
EXEC_ROOT/containerd/containerd.toml`, pidfile beside it). Both leave their
pidfiles behind when killed, and dockerd refuses to start while its pidfile
names a process that still has a /proc entry, a zombie included; given a
containerd pidfile naming any process, it "reuses" that containerd instead of
starting its own. `clear_leftovers` undoes all of that, so a node's Docker can
be started again on the same data root after a crash.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local import procs
from deploy.local.layout import NodeLayout

DOCKERD = "dockerd"


class RuntimeBusyError(Exception):
    """The node's dockerd is still running where a stopped one was expected."""


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


# -- dockerd's own containerd, and what a crash leaves -------------------------------------


def containerd_dir(node: NodeLayout) -> Path:
    """Where dockerd keeps its managed containerd's config, socket and pidfile."""
    return node.docker_exec_root / "containerd"


def containerd_config(node: NodeLayout) -> Path:
    return containerd_dir(node) / "containerd.toml"


def containerd_pidfile(node: NodeLayout) -> Path:
    return containerd_dir(node) / "containerd.pid"


def _is_node_dockerd(pid: int, node: NodeLayout) -> bool:
    argv = procs.cmdline(pid)
    return bool(argv) and str(node.docker_pidfile) in argv and str(node.docker_exec_root) in argv


def _is_node_containerd(pid: int, node: NodeLayout) -> bool:
    return str(containerd_config(node)) in procs.cmdline(pid)


def running_dockerd(node: NodeLayout) -> int | None:
    """PID of the live dockerd serving this node (by its pidfile, else by its argv)."""
    pid = procs.read_pidfile(node.docker_pidfile)
    if pid is not None and procs.start_time(pid) is not None and _is_node_dockerd(pid, node):
        return pid
    # A pidfile someone removed does not make a running dockerd go away.
    found = procs.pids_with_args(str(node.docker_pidfile), str(node.docker_exec_root))
    return found[0] if found else None


def node_containerds(node: NodeLayout) -> list[int]:
    """Live containerd processes of this node's exec root: the one its pidfile names
    and any other whose command line points at the node's containerd config."""
    found = set(procs.pids_with_args(str(containerd_config(node))))
    pid = procs.read_pidfile(containerd_pidfile(node))
    if pid is not None and procs.start_time(pid) is not None and _is_node_containerd(pid, node):
        found.add(pid)
    return sorted(found)


def clear_leftovers(node: NodeLayout, *, grace: float = 10.0) -> list[str]:
    """Make the node's Docker startable again after its dockerd died: stop a
    containerd that outlived its dockerd and remove the pidfiles both left. Container
    shims and the containers' data stay: the next containerd adopts the shims, and the
    next dockerd, on the same data root, sees every container again.

    Raises RuntimeBusyError while the node's dockerd itself still runs: that one must
    be stopped, not swept away. Returns what it did, for the log."""
    live = running_dockerd(node)
    if live is not None:
        raise RuntimeBusyError(
            f"dockerd of node {node.name} still runs as PID {live}; stop it first"
        )
    done = []
    orphans = node_containerds(node)
    if orphans:
        procs.terminate_pids(orphans, grace=grace)
        done.append(f"stopped containerd left over from a dead dockerd: PID(s) {orphans}")
    # Neither names a live process of ours now. A PID in them may still have a /proc
    # entry (a zombie not yet reaped, or a recycled PID), which is what stops dockerd.
    for pidfile in (node.docker_pidfile, containerd_pidfile(node)):
        pid = procs.read_pidfile(pidfile)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
            done.append(f"removed stale {pidfile}" + (f" (PID {pid})" if pid else ""))
    return done
