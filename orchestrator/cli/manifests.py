"""`-f FILE|DIR|-`: read manifests and check every document before anything is sent.

A document that does not decode (unknown kind or field, wrong type, bad
name or label) is reported with its file, document number, object and field
path; callers stop before writing anything when any document is bad.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from orchestrator.api import codec, names
from orchestrator.api.codec import DecodeError, FieldError
from orchestrator.api.kinds import KindInfo
from orchestrator.cli.errors import CliError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


class ManifestErrors(Exception):
    """Every problem found in the manifests, one line each (without `error: `)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass
class Document:
    label: str  # `web.yaml (document 2)`
    source: str  # the file, as given
    data: dict[str, Any]
    info: KindInfo
    obj: Message | None  # None when loaded loosely (delete -f, get -f)

    @property
    def name(self) -> str:
        return str(codec.meta_of(self.data).get("name") or "")

    @property
    def namespace(self) -> str:
        """The namespace the manifest names ("" if none, or cluster-scoped)."""
        if not self.info.namespaced:
            return ""
        return str(codec.meta_of(self.data).get("namespace") or "")

    @property
    def what(self) -> str:
        """`Deployment "demo/web"`."""
        return codec.describe_document(self.data)


def _files_in(directory: Path, recursive: bool) -> list[Path]:
    pattern = directory.rglob("*") if recursive else directory.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def read_sources(paths: Sequence[str], recursive: bool = False) -> Iterator[tuple[str, str]]:
    """(source label, text) of every manifest file named by `-f`."""
    for raw in paths:
        if raw == "-":
            yield "STDIN", sys.stdin.read()
            continue
        path = Path(raw)
        try:
            if path.is_dir():
                for file in _files_in(path, recursive):
                    yield str(file), file.read_text(encoding="utf-8")
            elif path.exists():
                yield raw, path.read_text(encoding="utf-8")
            else:
                raise CliError(f'the path "{raw}" does not exist')
        except UnicodeDecodeError:
            raise CliError(f"{raw}: not a UTF-8 text file") from None
        except OSError as exc:
            raise CliError(f"{raw}: {exc.strerror or exc}") from None


def _name_problems(info: KindInfo, name: str) -> list[str]:
    if info.kind == "Event":
        return []
    if info.kind in _RBAC_KINDS or info.kind == "CertificateSigningRequest":
        # Path segment names: `system:controller:x` is fine, a slash is not.
        if name in (".", ".."):
            return [f"may not be '{name}'"]
        return [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    if info.kind in ("Namespace", "Service"):
        return names.dns1123_label(name)
    return names.dns1123_subdomain(name)


def check_metadata(info: KindInfo, data: dict[str, Any], *, need_name: bool) -> list[FieldError]:
    """The metadata checks that need no server: names, labels, annotation keys."""
    meta = codec.meta_of(data)
    errors: list[FieldError] = []
    name = meta.get("name")
    if name:
        for problem in _name_problems(info, str(name)):
            errors.append(FieldError("metadata.name", f'Invalid value: "{name}": {problem}'))
    elif need_name and not meta.get("generateName"):
        errors.append(FieldError("metadata.name", "Required value: name is required"))
    namespace = meta.get("namespace")
    if namespace and info.namespaced:
        for problem in names.dns1123_label(str(namespace)):
            errors.append(
                FieldError("metadata.namespace", f'Invalid value: "{namespace}": {problem}')
            )
    for key, value in (meta.get("labels") or {}).items():
        for problem in names.qualified_name(str(key)):
            errors.append(
                FieldError(f"metadata.labels[{key}]", f'Invalid value: "{key}": {problem}')
            )
        if isinstance(value, str):
            for problem in names.label_value(value):
                errors.append(
                    FieldError(f"metadata.labels[{key}]", f'Invalid value: "{value}": {problem}')
                )
    for key in meta.get("annotations") or {}:
        for problem in names.qualified_name(str(key)):
            errors.append(
                FieldError(f"metadata.annotations[{key}]", f'Invalid value: "{key}": {problem}')
            )
    return errors


def load_documents(
    paths: Sequence[str],
    *,
    recursive: bool = False,
    strict: bool = True,
    need_name: bool = True,
) -> list[Document]:
    """Every document of every file, decoded and checked.

    strict: decode against the API (apply, create); otherwise only kind and
    metadata are needed (delete -f, get -f). Raises ManifestErrors listing
    every bad document, so nothing is written when any one is bad."""
    docs: list[Document] = []
    problems: list[str] = []
    for source, text in read_sources(paths, recursive):
        try:
            items = list(codec.iter_documents(text, source))
        except DecodeError as exc:
            problems.extend(f"{exc.where or source}: {e}" for e in exc.errors)
            continue
        for label, data in items:
            what = codec.describe_document(data)
            try:
                info = codec.manifest_kind(data)
                obj = codec.from_dict(data, info) if strict else None
            except DecodeError as exc:
                problems.extend(f"{label}: {what}: {e}" for e in exc.errors)
                continue
            field_errors = check_metadata(info, data, need_name=need_name)
            if field_errors:
                problems.extend(f"{label}: {what}: {e}" for e in field_errors)
                continue
            docs.append(Document(label, source, data, info, obj))
    if problems:
        raise ManifestErrors(problems)
    return docs


def namespaces_first(docs: Sequence[Document]) -> list[Document]:
    """Namespaces before everything else, otherwise in file order, so a file that
    creates a namespace and its contents works in one go."""
    return [d for d in docs if d.info.kind == "Namespace"] + [
        d for d in docs if d.info.kind != "Namespace"
    ]


def target_namespace(doc: Document, default: str, explicit: bool) -> str:
    """The namespace a document goes to; refuses a clash with an explicit `-n`."""
    if not doc.info.namespaced:
        return ""
    if doc.namespace and explicit and doc.namespace != default:
        raise CliError(
            f'{doc.label}: the namespace from the provided object "{doc.namespace}" does not '
            f"match the namespace \"{default}\". You must pass '--namespace={doc.namespace}' "
            "to perform this operation."
        )
    return doc.namespace or default
