"""Images for the local cluster, built from Debian packages (nothing can be pulled
from the internet) and pushed to the cluster's registry, from which every node's
dockerd pulls them through its registry mirror.

busybox:1.36 (also busybox:latest) is a root filesystem of Debian's
busybox-static with a symlink per applet. orchestrator/pause:1.0 is the same
filesystem whose entrypoint just waits, for pod sandboxes.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
BUSYBOX_IMAGE = "busybox:1.36"
BUSYBOX_TAGS = ("busybox:1.36", "busybox:latest")
# The sandbox image for pods. The agent picks its sandbox image with
# `orch-agent run --pause-image`, which defaults to busybox:1.36; the local cluster
# leaves that default alone and serves both images from its registry.
PAUSE_IMAGE = "orchestrator/pause:1.0"

# Applets pods and tests rely on; the build fails if busybox lacks one. Every other
# applet the binary offers is linked too, as in the official busybox image.
REQUIRED_APPLETS = (
    "sh ash httpd nc wget sleep cat echo ls env hostname date true false mkdir rm touch grep "
    "head tail ps kill id dd tr seq yes sha256sum wc printf test [ cp mv ln sed awk sort "
    "tee uname pwd stat readlink chmod whoami cut find xargs timeout nslookup which vi"
).split()

PAUSE_SCRIPT = """#!/bin/sh
# Hold the pod's namespaces until told to stop. As PID 1 the shell ignores SIGTERM
# unless it traps it; `wait` (unlike a foreground sleep) lets the trap run at once.
trap 'exit 0' TERM INT HUP
while :; do sleep 3600 & wait $!; done
"""

BUSYBOX_CHANGES = (
    'CMD ["sh"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)
PAUSE_CHANGES = (
    'ENTRYPOINT ["/pause"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
)

# A fixed mtime makes the layer byte-identical between builds: the registry then
# keeps one blob however often `up` rebuilds it.
_EPOCH = 946684800  # 2000-01-01

_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "hosts: files dns\n",
    "var/www/index.html": "<h1>busybox httpd on the orchestrator</h1>\n",
}
_DIRS = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o555,
    "root": 0o700,
    "sys": 0o555,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "sbin": 0o755,
    "var": 0o755,
    "var/www": 0o755,
    "var/tmp": 0o1777,
}


class ImageError(Exception):
    pass


# -- the root filesystem ---------------------------------------------------------------


def is_static_elf(path: Path) -> bool:
    """Whether an ELF executable has no program interpreter (runs in an empty rootfs)."""
    import struct

    with path.open("rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF":
            return False
        is64 = head[4] == 2
        endian = "<" if head[5] == 1 else ">"
        if is64:
            phoff = struct.unpack_from(endian + "Q", head, 32)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
        else:
            phoff = struct.unpack_from(endian + "I", head, 28)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 42)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    try:
        out = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot list the applets of {busybox}: {exc}") from None
    return [a for a in out.stdout.split() if a and "/" not in a and a != "busybox"]


def build_busybox_rootfs(
    dest: Path,
    *,
    busybox: Path = BUSYBOX,
    applets: Iterable[str] | None = None,
) -> Path:
    """Write a busybox root filesystem into dest (made if missing); returns dest."""
    if not busybox.is_file():
        raise ImageError(f"{busybox} is missing: install Debian's busybox-static")
    if not is_static_elf(busybox):
        raise ImageError(
            f"{busybox} is dynamically linked: install Debian's busybox-static, not busybox"
        )
    names = list(applets) if applets is not None else busybox_applets(busybox)
    missing = [a for a in REQUIRED_APPLETS if a not in names]
    if missing:
        raise ImageError(f"{busybox} lacks the applets {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for d, mode in _DIRS.items():
        p = dest / d
        p.mkdir(parents=True, exist_ok=True)
        p.chmod(mode)
    target = dest / "bin" / "busybox"
    target.write_bytes(busybox.read_bytes())
    target.chmod(0o755)
    for applet in sorted(set(names)):
        link = dest / "bin" / applet
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("busybox")
    env_link = dest / "usr" / "bin" / "env"
    if not env_link.is_symlink():
        env_link.symlink_to("../../bin/busybox")
    for name, text in _FILES.items():
        (dest / name).write_text(text)
        (dest / name).chmod(0o644)
    pause = dest / "pause"
    pause.write_text(PAUSE_SCRIPT)
    pause.chmod(0o755)
    return dest


def tar_rootfs(root: Path) -> bytes:
    """A deterministic tar of a root filesystem: sorted, owned by root, fixed times."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
        for rel in entries:
            full = root / rel
            st = full.lstat()
            info = tarfile.TarInfo(rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = _EPOCH
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(full)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = full.read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def busybox_rootfs_tar(busybox: Path = BUSYBOX) -> bytes:
    with tempfile.TemporaryDirectory(prefix="orch-rootfs-") as tmp:
        return tar_rootfs(build_busybox_rootfs(Path(tmp) / "rootfs", busybox=busybox))


# -- image references ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference, normalised as docker does (docker.io/library/...)."""

    domain: str
    path: str
    tag: str

    @property
    def on_docker_hub(self) -> bool:
        return self.domain == "docker.io"

    def __str__(self) -> str:
        return f"{self.domain}/{self.path}:{self.tag}"

    def in_registry(self, registry: str) -> str:
        """The name under which the cluster registry holds it. For Docker Hub names
        the path is what a dockerd asks its mirror for (`busybox` -> library/busybox)."""
        return f"{registry}/{self.path}:{self.tag}"


def parse_reference(ref: str) -> ImageRef:
    text = ref.strip()
    if not text or any(c.isspace() for c in text):
        raise ImageError(f'"{ref}" is not an image reference')
    if "@" in text:
        raise ImageError(f'"{ref}": references by digest are not supported here; use a tag')
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, remainder = first, rest
    else:
        domain, remainder = "docker.io", text
    name, tag = remainder, "latest"
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        name, tag = remainder[:colon], remainder[colon + 1 :]
    if not name or not tag:
        raise ImageError(f'"{ref}" is not an image reference')
    if name != name.lower():
        raise ImageError(f'"{ref}": repository names must be lower case')
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
        if "/" not in name:
            name = f"library/{name}"
    return ImageRef(domain, name, tag)


# -- talking to a dockerd --------------------------------------------------------------


def docker_client(docker_host: str, timeout: float = 300.0) -> Any:
    import docker

    return docker.APIClient(base_url=docker_host, version="auto", timeout=timeout)


def _check_stream(stream: Iterable[dict[str, Any]], what: str) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
            raise ImageError(f"{what}: {detail}")
        last = chunk
    return last


def import_rootfs(
    docker_host: str, rootfs_tar: bytes, image: str, changes: Iterable[str] = ()
) -> str:
    """`docker import` a rootfs tar as image; returns the image id."""
    repo, _, tag = image.rpartition(":")
    client = docker_client(docker_host)
    try:
        client.import_image_from_data(rootfs_tar, repository=repo, tag=tag, changes=list(changes))
        return str(client.inspect_image(image)["Id"])
    finally:
        client.close()


def tag_image(docker_host: str, source: str, target: str) -> None:
    repo, _, tag = target.rpartition(":")
    client = docker_client(docker_host)
    try:
        if not client.tag(source, repo, tag, force=True):
            raise ImageError(f"could not tag {source} as {target}")
    finally:
        client.close()


def push_image(docker_host: str, image: str) -> None:
    repo, _, tag = image.rpartition(":")
    client = docker_client(docker_host)
    try:
        _check_stream(client.push(repo, tag=tag, stream=True, decode=True), f"pushing {image}")
    finally:
        client.close()


def load_tar(docker_host: str, data: Any) -> list[str]:
    """`docker load` (a `docker save` tarball, bytes or a file object); returns the
    image names (or ids) it loaded."""
    client = docker_client(docker_host)
    try:
        loaded: list[str] = []
        for chunk in client.load_image(data):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                raise ImageError(f"loading the image: {detail}")
            stream = str(chunk.get("stream", ""))
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if stream.startswith(prefix):
                    loaded.append(stream[len(prefix) :].strip())
        return loaded
    finally:
        client.close()


def save_image(docker_host: str, image: str, dest: Path) -> None:
    """`docker save` image from a dockerd into a file."""
    client = docker_client(docker_host)
    try:
        with dest.open("wb") as f:
            for chunk in client.get_image(image):
                f.write(chunk)
    finally:
        client.close()


def has_image(docker_host: str, image: str) -> bool:
    import docker

    client = docker_client(docker_host, timeout=30)
    try:
        client.inspect_image(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def pull_image(docker_host: str, image: str) -> None:
    repo, _, tag = image.rpartition(":")
    client = docker_client(docker_host)
    try:
        _check_stream(client.pull(repo, tag=tag, stream=True, decode=True), f"pulling {image}")
    finally:
        client.close()


def build_base_images(docker_host: str, registry: str) -> list[str]:
    """Build busybox and the pause image in the dockerd at docker_host (which must
    trust registry as insecure) and push them. Returns the registry names pushed."""
    rootfs = busybox_rootfs_tar()
    pushed = []
    for image, changes in ((BUSYBOX_IMAGE, BUSYBOX_CHANGES), (PAUSE_IMAGE, PAUSE_CHANGES)):
        import_rootfs(docker_host, rootfs, image, changes)
        tags = BUSYBOX_TAGS if image == BUSYBOX_IMAGE else (image,)
        for name in tags:
            if name != image:
                tag_image(docker_host, image, name)
            target = parse_reference(name).in_registry(registry)
            tag_image(docker_host, image, target)
            push_image(docker_host, target)
            pushed.append(target)
    return pushed
