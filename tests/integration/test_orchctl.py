"""orchctl against a real control plane: every verb, every output, and bad input
rejected whole with a one-line reason and nothing written.

Each test works in its own namespace (`cli-<test>`) on the shared control plane.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.api import codec
from orchestrator.client.client import ConflictError
from orchestrator.client.config import ConfigFile
from tests.support.controlplane import REPO, ControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIXTURE = REPO / "tests" / "fixtures" / "all-kinds.yaml"


def orchctl(
    cp: ControlPlane,
    *args: str,
    input: str | None = None,
    config: Path | None = None,
    check: bool | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run orchctl; never a traceback, and errors end with exactly one reason per line."""
    argv = [sys.executable, "-m", "orchestrator.cli.main"]
    if config is not None:
        argv += ["--config", str(config)]
    out = subprocess.run(
        argv + list(args),
        env=cp.env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in out.stderr, out.stderr
    if check is True:
        assert out.returncode == 0, f"orchctl {' '.join(args)}: {out.stderr}{out.stdout}"
    elif check is False:
        assert out.returncode == 1, f"orchctl {' '.join(args)} should fail: {out.stdout}"
        assert out.stderr.strip(), "a failure must say why on stderr"
    return out


def ok(cp: ControlPlane, *args: str, **kw: Any) -> str:
    return orchctl(cp, *args, check=True, **kw).stdout


def fails(cp: ControlPlane, *args: str, **kw: Any) -> str:
    return orchctl(cp, *args, check=False, **kw).stderr


def outcomes(stdout: str) -> dict[str, str]:
    """`deployment.apps/web created` lines -> {"deployment.apps/web": "created"}."""
    return dict(line.split(" ", 1) for line in stdout.splitlines() if line.strip())


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def manifest(kind: str, name: str, namespace: str | None = None, **body: Any) -> str:
    api = {"Deployment": "apps/v1"}.get(kind, "v1")
    meta: dict[str, Any] = {"name": name, **body.pop("metadata", {})}
    if namespace:
        meta["namespace"] = namespace
    return yaml.safe_dump(
        {"apiVersion": api, "kind": kind, "metadata": meta, **body}, sort_keys=False
    )


def docs(*texts: str) -> str:
    return "---\n".join(texts)


def deployment(name: str, namespace: str, replicas: Any = 2) -> str:
    return manifest(
        "Deployment",
        name,
        namespace,
        spec={
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]},
            },
        },
    )


def exists(cp: ControlPlane, namespace: str, kind: str, name: str) -> bool:
    return orchctl(cp, "-n", namespace, "get", kind, name, "-o", "name").returncode == 0


def uid_of(cp: ControlPlane, namespace: str, kind: str, name: str) -> str:
    data = json.loads(ok(cp, "-n", namespace, "get", kind, name, "-o", "json"))
    return str(data["metadata"]["uid"])


# -- apply -------------------------------------------------------------------------------------


def all_kinds_copy(tmp_path: Path, namespace: str) -> tuple[Path, list[dict[str, Any]]]:
    """The fixture with its own names, as a user would apply it: without the
    fields only a server sets (ownerReferences to uids of another cluster, a
    CSR's requestor) so that re-applying is a no-op."""
    text = FIXTURE.read_text().replace("demo", namespace).replace("node-1", f"{namespace}-n1")
    documents = [d for d in yaml.safe_load_all(text) if d]
    for d in documents:
        d["metadata"].pop("ownerReferences", None)
        if d["kind"] == "CertificateSigningRequest":
            d["metadata"]["name"] = f"{namespace}-csr"
            for field in ("username", "groups", "extra", "uid"):
                d["spec"].pop(field, None)
    path = tmp_path / "all-kinds.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path, documents


