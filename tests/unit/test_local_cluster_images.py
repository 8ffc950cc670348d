"""Images, registry config and commands of local clusters, without root or Docker."""

from __future__ import annotations

import io
import shlex
import struct
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from deploy.local import dockerd, images, registry
from deploy.local.cluster import _pick_loaded, _remove_context, _Up
from deploy.local.layout import Layout
from deploy.local.progress import PlainReporter, Reporter
from deploy.local.state import ClusterState
from orchestrator.client.config import ConfigFile

pytestmark = pytest.mark.unit


def fake_static_elf(path: Path, *, interp: bool = False) -> Path:
    """A 64-bit little-endian ELF header with one program header (PT_INTERP or PT_LOAD)."""
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    head[4], head[5], head[6] = 2, 1, 1
    struct.pack_into("<Q", head, 32, 64)  # e_phoff
    struct.pack_into("<HH", head, 54, 56, 1)  # e_phentsize, e_phnum
    ph = bytearray(56)
    struct.pack_into("<I", ph, 0, 3 if interp else 1)
    path.write_bytes(bytes(head) + bytes(ph))
    path.chmod(0o755)
    return path


def test_static_elf_detection(tmp_path: Path) -> None:
    assert images.is_static_elf(fake_static_elf(tmp_path / "static"))
    assert not images.is_static_elf(fake_static_elf(tmp_path / "dynamic", interp=True))
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert not images.is_static_elf(tmp_path / "script")


def test_rootfs_has_busybox_applets_and_pause(tmp_path: Path) -> None:
    bb = fake_static_elf(tmp_path / "busybox")
    root = images.build_busybox_rootfs(
        tmp_path / "rootfs", busybox=bb, applets=[*images.REQUIRED_APPLETS, "extra"]
    )
    assert (root / "bin" / "busybox").read_bytes() == bb.read_bytes()
    for applet in ("sh", "httpd", "nc", "wget", "sleep", "[", "sha256sum", "extra"):
        link = root / "bin" / applet
        assert link.is_symlink() and str(link.readlink()) == "busybox", applet
    assert (root / "usr" / "bin" / "env").resolve() == (root / "bin" / "busybox").resolve()
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert "root:x:0:0" in (root / "etc" / "passwd").read_text()
    pause = root / "pause"
    assert pause.stat().st_mode & 0o111
    assert "trap 'exit 0' TERM" in pause.read_text()
    # Building again over the same directory is fine (idempotent).
    images.build_busybox_rootfs(root, busybox=bb, applets=images.REQUIRED_APPLETS)


def test_rootfs_refuses_a_dynamic_busybox_or_missing_applets(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="busybox-static"):
        images.build_busybox_rootfs(
            tmp_path / "r1", busybox=fake_static_elf(tmp_path / "dyn", interp=True), applets=[]
        )
    with pytest.raises(images.ImageError, match=r"lacks the applets.*httpd"):
        images.build_busybox_rootfs(
            tmp_path / "r2",
            busybox=fake_static_elf(tmp_path / "bb"),
            applets=[a for a in images.REQUIRED_APPLETS if a != "httpd"],
        )
    with pytest.raises(images.ImageError, match="missing"):
        images.build_busybox_rootfs(tmp_path / "r3", busybox=tmp_path / "nope")


def test_rootfs_tar_is_deterministic_and_owned_by_root(tmp_path: Path) -> None:
    bb = fake_static_elf(tmp_path / "busybox")
    a = images.tar_rootfs(
        images.build_busybox_rootfs(tmp_path / "a", busybox=bb, applets=images.REQUIRED_APPLETS)
    )
    b = images.tar_rootfs(
        images.build_busybox_rootfs(tmp_path / "b", busybox=bb, applets=images.REQUIRED_APPLETS)
    )
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert list(members) == sorted(members)


