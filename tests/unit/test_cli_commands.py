"""orchctl's pure parts: manifest checks, label rules, delete flags, config view, parsing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import config_cmds, delete, labels, main, manifests
from orchestrator.cli.errors import CliError
from orchestrator.cli.manifests import ManifestErrors, load_documents

pytestmark = pytest.mark.unit

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: demo\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


# -- manifests ----------------------------------------------------------------------------------


def test_every_bad_document_is_reported_with_file_document_object_and_field(
    tmp_path: Path,
) -> None:
    text = "\n---\n".join(
        [
            CM.format(name="good"),
            "apiVersion: v1\nkind: Widget\nmetadata: {name: w}",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo}\n"
            "spec: {replica: 3}",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web2}\n"
            "spec: {replicas: three}",
            CM.format(name="Web_1"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: demo}",
        ]
    )
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ManifestErrors) as info:
        load_documents([path])
    lines = info.value.lines
    assert lines[0] == (
        f'{path} (document 2): Widget "w": kind: no kind "Widget" is registered for version "v1"'
    )
    assert lines[1] == f'{path} (document 3): Deployment "demo/web": spec.replica: unknown field'
    assert lines[2] == (
        f'{path} (document 4): Deployment "web2": spec.replicas: expected an integer, got string'
    )
    assert lines[3].startswith(
        f'{path} (document 5): ConfigMap "demo/Web_1": metadata.name: '
        'Invalid value: "Web_1": a lowercase RFC 1123 subdomain'
    )
    assert lines[4] == (
        f'{path} (document 6): ConfigMap "demo/<unnamed>": metadata.name: '
        "Required value: name is required"
    )
    assert len(lines) == 5


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", CM.format(name="a") + "---\nkind: [\n")
    with pytest.raises(ManifestErrors) as info:
        load_documents([path])
    assert info.value.lines[0].startswith(f"{path}: malformed YAML (line ")


def test_bad_labels_and_annotation_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "l.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
        "  labels: {'bad key': v, ok: 'bad value'}\n  annotations: {'/x': y}\n",
    )
    with pytest.raises(ManifestErrors) as info:
        load_documents([path])
    fields = [line.split(": ")[2] for line in info.value.lines]
    assert fields == ["metadata.labels[bad key]", "metadata.labels[ok]", "metadata.annotations[/x]"]


def test_rbac_names_may_contain_colons(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\n"
        "kind: ClusterRole\nmetadata: {name: 'system:controller:x'}\n",
    )
    assert [d.name for d in load_documents([path])] == ["system:controller:x"]


def test_directories_sorted_and_recursive_and_json_lists(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", CM.format(name="b"))
    write(
        tmp_path,
        "a.json",
        '{"apiVersion": "v1", "kind": "List", "items": ['
        '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": '
        '{"name": "a1"}}, {"apiVersion": "v1", "kind": "ConfigMap", '
        '"metadata": {"name": "a2"}}]}',
    )
    write(tmp_path, "notes.txt", "not a manifest")
    write(tmp_path, "sub/c.yml", CM.format(name="c"))
    assert [d.name for d in load_documents([str(tmp_path)])] == ["a1", "a2", "b"]
    assert [d.name for d in load_documents([str(tmp_path)], recursive=True)] == [
        "a1",
        "a2",
        "b",
        "c",
    ]


def test_missing_file() -> None:
    with pytest.raises(CliError, match=r'the path "/no/such\.yaml" does not exist'):
        load_documents(["/no/such.yaml"])


def test_namespaces_go_first_otherwise_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        CM.format(name="a") + "---\napiVersion: v1\n"
        "kind: Namespace\nmetadata: {name: demo}\n---\n" + CM.format(name="b"),
    )
    ordered = manifests.namespaces_first(load_documents([path]))
    assert [(d.info.kind, d.name) for d in ordered] == [
        ("Namespace", "demo"),
        ("ConfigMap", "a"),
        ("ConfigMap", "b"),
    ]


def test_explicit_namespace_must_match_the_manifest(tmp_path: Path) -> None:
    doc = load_documents([write(tmp_path, "m.yaml", CM.format(name="a"))])[0]
    assert manifests.target_namespace(doc, "demo", True) == "demo"
    assert manifests.target_namespace(doc, "other", False) == "demo"
    with pytest.raises(CliError, match="does not match the namespace"):
        manifests.target_namespace(doc, "other", True)


# -- label and annotate -------------------------------------------------------------------------


def test_label_changes_follow_kubectl_rules() -> None:
    changes = labels.parse_changes(["app=web", "tier-"], labels.LABEL)
    assert changes.set == {"app": "web"} and changes.remove == ["tier"]
    new, missing = labels.apply_changes({"tier": "x", "env": "prod"}, changes, False, labels.LABEL)
    assert new == {"env": "prod", "app": "web"} and missing == []
    with pytest.raises(
        CliError,
        match=r"'app' already has a value \(db\), and --overwrite is "
        "false",
    ):
        labels.apply_changes({"app": "db"}, changes, False, labels.LABEL)
    new, _ = labels.apply_changes({"app": "db"}, changes, True, labels.LABEL)
    assert new["app"] == "web"
    # The same value again is not a change and needs no --overwrite.
    new, _ = labels.apply_changes({"app": "web"}, changes, False, labels.LABEL)
    assert new == {"app": "web"}
    _, missing = labels.apply_changes(
        {}, labels.parse_changes(["gone-"], labels.LABEL), False, labels.LABEL
    )
    assert missing == ["gone"]


@pytest.mark.parametrize(
    "spec", ["bad key=x", "app=bad value", "-x=1", "a/b/c=1", "app=" + "v" * 64]
)
def test_invalid_labels_are_rejected_with_the_reason(spec: str) -> None:
    with pytest.raises(CliError, match="invalid label"):
        labels.parse_changes([spec], labels.LABEL)


def test_annotation_values_are_free_text_but_keys_are_checked() -> None:
    assert labels.parse_changes(["note=any text: at all"], labels.ANNOTATE).set == {
        "note": "any text: at all"
    }
    with pytest.raises(CliError, match="invalid annotation spec"):
        labels.parse_changes(["bad key=x"], labels.ANNOTATE)
    with pytest.raises(CliError, match="can not both modify and remove"):
        labels.parse_changes(["a=1", "a-"], labels.ANNOTATE)


def test_change_args_are_told_apart_from_names() -> None:
    assert [labels.is_change_arg(a) for a in ("pods", "web", "a=b", "a-", "-")] == [
        False,
        False,
        True,
        True,
        False,
    ]


# -- delete flags -------------------------------------------------------------------------------


def delete_args(**kw: Any) -> argparse.Namespace:
    base = {"grace_period": -1, "now": False, "force": False}
    base.update(kw)
    return argparse.Namespace(**base)


def test_cascade_values() -> None:
    assert [
        delete.propagation(v) for v in ("background", "foreground", "orphan", "true", "false")
    ] == ["Background", "Foreground", "Orphan", "Background", "Orphan"]
    with pytest.raises(CliError, match="invalid cascade value"):
        delete.propagation("sometimes")


def test_grace_period_rules() -> None:
    assert delete.grace_period(delete_args()) is None
    assert delete.grace_period(delete_args(now=True)) == 1
    assert delete.grace_period(delete_args(grace_period=0)) == 1
    assert delete.grace_period(delete_args(grace_period=0, force=True)) == 0
    assert delete.grace_period(delete_args(force=True)) == 0
    assert delete.grace_period(delete_args(grace_period=30)) == 30
    with pytest.raises(CliError):
        delete.grace_period(delete_args(now=True, grace_period=5))


# -- config view --------------------------------------------------------------------------------

CONFIG: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "a",
    "clusters": [
        {"name": "c1", "cluster": {"server": "s1", "certificate-authority-data": "Q0E="}},
        {"name": "c2", "cluster": {"server": "s2"}},
    ],
    "users": [
        {"name": "u1", "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}},
        {"name": "u2", "user": {"token": "secret"}},
    ],
    "contexts": [
        {"name": "a", "context": {"cluster": "c1", "user": "u1"}},
        {"name": "b", "context": {"cluster": "c2", "user": "u2"}},
    ],
}


def test_config_view_redacts_secrets_unless_raw() -> None:
    doc = config_cmds.view_document(CONFIG, context="a", minified=False, raw=False)
    assert doc["clusters"][0]["cluster"]["certificate-authority-data"] == "DATA+OMITTED"
    assert doc["users"][0]["user"]["client-key-data"] == "DATA+OMITTED"
    assert doc["users"][1]["user"]["token"] == "REDACTED"
    assert CONFIG["users"][1]["user"]["token"] == "secret"  # the input is untouched
    raw = config_cmds.view_document(CONFIG, context="a", minified=False, raw=True)
    assert raw["users"][0]["user"]["client-key-data"] == "S0VZ"
    assert list(doc) == [
        "apiVersion",
        "clusters",
        "contexts",
        "current-context",
        "kind",
        "preferences",
        "users",
    ]


def test_config_view_minify_keeps_only_the_context_in_use() -> None:
    doc = config_cmds.view_document(CONFIG, context="b", minified=True, raw=False)
    assert [c["name"] for c in doc["contexts"]] == ["b"]
    assert [c["name"] for c in doc["clusters"]] == ["c2"]
    assert [u["name"] for u in doc["users"]] == ["u2"]
    assert doc["current-context"] == "b"


# -- argument parsing ---------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return main.parse(main.build_parser(), list(argv))


def test_global_flags_before_or_after_the_verb() -> None:
    before = parse("-n", "demo", "--context", "c", "get", "pods")
    after = parse("get", "pods", "-n", "demo", "--context", "c")
    for args in (before, after):
        assert (args.namespace, args.context, args.resources) == ("demo", "c", ["pods"])
    assert parse("get", "pods").namespace is None


def test_positionals_may_follow_flags() -> None:
    args = parse("label", "pods", "-l", "app=web", "tier=front", "--overwrite", "old-")
    assert args.args == ["pods", "tier=front", "old-"] and args.selector == "app=web"
    assert parse("get", "pods", "-o", "wide", "web").resources == ["pods", "web"]


def test_flag_values() -> None:
    args = parse("delete", "pods", "x", "--cascade=orphan", "--wait=false", "--timeout", "2m")
    assert (args.cascade, args.wait, args.timeout) == ("orphan", False, 120.0)
    assert parse("delete", "pods", "x", "--cascade").cascade == "background"
    assert parse("token", "create", "--ttl", "1h30m").ttl == 5400.0
    assert parse("apply", "-f", "a.yaml", "-f", "b/", "-R").filename == ["a.yaml", "b/"]


@pytest.mark.parametrize(
    "argv", [["get", "pods", "--bogus"], ["frobnicate"], ["delete", "x", "--timeout", "soon"]]
)
def test_usage_errors_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("error: ")