def test_apply_every_kind_then_unchanged_then_configured(
    api_only_control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp, ns = api_only_control_plane, "cli-allkinds"
    path, documents = all_kinds_copy(tmp_path, ns)
    first = outcomes(ok(cp, "apply", "-f", str(path)))
    assert len(first) == len(documents) == 31
    assert set(first.values()) == {"created"}, first
    assert first["namespace/cli-allkinds"] == "created"
    assert "deployment.apps/web" in first and "horizontalpodautoscaler.autoscaling/web" in first
    again = outcomes(ok(cp, "apply", "-f", str(path)))
    assert again == {k: "unchanged" for k in first}
    text = path.read_text().replace("LOG_LEVEL: info", "LOG_LEVEL: debug")
    path.write_text(text)
    changed = outcomes(ok(cp, "apply", "-f", str(path)))
    assert changed["configmap/web-config"] == "configured"
    assert {k for k, v in changed.items() if v != "unchanged"} == {"configmap/web-config"}
    data = json.loads(ok(cp, "-n", ns, "get", "cm", "web-config", "-o", "json"))
    assert data["data"]["LOG_LEVEL"] == "debug"


def test_apply_directory_stdin_dry_run_and_namespace_last(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp, ns = control_plane, "cli-applydir"
    # The namespace comes last in the file: apply still creates it first.
    (tmp_path / "b.yaml").write_text(
        docs(manifest("ConfigMap", "b", ns), manifest("Namespace", ns))
    )
    (tmp_path / "a.json").write_text(json.dumps(yaml.safe_load(manifest("ConfigMap", "a", ns))))
    (tmp_path / "README.md").write_text("not a manifest")
    dry = outcomes(ok(cp, "apply", "-f", str(tmp_path), "--dry-run=client"))
    assert dry == {
        "namespace/cli-applydir": "created (dry run)",
        "configmap/a": "created (dry run)",
        "configmap/b": "created (dry run)",
    }
    assert not exists(cp, "default", "ns", ns)
    out = ok(cp, "apply", "-f", str(tmp_path))
    assert out.splitlines() == [
        "namespace/cli-applydir created",
        "configmap/a created",
        "configmap/b created",
    ]
    server_dry = ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        "--dry-run=server",
        input=manifest("ConfigMap", "c", data={"k": "v"}),
    )
    assert server_dry.strip() == "configmap/c created (server dry run)"
    assert not exists(cp, ns, "cm", "c")
    assert (
        ok(cp, "-n", ns, "apply", "-f", "-", input=manifest("ConfigMap", "c")).strip()
        == "configmap/c created"
    )


def test_apply_reports_a_server_error_and_continues(control_plane: ControlPlane) -> None:
    cp, ns = control_plane, "cli-applyerr"
    ok(cp, "create", "namespace", ns)
    # A ConfigMap in a namespace that does not exist fails on the server; the rest goes on.
    out = orchctl(
        cp,
        "apply",
        "-f",
        "-",
        input=docs(
            manifest("ConfigMap", "first", ns),
            manifest("ConfigMap", "lost", "cli-no-such-ns"),
            manifest("ConfigMap", "last", ns),
        ),
    )
    assert out.returncode == 1
    assert out.stdout.splitlines() == ["configmap/first created", "configmap/last created"]
    [line] = out.stderr.splitlines()
    assert line.startswith('error: STDIN (document 2): ConfigMap "cli-no-such-ns/lost": ')
    assert "not found" in line
    assert exists(cp, ns, "cm", "first") and exists(cp, ns, "cm", "last")
    # An explicit -n that contradicts a manifest's namespace is refused before any write.
    err = fails(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=docs(manifest("ConfigMap", "third"), manifest("ConfigMap", "x", "cli-other")),
    )
    assert "does not match the namespace" in err and not exists(cp, ns, "cm", "third")


# -- get ---------------------------------------------------------------------------------------


def test_get_in_every_output_format(control_plane: ControlPlane) -> None:
    cp, ns = control_plane, "cli-get"
    ok(cp, "create", "namespace", ns)
    ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=docs(
            manifest(
                "ConfigMap",
                "alpha",
                metadata={"labels": {"app": "web", "tier": "front"}},
                data={"a": "1"},
            ),
            manifest("ConfigMap", "beta", metadata={"labels": {"app": "db"}}),
            deployment("web", ns),
            manifest("Service", "web", spec={"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ),
    )

    table = ok(cp, "-n", ns, "get", "configmaps").splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"]
    assert [row.split()[:2] for row in table[1:]] == [["alpha", "1"], ["beta", "0"]]
    assert re.fullmatch(
        r"NAME +READY +UP-TO-DATE +AVAILABLE +AGE",
        ok(cp, "-n", ns, "get", "deploy").splitlines()[0],
    )
    wide = ok(cp, "-n", ns, "get", "deployments.apps", "web", "-o", "wide").splitlines()
    assert wide[0].split()[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1].split()[-3:] == ["web", "busybox:1.36", "app=web"]
    svc = ok(cp, "-n", ns, "get", "svc", "web").splitlines()
    assert svc[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert svc[1].split()[1] == "ClusterIP" and "80/TCP" in svc[1]

    one = yaml.safe_load(ok(cp, "-n", ns, "get", "cm", "alpha", "-o", "yaml"))
    assert (one["kind"], one["metadata"]["name"], one["data"]) == ("ConfigMap", "alpha", {"a": "1"})
    listed = json.loads(ok(cp, "-n", ns, "get", "cm", "-o", "json"))
    assert listed["kind"] == "List"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["alpha", "beta"]
    two = json.loads(ok(cp, "-n", ns, "get", "cm", "alpha", "beta", "-o", "json"))
    assert len(two["items"]) == 2
    assert codec.to_dict(codec.from_dict(one))["data"] == {"a": "1"}  # output decodes back
    assert ok(cp, "-n", ns, "get", "cm", "-o", "name").split() == [
        "configmap/alpha",
        "configmap/beta",
    ]
    assert ok(cp, "-n", ns, "get", "deploy/web", "svc/web", "-o", "name").split() == [
        "deployment.apps/web",
        "service/web",
    ]
    both = ok(cp, "-n", ns, "get", "deploy,svc")
    assert "deployment.apps/web" in both and "service/web" in both and "\n\n" in both

    assert ok(cp, "-n", ns, "get", "cm", "-l", "app=web", "-o", "name").split() == [
        "configmap/alpha"
    ]
    assert ok(
        cp, "-n", ns, "get", "cm", "-l", "app in (web,db),tier!=front", "-o", "name"
    ).split() == ["configmap/beta"]
    assert ok(
        cp, "-n", ns, "get", "cm", "--field-selector", "metadata.name=beta", "-o", "name"
    ).split() == ["configmap/beta"]
    labelled = ok(cp, "-n", ns, "get", "cm", "alpha", "--show-labels").splitlines()
    assert labelled[0].split()[-1] == "LABELS" and labelled[1].endswith("app=web,tier=front")
    assert ok(cp, "-n", ns, "get", "cm", "--no-headers").splitlines()[0].startswith("alpha")

    everywhere = ok(cp, "get", "cm", "-A", "-l", "app").splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [r.split()[:2] for r in everywhere[1:] if r.startswith(ns)] == [
        [ns, "alpha"],
        [ns, "beta"],
    ]

    empty = orchctl(cp, "-n", ns, "get", "secrets")
    assert (empty.returncode, empty.stdout) == (0, "")
    assert empty.stderr.strip() == f"No resources found in {ns} namespace."
    assert (
        fails(cp, "-n", ns, "get", "cm", "nope").strip()
        == 'Error from server (NotFound): configmaps "nope" not found'
    )
    assert (
        fails(cp, "get", "foo").strip() == 'error: the server doesn\'t have a resource type "foo"'
    )
    assert "invalid label selector" in fails(cp, "-n", ns, "get", "cm", "-l", "a in (")
    assert "not supported" in fails(cp, "-n", ns, "get", "cm", "--field-selector", "spec.x=1")


def test_get_from_file(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp, ns = control_plane, "cli-getfile"
    path = tmp_path / "m.yaml"
    path.write_text(docs(manifest("Namespace", ns), manifest("ConfigMap", "x", ns)))
    ok(cp, "apply", "-f", str(path))
    assert ok(cp, "get", "-f", str(path), "-o", "name").split() == [
        f"namespace/{ns}",
        "configmap/x",
    ]


def test_get_watch_prints_added_then_modified(control_plane: ControlPlane) -> None:
    cp, ns = control_plane, "cli-watch"
    ok(cp, "create", "namespace", ns)
    ok(cp, "-n", ns, "apply", "-f", "-", input=manifest("ConfigMap", "seed"))
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "-n",
            ns,
            "get",
            "cm",
            "-w",
            "--output-watch-events",
            "--watch-timeout",
            "30",
        ],
        env=cp.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach it even when the test runner ignores SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    stdout = watcher.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any(line.split()[:2] == ["ADDED", "seed"] for line in lines),
            what="the first listing",
        )
        ok(cp, "-n", ns, "apply", "-f", "-", input=manifest("ConfigMap", "w1"))
        wait_for(
            lambda: any(line.split()[:2] == ["ADDED", "w1"] for line in lines), what="ADDED w1"
        )
        ok(cp, "-n", ns, "label", "cm", "w1", "seen=yes")
        wait_for(
            lambda: any(line.split()[:2] == ["MODIFIED", "w1"] for line in lines),
            what="MODIFIED w1",
        )
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(15) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert lines[0].split() == ["EVENT", "NAME", "DATA", "AGE"]
    assert "Traceback" not in watcher.stderr.read()  # type: ignore[union-attr]
    # --watch-timeout bounds a watch and ends it normally.
    start = time.monotonic()
    out = ok(cp, "-n", ns, "get", "cm", "w1", "-w", "--watch-timeout", "1")
    assert time.monotonic() - start < 10 and out.splitlines()[1].startswith("w1")


# -- describe ----------------------------------------------------------------------------------


def test_describe_shows_details_and_events(control_plane: ControlPlane) -> None:
    cp, ns = control_plane, "cli-describe"
    ok(cp, "create", "namespace", ns)
    pod = manifest(
        "Pod",
        "web",
        metadata={"labels": {"app": "web"}},
        spec={
            "containers": [
                {
                    "name": "web",
                    "image": "busybox:1.36",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}},
                }
            ]
        },
    )
    event = manifest(
        "Event",
        "web.17c8a1b2",
        involvedObject={"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": ns},
        reason="FailedScheduling",
        type="Warning",
        count=3,
        message="0/0 nodes are available: no nodes registered.",
        firstTimestamp="2024-05-01T10:00:00Z",
        lastTimestamp="2024-05-01T10:05:00Z",
        source={"component": "default-scheduler"},
    )
    ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=docs(
            pod,
            event,
            manifest(
                "Service",
                "web",
                spec={"selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}]},
            ),
        ),
    )
    text = ok(cp, "-n", ns, "describe", "pod", "web")
    lines = text.splitlines()
    assert lines[0].split() == ["Name:", "web"] and lines[1].split() == ["Namespace:", ns]
    for needle in (
        r"Labels:\s+app=web",
        r"Status:\s+Pending",
        r"\nContainers:\n  web:\n",
        r"Image:\s+busybox:1.36",
        r"Port:\s+8080/TCP",
        r"MODE:\s+prod",
        r"Requests:\n\s+cpu:\s+100m",
        r"Limits:\n\s+memory:\s+64Mi",
        r"QoS Class:\s+Burstable",
        r"Tolerations:",
    ):
        assert re.search(needle, text), needle
    events = text[text.index("Events:") :].splitlines()
    assert events[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert events[3].split()[:2] == ["Warning", "FailedScheduling"]
    assert "(x3 over" in events[3] and "default-scheduler" in events[3]
    assert events[3].endswith("0/0 nodes are available: no nodes registered.")

    svc = ok(cp, "-n", ns, "describe", "svc", "web")
    assert re.search(r"Selector:\s+app=web\n", svc) and re.search(r"Port:\s+http  80/TCP", svc)
    assert re.search(r"\nEvents:\s+<none>\n$", svc)
    by_label = ok(cp, "-n", ns, "describe", "pods", "-l", "app=web")
    assert by_label.startswith("Name:") and "FailedScheduling" in by_label
    generic = ok(cp, "-n", ns, "describe", "event", "web.17c8a1b2")
    assert "Involved Object:" in generic and "Kind:         Event" in generic
    assert (
        fails(cp, "-n", ns, "describe", "pod", "nope").strip()
        == 'Error from server (NotFound): pods "nope" not found'
    )


# -- delete ------------------------------------------------------------------------------------


def owner_and_dependent(cp: ControlPlane, ns: str) -> None:
    ok(cp, "-n", ns, "apply", "-f", "-", input=manifest("ConfigMap", "owner"))
    uid = uid_of(cp, ns, "cm", "owner")
    ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=manifest(
            "ConfigMap",
            "dependent",
            metadata={
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
                ]
            },
        ),
    )


