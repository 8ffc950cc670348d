"""A private dockerd for node tests, and a busybox image built from Debian's
busybox-static (no image can be pulled from the internet here).

    with Dockerd() as d:
        build_busybox_image(d.host)
        ... docker.DockerClient(base_url=d.host) ...

Stopping ends exactly the dockerd it started (SIGTERM, then SIGKILL), after
removing every container it holds, and deletes its directories.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from types import TracebackType

BUSYBOX = Path("/bin/busybox")
# Applets the tests and the local cluster's pods use; each a symlink to busybox.
APPLETS = (
    "sh ash cat cp date dd echo env false grep head hostname httpd id kill ln ls mkdir "
    "mv nc nslookup ps pwd rm sed seq sleep sort tail tee test touch tr true uname wc "
    "wget yes printf stat readlink chmod whoami awk cut find xargs timeout vi which"
).split()


def dockerd_available() -> str | None:
    """Why node tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "node tests need root (a private dockerd)"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian package docker.io)"
    if not BUSYBOX.exists():
        return "/bin/busybox is missing (Debian package busybox-static)"
    return None


class Dockerd:
    """dockerd with its own data root, exec root and socket, no bridge, no iptables."""

    def __init__(self, base: Path | None = None, *, netns: str | None = None) -> None:
        # Short paths: the socket path must stay under 108 characters.
        self.dir = Path(tempfile.mkdtemp(prefix="dkd-", dir=str(base) if base else "/tmp"))
        self.socket = self.dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "dockerd.log"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [
            "dockerd",
            "--data-root",
            str(self.dir / "data"),
            "--exec-root",
            str(self.dir / "exec"),
            "-H",
            self.host,
            "--pidfile",
            str(self.dir / "docker.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip6tables=false",
        ]
        if self.netns:
            cmd = ["nsenter", f"--net=/var/run/netns/{self.netns}", *cmd]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.socket.exists() and self._ping():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dockerd not ready after {timeout}s:\n{self.log_tail()}")

    def _ping(self) -> bool:
        import docker

        try:
            client = docker.APIClient(base_url=self.host, version="auto", timeout=2)
        except Exception:
            return False
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def remove_all_containers(self) -> None:
        import docker

        try:
            client = docker.APIClient(base_url=self.host, version="auto", timeout=30)
        except Exception:
            return
        try:
            for c in client.containers(all=True):
                try:
                    client.remove_container(c["Id"], force=True)
                except Exception:
                    pass
        finally:
            client.close()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.remove_all_containers()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None
        self._cleanup_dirs()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop dockerd as a crash or an upgrade would (its containers stop too,
        there is no live-restore) and start it again on the same directories."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None
        self.start(timeout)

    def _cleanup_dirs(self) -> None:
        # Overlay mounts may outlive a killed dockerd: unmount what sits under our dir.
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            mounts = []
        ours = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.dir))]
        for target in sorted(ours, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Dockerd:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def busybox_rootfs_tar() -> bytes:
    """A tar of a minimal root filesystem: busybox plus applet symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "var/www", "usr"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            raw = text.encode()
            f = tarfile.TarInfo(name)
            f.size = len(raw)
            f.mode = 0o644
            tar.addfile(f, io.BytesIO(raw))
    return buf.getvalue()


def build_busybox_image(docker_host: str, tag: str = "busybox:1.36") -> str:
    """Import the busybox rootfs as `tag` into the dockerd at docker_host; returns its id."""
    import docker

    client = docker.APIClient(base_url=docker_host, version="auto", timeout=120)
    try:
        repository, _, version = tag.rpartition(":")
        if not repository:
            repository, version = tag, "latest"
        client.import_image_from_data(
            busybox_rootfs_tar(),
            repository=repository,
            tag=version,
            changes=['CMD ["sh"]', "ENV PATH=/bin"],
        )
        return str(client.inspect_image(tag)["Id"])
    finally:
        client.close()
