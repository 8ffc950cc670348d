"""What `up` made, written down as it goes, so `down` removes exactly that.

The record lives in STATE_ROOT/NAME/state.json and is rewritten (atomically)
after every step: a crash half-way through `up` still leaves a record of what
exists. Processes are recorded with their start time, so a recycled PID is
never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.layout import RUN_ROOT, STATE_ROOT, Layout

STATE_VERSION = 1


class StateError(Exception):
    pass


@dataclass
class ProcessRecord:
    role: str  # "registry", "apiserver", "dockerd:n1", "agent:n1"
    pid: int
    start_time: int  # clock ticks since boot (/proc/PID/stat field 22)
    argv: list[str]
    log: str
    netns: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessRecord:
        return cls(
            role=str(d["role"]),
            pid=int(d["pid"]),
            start_time=int(d["start_time"]),
            argv=[str(a) for a in d.get("argv", [])],
            log=str(d.get("log", "")),
            netns=str(d.get("netns", "")),
        )


@dataclass
class ClusterState:
    name: str
    subnet: str
    nodes: int
    created: float = field(default_factory=time.time)
    version: int = STATE_VERSION
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # root-namespace links
    dirs: list[str] = field(default_factory=list)
    # Directories whose submounts (dockerd's overlays, netns bind mounts) go before rm.
    mount_roots: list[str] = field(default_factory=list)
    # Changes outside our namespaces. None today: the LAN bridge lives in its own
    # namespace, so the root namespace needs no forwarding or firewall rule.
    rules: list[str] = field(default_factory=list)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    config_path: str = ""  # the orchctl config that holds our context
    images: list[str] = field(default_factory=list)  # pushed into the cluster registry
    state_root: str = str(STATE_ROOT)
    run_root: str = str(RUN_ROOT)

    @property
    def layout(self) -> Layout:
        return Layout.make(
            self.name,
            self.subnet,
            self.nodes,
            state_root=Path(self.state_root),
            run_root=Path(self.run_root),
        )

    # -- recording -------------------------------------------------------------------

    def add_unique(self, attr: str, value: str) -> None:
        items: list[str] = getattr(self, attr)
        if value not in items:
            items.append(value)

    def record_process(self, rec: ProcessRecord) -> None:
        self.processes[rec.role] = rec

    # -- persistence -----------------------------------------------------------------

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"malformed state: {exc}") from None
        if not isinstance(data, dict) or "name" not in data:
            raise StateError("malformed state: not a cluster record")
        if int(data.get("version", 0)) > STATE_VERSION:
            raise StateError(
                f"state version {data.get('version')} is newer than this orchctl understands"
            )
        procs = {
            str(k): ProcessRecord.from_dict(v) for k, v in (data.get("processes") or {}).items()
        }

        def strs(key: str) -> list[str]:
            return [str(x) for x in data.get(key) or []]

        return cls(
            name=str(data["name"]),
            subnet=str(data["subnet"]),
            nodes=int(data["nodes"]),
            created=float(data.get("created", 0.0)),
            version=int(data.get("version", STATE_VERSION)),
            namespaces=strs("namespaces"),
            links=strs("links"),
            dirs=strs("dirs"),
            mount_roots=strs("mount_roots"),
            rules=strs("rules"),
            processes=procs,
            config_path=str(data.get("config_path", "")),
            images=strs("images"),
            state_root=str(data.get("state_root", STATE_ROOT)),
            run_root=str(data.get("run_root", RUN_ROOT)),
        )

    def save(self, path: Path | None = None) -> None:
        path = path or self.layout.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        return cls.from_json(path.read_text())


def load_state(name: str, state_root: Path = STATE_ROOT) -> ClusterState | None:
    path = state_root / name / "state.json"
    try:
        return ClusterState.load(path)
    except FileNotFoundError:
        return None


def list_states(state_root: Path = STATE_ROOT) -> list[ClusterState | tuple[str, str]]:
    """Every recorded cluster, or (name, error) for a record that cannot be read."""
    out: list[ClusterState | tuple[str, str]] = []
    if not state_root.is_dir():
        return out
    for entry in sorted(state_root.iterdir()):
        path = entry / "state.json"
        if not path.is_file():
            continue
        try:
            out.append(ClusterState.load(path))
        except (OSError, StateError) as exc:
            out.append((entry.name, str(exc)))
    return out


@contextlib.contextmanager
def cluster_lock(lock_file: Path, *, timeout: float = 600.0) -> Iterator[None]:
    """One `up`/`down`/`image load` of a cluster at a time."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise StateError(
                        f"another orchctl holds {lock_file}; is an `up` or `down` still running?"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