def test_delete_by_name_selector_file_and_all(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp, ns = control_plane, "cli-delete"
    ok(cp, "create", "namespace", ns)
    ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=docs(
            *[
                manifest("ConfigMap", n, metadata={"labels": {"grp": g}})
                for n, g in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"))
            ]
        ),
    )
    assert ok(cp, "-n", ns, "delete", "cm", "a").strip() == 'configmap "a" deleted'
    assert not exists(cp, ns, "cm", "a")
    assert ok(cp, "-n", ns, "delete", "cm", "-l", "grp=x").strip() == 'configmap "b" deleted'
    assert (
        fails(cp, "-n", ns, "delete", "cm", "a").strip()
        == 'Error from server (NotFound): configmaps "a" not found'
    )
    assert ok(cp, "-n", ns, "delete", "cm", "a", "--ignore-not-found") == ""
    path = tmp_path / "c.yaml"
    path.write_text(manifest("ConfigMap", "c", ns))
    assert ok(cp, "delete", "-f", str(path)).strip() == 'configmap "c" deleted'
    assert ok(cp, "-n", ns, "delete", "cm", "--all").strip() == 'configmap "d" deleted'
    assert ok(cp, "-n", ns, "get", "cm", "-o", "name") == ""
    assert "no name was specified" in fails(cp, "-n", ns, "delete", "cm")
    # An object held by a finalizer is not gone: --wait says so within --timeout.
    ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=manifest("ConfigMap", "held", metadata={"finalizers": ["example.com/keep"]}),
    )
    out = orchctl(cp, "-n", ns, "delete", "cm", "held", "--timeout=1s", check=False)
    assert out.stdout.strip() == 'configmap "held" deleted'
    assert out.stderr.strip() == "error: timed out waiting for the condition on configmaps/held"
    assert (
        ok(cp, "-n", ns, "delete", "cm", "held", "--wait=false").strip()
        == 'configmap "held" deleted'
    )
    assert exists(cp, ns, "cm", "held")


