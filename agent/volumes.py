"""Pod volumes on the node: `<root>/pods/<uid>/volumes/<name>`.

emptyDir (a directory, or tmpfs for medium Memory), hostPath (with the
kubelet's type checks), configMap and secret (files written atomically as the
kubelet's AtomicWriter does: a timestamped directory, a `..data` symlink
swapped in one rename, and per-key symlinks through it, so a running
container sees either the old or the new set, never a mix), and
persistentVolumeClaim (the bound PersistentVolume's local or hostPath
directory; its data outlives the pod), downwardAPI (the pod's own fields as
files, rewritten through the same atomic writer when its labels or
annotations change), and projected (configMap, secret and downwardAPI sources
merged into one directory).

There is no TokenRequest endpoint in the API, so a projected
serviceAccountToken source cannot be served: it is left out of the volume and
reported (VolumeSource.warnings becomes an event on the pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from agent.pods.downward import ConfigError, field_value, resource_value
from orchestrator.api.quantity import QuantityError, memory_bytes
from orchestrator.client.client import ApiError, NotFoundError

log = logging.getLogger(__name__)

DATA_DIR = "..data"
DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume cannot be set up; `reason` is the event reason (FailedMount)."""

    def __init__(self, volume: str, message: str, reason: str = "FailedMount") -> None:
        super().__init__(message)
        self.volume = volume
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class VolumeSource:
    """Where a pod volume lives on the node."""

    host_path: str
    read_only: bool = False
    # What the volume had to leave out, worth an event on the pod.
    warnings: tuple[str, ...] = ()


class Mounter(Protocol):
    def mount_tmpfs(self, target: str, size_bytes: int | None) -> None: ...

    def unmount(self, target: str) -> None: ...

    def is_mounted(self, target: str) -> bool: ...


class SystemMounter:
    """mount(8)/umount(8) on the node (needs root)."""

    def mount_tmpfs(self, target: str, size_bytes: int | None) -> None:
        opts = "mode=0777"
        if size_bytes:
            opts += f",size={size_bytes}"
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", target],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise OSError(f"mount -t tmpfs on {target} failed: {out.stderr.strip()}")

    def unmount(self, target: str) -> None:
        out = subprocess.run(["umount", target], capture_output=True, text=True, check=False)
        if out.returncode != 0 and self.is_mounted(target):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def is_mounted(self, target: str) -> bool:
        real = os.path.realpath(target)
        try:
            with open("/proc/self/mounts") as f:
                return any(line.split()[1] == real for line in f if len(line.split()) > 1)
        except OSError:
            return False


