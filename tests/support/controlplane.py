"""A real control plane for tests: `orchestrator init` + `orchestrator serve`
as a child process on loopback, exactly as an operator runs it.

    with ControlPlane(tmp_path) as cp:
        subprocess.run(["orchctl", "get", "ns"], env=cp.env)

Stopping ends exactly the process it started (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from orchestrator.client.client import Client
from orchestrator.client.config import ConfigFile, Connection

REPO = Path(__file__).resolve().parents[2]


def free_port_pair() -> int:
    """A port p such that p and p+1 (the token port) are both free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of adjacent ports on 127.0.0.1")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ControlPlane:
    def __init__(
        self,
        data_dir: Path,
        *,
        store: str = "sqlite",
        etcd_endpoints: str = "",
        etcd_prefix: str = "",
        port: int | None = None,
        init: bool = True,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.etcd_endpoints = etcd_endpoints
        self.etcd_prefix = etcd_prefix
        self.port = port or free_port_pair()
        self.proc: subprocess.Popen[bytes] | None = None
        self.join_command = ""
        self._init = init
        self.serve_args = serve_args
        self.log_path = data_dir / "serve.log"

    # -- lifecycle -----------------------------------------------------------------

    def initialise(self) -> str:
        cmd = [
            sys.executable,
            "-m",
            "orchestrator.server_main",
            "init",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--store",
            self.store,
        ]
        if self.etcd_endpoints:
            cmd += ["--etcd-endpoints", self.etcd_endpoints, "--etcd-prefix", self.etcd_prefix]
        out = subprocess.run(
            cmd, env=_env(), capture_output=True, text=True, timeout=60, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"orchestrator init failed: {out.stderr}{out.stdout}")
        for line in out.stdout.splitlines():
            if "orch-agent join" in line:
                self.join_command = line.strip()
        return out.stdout

    def start(self, timeout: float = 30.0) -> None:
        if self._init and not (self.data_dir / "cluster.json").exists():
            self.initialise()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.server_main",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.serve_args,
            ],
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"orchestrator serve exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                # In a thread of its own, so this works inside a running event loop too.
                with ThreadPoolExecutor(1) as pool:
                    pool.submit(asyncio.run, self._ping()).result()
                return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"control plane not ready after {timeout}s: {last}\n{self.log_tail()}")

    async def _ping(self) -> None:
        async with Client(self.connection(), timeout=2.0) as client:
            await client.version()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- access --------------------------------------------------------------------

    @property
    def admin_conf(self) -> Path:
        return self.data_dir / "admin.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment for running `orchctl` against this control plane."""
        env = _env()
        env["ORCHCONFIG"] = str(self.admin_conf)
        return env

    def connection(self) -> Connection:
        return ConfigFile.load(self.admin_conf).connection()

    def client(self) -> Client:
        return Client(self.connection())

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