def test_delete_cascade_orphan_keeps_dependents_background_removes_them(
    control_plane: ControlPlane,
) -> None:
    cp, ns = control_plane, "cli-cascade"
    ok(cp, "create", "namespace", ns)
    owner_and_dependent(cp, ns)
    assert (
        ok(cp, "-n", ns, "delete", "cm", "owner", "--cascade=orphan").strip()
        == 'configmap "owner" deleted'
    )
    assert not exists(cp, ns, "cm", "owner")
    dependent = json.loads(ok(cp, "-n", ns, "get", "cm", "dependent", "-o", "json"))
    assert "ownerReferences" not in dependent["metadata"]

    ok(cp, "-n", ns, "delete", "cm", "dependent")
    owner_and_dependent(cp, ns)
    assert ok(cp, "-n", ns, "delete", "cm", "owner").strip() == 'configmap "owner" deleted'
    wait_for(lambda: not exists(cp, ns, "cm", "dependent"), what="the garbage collector")


# -- label / annotate ------------------------------------------------------------------------


def test_label_and_annotate(control_plane: ControlPlane) -> None:
    cp, ns = control_plane, "cli-label"
    ok(cp, "create", "namespace", ns)
    ok(
        cp,
        "-n",
        ns,
        "apply",
        "-f",
        "-",
        input=docs(
            manifest("ConfigMap", "x", metadata={"labels": {"app": "web"}}),
            manifest("ConfigMap", "y", metadata={"labels": {"app": "web"}}),
        ),
    )

    def labels_of(name: str, field: str = "labels") -> dict[str, str]:
        data = json.loads(ok(cp, "-n", ns, "get", "cm", name, "-o", "json"))
        return dict(data["metadata"].get(field) or {})

    assert ok(cp, "-n", ns, "label", "cm", "x", "env=prod").strip() == "configmap/x labeled"
    assert labels_of("x") == {"app": "web", "env": "prod"}
    err = fails(cp, "-n", ns, "label", "cm", "x", "app=db")
    assert err.strip() == "error: 'app' already has a value (web), and --overwrite is false"
    assert labels_of("x")["app"] == "web"
    ok(cp, "-n", ns, "label", "cm", "x", "app=db", "--overwrite")
    ok(cp, "-n", ns, "label", "cm", "x", "env-")
    assert labels_of("x") == {"app": "db"}
    assert "invalid label value" in fails(cp, "-n", ns, "label", "cm", "x", "k=not valid!")
    assert "invalid label spec" in fails(cp, "-n", ns, "label", "cm", "x", "bad key=v")
    out = ok(cp, "-n", ns, "label", "cm", "-l", "app=web", "team=blue")
    assert out.split("\n")[0] == "configmap/y labeled"
    assert labels_of("y") == {"app": "web", "team": "blue"}

    assert (
        ok(cp, "-n", ns, "annotate", "cm", "x", "note=hello world").strip()
        == "configmap/x annotated"
    )
    assert labels_of("x", "annotations")["note"] == "hello world"
    assert "--overwrite is false" in fails(cp, "-n", ns, "annotate", "cm", "x", "note=bye")
    ok(cp, "-n", ns, "annotate", "cm", "x", "note=bye", "--overwrite")
    assert labels_of("x", "annotations")["note"] == "bye"
    ok(cp, "-n", ns, "annotate", "cm", "x", "note-")
    assert "note" not in labels_of("x", "annotations")
    assert (
        fails(cp, "-n", ns, "label", "cm", "nope", "a=b").strip()
        == 'Error from server (NotFound): configmaps "nope" not found'
    )


