"""Manifests (YAML/JSON dicts in Kubernetes form) <-> API messages.

protobuf's JSON mapping already speaks Kubernetes' lowerCamelCase. What it
does not know is Kubernetes' looseness in two places, which this module adds:
int-or-string fields (`targetPort: 8080` or `"http"`) and quantities
(`cpu: 1`). It also checks each document against the message descriptors
first, so an error names the exact field path (`spec.template.spec.
containers[0].imagee: unknown field`) instead of protobuf's generic text.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo, UnknownKindError, for_manifest, kind_info
from orchestrator.api.pb import options_pb2

_T = FieldDescriptor
# Descriptors come from upb at run time; typed loosely on purpose.
Descriptor = Any


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DecodeError(ValueError):
    """A manifest that does not fit the API: every problem, with its field path."""

    def __init__(self, errors: list[FieldError], *, where: str = "") -> None:
        self.errors = errors
        self.where = where
        detail = "; ".join(str(e) for e in errors)
        super().__init__(f"{where}: {detail}" if where else detail)


@cache
def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    by_name: dict[str, FieldDescriptor] = {}
    for f in descriptor.fields:
        by_name[f.json_name] = f
    return by_name


_INT_OR_STRING: Any = options_pb2.int_or_string
_QUANTITY: Any = options_pb2.quantity


@cache
def _is_loose_string(field: FieldDescriptor) -> bool:
    """Fields where Kubernetes also accepts a number and means its decimal text."""
    opts = field.GetOptions()
    return bool(opts.Extensions[_INT_OR_STRING] or opts.Extensions[_QUANTITY])


@cache
def _int_or_string(field: FieldDescriptor) -> bool:
    return bool(field.GetOptions().Extensions[_INT_OR_STRING])


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_INT_TYPES = {
    _T.TYPE_INT32,
    _T.TYPE_INT64,
    _T.TYPE_UINT32,
    _T.TYPE_UINT64,
    _T.TYPE_SINT32,
    _T.TYPE_SINT64,
    _T.TYPE_FIXED32,
    _T.TYPE_FIXED64,
    _T.TYPE_SFIXED32,
    _T.TYPE_SFIXED64,
}
_INT32_RANGE = (-(2**31), 2**31 - 1)


def _check_scalar(
    field: Any, value: Any, path: str, errors: list[FieldError], loose: bool = False
) -> Any:
    t = field.type
    if t == _T.TYPE_STRING:
        if isinstance(value, str):
            return value
        if (
            (loose or _is_loose_string(field))
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            return str(int(value)) if float(value).is_integer() else str(value)
        errors.append(FieldError(path, f"expected a string, got {_type_name(value)}"))
    elif t in _INT_TYPES:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if t == _T.TYPE_INT32 and not _INT32_RANGE[0] <= value <= _INT32_RANGE[1]:
                errors.append(FieldError(path, f"{value} is out of range for a 32-bit integer"))
            return value
        errors.append(FieldError(path, f"expected an integer, got {_type_name(value)}"))
    elif t == _T.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        errors.append(FieldError(path, f"expected a boolean, got {_type_name(value)}"))
    elif t in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        errors.append(FieldError(path, f"expected a number, got {_type_name(value)}"))
    elif t == _T.TYPE_BYTES:
        if isinstance(value, str):
            try:
                base64.b64decode(value, validate=True)
                return value
            except (binascii.Error, ValueError):
                errors.append(FieldError(path, "expected base64-encoded data"))
                return None
        errors.append(FieldError(path, f"expected a base64 string, got {_type_name(value)}"))
    elif t == _T.TYPE_ENUM:
        if isinstance(value, str) and field.enum_type.values_by_name.get(value):
            return value
        errors.append(FieldError(path, f"unsupported value {value!r}"))
    else:
        return value
    return None


def _check_message(
    descriptor: Descriptor, data: Any, path: str, errors: list[FieldError]
) -> dict[str, Any] | None:
    if descriptor.full_name.startswith("google.protobuf."):
        return data  # Struct, ListValue and friends take their JSON as it is.
    if not isinstance(data, dict):
        errors.append(FieldError(path, f"expected an object, got {_type_name(data)}"))
        return None
    fields = _fields(descriptor)
    out: dict[str, Any] = {}
    for key, value in data.items():
        here = f"{path}.{key}" if path else str(key)
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            errors.append(FieldError(here, "unknown field"))
            continue
        if value is None:  # null means unset, as in Kubernetes
            continue
        checked = _check_field(field, value, here, errors)
        if checked is not None:
            out[key] = checked
    return out


def _check_field(field: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            errors.append(FieldError(path, f"expected an object, got {_type_name(value)}"))
            return None
        value_field = field.message_type.fields_by_name["value"]
        out = {}
        for k, v in value.items():
            here = f"{path}[{k}]"
            if v is None:
                continue
            if value_field.message_type is not None:
                checked = _check_message(value_field.message_type, v, here, errors)
            else:
                checked = _check_scalar(value_field, v, here, errors, _is_loose_string(field))
            if checked is not None:
                out[str(k)] = checked
        return out
    if field.is_repeated:
        if not isinstance(value, list):
            errors.append(FieldError(path, f"expected an array, got {_type_name(value)}"))
            return None
        items = []
        for i, item in enumerate(value):
            here = f"{path}[{i}]"
            if field.message_type is not None:
                checked = _check_message(field.message_type, item, here, errors)
            else:
                checked = _check_scalar(field, item, here, errors)
            if checked is not None:
                items.append(checked)
        return items
    if field.message_type is not None:
        return _check_message(field.message_type, value, path, errors)
    return _check_scalar(field, value, path, errors)


def describe_document(data: Any) -> str:
    """`Deployment demo/web` style label of a manifest, for error messages."""
    if not isinstance(data, dict):
        return "document"
    kind = data.get("kind") or "object"
    meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    ns = meta.get("namespace")
    return f'{kind} "{ns}/{name}"' if ns else f'{kind} "{name}"'


def manifest_kind(data: Any) -> KindInfo:
    if not isinstance(data, dict):
        raise DecodeError([FieldError("", f"expected an object, got {_type_name(data)}")])
    api_version, kind = data.get("apiVersion"), data.get("kind")
    missing = [
        FieldError(f, "required") for f, v in (("apiVersion", api_version), ("kind", kind)) if not v
    ]
    if missing:
        raise DecodeError(missing)
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise DecodeError([FieldError("kind", "apiVersion and kind must be strings")])
    try:
        return for_manifest(api_version, kind)
    except UnknownKindError as exc:
        raise DecodeError([FieldError("kind", str(exc))]) from None


def from_dict(data: Any, info: KindInfo | None = None) -> Message:
    """Decode a Kubernetes-form dict into its message, or raise DecodeError."""
    info = info or manifest_kind(data)
    errors: list[FieldError] = []
    checked = _check_message(info.message.DESCRIPTOR, data, "", errors)
    if errors or checked is None:
        raise DecodeError(errors)
    msg = info.message()
    try:
        json_format.ParseDict(checked, msg)
    except json_format.ParseError as exc:  # pragma: no cover - the walk above should catch it
        raise DecodeError([FieldError("", str(exc))]) from None
    return msg


def _restore_ints(descriptor: Descriptor, data: dict[str, Any]) -> None:
    """Give int-or-string fields holding digits back their integer form."""
    if descriptor.full_name.startswith("google.protobuf.") or not isinstance(data, dict):
        return
    fields = _fields(descriptor)
    for key, value in data.items():
        field: Any = fields.get(key)
        if field is None or field.type != _T.TYPE_MESSAGE:
            if field is not None and _int_or_string(field) and isinstance(value, str):
                if value.isdigit():
                    data[key] = int(value)
            continue
        if field.message_type.GetOptions().map_entry:
            vf = field.message_type.fields_by_name["value"]
            if vf.message_type is not None:
                for v in value.values():
                    _restore_ints(vf.message_type, v)
        elif field.message_type.full_name.startswith("google.protobuf."):
            continue
        elif field.is_repeated:
            for item in value:
                _restore_ints(field.message_type, item)
        else:
            _restore_ints(field.message_type, value)


def to_dict(msg: Message) -> dict[str, Any]:
    """The Kubernetes-form dict of a message (unset fields omitted)."""
    data = json_format.MessageToDict(msg, preserving_proto_field_name=False)
    _restore_ints(msg.DESCRIPTOR, data)
    return data


def to_json(msg: Message, indent: int | None = None) -> str:
    return json.dumps(to_dict(msg), indent=indent, sort_keys=False)


def to_yaml(msg: Message) -> str:
    return yaml.safe_dump(to_dict(msg), sort_keys=False, default_flow_style=False)


def decode_raw(kind: str, raw: bytes) -> Message:
    msg = kind_info(kind).message()
    msg.ParseFromString(raw)
    return msg


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, as Kubernetes' YAML-to-JSON does."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def iter_documents(text: str, source: str) -> Iterator[tuple[str, Any]]:
    """Each non-empty document of a YAML (or JSON) stream, with a label for errors.

    A JSON `List` (as `kubectl get -o json` prints) yields its items."""
    try:
        docs = list(yaml.load_all(text, Loader=_ManifestLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DecodeError(
            [FieldError("", f"malformed YAML{where}: {problem}")], where=source
        ) from None
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            for j, item in enumerate(doc["items"]):
                yield f"{source} (document {index + 1}, item {j + 1})", item
        else:
            yield f"{source} (document {index + 1})", doc


def meta_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = data.get("metadata")
    return meta if isinstance(meta, Mapping) else {}