@pytest.mark.parametrize(
    ("ref", "domain", "path", "tag"),
    [
        ("busybox", "docker.io", "library/busybox", "latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("me/app:v2", "docker.io", "me/app", "v2"),
        ("docker.io/library/busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest"),
        ("ghcr.io/org/app:1", "ghcr.io", "org/app", "1"),
        ("localhost:5000/app", "localhost:5000", "app", "latest"),
        ("localhost/app:1", "localhost", "app", "1"),
        ("orchestrator/pause:1.0", "docker.io", "orchestrator/pause", "1.0"),
    ],
)
def test_parse_reference(ref: str, domain: str, path: str, tag: str) -> None:
    r = images.parse_reference(ref)
    assert (r.domain, r.path, r.tag) == (domain, path, tag)


@pytest.mark.parametrize("ref", ["", "a b", "app@sha256:" + "0" * 64, "App:1", "app:"])
def test_parse_reference_rejects(ref: str) -> None:
    with pytest.raises(images.ImageError):
        images.parse_reference(ref)


def test_registry_names_are_what_a_mirror_is_asked_for() -> None:
    reg = "192.0.2.1:5000"
    assert images.parse_reference("busybox:1.36").in_registry(reg) == f"{reg}/library/busybox:1.36"
    assert images.parse_reference(images.PAUSE_IMAGE).in_registry(reg) == (
        f"{reg}/orchestrator/pause:1.0"
    )
    assert images.parse_reference("me/app").in_registry(reg) == f"{reg}/me/app:latest"


def test_pick_loaded() -> None:
    ref = images.parse_reference("busybox:1.36")
    assert _pick_loaded("busybox:1.36", ref, ["busybox:latest", "busybox:1.36"]) == "busybox:1.36"
    # One image in the tarball: IMAGE names it.
    assert _pick_loaded("tools/box:v1", images.parse_reference("tools/box:v1"), ["x:1"]) == "x:1"
    with pytest.raises(Exception, match="not tools/box:v1"):
        _pick_loaded("tools/box:v1", images.parse_reference("tools/box:v1"), ["x:1", "y:1"])


def test_registry_config() -> None:
    text = registry.render_config(Path("/var/lib/orch-local/d/registry/storage"), "192.0.2.1:5000")
    cfg = yaml.safe_load(text)
    assert cfg["version"] == 0.1
    assert cfg["storage"]["filesystem"]["rootdirectory"] == "/var/lib/orch-local/d/registry/storage"
    assert cfg["http"]["addr"] == "192.0.2.1:5000"
    assert registry.argv(Path("/c.yml")) == [registry.REGISTRY_BIN, "serve", "/c.yml"]


def test_dockerd_flags() -> None:
    lay = Layout.make("demo", "192.0.2.0/24", 2)
    argv = dockerd.argv(lay.node(2), lay.registry)
    joined = " ".join(argv)
    for flag in (
        "--data-root /var/lib/orch-local/demo/nodes/n2/docker",
        "--exec-root /run/orch-local/demo/n2/exec",
        "-H unix:///run/orch-local/demo/n2/docker.sock",
        "--pidfile /run/orch-local/demo/n2/docker.pid",
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--registry-mirror http://192.0.2.1:5000",
        "--insecure-registry 192.0.2.1:5000",
    ):
        assert flag in joined


def _job(tmp_path: Path) -> _Up:
    st = ClusterState(name="demo", subnet="192.0.2.0/24", nodes=2, state_root=str(tmp_path))
    return _Up(
        st,
        created=True,
        reporter=Reporter(),
        config_path=tmp_path / "config",
        wait_for_nodes=False,
        timeout=1.0,
    )


def test_agent_command_joins_once_then_runs(tmp_path: Path) -> None:
    job = _job(tmp_path)
    node = job.layout.node(1)
    argv, shown = job.agent_argv(node, "abcdef.0123456789abcdef", "sha256:" + "a" * 64)
    assert argv[:2] == ["/bin/sh", "-c"]
    join_line, run_line = argv[2].strip().splitlines()
    assert join_line.startswith(f"if [ ! -f {node.agent_dir / 'agent.conf'} ]; then ")
    join = shlex.split(join_line.split("then ", 1)[1].split(" || ")[0])
    agent = [sys.executable, "-OO", "-m", "agent.main"]  # -OO: no docstrings in memory
    assert join == [
        *agent,
        "join",
        "192.0.2.2:6443",
        "--token",
        "abcdef.0123456789abcdef",
        "--ca-hash",
        "sha256:" + "a" * 64,
        "--node-name",
        "demo-n1",
        "--data-dir",
        str(node.agent_dir),
    ]
    assert shlex.split(run_line) == [
        "exec",
        *agent,
        "run",
        "--data-dir",
        str(node.agent_dir),
        "--docker-host",
        node.docker_host,
        "--node-ip",
        "192.0.2.11",
        "--dns-upstream-resolv",
        "none",
    ]
    # The token never reaches the state file.
    assert "abcdef.0123456789abcdef" not in " ".join(shown)


def test_context_removal_keeps_other_entries(tmp_path: Path) -> None:
    lay = Layout.make("demo", "192.0.2.0/24", 1)
    path = tmp_path / "config"
    conf = ConfigFile.load(path, missing_ok=True)
    conf.add_context(name="other", cluster="other", server="10.0.0.1:6443", ca_pem=b"x", user="u")
    conf.add_context(
        name=lay.context,
        cluster=lay.config_cluster,
        server=lay.api_server,
        ca_pem=b"ca",
        user=lay.config_user,
        cert_pem=b"c",
        key_pem=b"k",
    )
    conf.save()
    _remove_context(str(path), lay)
    after = ConfigFile.load(path)
    assert after.context_names() == ["other"]
    assert [c["name"] for c in after.data["clusters"]] == ["other"]
    assert [u["name"] for u in after.data["users"]] == ["u"]
    assert after.current_context == ""
    # A context of the same name that points elsewhere is someone else's: kept.
    after.add_context(name="demo", cluster="theirs", server="10.0.0.2:6443", ca_pem=b"x", user="u")
    after.save()
    _remove_context(str(path), lay)
    assert "demo" in ConfigFile.load(path).context_names()


def test_plain_reporter_prints_steps(capsys: pytest.CaptureFixture[str]) -> None:
    rep = PlainReporter(sys.stdout)
    with rep.step("Doing it"):
        rep.note("detail")
    with pytest.raises(RuntimeError), rep.step("Failing"):
        raise RuntimeError("boom")
    out = capsys.readouterr().out
    assert "* Doing it ..." in out and "ok: Doing it" in out and "failed: Failing" in out


def test_cli_parses_cluster_and_image_verbs() -> None:
    from orchestrator.cli import cluster as cli_cluster
    from orchestrator.cli import image as cli_image
    from orchestrator.cli.main import build_parser, parse

    parser = build_parser()
    args = parse(parser, ["cluster", "up", "--name", "dev", "--nodes", "2", "--no-wait"])
    assert (args.func, args.name, args.nodes, args.no_wait) == (cli_cluster.run_up, "dev", 2, True)
    args = parse(parser, ["cluster", "down", "--name", "dev"])
    assert args.func is cli_cluster.run_down
    args = parse(parser, ["cluster", "list"])
    assert args.func is cli_cluster.run_list
    args = parse(parser, ["image", "load", "app:1", "--cluster", "dev", "--from-tar", "/x.tar"])
    assert (args.func, args.image, args.cluster, args.from_tar) == (
        cli_image.run_load,
        "app:1",
        "dev",
        "/x.tar",
    )