# -- create, token, config, version ---------------------------------------------------------


def test_create_namespace_and_create_twice(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp, ns = control_plane, "cli-create"
    assert ok(cp, "create", "namespace", ns).strip() == f"namespace/{ns} created"
    assert ok(cp, "get", "ns", ns).splitlines()[1].split()[:2] == [ns, "Active"]
    assert (
        fails(cp, "create", "ns", ns).strip()
        == f'Error from server (AlreadyExists): namespaces "{ns}" already exists'
    )
    assert "RFC 1123" in fails(cp, "create", "namespace", "Bad_Name")
    path = tmp_path / "cm.yaml"
    path.write_text(manifest("ConfigMap", "once", ns, data={"k": "v"}))
    assert ok(cp, "create", "-f", str(path)).strip() == "configmap/once created"
    err = fails(cp, "create", "-f", str(path)).strip()
    assert err.startswith("Error from server (AlreadyExists): ")
    assert '"once"' in err and "already exists" in err and "\n" not in err


def test_token_create_list_delete(control_plane: ControlPlane) -> None:
    cp = control_plane
    line = ok(cp, "token", "create", "--print-join-command", "--description", "cli test").strip()
    m = re.fullmatch(
        r"orch-agent join (\S+) --token ([a-z0-9]{6})\.([a-z0-9]{16}) "
        r"--ca-hash (sha256:[0-9a-f]{64})",
        line,
    )
    assert m, line
    assert m.group(1) == cp.connection().server
    assert m.group(4) == cp.join_command.split("--ca-hash ")[1].strip()
    token_id = m.group(2)
    secret = json.loads(
        ok(cp, "-n", "kube-system", "get", "secret", f"bootstrap-token-{token_id}", "-o", "json")
    )
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    listing = ok(cp, "token", "list")
    assert listing.splitlines()[0].split()[:3] == ["TOKEN", "TTL", "EXPIRES"]
    assert f"{token_id}.{m.group(3)}" in listing and "cli test" in listing
    plain = ok(cp, "token", "create", "--ttl", "1h").strip()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", plain)
    assert ok(cp, "token", "delete", token_id).strip() == f'bootstrap token "{token_id}" deleted'
    assert (
        ok(cp, "token", "delete", plain).strip()
        == f'bootstrap token "{plain.split(".")[0]}" deleted'
    )
    assert "not found" in fails(cp, "token", "delete", token_id)


def test_config_contexts(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    config = tmp_path / "config"
    shutil.copy(cp.admin_conf, config)
    first = ConfigFile.load(config).current_context
    cluster = ConfigFile.load(config).context(first)["cluster"]
    user = ConfigFile.load(config).context(first)["user"]
    assert ok(cp, "config", "current-context", config=config).strip() == first
    assert (
        ok(
            cp,
            "config",
            "set-context",
            "second",
            "--cluster",
            cluster,
            "--user",
            user,
            "--namespace",
            "cli-config",
            config=config,
        ).strip()
        == 'Context "second" created.'
    )
    table = [row.split() for row in ok(cp, "config", "get-contexts", config=config).splitlines()]
    assert table[0] == ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]
    assert ["*", first, cluster, user, "default"] in table
    assert ["second", cluster, user, "cli-config"] in table
    assert (
        ok(cp, "config", "use-context", "second", config=config).strip()
        == 'Switched to context "second".'
    )
    assert ok(cp, "config", "current-context", config=config).strip() == "second"
    table = [row.split() for row in ok(cp, "config", "get-contexts", config=config).splitlines()]
    assert ["*", "second", cluster, user, "cli-config"] in table
    # The context's namespace is the default namespace of every request.
    ok(cp, "create", "namespace", "cli-config", config=config)
    ok(cp, "apply", "-f", "-", input=manifest("ConfigMap", "here"), config=config)
    assert exists(cp, "cli-config", "cm", "here")
    assert (
        ok(
            cp,
            "--context",
            first,
            "get",
            "cm",
            "here",
            "-n",
            "cli-config",
            "-o",
            "name",
            config=config,
        ).strip()
        == "configmap/here"
    )
    assert (
        fails(cp, "config", "use-context", "nope", config=config).strip()
        == 'error: no context exists with the name: "nope"'
    )

    view = yaml.safe_load(ok(cp, "config", "view", config=config))
    assert view["current-context"] == "second" and len(view["contexts"]) == 2
    assert view["clusters"][0]["cluster"]["certificate-authority-data"] == "DATA+OMITTED"
    assert view["users"][0]["user"]["client-key-data"] == "DATA+OMITTED"
    raw = yaml.safe_load(ok(cp, "config", "view", "--raw", config=config))
    assert raw["users"][0]["user"]["client-key-data"].startswith("LS0t")  # base64 PEM
    minified = yaml.safe_load(ok(cp, "config", "view", "--minify", config=config))
    assert [c["name"] for c in minified["contexts"]] == ["second"]
    assert ConfigFile.load(cp.admin_conf).current_context == first  # the shared file untouched


def test_version_and_api_resources(control_plane: ControlPlane) -> None:
    cp = control_plane
    lines = ok(cp, "version").splitlines()
    assert lines[0] == "Client Version: v0.1.0"
    assert lines[1] == "Server Version: v0.1.0"
    assert lines[2] == "Server Store: sqlite"
    assert lines[3].startswith("Authenticated As: ")
    assert ok(cp, "version", "--client").strip() == "Client Version: v0.1.0"
    assert json.loads(ok(cp, "version", "-o", "json"))["serverVersion"]["store"] == "sqlite"
    resources = [r.split() for r in ok(cp, "api-resources").splitlines()]
    assert resources[0] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert ["deployments", "deploy", "apps/v1", "true", "Deployment"] in resources
    assert ["namespaces", "ns", "v1", "false", "Namespace"] in resources


# -- bad input: rejected whole, one clear line, nothing written -----------------------------


def bad_file(tmp_path: Path, ns: str, bad: str) -> Path:
    """A valid ConfigMap first, then the bad document: neither may be written."""
    path = tmp_path / "bad.yaml"
    path.write_text(docs(manifest("ConfigMap", "innocent", ns), bad))
    return path


@pytest.mark.parametrize(
    ("case", "bad", "expected"),
    [
        (
            "unknown-kind",
            "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n",
            '(document 2): Widget "w": kind: no kind "Widget" is registered for version "v1"',
        ),
        (
            "unknown-field",
            deployment("web", "cli-bad-unknown-field").replace("replicas:", "replica:"),
            '(document 2): Deployment "cli-bad-unknown-field/web": spec.replica: unknown field',
        ),
        (
            "wrong-type",
            deployment("web", "cli-bad-wrong-type", replicas="three"),
            '(document 2): Deployment "cli-bad-wrong-type/web": spec.replicas: expected an '
            "integer, got string",
        ),
        (
            "invalid-name",
            manifest("ConfigMap", "Web_1", "cli-bad-invalid-name"),
            '(document 2): ConfigMap "cli-bad-invalid-name/Web_1": metadata.name: Invalid value: '
            '"Web_1": a lowercase RFC 1123 subdomain',
        ),
    ],
)
def test_bad_documents_are_rejected_whole(
    control_plane: ControlPlane, tmp_path: Path, case: str, bad: str, expected: str
) -> None:
    cp, ns = control_plane, f"cli-bad-{case}"
    ok(cp, "create", "namespace", ns)
    path = bad_file(tmp_path, ns, bad)
    err = fails(cp, "apply", "-f", str(path))
    [line] = err.splitlines()
    assert line.startswith(f"error: {path} {expected}"), line
    assert not exists(cp, ns, "cm", "innocent")
    assert ok(cp, "-n", ns, "get", "all", "-o", "name") == ""
    fails(cp, "create", "-f", str(path))
    assert not exists(cp, ns, "cm", "innocent")


def test_malformed_yaml_writes_nothing(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp, ns = control_plane, "cli-bad-yaml"
    ok(cp, "create", "namespace", ns)
    path = bad_file(tmp_path, ns, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [oops\n")
    [line] = fails(cp, "apply", "-f", str(path)).splitlines()
    assert line.startswith(f"error: {path}: malformed YAML (line "), line
    assert not exists(cp, ns, "cm", "innocent")


def test_oversized_object_is_rejected_with_the_limit(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp, ns = control_plane, "cli-bad-size"
    ok(cp, "create", "namespace", ns)
    path = bad_file(
        tmp_path, ns, manifest("ConfigMap", "huge", ns, data={"blob": "x" * (2 * 1024 * 1024)})
    )
    [line] = fails(cp, "apply", "-f", str(path)).splitlines()
    assert line.startswith(f'error: {path} (document 2): ConfigMap "{ns}/huge": '), line
    # The reason names the limit, whichever check (admission or store) hits first.
    assert re.search(r"(limit is|at most) \d+ bytes", line), line
    assert not exists(cp, ns, "cm", "innocent") and not exists(cp, ns, "cm", "huge")


async def test_stale_resource_version_conflicts_and_apply_still_works(
    control_plane: ControlPlane,
) -> None:
    cp, ns = control_plane, "cli-stale"
    ok(cp, "create", "namespace", ns)
    ok(cp, "-n", ns, "apply", "-f", "-", input=manifest("ConfigMap", "cfg", data={"v": "1"}))
    async with cp.client() as client:
        stale = await client.get("ConfigMap", "cfg", ns)
        fresh = await client.get("ConfigMap", "cfg", ns)
        fresh.data["v"] = "2"
        await client.update(fresh)
        stale.data["v"] = "3"
        with pytest.raises(ConflictError) as info:
            await client.update(stale)
        assert info.value.message
    out = ok(cp, "-n", ns, "apply", "-f", "-", input=manifest("ConfigMap", "cfg", data={"v": "4"}))
    assert out.strip() == "configmap/cfg configured"
    assert json.loads(ok(cp, "-n", ns, "get", "cm", "cfg", "-o", "json"))["data"] == {"v": "4"}


def test_unreachable_apiserver_and_missing_config(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    config = tmp_path / "dead.conf"
    conf = ConfigFile.load(cp.admin_conf)
    cluster = conf.context(conf.current_context)["cluster"]
    for item in conf.data["clusters"]:
        if item["name"] == cluster:
            item["cluster"]["server"] = "127.0.0.1:1"
    conf.path = config
    conf.save()
    [line] = fails(cp, "get", "pods", config=config).splitlines()
    assert line.startswith("error: cannot reach the apiserver at 127.0.0.1:1: ")
    [line] = fails(cp, "get", "pods", config=tmp_path / "absent.conf").splitlines()
    assert line.startswith(f"error: no configuration at {tmp_path / 'absent.conf'}")
    assert (
        fails(cp, "apply", "-f", str(tmp_path / "nope.yaml")).strip()
        == f'error: the path "{tmp_path / "nope.yaml"}" does not exist'
    )
    env_free = dict(cp.env)
    env_free.pop("ORCHCONFIG", None)
    env_free["HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", "get", "ns"],
        env=env_free,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1 and "no configuration at" in out.stderr
    assert os.path.exists(cp.admin_conf)
