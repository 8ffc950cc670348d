"""Background processes of a local cluster: started detached with a log file,
recorded by PID and start time, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from deploy.local.state import ProcessRecord

_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}
_STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_ROOT = Path(__file__).resolve().parents[2]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for cluster processes: no proxies (a dockerd or agent that
    obeys one would send cluster traffic off the machine) and our checkout on the
    import path when running from one."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    path = env.get("PATH", "")
    env["PATH"] = f"{path}:{_STD_PATH}" if path else _STD_PATH
    if (REPO_ROOT / "orchestrator").is_dir() and (REPO_ROOT / "agent").is_dir():
        old = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DOCKER_HOST", None)
    if extra:
        env.update(extra)
    return env


def python_module(module: str, *, optimize: bool = False) -> list[str]:
    """argv running one of our entry points with this interpreter (a venv's, usually).
    optimize drops docstrings (-OO): about 2 MB less memory for the node agent."""
    return [sys.executable, *(["-OO"] if optimize else []), "-m", module]


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None when there is no such (live) process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_alive(rec: ProcessRecord) -> bool:
    return rec.pid > 0 and start_time(rec.pid) == rec.start_time


def start(
    role: str,
    argv: list[str],
    log: Path,
    *,
    netns_path: str = "",
    netns: str = "",
    env: Mapping[str, str] | None = None,
    shown: list[str] | None = None,
) -> ProcessRecord:
    """Start argv detached (own session, stdin from /dev/null, output to log).

    With netns_path, through `nsenter --net=PATH`, which execs argv: the PID we
    record is the program's own. (`ip netns exec` would remount /sys, which breaks
    dockerd: "Devices cgroup isn't mounted".) `shown` stands in for argv in the log
    and the record."""
    prefix = ["nsenter", f"--net={netns_path}"] if netns_path else []
    full = [*prefix, *argv]
    # What the log and the state file show: argv with secrets (a join token) left out.
    visible = [*prefix, *(shown if shown is not None else argv)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(visible)}\n".encode()
        )
        out.flush()
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else clean_env(),
            cwd="/",
        )
    st = None
    for _ in range(50):
        st = start_time(proc.pid)
        if st is not None or proc.poll() is not None:
            break
        time.sleep(0.01)
    return ProcessRecord(
        role=role,
        pid=proc.pid,
        start_time=st if st is not None else -1,
        argv=visible,
        log=str(log),
        netns=netns,
    )


def reap(pid: int) -> None:
    """Collect a child of ours that has exited, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _alive_pid(pid: int) -> bool:
    reap(pid)
    return start_time(pid) is not None


def terminate_pids(pids: Iterable[int], *, grace: float = 10.0) -> list[int]:
    """SIGTERM, wait up to grace seconds, SIGKILL what is left. Returns the PIDs
    that were signalled."""
    targets = [p for p in pids if p > 1 and p != os.getpid()]
    signalled = []
    for pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive_pid(p) for p in signalled):
        time.sleep(0.05)
    for pid in signalled:
        if _alive_pid(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive_pid(p) for p in signalled):
        time.sleep(0.05)
    return signalled


def kill_pids(pids: Iterable[int], *, timeout: float = 10.0) -> list[int]:
    """SIGKILL at once, as a crash would, and wait (reaping our own children) until
    they are gone. Returns the PIDs that were signalled."""
    signalled = []
    for pid in pids:
        if pid <= 1 or pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive_pid(p) for p in signalled):
        time.sleep(0.05)
    return signalled


def stop(rec: ProcessRecord, *, grace: float = 10.0) -> bool:
    """Stop a recorded process if it is still the one we started. True if it was."""
    if not is_alive(rec):
        reap(rec.pid)
        return False
    terminate_pids([rec.pid], grace=grace)
    return True


def stop_many(recs: Iterable[ProcessRecord], *, grace: float = 10.0) -> int:
    """Stop several recorded processes at once (one grace period for all)."""
    live = [r for r in recs if is_alive(r)]
    terminate_pids([r.pid for r in live], grace=grace)
    return len(live)


def read_pidfile(path: str | Path) -> int | None:
    """The PID a pidfile names, or None when there is no file or no number in it."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def cmdline(pid: int) -> list[str]:
    """argv of a live process (empty for a zombie, a kernel thread or no process)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pids_with_args(*args: str) -> list[int]:
    """Live processes whose argv holds every one of args as an exact argument.

    How a daemon we did not start ourselves is found: dockerd's own containerd
    is named only by the config path on its command line."""
    wanted = set(args)
    out = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid() or start_time(pid) is None:
            continue
        if wanted <= set(cmdline(pid)):
            out.append(pid)
    return sorted(out)


def log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