def _unescape_mount(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def mounts_under(prefix: str) -> list[str]:
    try:
        with open("/proc/self/mounts") as f:
            targets = [_unescape_mount(line.split()[1]) for line in f if len(line.split()) > 1]
    except OSError:
        return []
    real = os.path.realpath(prefix)
    return [t for t in targets if t == real or t.startswith(real + "/")]


# -- atomic writer -----------------------------------------------------------------------


def _read_current(target: Path) -> dict[str, tuple[bytes, int]] | None:
    data = target / DATA_DIR
    if not data.is_symlink():
        return None
    out: dict[str, tuple[bytes, int]] = {}
    base = data.resolve()
    for root, _dirs, files in os.walk(base):
        for name in files:
            p = Path(root) / name
            out[str(p.relative_to(base))] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def write_atomic(target: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Make `target` hold exactly `files` (relative path -> (content, mode)).
    Returns whether anything changed."""
    target.mkdir(parents=True, exist_ok=True)
    current = _read_current(target)
    if current is not None and current == dict(files):
        return False
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    new_dir = target / stamp
    n = 0
    while new_dir.exists():
        n += 1
        new_dir = target / f"{stamp}{n}"
    new_dir.mkdir(mode=0o755)
    for rel, (content, mode) in files.items():
        path = new_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)
    old_data = (target / DATA_DIR).resolve() if (target / DATA_DIR).is_symlink() else None
    tmp_link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(new_dir.name, tmp_link)
    os.rename(tmp_link, target / DATA_DIR)
    # User-visible names: one symlink per top-level entry, through ..data.
    wanted = {rel.split("/", 1)[0] for rel in files}
    for name in wanted:
        link = target / name
        if link.is_symlink() and os.readlink(link) == f"{DATA_DIR}/{name}":
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        os.symlink(f"{DATA_DIR}/{name}", link)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in wanted and entry.is_symlink():
            entry.unlink()
    if old_data is not None and old_data != new_dir.resolve() and old_data.parent == target:
        shutil.rmtree(old_data, ignore_errors=True)
    return True


def project_keys(
    kind: str,
    object_name: str,
    data: Mapping[str, bytes],
    items: Any,
    default_mode: int,
    optional: bool,
    volume: str,
) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    if not items:
        for key, value in data.items():
            files[key] = (value, default_mode)
        return files
    for item in items:
        if item.key not in data:
            if optional:
                continue
            raise VolumeError(
                volume,
                f'MountVolume.SetUp failed for volume "{volume}": configuration key "{item.key}" '
                f'not found in {kind} "{object_name}"',
            )
        rel = _relative(volume, item.path, f'key "{item.key}"')
        mode = item.mode if item.HasField("mode") else default_mode
        files[rel] = (data[item.key], mode)
    return files


def _relative(volume: str, path: str, what: str) -> str:
    rel = os.path.normpath(path)
    if not path or rel.startswith("..") or os.path.isabs(rel):
        raise VolumeError(volume, f'volume "{volume}": invalid path "{path}" for {what}')
    return rel


def downward_files(
    pod: Any,
    items: Any,
    default_mode: int,
    volume: str,
    *,
    pod_ip: str,
    host_ip: str,
    node_cpus: int,
    node_memory: int,
) -> dict[str, tuple[bytes, int]]:
    """The files of a downwardAPI volume (or projection): one per item, its
    fieldRef or resourceFieldRef rendered as the kubelet does."""
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        rel = _relative(volume, item.path, "a downwardAPI item")
        try:
            if item.HasField("field_ref"):
                value = field_value(pod, item.field_ref.field_path, pod_ip, host_ip)
            elif item.HasField("resource_field_ref"):
                value = resource_value(pod, None, item.resource_field_ref, node_cpus, node_memory)
            else:
                raise ConfigError("one of fieldRef and resourceFieldRef is required")
        except ConfigError as exc:
            raise VolumeError(
                volume,
                f'MountVolume.SetUp failed for volume "{volume}": item "{item.path}": {exc}',
            ) from None
        mode = item.mode if item.HasField("mode") else default_mode
        files[rel] = (value.encode(), mode)
    return files


def node_memory_bytes() -> int:
    """MemTotal: what an unset memory limit means to resourceFieldRef."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- the manager ----------------------------------------------------------------------------


class VolumeManager:
    """Sets up and tears down the volumes of the pods on this node."""

    def __init__(
        self,
        root_dir: Path,
        client: Any,
        *,
        mounter: Mounter | None = None,
        node_cpus: int | None = None,
        node_memory: int | None = None,
    ) -> None:
        self.root_dir = Path(root_dir)
        self.client = client
        self.mounter: Mounter = mounter or SystemMounter()
        # An unset limit in a resourceFieldRef reads as the node's capacity.
        self.node_cpus = node_cpus if node_cpus is not None else (os.cpu_count() or 1)
        self.node_memory = node_memory if node_memory is not None else node_memory_bytes()

    def pods_dir(self) -> Path:
        return self.root_dir / "pods"

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir() / uid

    def volume_dir(self, uid: str, name: str) -> Path:
        return self.pod_dir(uid) / "volumes" / name

    def known_pod_uids(self) -> list[str]:
        try:
            return [p.name for p in self.pods_dir().iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    async def setup(
        self, pod: Any, *, pod_ip: str = "", host_ip: str = ""
    ) -> dict[str, VolumeSource]:
        """Every volume of the pod, ready to mount (idempotent; configMap,
        secret and downwardAPI contents are refreshed on each call, so a pod
        whose labels changed sees new files on its next sync). `pod_ip` and
        `host_ip` feed downwardAPI items naming status.podIP/status.hostIP."""
        uid = pod.metadata.uid
        await asyncio.to_thread(self.pod_dir(uid).mkdir, parents=True, exist_ok=True)
        out: dict[str, VolumeSource] = {}
        for vol in pod.spec.volumes:
            out[vol.name] = await self._setup_one(pod, vol, pod_ip, host_ip)
        return out

    async def _setup_one(self, pod: Any, vol: Any, pod_ip: str, host_ip: str) -> VolumeSource:
        uid = pod.metadata.uid
        ns = pod.metadata.namespace
        name = vol.name
        if vol.HasField("host_path"):
            return await asyncio.to_thread(
                check_host_path, name, vol.host_path.path, vol.host_path.type
            )
        if vol.HasField("config_map"):
            src = vol.config_map
            data = await self._configmap_data(ns, src.name, src.optional, name)
            return await self._projected(uid, name, "ConfigMap", src.name, data, src)
        if vol.HasField("secret"):
            src = vol.secret
            data = await self._secret_data(ns, src.secret_name, src.optional, name)
            return await self._projected(uid, name, "Secret", src.secret_name, data, src)
        if vol.HasField("persistent_volume_claim"):
            return await self._pvc(pod, vol)
        if vol.HasField("downward_api"):
            src = vol.downward_api
            files = downward_files(
                pod,
                src.items,
                src.default_mode if src.HasField("default_mode") else DEFAULT_MODE,
                name,
                pod_ip=pod_ip,
                host_ip=host_ip,
                node_cpus=self.node_cpus,
                node_memory=self.node_memory,
            )
            return await self._write(uid, name, files)
        if vol.HasField("projected"):
            return await self._projected_volume(pod, vol, pod_ip, host_ip)
        if vol.HasField("empty_dir") or not _has_other_source(vol):
            path = self.volume_dir(uid, name)
            await asyncio.to_thread(self._empty_dir, path, vol.empty_dir, name)
            return VolumeSource(str(path))
        raise VolumeError(
            name,
            f'volume "{name}": this node supports only emptyDir, hostPath, configMap, '
            "secret, downwardAPI, projected and persistentVolumeClaim volumes",
        )

    def _empty_dir(self, path: Path, src: Any, name: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o777)
        if src.medium == "Memory" and not self.mounter.is_mounted(str(path)):
            size = None
            if src.HasField("size_limit") and src.size_limit:
                try:
                    size = memory_bytes(src.size_limit)
                except QuantityError as exc:
                    raise VolumeError(name, str(exc)) from None
            try:
                self.mounter.mount_tmpfs(str(path), size)
            except OSError as exc:
                raise VolumeError(
                    name, f'MountVolume.SetUp failed for volume "{name}": {exc}'
                ) from None

    async def _projected(
        self, uid: str, name: str, kind: str, source: str, data: Any, src: Any
    ) -> VolumeSource:
        """A ConfigMap or Secret as files, swapped in atomically (kubelet's ..data)."""
        files = project_keys(
            kind,
            source,
            data,
            src.items,
            src.default_mode if src.HasField("default_mode") else DEFAULT_MODE,
            src.optional,
            name,
        )
        return await self._write(uid, name, files)

    async def _write(
        self,
        uid: str,
        name: str,
        files: Mapping[str, tuple[bytes, int]],
        warnings: tuple[str, ...] = (),
    ) -> VolumeSource:
        path = self.volume_dir(uid, name)
        await asyncio.to_thread(write_atomic, path, files)
        return VolumeSource(str(path), read_only=True, warnings=warnings)

    async def _projected_volume(
        self, pod: Any, vol: Any, pod_ip: str, host_ip: str
    ) -> VolumeSource:
        """Every source of a projected volume in one directory, written at once."""
        name = vol.name
        ns = pod.metadata.namespace
        src = vol.projected
        default_mode = src.default_mode if src.HasField("default_mode") else DEFAULT_MODE
        files: dict[str, tuple[bytes, int]] = {}
        warnings: list[str] = []
        for i, proj in enumerate(src.sources):
            if proj.HasField("config_map"):
                cm = proj.config_map
                data = await self._configmap_data(ns, cm.name, cm.optional, name)
                files.update(
                    project_keys(
                        "ConfigMap", cm.name, data, cm.items, default_mode, cm.optional, name
                    )
                )
            elif proj.HasField("secret"):
                sec = proj.secret
                data = await self._secret_data(ns, sec.name, sec.optional, name)
                files.update(
                    project_keys(
                        "Secret", sec.name, data, sec.items, default_mode, sec.optional, name
                    )
                )
            elif proj.HasField("downward_api"):
                files.update(
                    downward_files(
                        pod,
                        proj.downward_api.items,
                        default_mode,
                        name,
                        pod_ip=pod_ip,
                        host_ip=host_ip,
                        node_cpus=self.node_cpus,
                        node_memory=self.node_memory,
                    )
                )
            elif proj.HasField("service_account_token"):
                warnings.append(
                    f'volume "{name}": sources[{i}].serviceAccountToken '
                    f'("{proj.service_account_token.path}") was left out: the API server '
                    "has no TokenRequest endpoint to issue a bound token"
                )
            else:
                raise VolumeError(
                    name,
                    f'volume "{name}": sources[{i}]: this node supports only configMap, '
                    "secret, downwardAPI and serviceAccountToken projections",
                )
        return await self._write(pod.metadata.uid, name, files, tuple(warnings))

    async def _configmap_data(
        self, ns: str, name: str, optional: bool, volume: str
    ) -> dict[str, bytes]:
        try:
            cm = await self.client.get("ConfigMap", name, ns)
        except NotFoundError:
            if optional:
                return {}
            raise VolumeError(
                volume,
                f'MountVolume.SetUp failed for volume "{volume}": configmap "{name}" not found',
            ) from None
        except ApiError as exc:
            raise VolumeError(
                volume, f'MountVolume.SetUp failed for volume "{volume}": {exc}'
            ) from None
        data = {k: v.encode() for k, v in cm.data.items()}
        data.update({k: bytes(v) for k, v in cm.binary_data.items()})
        return data

    async def _secret_data(
        self, ns: str, name: str, optional: bool, volume: str
    ) -> dict[str, bytes]:
        try:
            secret = await self.client.get("Secret", name, ns)
        except NotFoundError:
            if optional:
                return {}
            raise VolumeError(
                volume,
                f'MountVolume.SetUp failed for volume "{volume}": secret "{name}" not found',
            ) from None
        except ApiError as exc:
            raise VolumeError(
                volume, f'MountVolume.SetUp failed for volume "{volume}": {exc}'
            ) from None
        return secret_data(secret)

    async def _pvc(self, pod: Any, vol: Any) -> VolumeSource:
        name = vol.name
        ns = pod.metadata.namespace
        claim = vol.persistent_volume_claim.claim_name
        try:
            pvc = await self.client.get("PersistentVolumeClaim", claim, ns)
        except NotFoundError:
            raise VolumeError(
                name, f'persistentvolumeclaim "{claim}" not found', reason="FailedMount"
            ) from None
        except ApiError as exc:
            raise VolumeError(name, str(exc)) from None
        if not pvc.spec.volume_name:
            raise VolumeError(
                name,
                f'unbound PVC: persistentvolumeclaim "{claim}" is not bound to a volume yet',
                reason="FailedMount",
            )
        try:
            pv = await self.client.get("PersistentVolume", pvc.spec.volume_name)
        except NotFoundError:
            raise VolumeError(
                name, f'persistentvolume "{pvc.spec.volume_name}" not found'
            ) from None
        except ApiError as exc:
            raise VolumeError(name, str(exc)) from None
        ref = pv.spec.claim_ref
        if ref.name and (ref.name != claim or (ref.namespace and ref.namespace != ns)):
            raise VolumeError(
                name,
                f'persistentvolume "{pv.metadata.name}" is bound to another claim '
                f"({ref.namespace}/{ref.name})",
            )
        path = pv.spec.local.path or pv.spec.host_path.path
        if not path:
            raise VolumeError(
                name,
                f'persistentvolume "{pv.metadata.name}" is neither a local nor a hostPath volume',
            )
        await asyncio.to_thread(os.makedirs, path, 0o777, True)
        return VolumeSource(path, read_only=vol.persistent_volume_claim.read_only)

    async def teardown(self, uid: str) -> None:
        """Unmount the pod's tmpfs volumes and remove its directory (PV and
        hostPath data live elsewhere and are kept)."""
        await asyncio.to_thread(self._teardown, uid)

    def _teardown(self, uid: str) -> None:
        pod_dir = self.pod_dir(uid)
        if not pod_dir.exists():
            return
        volumes = pod_dir / "volumes"
        if volumes.is_dir():
            for entry in volumes.iterdir():
                if self.mounter.is_mounted(str(entry)):
                    self.mounter.unmount(str(entry))
        for target in sorted(mounts_under(str(pod_dir)), key=len, reverse=True):
            self.mounter.unmount(target)
        if mounts_under(str(pod_dir)):
            raise OSError(f"{pod_dir} still has mounts; not removing it")
        shutil.rmtree(pod_dir, ignore_errors=True)


def secret_data(secret: Any) -> dict[str, bytes]:
    data = {k: bytes(v) for k, v in secret.data.items()}
    for k, v in secret.string_data.items():
        data.setdefault(k, v.encode())
    return data


def _has_other_source(vol: Any) -> bool:
    return any(
        vol.HasField(f)
        for f in (
            "host_path",
            "secret",
            "nfs",
            "persistent_volume_claim",
            "downward_api",
            "config_map",
            "projected",
            "csi",
            "ephemeral",
            "image",
        )
    )


def check_host_path(volume: str, path: str, type_: str) -> VolumeSource:
    """The kubelet's hostPath type checks."""
    p = Path(path)

    def fail(what: str) -> VolumeError:
        return VolumeError(
            volume,
            f'MountVolume.SetUp failed for volume "{volume}": hostPath type check '
            f"failed: {path} {what}",
        )

    if type_ in ("", None):
        return VolumeSource(path)
    if type_ == "DirectoryOrCreate":
        if p.exists() and not p.is_dir():
            raise fail("is not a directory")
        p.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif type_ == "Directory":
        if not p.exists():
            raise fail("does not exist (type Directory)")
        if not p.is_dir():
            raise fail("is not a directory")
    elif type_ == "FileOrCreate":
        if p.exists() and not p.is_file():
            raise fail("is not a file")
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch(mode=0o644)
    elif type_ == "File":
        if not p.exists():
            raise fail("does not exist (type File)")
        if not p.is_file():
            raise fail("is not a file")
    elif type_ == "Socket":
        if not p.exists() or not stat.S_ISSOCK(p.stat().st_mode):
            raise fail("is not a socket file")
    elif type_ == "CharDevice":
        if not p.exists() or not stat.S_ISCHR(p.stat().st_mode):
            raise fail("is not a character device")
    elif type_ == "BlockDevice":
        if not p.exists() or not stat.S_ISBLK(p.stat().st_mode):
            raise fail("is not a block device")
    else:
        raise VolumeError(volume, f'hostPath type "{type_}" is not supported')
    return VolumeSource(path)
