"""Validation with field paths, as Kubernetes' apis/*/validation packages.

`validate(obj, old)` returns every problem with an object, each with the
Kubernetes JSON path of the field at fault (`spec.template.spec.containers[0]
.image`, map entries as `metadata.labels[app]`) and Kubernetes' wording
(`Required value`, `Invalid value: "x": ...`, `Unsupported value`,
`Duplicate value`, `Forbidden: ...`), so a person reads the same text kubectl
would print. It runs after defaulting, on create (`old` is None) and on every
update (`old` is the stored object), and never raises: one bad field must not
hide the others, and a request is rejected whole.

Layout: small generic checks first (messages, names, numbers, quantities,
selectors), then metadata, the pod spec and its parts, then one function per
kind, dispatched from `_KINDS` at the bottom.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import posixpath
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from cryptography import x509
from google.protobuf import json_format
from google.protobuf.message import Message

from orchestrator.api import cron, names
from orchestrator.api.codec import FieldError
from orchestrator.api.intorstr import IntOrStringError, parse_int_or_percent, parse_port
from orchestrator.api.pb import core_v1_pb2, meta_pb2
from orchestrator.api.quantity import QuantityError, parse_quantity
from orchestrator.api.selectors import LabelSelector, SelectorError, selector_from_match
from orchestrator.apiserver.admission.policy import SYSTEM_PRIORITY_CLASSES

__all__ = ["validate"]

_log = logging.getLogger(__name__)

Errs = list[FieldError]
# Messages are typed loosely: the generated classes share field names across
# kinds (every workload has .spec.template), which is what the checks rely on.
Msg = Any


def validate(obj: Message, old: Message | None) -> list[FieldError]:
    """Every problem with ``obj`` (and with the change from ``old``, on update)."""
    kind: str = getattr(obj, "kind", "")
    try:
        errs = _metadata(obj, kind)
        check = _KINDS.get(kind)
        if check is not None:
            errs.extend(check(obj, old))
        return errs
    except Exception:  # a bug here must reject the request with a reason, not crash it
        _log.exception("validation of a %s failed unexpectedly", kind or "object")
        return [FieldError("", f"internal error: could not validate this {kind or 'object'}")]


# --------------------------------------------------------------------------------------
# Messages (Kubernetes' field.Error texts)
# --------------------------------------------------------------------------------------

_MAX_SHOWN: Final = 120


def _show(value: object) -> str:
    """A value as Kubernetes prints it in an error: strings quoted, the rest as JSON."""
    if isinstance(value, Message):
        value = json_format.MessageToDict(value)
    elif isinstance(value, Mapping):
        value = dict(value)
    elif isinstance(value, bytes):
        value = f"<{len(value)} bytes>"
    elif not isinstance(value, str | int | float | bool | dict | list) and isinstance(
        value, Iterable
    ):
        value = list(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, f"Required value: {detail}" if detail else "Required value")


def _invalid(path: str, value: object, detail: str) -> FieldError:
    return FieldError(path, f"Invalid value: {_show(value)}: {detail}")


def _unsupported(path: str, value: object, supported: Sequence[str]) -> FieldError:
    listed = ", ".join(f'"{s}"' for s in supported)
    return FieldError(path, f"Unsupported value: {_show(value)}: supported values: {listed}")


def _duplicate(path: str, value: object) -> FieldError:
    return FieldError(path, f"Duplicate value: {_show(value)}")


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, f"Forbidden: {detail}")


def _not_found(path: str, value: object) -> FieldError:
    return FieldError(path, f"Not found: {_show(value)}")


def _too_long(path: str, limit: int) -> FieldError:
    return FieldError(path, f"Too long: must have at most {limit} bytes")


def _immutable(path: str, value: object) -> FieldError:
    return _invalid(path, value, "field is immutable")


# --------------------------------------------------------------------------------------
# Generic checks
# --------------------------------------------------------------------------------------

NameCheck = Callable[[str], list[str]]


def _check(path: str, value: str, check: NameCheck) -> Errs:
    """Run one of orchestrator.api.names' checks, each problem an Invalid value."""
    return [_invalid(path, value, problem) for problem in check(value)]


def _check_set(path: str, value: str, check: NameCheck) -> Errs:
    """As _check, for optional fields: empty means unset, which is fine."""
    return _check(path, value, check) if value else []


def _one_of(path: str, value: str, supported: Sequence[str], *, required: bool = True) -> Errs:
    if not value:
        return [_required(path)] if required else []
    return [] if value in supported else [_unsupported(path, value, supported)]


def _at_least(path: str, value: int, low: int) -> Errs:
    if value >= low:
        return []
    if low == 0:
        return [_invalid(path, value, "must be greater than or equal to 0")]
    if low == 1:
        return [_invalid(path, value, "must be greater than 0")]
    return [_invalid(path, value, f"must be greater than or equal to {low}")]


def _opt_at_least(msg: Msg, field: str, path: str, low: int) -> Errs:
    """For proto3 optional ints (Kubernetes pointers): only a value that is set is checked."""
    return _at_least(path, getattr(msg, field), low) if msg.HasField(field) else []


def _in_range(path: str, value: int, low: int, high: int) -> Errs:
    if low <= value <= high:
        return []
    return [_invalid(path, value, f"must be between {low} and {high}, inclusive")]


def _port_number(path: str, value: int) -> Errs:
    return _in_range(path, value, 1, 65535)


def _path_segment_name(name: str) -> list[str]:
    """RBAC and CSR names are path segments: `system:node:x` is fine, a slash is not."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def _present(msg: Msg, fields: Iterable[str]) -> list[str]:
    """The members of a one-of group (volume sources, probe handlers...) that are set."""
    return [f for f in fields if msg.HasField(f)]


def _json_name(msg: Msg, field: str) -> str:
    return str(msg.DESCRIPTOR.fields_by_name[field].json_name)


def _exactly_one(
    msg: Msg, fields: Sequence[str], path: str, *, none: str, many: str
) -> tuple[Errs, list[str]]:
    """Unions such as volume sources: none set is Required, a second one Forbidden."""
    present = _present(msg, fields)
    if not present:
        return [_required(path, none)], present
    if len(present) > 1:
        return [_forbidden(f"{path}.{_json_name(msg, present[1])}", many)], present
    return [], present


def _quantity(path: str, text: str, errs: Errs, *, positive: bool = False) -> Fraction | None:
    """Parse a quantity, reporting why it cannot be used; None when it cannot."""
    try:
        q = parse_quantity(text)
    except QuantityError as exc:
        errs.append(_invalid(path, text, str(exc)))
        return None
    if positive and q <= 0:
        errs.append(_invalid(path, text, "must be greater than zero"))
        return None
    if q < 0:
        errs.append(_invalid(path, text, "must be greater than or equal to 0"))
        return None
    return q


def _ip(path: str, value: str, *, v4_only: bool = False) -> Errs:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return [
            _invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        ]
    if v4_only and addr.version != 4:
        return [_invalid(path, value, "must be a valid IPv4 address")]
    return []


def _cidr(
    path: str, value: str, errs: Errs
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    # strict=False: Kubernetes' ParseCIDRSloppy accepts host bits (10.0.0.1/24).
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        errs.append(
            _invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
        )
        return None


def _absolute_path(path: str, value: str) -> Errs:
    if not value:
        return [_required(path)]
    if not value.startswith("/"):
        return [_invalid(path, value, "must be an absolute path")]
    return _no_backsteps(path, value)


def _no_backsteps(path: str, value: str) -> Errs:
    if ".." in value.split("/"):
        return [_invalid(path, value, "must not contain '..'")]
    return []


def _relative_path(path: str, value: str) -> Errs:
    """Kubernetes' validateLocalDescendingPath: file names inside a volume."""
    if not value:
        return [_required(path)]
    if posixpath.isabs(value):
        return [_invalid(path, value, "must be a relative path")]
    errs = _no_backsteps(path, value)
    if value.startswith("..") and not errs:
        errs.append(_invalid(path, value, "must not start with '..'"))
    return errs


def _file_mode(path: str, mode: int) -> Errs:
    if 0 <= mode <= 0o777:
        return []
    return [_invalid(path, mode, "must be a number between 0 and 0777 (octal), both inclusive")]


def _opt_file_mode(msg: Msg, field: str, path: str) -> Errs:
    return _file_mode(path, getattr(msg, field)) if msg.HasField(field) else []


def _dns_subdomain_or_wildcard(value: str) -> list[str]:
    """Ingress hosts and TLS hosts: `*.example.com` is allowed, as in Kubernetes."""
    return names.dns1123_subdomain(value[2:] if value.startswith("*.") else value)


# --------------------------------------------------------------------------------------
# Labels, annotations, selectors
# --------------------------------------------------------------------------------------

_MAX_ANNOTATIONS_BYTES: Final = 256 * 1024


def _labels(labels: Mapping[str, str], path: str) -> Errs:
    errs: Errs = []
    for key, value in labels.items():
        here = f"{path}[{key}]"
        errs.extend(_check(here, key, names.qualified_name))
        errs.extend(_check(here, value, names.label_value))
    return errs


def _annotations(annotations: Mapping[str, str], path: str) -> Errs:
    errs: Errs = []
    total = 0
    for key, value in annotations.items():
        # Kubernetes lower-cases the key first: annotation keys may use capitals.
        errs.extend(_invalid(f"{path}[{key}]", key, p) for p in names.qualified_name(key.lower()))
        total += len(key.encode()) + len(value.encode())
    if total > _MAX_ANNOTATIONS_BYTES:
        errs.append(_too_long(path, _MAX_ANNOTATIONS_BYTES))
    return errs


def _expressions(sel: meta_pb2.LabelSelector) -> list[tuple[str, str, list[str]]]:
    return [(e.key, e.operator, list(e.values)) for e in sel.match_expressions]


def _label_selector(sel: meta_pb2.LabelSelector, path: str) -> Errs:
    errs = _labels(sel.match_labels, f"{path}.matchLabels")
    for i, (key, op, values) in enumerate(_expressions(sel)):
        try:
            selector_from_match({}, [(key, op, values)])
        except SelectorError as exc:
            shown = {"key": key, "operator": op, "values": values}
            errs.append(_invalid(f"{path}.matchExpressions[{i}]", shown, str(exc)))
    return errs


def _selector_of(sel: meta_pb2.LabelSelector) -> LabelSelector | None:
    """The selector to match with, or None when it is invalid (already reported)."""
    try:
        return selector_from_match(dict(sel.match_labels), _expressions(sel))
    except SelectorError:
        return None


def _selector_is_empty(sel: meta_pb2.LabelSelector) -> bool:
    return not sel.match_labels and not sel.match_expressions


def _template_selector(spec: Msg, path: str, *, required: bool = True) -> Errs:
    """A controller's selector must select the pods its template makes, or it
    would create pods forever without ever seeing them."""
    sel_path = f"{path}.selector"
    if not spec.HasField("selector") or _selector_is_empty(spec.selector):
        return [_required(sel_path)] if required else []
    errs = _label_selector(spec.selector, sel_path)
    selector = _selector_of(spec.selector)
    labels = spec.template.metadata.labels
    if selector is not None and not selector.matches(labels):
        errs.append(
            _invalid(
                f"{path}.template.metadata.labels",
                labels,
                "selector does not match template labels",
            )
        )
    return errs


# --------------------------------------------------------------------------------------
# Object metadata
# --------------------------------------------------------------------------------------

# Most names are DNS subdomains; these kinds say otherwise, as in Kubernetes.
_NAME_CHECKS: Final[Mapping[str, NameCheck]] = {
    "Namespace": names.dns1123_label,
    "Service": names.dns1123_label,
    "Role": _path_segment_name,
    "ClusterRole": _path_segment_name,
    "RoleBinding": _path_segment_name,
    "ClusterRoleBinding": _path_segment_name,
    "CertificateSigningRequest": _path_segment_name,
}

# A CronJob's Jobs are named <cronjob>-<11 digit timestamp>: 63 - 11.
_CRONJOB_NAME_MAX: Final = 52


def _metadata(obj: Msg, kind: str) -> Errs:
    m = obj.metadata
    errs: Errs = []
    if not m.name:
        if not m.generate_name:
            errs.append(_required("metadata.name", "name or generateName is required"))
    else:
        errs.extend(
            _check("metadata.name", m.name, _NAME_CHECKS.get(kind, names.dns1123_subdomain))
        )
    if kind == "CronJob" and len(m.name) > _CRONJOB_NAME_MAX:
        errs.append(
            _invalid(
                "metadata.name", m.name, f"must be no more than {_CRONJOB_NAME_MAX} characters"
            )
        )
    errs.extend(_check_set("metadata.namespace", m.namespace, names.dns1123_label))
    errs.extend(_labels(m.labels, "metadata.labels"))
    errs.extend(_annotations(m.annotations, "metadata.annotations"))
    errs.extend(_owner_references(m.owner_references, "metadata.ownerReferences"))
    for i, finalizer in enumerate(m.finalizers):
        errs.extend(_check(f"metadata.finalizers[{i}]", finalizer, names.qualified_name))
    return errs


def _owner_references(refs: Sequence[meta_pb2.OwnerReference], path: str) -> Errs:
    errs: Errs = []
    controllers: list[str] = []
    for i, ref in enumerate(refs):
        here = f"{path}[{i}]"
        for field, json_name in (
            ("api_version", "apiVersion"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ):
            if not getattr(ref, field):
                errs.append(_required(f"{here}.{json_name}"))
        if ref.HasField("controller") and ref.controller:
            controllers.append(f"{ref.kind}/{ref.name}")
    if len(controllers) > 1:
        # Two controllers would fight over the object; garbage collection and
        # adoption both assume at most one.
        found = ", ".join(controllers)
        errs.append(
            _invalid(
                path,
                controllers,
                "Only one reference can have Controller set to true. "
                f'Found "true" in references for {found}',
            )
        )
    return errs


# --------------------------------------------------------------------------------------
# Pod spec: containers
# --------------------------------------------------------------------------------------

_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
_RESTART_POLICIES: Final = ("Always", "OnFailure", "Never")
_DNS_POLICIES: Final = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
_TERMINATION_MESSAGE_POLICIES: Final = ("File", "FallbackToLogsOnError")
_MOUNT_PROPAGATIONS: Final = ("None", "HostToContainer", "Bidirectional")
_RECURSIVE_READ_ONLY: Final = ("Disabled", "IfPossible", "Enabled")
_STANDARD_CONTAINER_RESOURCES: Final = ("cpu", "memory", "ephemeral-storage")

# Downward API paths: env vars may name single labels/annotations only, volumes
# may also take the whole map (a file per key).
_ENV_FIELD_PATHS: Final = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
_VOLUME_FIELD_PATHS: Final = (
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
)
_SUBSCRIPTED_FIELD_RE: Final = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")
_RESOURCE_FIELD_REFS: Final = (
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
)


@dataclass(frozen=True)
class _PodContext:
    """What container checks need to know about the pod around them."""

    volumes: frozenset[str]
    grace: int | None
    host_network: bool


def _container_resource_name(name: str) -> list[str]:
    if "/" in name:
        return names.qualified_name(name)  # extended resources: example.com/gpu
    if name in _STANDARD_CONTAINER_RESOURCES:
        return []
    if name.startswith("hugepages-"):
        try:
            parse_quantity(name.removeprefix("hugepages-"))
        except QuantityError:
            return ["must be hugepages-<page size>, e.g. hugepages-2Mi"]
        return []
    return ["must be a standard resource for containers"]


def _not_overcommitable(name: str) -> bool:
    """Hugepages and extended resources: a request must equal its limit."""
    if name.startswith("hugepages-"):
        return True
    return "/" in name and not name.startswith(("kubernetes.io/", "requests."))


def _resource_list(
    values: Mapping[str, str],
    path: str,
    errs: Errs,
    name_check: NameCheck = _container_resource_name,
) -> dict[str, Fraction]:
    parsed: dict[str, Fraction] = {}
    for name, text in values.items():
        here = f"{path}[{name}]"
        errs.extend(_check(here, name, name_check))
        q = _quantity(here, text, errs)
        if q is None:
            continue
        if _not_overcommitable(name) and "/" in name and q.denominator != 1:
            errs.append(_invalid(here, text, "must be an integer"))
        parsed[name] = q
    return parsed


def _resources(r: core_v1_pb2.ResourceRequirements, path: str) -> Errs:
    errs: Errs = []
    limits = _resource_list(r.limits, f"{path}.limits", errs)
    requests = _resource_list(r.requests, f"{path}.requests", errs)
    for name, request in requests.items():
        here = f"{path}.requests[{name}]"
        limit = limits.get(name)
        if limit is not None and request > limit:
            errs.append(
                _invalid(
                    here,
                    r.requests[name],
                    f"must be less than or equal to {name} limit of {r.limits[name]}",
                )
            )
        elif _not_overcommitable(name):
            if limit is None:
                errs.append(
                    _invalid(
                        here, r.requests[name], "Limit must be set for non overcommitable resources"
                    )
                )
            elif request != limit:
                errs.append(
                    _invalid(
                        here, r.requests[name], f"must be equal to {name} limit of {r.limits[name]}"
                    )
                )
    return errs


def _container_ports(c: Msg, path: str, ctx: _PodContext) -> Errs:
    errs: Errs = []
    port_names: set[str] = set()
    for i, port in enumerate(c.ports):
        here = f"{path}.ports[{i}]"
        if port.name:
            errs.extend(_check(f"{here}.name", port.name, names.port_name))
            if port.name in port_names:
                errs.append(_duplicate(f"{here}.name", port.name))
            port_names.add(port.name)
        if port.container_port == 0:
            errs.append(_required(f"{here}.containerPort"))
        else:
            errs.extend(_port_number(f"{here}.containerPort", port.container_port))
        if port.host_port:
            errs.extend(_port_number(f"{here}.hostPort", port.host_port))
        errs.extend(_one_of(f"{here}.protocol", port.protocol, _PROTOCOLS))
        if port.host_ip:
            errs.extend(_ip(f"{here}.hostIP", port.host_ip))
        # With the host's network there is no port mapping: the container
        # listens on the host's port itself.
        if ctx.host_network and port.host_port not in (0, port.container_port):
            errs.append(
                _invalid(
                    f"{here}.hostPort",
                    port.host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                )
            )
    return errs


def _host_ports(containers: Sequence[Msg], path: str) -> Errs:
    """Two containers cannot both bind the same host port."""
    errs: Errs = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        for j, port in enumerate(c.ports):
            if not port.host_port:
                continue
            key = f"{port.protocol}/{port.host_ip}/{port.host_port}"
            if key in seen:
                errs.append(_duplicate(f"{path}[{i}].ports[{j}].hostPort", key))
            seen.add(key)
    return errs


def _field_path(path: str, value: str, allowed: Sequence[str]) -> Errs:
    if not value:
        return [_required(path)]
    match = _SUBSCRIPTED_FIELD_RE.fullmatch(value)
    if match is not None:
        return _check(path, match.group(2), names.qualified_name)
    return [] if value in allowed else [_unsupported(path, value, allowed)]


def _object_field_selector(
    ref: core_v1_pb2.ObjectFieldSelector, path: str, allowed: Sequence[str]
) -> Errs:
    errs = [] if ref.api_version else [_required(f"{path}.apiVersion")]
    return errs + _field_path(f"{path}.fieldPath", ref.field_path, allowed)


def _resource_field_selector(
    ref: core_v1_pb2.ResourceFieldSelector, path: str, *, need_container: bool
) -> Errs:
    errs: Errs = []
    if need_container and not ref.container_name:
        errs.append(_required(f"{path}.containerName"))
    errs.extend(_one_of(f"{path}.resource", ref.resource, _RESOURCE_FIELD_REFS))
    if ref.divisor:
        _quantity(f"{path}.divisor", ref.divisor, errs, positive=True)
    return errs


def _key_selector(ref: Msg, path: str) -> Errs:
    """configMapKeyRef and secretKeyRef: which object, which key."""
    errs = (
        [_required(f"{path}.name")]
        if not ref.name
        else _check(f"{path}.name", ref.name, names.dns1123_subdomain)
    )
    if not ref.key:
        errs.append(_required(f"{path}.key"))
    else:
        errs.extend(_check(f"{path}.key", ref.key, names.config_map_key))
    return errs


def _file_key_selector(ref: core_v1_pb2.FileKeySelector, path: str) -> Errs:
    errs: Errs = []
    for field, json_name in (("volume_name", "volumeName"), ("path", "path"), ("key", "key")):
        if not getattr(ref, field):
            errs.append(_required(f"{path}.{json_name}"))
    if ref.path:
        errs.extend(_relative_path(f"{path}.path", ref.path))
    return errs


_ENV_SOURCES: Final = (
    "field_ref",
    "resource_field_ref",
    "config_map_key_ref",
    "secret_key_ref",
    "file_key_ref",
)


def _env_source(src: core_v1_pb2.EnvVarSource, path: str) -> Errs:
    errs, _ = _exactly_one(
        src,
        _ENV_SOURCES,
        path,
        none="must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef`, "
        "`secretKeyRef` or `fileKeyRef`",
        many="may not have more than one field specified at a time",
    )
    if src.HasField("field_ref"):
        errs.extend(_object_field_selector(src.field_ref, f"{path}.fieldRef", _ENV_FIELD_PATHS))
    if src.HasField("resource_field_ref"):
        errs.extend(
            _resource_field_selector(
                src.resource_field_ref, f"{path}.resourceFieldRef", need_container=False
            )
        )
    if src.HasField("config_map_key_ref"):
        errs.extend(_key_selector(src.config_map_key_ref, f"{path}.configMapKeyRef"))
    if src.HasField("secret_key_ref"):
        errs.extend(_key_selector(src.secret_key_ref, f"{path}.secretKeyRef"))
    if src.HasField("file_key_ref"):
        errs.extend(_file_key_selector(src.file_key_ref, f"{path}.fileKeyRef"))
    return errs


def _env(c: Msg, path: str) -> Errs:
    errs: Errs = []
    for i, var in enumerate(c.env):
        here = f"{path}.env[{i}]"
        if not var.name:
            errs.append(_required(f"{here}.name"))
        else:
            errs.extend(_check(f"{here}.name", var.name, names.env_var_name))
        if var.HasField("value_from"):
            if var.value:
                errs.append(
                    _forbidden(
                        f"{here}.valueFrom", "may not be specified when `value` is not empty"
                    )
                )
            errs.extend(_env_source(var.value_from, f"{here}.valueFrom"))
    for i, source in enumerate(c.env_from):
        errs.extend(_env_from(source, f"{path}.envFrom[{i}]"))
    return errs


def _env_from(source: core_v1_pb2.EnvFromSource, path: str) -> Errs:
    errs, present = _exactly_one(
        source,
        ("config_map_ref", "secret_ref"),
        path,
        none="must specify one of: `configMapRef` or `secretRef`",
        many="may not have more than one field specified at a time",
    )
    for field in present:
        ref = getattr(source, field)
        here = f"{path}.{_json_name(source, field)}.name"
        errs.extend(
            [_required(here)] if not ref.name else _check(here, ref.name, names.dns1123_subdomain)
        )
    errs.extend(_check_set(f"{path}.prefix", source.prefix, names.env_var_name))
    return errs


def _volume_mounts(c: Msg, path: str, ctx: _PodContext) -> Errs:
    errs: Errs = []
    mount_paths: set[str] = set()
    for i, mount in enumerate(c.volume_mounts):
        here = f"{path}.volumeMounts[{i}]"
        if not mount.name:
            errs.append(_required(f"{here}.name"))
        elif mount.name not in ctx.volumes:
            errs.append(_not_found(f"{here}.name", mount.name))
        errs.extend(_absolute_path(f"{here}.mountPath", mount.mount_path))
        if mount.mount_path in mount_paths:
            errs.append(_invalid(f"{here}.mountPath", mount.mount_path, "must be unique"))
        mount_paths.add(mount.mount_path)
        if mount.sub_path:
            errs.extend(_relative_path(f"{here}.subPath", mount.sub_path))
        if mount.sub_path and mount.sub_path_expr:
            errs.append(
                _invalid(
                    f"{here}.subPathExpr",
                    mount.sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                )
            )
        if mount.HasField("mount_propagation"):
            errs.extend(
                _one_of(f"{here}.mountPropagation", mount.mount_propagation, _MOUNT_PROPAGATIONS)
            )
        if mount.HasField("recursive_read_only"):
            errs.extend(
                _one_of(
                    f"{here}.recursiveReadOnly", mount.recursive_read_only, _RECURSIVE_READ_ONLY
                )
            )
    for i, device in enumerate(c.volume_devices):
        here = f"{path}.volumeDevices[{i}]"
        if device.name not in ctx.volumes:
            errs.append(
                _not_found(f"{here}.name", device.name)
                if device.name
                else _required(f"{here}.name")
            )
        errs.extend(_absolute_path(f"{here}.devicePath", device.device_path))
    return errs


# --- probes and lifecycle handlers ----------------------------------------------------------


def _handler_port(path: str, value: str) -> Errs:
    if not value:
        return [_required(path)]
    try:
        parse_port(value)
    except IntOrStringError as exc:
        return [_invalid(path, value, str(exc))]
    return []


def _exec_action(action: core_v1_pb2.ExecAction, path: str, ctx: _PodContext) -> Errs:
    return [] if action.command else [_required(f"{path}.command")]


def _http_get_action(action: core_v1_pb2.HTTPGetAction, path: str, ctx: _PodContext) -> Errs:
    errs = _handler_port(f"{path}.port", action.port)
    errs.extend(_one_of(f"{path}.scheme", action.scheme, ("HTTP", "HTTPS")))
    if not action.path:
        errs.append(_required(f"{path}.path"))
    return errs


def _tcp_socket_action(action: core_v1_pb2.TCPSocketAction, path: str, ctx: _PodContext) -> Errs:
    return _handler_port(f"{path}.port", action.port)


def _grpc_action(action: core_v1_pb2.GRPCAction, path: str, ctx: _PodContext) -> Errs:
    return _port_number(f"{path}.port", action.port)


def _sleep_action(action: core_v1_pb2.SleepAction, path: str, ctx: _PodContext) -> Errs:
    # A sleep longer than the grace period would be cut short by the kill.
    high = ctx.grace if ctx.grace is not None else 2**31 - 1
    if 0 <= action.seconds <= high:
        return []
    return [
        _invalid(
            f"{path}.seconds",
            action.seconds,
            f"must be non-negative and less than terminationGracePeriodSeconds ({high})",
        )
    ]


_HANDLER_CHECKS: Final[Mapping[str, Callable[[Any, str, _PodContext], Errs]]] = {
    "exec": _exec_action,
    "http_get": _http_get_action,
    "tcp_socket": _tcp_socket_action,
    "grpc": _grpc_action,
    "sleep": _sleep_action,
}
_PROBE_HANDLERS: Final = ("exec", "http_get", "tcp_socket", "grpc")
_LIFECYCLE_HANDLERS: Final = ("exec", "http_get", "tcp_socket", "sleep")


def _handler(h: Msg, path: str, kinds: Sequence[str], ctx: _PodContext) -> Errs:
    errs, present = _exactly_one(
        h,
        kinds,
        path,
        none="must specify a handler type",
        many="may not specify more than 1 handler type",
    )
    for kind in present:
        errs.extend(_HANDLER_CHECKS[kind](getattr(h, kind), f"{path}.{_json_name(h, kind)}", ctx))
    return errs


def _probe(probe: core_v1_pb2.Probe, path: str, ctx: _PodContext, *, kind: str) -> Errs:
    errs = _handler(probe, path, _PROBE_HANDLERS, ctx)
    errs.extend(_opt_at_least(probe, "initial_delay_seconds", f"{path}.initialDelaySeconds", 0))
    for field, json_name in (
        ("timeout_seconds", "timeoutSeconds"),
        ("period_seconds", "periodSeconds"),
        ("success_threshold", "successThreshold"),
        ("failure_threshold", "failureThreshold"),
    ):
        errs.extend(_opt_at_least(probe, field, f"{path}.{json_name}", 1))
    # Liveness and startup probes stop at the first success: more would never count.
    if (
        kind in ("livenessProbe", "startupProbe")
        and probe.HasField("success_threshold")
        and probe.success_threshold != 1
    ):
        errs.append(_invalid(f"{path}.successThreshold", probe.success_threshold, "must be 1"))
    if probe.HasField("termination_grace_period_seconds"):
        here = f"{path}.terminationGracePeriodSeconds"
        if kind == "readinessProbe":
            errs.append(
                _invalid(
                    here,
                    probe.termination_grace_period_seconds,
                    "must not be set for readinessProbes",
                )
            )
        else:
            errs.extend(_at_least(here, probe.termination_grace_period_seconds, 1))
    return errs


_PROBES: Final = (
    ("liveness_probe", "livenessProbe"),
    ("readiness_probe", "readinessProbe"),
    ("startup_probe", "startupProbe"),
)


def _probes_and_lifecycle(c: Msg, path: str, ctx: _PodContext, *, init: bool) -> Errs:
    errs: Errs = []
    # Init containers run to completion first, so probes and hooks mean
    # nothing for them, unless they are sidecars (restartPolicy: Always).
    sidecar = c.HasField("restart_policy") and c.restart_policy == "Always"
    for field, json_name in _PROBES:
        if not c.HasField(field):
            continue
        if init and not sidecar:
            errs.append(
                _forbidden(
                    f"{path}.{json_name}",
                    "may not be set for init containers without restartPolicy=Always",
                )
            )
        else:
            errs.extend(_probe(getattr(c, field), f"{path}.{json_name}", ctx, kind=json_name))
    if c.HasField("lifecycle"):
        if init and not sidecar:
            errs.append(
                _forbidden(
                    f"{path}.lifecycle",
                    "may not be set for init containers without restartPolicy=Always",
                )
            )
        for field, json_name in (("post_start", "postStart"), ("pre_stop", "preStop")):
            if c.lifecycle.HasField(field):
                errs.extend(
                    _handler(
                        getattr(c.lifecycle, field),
                        f"{path}.lifecycle.{json_name}",
                        _LIFECYCLE_HANDLERS,
                        ctx,
                    )
                )
    return errs


def _container(c: Msg, path: str, ctx: _PodContext, *, init: bool) -> Errs:
    errs: Errs = []
    if not c.name:
        errs.append(_required(f"{path}.name"))
    else:
        errs.extend(_check(f"{path}.name", c.name, names.dns1123_label))
    if not c.image:
        errs.append(_required(f"{path}.image"))
    elif any(ch.isspace() for ch in c.image):
        errs.append(_invalid(f"{path}.image", c.image, "must not contain whitespace"))
    errs.extend(_one_of(f"{path}.imagePullPolicy", c.image_pull_policy, _PULL_POLICIES))
    errs.extend(
        _one_of(
            f"{path}.terminationMessagePolicy",
            c.termination_message_policy,
            _TERMINATION_MESSAGE_POLICIES,
            required=False,
        )
    )
    errs.extend(_container_ports(c, path, ctx))
    errs.extend(_env(c, path))
    errs.extend(_resources(c.resources, f"{path}.resources"))
    errs.extend(_volume_mounts(c, path, ctx))
    errs.extend(_probes_and_lifecycle(c, path, ctx, init=init))
    if c.HasField("restart_policy"):
        here = f"{path}.restartPolicy"
        if not init:
            errs.append(_forbidden(here, "may not be set for non-init containers"))
        else:
            errs.extend(_one_of(here, c.restart_policy, ("Always",)))
    return errs


def _containers(spec: core_v1_pb2.PodSpec, path: str, ctx: _PodContext) -> Errs:
    errs: Errs = []
    if not spec.containers:
        errs.append(_required(f"{path}.containers"))
    seen: set[str] = set()
    # Names are unique across both lists: logs, exec and statuses address
    # containers by name alone.
    for field, json_name, init in (
        ("init_containers", "initContainers", True),
        ("containers", "containers", False),
    ):
        for i, c in enumerate(getattr(spec, field)):
            here = f"{path}.{json_name}[{i}]"
            errs.extend(_container(c, here, ctx, init=init))
            if c.name and c.name in seen:
                errs.append(_duplicate(f"{here}.name", c.name))
            seen.add(c.name)
    errs.extend(_host_ports(spec.containers, f"{path}.containers"))
    errs.extend(_host_ports(spec.init_containers, f"{path}.initContainers"))
    for i, e in enumerate(spec.ephemeral_containers):
        here = f"{path}.ephemeralContainers[{i}]"
        if not e.name:
            errs.append(_required(f"{here}.name"))
        else:
            errs.extend(_check(f"{here}.name", e.name, names.dns1123_label))
            if e.name in seen:
                errs.append(_duplicate(f"{here}.name", e.name))
            seen.add(e.name)
        if not e.image:
            errs.append(_required(f"{here}.image"))
    return errs


# --------------------------------------------------------------------------------------
# Pod spec: volumes
# --------------------------------------------------------------------------------------

_VOLUME_SOURCES: Final = tuple(
    f.name for f in core_v1_pb2.Volume.DESCRIPTOR.fields if f.name != "name"
)
_HOST_PATH_TYPES: Final = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)
_PROJECTION_SOURCES: Final = tuple(f.name for f in core_v1_pb2.VolumeProjection.DESCRIPTOR.fields)
_MIN_TOKEN_SECONDS: Final = 600
_ONE_VOLUME_TYPE: Final = {
    "none": "must specify a volume type",
    "many": "may not specify more than 1 volume type",
}


def _key_to_paths(items: Sequence[core_v1_pb2.KeyToPath], path: str) -> Errs:
    errs: Errs = []
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        if not item.key:
            errs.append(_required(f"{here}.key"))
        else:
            errs.extend(_check(f"{here}.key", item.key, names.config_map_key))
        errs.extend(_relative_path(f"{here}.path", item.path))
        errs.extend(_opt_file_mode(item, "mode", f"{here}.mode"))
    return errs


def _downward_items(items: Sequence[core_v1_pb2.DownwardAPIVolumeFile], path: str) -> Errs:
    errs: Errs = []
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        errs.extend(_relative_path(f"{here}.path", item.path))
        errs.extend(_opt_file_mode(item, "mode", f"{here}.mode"))
        found, present = _exactly_one(
            item,
            ("field_ref", "resource_field_ref"),
            here,
            none="one of fieldRef and resourceFieldRef is required",
            many="fieldRef and resourceFieldRef can not be specified simultaneously",
        )
        errs.extend(found)
        if "field_ref" in present:
            errs.extend(
                _object_field_selector(item.field_ref, f"{here}.fieldRef", _VOLUME_FIELD_PATHS)
            )
        if "resource_field_ref" in present:
            errs.extend(
                _resource_field_selector(
                    item.resource_field_ref, f"{here}.resourceFieldRef", need_container=True
                )
            )
    return errs


def _named_source(path: str, value: str) -> Errs:
    return [_required(path)] if not value else _check(path, value, names.dns1123_subdomain)


def _host_path_source(src: core_v1_pb2.HostPathVolumeSource, path: str) -> Errs:
    errs = _absolute_path(f"{path}.path", src.path)
    if src.HasField("type"):
        errs.extend(_one_of(f"{path}.type", src.type, _HOST_PATH_TYPES, required=False))
    return errs


def _empty_dir_source(src: core_v1_pb2.EmptyDirVolumeSource, path: str) -> Errs:
    errs: Errs = []
    if src.medium not in ("", "Memory", "HugePages") and not src.medium.startswith("HugePages-"):
        errs.append(_unsupported(f"{path}.medium", src.medium, ("", "Memory", "HugePages")))
    if src.HasField("size_limit"):
        _quantity(f"{path}.sizeLimit", src.size_limit, errs)
    return errs


def _secret_source(src: core_v1_pb2.SecretVolumeSource, path: str) -> Errs:
    errs = _named_source(f"{path}.secretName", src.secret_name)
    errs.extend(_key_to_paths(src.items, f"{path}.items"))
    return errs + _opt_file_mode(src, "default_mode", f"{path}.defaultMode")


def _config_map_source(src: core_v1_pb2.ConfigMapVolumeSource, path: str) -> Errs:
    errs = _named_source(f"{path}.name", src.name)
    errs.extend(_key_to_paths(src.items, f"{path}.items"))
    return errs + _opt_file_mode(src, "default_mode", f"{path}.defaultMode")


def _nfs_source(src: core_v1_pb2.NFSVolumeSource, path: str) -> Errs:
    errs = [] if src.server else [_required(f"{path}.server")]
    return errs + _absolute_path(f"{path}.path", src.path)


def _pvc_source(src: core_v1_pb2.PersistentVolumeClaimVolumeSource, path: str) -> Errs:
    return _named_source(f"{path}.claimName", src.claim_name)


def _downward_source(src: core_v1_pb2.DownwardAPIVolumeSource, path: str) -> Errs:
    return _downward_items(src.items, f"{path}.items") + _opt_file_mode(
        src, "default_mode", f"{path}.defaultMode"
    )


def _projection(src: core_v1_pb2.VolumeProjection, path: str) -> Errs:
    errs, present = _exactly_one(
        src,
        _PROJECTION_SOURCES,
        path,
        none="must specify a projection type",
        many="may not specify more than 1 projection type",
    )
    if "secret" in present:
        errs.extend(_named_source(f"{path}.secret.name", src.secret.name))
        errs.extend(_key_to_paths(src.secret.items, f"{path}.secret.items"))
    if "config_map" in present:
        errs.extend(_named_source(f"{path}.configMap.name", src.config_map.name))
        errs.extend(_key_to_paths(src.config_map.items, f"{path}.configMap.items"))
    if "downward_api" in present:
        errs.extend(_downward_items(src.downward_api.items, f"{path}.downwardAPI.items"))
    if "service_account_token" in present:
        token, here = src.service_account_token, f"{path}.serviceAccountToken"
        errs.extend(_relative_path(f"{here}.path", token.path))
        if token.HasField("expiration_seconds") and token.expiration_seconds < _MIN_TOKEN_SECONDS:
            errs.append(
                _invalid(
                    f"{here}.expirationSeconds",
                    token.expiration_seconds,
                    "may not specify a duration less than 10 minutes",
                )
            )
    if "cluster_trust_bundle" in present:
        errs.extend(
            _relative_path(f"{path}.clusterTrustBundle.path", src.cluster_trust_bundle.path)
        )
    return errs


def _projected_source(src: core_v1_pb2.ProjectedVolumeSource, path: str) -> Errs:
    errs: Errs = []
    for i, projection in enumerate(src.sources):
        errs.extend(_projection(projection, f"{path}.sources[{i}]"))
    return errs + _opt_file_mode(src, "default_mode", f"{path}.defaultMode")


def _csi_source(src: core_v1_pb2.CSIVolumeSource, path: str) -> Errs:
    return [] if src.driver else [_required(f"{path}.driver")]


def _ephemeral_source(src: core_v1_pb2.EphemeralVolumeSource, path: str) -> Errs:
    here = f"{path}.volumeClaimTemplate"
    if not src.HasField("volume_claim_template"):
        return [_required(here)]
    template = src.volume_claim_template
    errs = _labels(template.metadata.labels, f"{here}.metadata.labels")
    return errs + _pvc_spec(template.spec, f"{here}.spec")


def _image_source(src: core_v1_pb2.ImageVolumeSource, path: str) -> Errs:
    errs = [] if src.reference else [_required(f"{path}.reference")]
    return errs + _one_of(f"{path}.pullPolicy", src.pull_policy, _PULL_POLICIES, required=False)


_VOLUME_CHECKS: Final[Mapping[str, Callable[[Any, str], Errs]]] = {
    "host_path": _host_path_source,
    "empty_dir": _empty_dir_source,
    "secret": _secret_source,
    "config_map": _config_map_source,
    "nfs": _nfs_source,
    "persistent_volume_claim": _pvc_source,
    "downward_api": _downward_source,
    "projected": _projected_source,
    "csi": _csi_source,
    "ephemeral": _ephemeral_source,
    "image": _image_source,
}


def _volumes(spec: core_v1_pb2.PodSpec, path: str) -> Errs:
    errs: Errs = []
    seen: set[str] = set()
    for i, volume in enumerate(spec.volumes):
        here = f"{path}.volumes[{i}]"
        if not volume.name:
            errs.append(_required(f"{here}.name"))
        else:
            errs.extend(_check(f"{here}.name", volume.name, names.dns1123_label))
            if volume.name in seen:
                errs.append(_duplicate(f"{here}.name", volume.name))
            seen.add(volume.name)
        found, present = _exactly_one(volume, _VOLUME_SOURCES, here, **_ONE_VOLUME_TYPE)
        errs.extend(found)
        for source in present:
            errs.extend(
                _VOLUME_CHECKS[source](
                    getattr(volume, source), f"{here}.{_json_name(volume, source)}"
                )
            )
    return errs


# --------------------------------------------------------------------------------------
# Pod spec: scheduling
# --------------------------------------------------------------------------------------

_TOLERATION_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_NODE_SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def _toleration(t: core_v1_pb2.Toleration, path: str) -> Errs:
    errs = _check_set(f"{path}.key", t.key, names.qualified_name)
    if not t.key and t.operator != "Exists":
        errs.append(
            _invalid(
                f"{path}.operator",
                t.operator,
                "operator must be Exists when `key` is empty, "
                'which means "match all values and all keys"',
            )
        )
    if t.HasField("toleration_seconds") and t.effect != "NoExecute":
        errs.append(
            _invalid(
                f"{path}.effect",
                t.effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            )
        )
    # An empty operator means Equal, as in Kubernetes.
    if t.operator in ("", "Equal"):
        errs.extend(_check(f"{path}.value", t.value, names.label_value))
    elif t.operator == "Exists":
        if t.value:
            errs.append(
                _invalid(
                    f"{path}.operator", t.value, "value must be empty when `operator` is 'Exists'"
                )
            )
    else:
        errs.append(_unsupported(f"{path}.operator", t.operator, ("Equal", "Exists")))
    errs.extend(_one_of(f"{path}.effect", t.effect, _TOLERATION_EFFECTS, required=False))
    return errs


def _node_requirement(r: core_v1_pb2.NodeSelectorRequirement, path: str) -> Errs:
    errs = (
        [_required(f"{path}.key")]
        if not r.key
        else _check(f"{path}.key", r.key, names.qualified_name)
    )
    values_path = f"{path}.values"
    if r.operator in ("In", "NotIn"):
        if not r.values:
            errs.append(
                _required(values_path, "must be specified when `operator` is 'In' or 'NotIn'")
            )
    elif r.operator in ("Exists", "DoesNotExist"):
        if r.values:
            errs.append(
                _forbidden(
                    values_path,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
    elif r.operator in ("Gt", "Lt"):
        if len(r.values) != 1:
            errs.append(
                _required(
                    values_path, "must be specified single value when `operator` is 'Lt' or 'Gt'"
                )
            )
        elif not re.fullmatch("[-+]?[0-9]+", r.values[0]):
            errs.append(_invalid(f"{values_path}[0]", r.values[0], "must be an integer"))
    else:
        errs.extend(_one_of(f"{path}.operator", r.operator, _NODE_SELECTOR_OPERATORS))
    return errs


def _node_field_requirement(r: core_v1_pb2.NodeSelectorRequirement, path: str) -> Errs:
    # Only the node's name can be selected by field, and only by exact name.
    errs = _one_of(f"{path}.key", r.key, ("metadata.name",))
    errs.extend(_one_of(f"{path}.operator", r.operator, ("In", "NotIn")))
    if r.operator in ("In", "NotIn") and len(r.values) != 1:
        errs.append(
            _required(
                f"{path}.values",
                "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
            )
        )
    return errs


def _node_selector_term(term: core_v1_pb2.NodeSelectorTerm, path: str) -> Errs:
    errs: Errs = []
    for i, r in enumerate(term.match_expressions):
        errs.extend(_node_requirement(r, f"{path}.matchExpressions[{i}]"))
    for i, r in enumerate(term.match_fields):
        errs.extend(_node_field_requirement(r, f"{path}.matchFields[{i}]"))
    return errs


def _node_selector(sel: core_v1_pb2.NodeSelector, path: str) -> Errs:
    terms_path = f"{path}.nodeSelectorTerms"
    if not sel.node_selector_terms:
        return [_required(terms_path, "must have at least one node selector term")]
    errs: Errs = []
    for i, term in enumerate(sel.node_selector_terms):
        errs.extend(_node_selector_term(term, f"{terms_path}[{i}]"))
    return errs


def _weight(path: str, weight: int) -> Errs:
    return [] if 1 <= weight <= 100 else [_invalid(path, weight, "must be in the range 1-100")]


def _pod_affinity_term(term: core_v1_pb2.PodAffinityTerm, path: str) -> Errs:
    here = f"{path}.topologyKey"
    errs = (
        [_required(here, "can not be empty")]
        if not term.topology_key
        else _check(here, term.topology_key, names.qualified_name)
    )
    if term.HasField("label_selector"):
        errs.extend(_label_selector(term.label_selector, f"{path}.labelSelector"))
    if term.HasField("namespace_selector"):
        errs.extend(_label_selector(term.namespace_selector, f"{path}.namespaceSelector"))
    for i, ns in enumerate(term.namespaces):
        errs.extend(_check(f"{path}.namespaces[{i}]", ns, names.dns1123_label))
    return errs


_REQUIRED_TERMS: Final = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED_TERMS: Final = "preferredDuringSchedulingIgnoredDuringExecution"


def _pod_affinity(affinity: Msg, path: str) -> Errs:
    """podAffinity and podAntiAffinity share their shape."""
    errs: Errs = []
    for i, term in enumerate(affinity.required_during_scheduling_ignored_during_execution):
        errs.extend(_pod_affinity_term(term, f"{path}.{_REQUIRED_TERMS}[{i}]"))
    for i, weighted in enumerate(affinity.preferred_during_scheduling_ignored_during_execution):
        here = f"{path}.{_PREFERRED_TERMS}[{i}]"
        errs.extend(_weight(f"{here}.weight", weighted.weight))
        errs.extend(_pod_affinity_term(weighted.pod_affinity_term, f"{here}.podAffinityTerm"))
    return errs


def _affinity(a: core_v1_pb2.Affinity, path: str) -> Errs:
    errs: Errs = []
    if a.HasField("node_affinity"):
        na, here = a.node_affinity, f"{path}.nodeAffinity"
        if na.HasField("required_during_scheduling_ignored_during_execution"):
            errs.extend(
                _node_selector(
                    na.required_during_scheduling_ignored_during_execution,
                    f"{here}.{_REQUIRED_TERMS}",
                )
            )
        for i, preferred in enumerate(na.preferred_during_scheduling_ignored_during_execution):
            term_path = f"{here}.{_PREFERRED_TERMS}[{i}]"
            errs.extend(_weight(f"{term_path}.weight", preferred.weight))
            errs.extend(_node_selector_term(preferred.preference, f"{term_path}.preference"))
    if a.HasField("pod_affinity"):
        errs.extend(_pod_affinity(a.pod_affinity, f"{path}.podAffinity"))
    if a.HasField("pod_anti_affinity"):
        errs.extend(_pod_affinity(a.pod_anti_affinity, f"{path}.podAntiAffinity"))
    return errs


def _topology_spread(
    constraints: Sequence[core_v1_pb2.TopologySpreadConstraint], path: str
) -> Errs:
    errs: Errs = []
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(constraints):
        here = f"{path}[{i}]"
        if c.max_skew < 1:
            errs.append(_invalid(f"{here}.maxSkew", c.max_skew, "must be greater than zero"))
        if not c.topology_key:
            errs.append(_required(f"{here}.topologyKey", "can not be empty"))
        else:
            errs.extend(_check(f"{here}.topologyKey", c.topology_key, names.qualified_name))
        errs.extend(
            _one_of(
                f"{here}.whenUnsatisfiable",
                c.when_unsatisfiable,
                ("DoNotSchedule", "ScheduleAnyway"),
            )
        )
        if c.HasField("min_domains"):
            errs.extend(_at_least(f"{here}.minDomains", c.min_domains, 1))
            if c.when_unsatisfiable != "DoNotSchedule":
                errs.append(
                    _invalid(
                        f"{here}.minDomains",
                        c.min_domains,
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule",
                    )
                )
        for field, json_name in (
            ("node_affinity_policy", "nodeAffinityPolicy"),
            ("node_taints_policy", "nodeTaintsPolicy"),
        ):
            if c.HasField(field):
                errs.extend(_one_of(f"{here}.{json_name}", getattr(c, field), ("Honor", "Ignore")))
        if c.HasField("label_selector"):
            errs.extend(_label_selector(c.label_selector, f"{here}.labelSelector"))
        pair = (c.topology_key, c.when_unsatisfiable)
        if pair in seen:
            errs.append(_duplicate(here, f"{{{c.topology_key}, {c.when_unsatisfiable}}}"))
        seen.add(pair)
    return errs


_MAX_NAMESERVERS: Final = 3
_MAX_SEARCHES: Final = 32


def _dns(spec: core_v1_pb2.PodSpec, path: str) -> Errs:
    errs = _one_of(f"{path}.dnsPolicy", spec.dns_policy, _DNS_POLICIES)
    config, here = spec.dns_config, f"{path}.dnsConfig"
    # With dnsPolicy None the pod's resolv.conf is built from dnsConfig alone.
    if spec.dns_policy == "None" and not config.nameservers:
        errs.append(
            _required(
                f"{here}.nameservers",
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )
        )
    if len(config.nameservers) > _MAX_NAMESERVERS:
        errs.append(
            _invalid(
                f"{here}.nameservers",
                list(config.nameservers),
                f"must not have more than {_MAX_NAMESERVERS} nameservers",
            )
        )
    for i, server in enumerate(config.nameservers):
        errs.extend(_ip(f"{here}.nameservers[{i}]", server))
    if len(config.searches) > _MAX_SEARCHES:
        errs.append(
            _invalid(
                f"{here}.searches",
                list(config.searches),
                f"must not have more than {_MAX_SEARCHES} search paths",
            )
        )
    for i, search in enumerate(config.searches):
        errs.extend(
            _check(f"{here}.searches[{i}]", search.removesuffix("."), names.dns1123_subdomain)
        )
    for i, option in enumerate(config.options):
        if not option.name:
            errs.append(_required(f"{here}.options[{i}].name"))
    return errs


# --------------------------------------------------------------------------------------
# Pod spec
# --------------------------------------------------------------------------------------


def _pod_spec(
    spec: core_v1_pb2.PodSpec,
    path: str,
    *,
    restart_policies: Sequence[str] = _RESTART_POLICIES,
    claim_templates: Iterable[str] = (),
) -> Errs:
    """Everything a pod and every pod template share.

    ``claim_templates`` are a StatefulSet's volumeClaimTemplates: each becomes
    a volume of the pod, so mounts may name them.
    """
    volume_names = frozenset(v.name for v in spec.volumes) | frozenset(claim_templates)
    grace = (
        spec.termination_grace_period_seconds
        if spec.HasField("termination_grace_period_seconds")
        else None
    )
    ctx = _PodContext(volumes=volume_names, grace=grace, host_network=spec.host_network)
    errs = _volumes(spec, path)
    errs.extend(_containers(spec, path, ctx))
    errs.extend(_one_of(f"{path}.restartPolicy", spec.restart_policy, restart_policies))
    errs.extend(_dns(spec, path))
    errs.extend(
        _opt_at_least(
            spec, "termination_grace_period_seconds", f"{path}.terminationGracePeriodSeconds", 0
        )
    )
    errs.extend(_opt_at_least(spec, "active_deadline_seconds", f"{path}.activeDeadlineSeconds", 1))
    for i, t in enumerate(spec.tolerations):
        errs.extend(_toleration(t, f"{path}.tolerations[{i}]"))
    errs.extend(_labels(spec.node_selector, f"{path}.nodeSelector"))
    if spec.HasField("affinity"):
        errs.extend(_affinity(spec.affinity, f"{path}.affinity"))
    errs.extend(
        _topology_spread(spec.topology_spread_constraints, f"{path}.topologySpreadConstraints")
    )
    errs.extend(_pod_names(spec, path))
    for i, alias in enumerate(spec.host_aliases):
        errs.extend(_ip(f"{path}.hostAliases[{i}].ip", alias.ip))
    for i, gate in enumerate(spec.readiness_gates):
        errs.extend(
            _check(
                f"{path}.readinessGates[{i}].conditionType",
                gate.condition_type,
                names.qualified_name,
            )
        )
    _resource_list(spec.overhead, f"{path}.overhead", errs)
    errs.extend(_resources(spec.resources, f"{path}.resources"))
    if spec.HasField("preemption_policy"):
        errs.extend(
            _one_of(
                f"{path}.preemptionPolicy",
                spec.preemption_policy,
                ("PreemptLowerPriority", "Never"),
            )
        )
    return errs


def _pod_names(spec: core_v1_pb2.PodSpec, path: str) -> Errs:
    """Names a pod refers to by: its DNS names, its node, its account, its class."""
    return [
        *_check_set(f"{path}.hostname", spec.hostname, names.dns1123_label),
        *_check_set(f"{path}.subdomain", spec.subdomain, names.dns1123_label),
        *_check_set(f"{path}.nodeName", spec.node_name, names.dns1123_subdomain),
        *_check_set(
            f"{path}.serviceAccountName", spec.service_account_name, names.dns1123_subdomain
        ),
        *_check_set(f"{path}.priorityClassName", spec.priority_class_name, names.dns1123_subdomain),
    ]


def _pod_template(
    template: core_v1_pb2.PodTemplateSpec,
    path: str,
    *,
    restart_policies: Sequence[str],
    claim_templates: Iterable[str] = (),
    long_running: bool = True,
) -> Errs:
    errs = _labels(template.metadata.labels, f"{path}.metadata.labels")
    errs.extend(_annotations(template.metadata.annotations, f"{path}.metadata.annotations"))
    errs.extend(
        _pod_spec(
            template.spec,
            f"{path}.spec",
            restart_policies=restart_policies,
            claim_templates=claim_templates,
        )
    )
    # Controllers that keep pods running replace a pod that hits its deadline,
    # so a deadline would only make them churn.
    if long_running and template.spec.HasField("active_deadline_seconds"):
        errs.append(
            _forbidden(
                f"{path}.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            )
        )
    return errs


# --------------------------------------------------------------------------------------
# Pod
# --------------------------------------------------------------------------------------

_POD_UPDATE_FORBIDDEN: Final = (
    "pod updates may not change fields other than spec.containers[*].image, "
    "spec.initContainers[*].image, spec.activeDeadlineSeconds, "
    "spec.tolerations (only additions to existing tolerations)"
)


def _pod(pod: Msg, old: Msg | None) -> Errs:
    errs = _pod_spec(pod.spec, "spec")
    if old is not None:
        errs.extend(_pod_update(pod.spec, old.spec))
    return errs


def _pod_update(new: core_v1_pb2.PodSpec, old: core_v1_pb2.PodSpec) -> Errs:
    """A running pod's spec is what the node agent acts on; only a few fields may move."""
    for field, json_name in (("containers", "containers"), ("init_containers", "initContainers")):
        if len(getattr(new, field)) != len(getattr(old, field)):
            return [_forbidden(f"spec.{json_name}", "pod updates may not add or remove containers")]
    errs = _active_deadline_update(new, old)
    errs.extend(_tolerations_update(new.tolerations, old.tolerations))
    # Compare what is left once the allowed changes are undone.
    munged = core_v1_pb2.PodSpec()
    munged.CopyFrom(new)
    for mine, theirs in zip(munged.containers, old.containers, strict=True):
        mine.image = theirs.image
    for mine, theirs in zip(munged.init_containers, old.init_containers, strict=True):
        mine.image = theirs.image
    for field in ("active_deadline_seconds", "termination_grace_period_seconds"):
        _copy_optional(munged, old, field)
    del munged.tolerations[:]
    munged.tolerations.extend(old.tolerations)
    if not old.node_name:
        munged.node_name = ""  # binding: the scheduler sets nodeName once
    if munged != old:
        errs.append(_forbidden("spec", _POD_UPDATE_FORBIDDEN))
    return errs


def _copy_optional(dst: Msg, src: Msg, field: str) -> None:
    if src.HasField(field):
        setattr(dst, field, getattr(src, field))
    else:
        dst.ClearField(field)


def _active_deadline_update(new: core_v1_pb2.PodSpec, old: core_v1_pb2.PodSpec) -> Errs:
    path = "spec.activeDeadlineSeconds"
    if not old.HasField("active_deadline_seconds"):
        return []
    if not new.HasField("active_deadline_seconds"):
        return [_invalid(path, None, "must not update from a positive integer to nil value")]
    if new.active_deadline_seconds > old.active_deadline_seconds:
        return [
            _invalid(
                path, new.active_deadline_seconds, "must be less than or equal to previous value"
            )
        ]
    return []


def _tolerations_update(
    new: Sequence[core_v1_pb2.Toleration], old: Sequence[core_v1_pb2.Toleration]
) -> Errs:
    # Existing tolerations stay (their tolerationSeconds may change): removing
    # one could leave a running pod on a node it no longer tolerates.
    def identity(t: core_v1_pb2.Toleration) -> tuple[str, str, str, str]:
        return (t.key, t.operator or "Equal", t.value, t.effect)

    kept = {identity(t) for t in new}
    if all(identity(t) in kept for t in old):
        return []
    return [
        _forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        )
    ]


# --------------------------------------------------------------------------------------
# apps/v1
# --------------------------------------------------------------------------------------


def _replicas(spec: Msg, path: str) -> Errs:
    return _opt_at_least(spec, "replicas", f"{path}.replicas", 0)


def _selector_update(new: Msg, old: Msg | None) -> Errs:
    # The selector is how a controller finds its pods; changing it would
    # orphan the old ones and adopt strangers.
    if old is None or new.spec.selector == old.spec.selector:
        return []
    return [_immutable("spec.selector", new.spec.selector)]


def _int_or_percent(path: str, value: str, errs: Errs) -> tuple[int, bool] | None:
    try:
        return parse_int_or_percent(value)
    except IntOrStringError as exc:
        errs.append(_invalid(path, value, str(exc)))
        return None


def _surge_and_unavailable(
    rolling: Msg, path: str, errs: Errs, *, surge_max_100: bool
) -> tuple[int, int] | None:
    """Parse maxSurge and maxUnavailable; None when either is unusable (reported)."""
    values: list[int] = []
    for field, json_name in (("max_surge", "maxSurge"), ("max_unavailable", "maxUnavailable")):
        raw = getattr(rolling, field) if rolling.HasField(field) else "0"
        parsed = _int_or_percent(f"{path}.{json_name}", raw, errs)
        if parsed is None:
            return None
        number, percent = parsed
        limit_applies = field == "max_unavailable" or surge_max_100
        if percent and number > 100 and limit_applies:
            errs.append(_invalid(f"{path}.{json_name}", raw, "must not be greater than 100%"))
        values.append(number)
    return values[0], values[1]


def _deployment_strategy(strategy: Msg, path: str) -> Errs:
    errs = _one_of(f"{path}.type", strategy.type, ("RollingUpdate", "Recreate"))
    rolling_path = f"{path}.rollingUpdate"
    if strategy.type == "Recreate" and strategy.HasField("rolling_update"):
        errs.append(
            _forbidden(rolling_path, "may not be specified when strategy `type` is 'Recreate'")
        )
    if strategy.type == "RollingUpdate":
        parsed = _surge_and_unavailable(
            strategy.rolling_update, rolling_path, errs, surge_max_100=False
        )
        # Neither adding nor removing pods: a rollout could never progress.
        if parsed == (0, 0):
            errs.append(
                _invalid(
                    f"{rolling_path}.maxUnavailable",
                    strategy.rolling_update.max_unavailable,
                    "may not be 0 when `maxSurge` is 0",
                )
            )
    return errs


def _workload_common(spec: Msg, path: str) -> Errs:
    errs = _template_selector(spec, path)
    errs.extend(_at_least(f"{path}.minReadySeconds", spec.min_ready_seconds, 0))
    return errs


def _deployment(d: Msg, old: Msg | None) -> Errs:
    spec = d.spec
    errs = _replicas(spec, "spec")
    errs.extend(_workload_common(spec, "spec"))
    errs.extend(_pod_template(spec.template, "spec.template", restart_policies=("Always",)))
    errs.extend(_deployment_strategy(spec.strategy, "spec.strategy"))
    errs.extend(_opt_at_least(spec, "revision_history_limit", "spec.revisionHistoryLimit", 0))
    if spec.HasField("progress_deadline_seconds"):
        errs.extend(_at_least("spec.progressDeadlineSeconds", spec.progress_deadline_seconds, 0))
        # A deadline that expires before a pod may count as available would
        # fail every rollout.
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            errs.append(
                _invalid(
                    "spec.progressDeadlineSeconds",
                    spec.progress_deadline_seconds,
                    "must be greater than minReadySeconds",
                )
            )
    return errs + _selector_update(d, old)


def _replicaset(rs: Msg, old: Msg | None) -> Errs:
    spec = rs.spec
    errs = _replicas(spec, "spec")
    errs.extend(_workload_common(spec, "spec"))
    errs.extend(_pod_template(spec.template, "spec.template", restart_policies=("Always",)))
    return errs + _selector_update(rs, old)


# What may change in a StatefulSet after creation (proto field names).
_STATEFULSET_MUTABLE: Final = (
    "replicas",
    "ordinals",
    "template",
    "update_strategy",
    "revision_history_limit",
    "persistent_volume_claim_retention_policy",
    "min_ready_seconds",
    "selector",  # reported on its own, by _selector_update
)
_STATEFULSET_UPDATE_FORBIDDEN: Final = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' "
    "and 'minReadySeconds' are forbidden"
)


def _statefulset(sts: Msg, old: Msg | None) -> Errs:
    spec = sts.spec
    errs = _replicas(spec, "spec")
    errs.extend(_workload_common(spec, "spec"))
    claims = [pvc.metadata.name for pvc in spec.volume_claim_templates]
    errs.extend(
        _pod_template(
            spec.template, "spec.template", restart_policies=("Always",), claim_templates=claims
        )
    )
    errs.extend(_check_set("spec.serviceName", spec.service_name, names.dns1123_label))
    errs.extend(
        _one_of(
            "spec.podManagementPolicy", spec.pod_management_policy, ("OrderedReady", "Parallel")
        )
    )
    errs.extend(_statefulset_strategy(spec.update_strategy, "spec.updateStrategy"))
    errs.extend(_opt_at_least(spec, "revision_history_limit", "spec.revisionHistoryLimit", 0))
    errs.extend(_at_least("spec.ordinals.start", spec.ordinals.start, 0))
    retention = spec.persistent_volume_claim_retention_policy
    for field, json_name in (("when_deleted", "whenDeleted"), ("when_scaled", "whenScaled")):
        here = f"spec.persistentVolumeClaimRetentionPolicy.{json_name}"
        errs.extend(_one_of(here, getattr(retention, field), ("Retain", "Delete"), required=False))
    for i, pvc in enumerate(spec.volume_claim_templates):
        here = f"spec.volumeClaimTemplates[{i}]"
        errs.extend(
            [_required(f"{here}.metadata.name")]
            if not pvc.metadata.name
            else _check(f"{here}.metadata.name", pvc.metadata.name, names.dns1123_label)
        )
        errs.extend(_labels(pvc.metadata.labels, f"{here}.metadata.labels"))
        errs.extend(_pvc_spec(pvc.spec, f"{here}.spec"))
    if old is not None:
        errs.extend(_selector_update(sts, old))
        errs.extend(_statefulset_update(spec, old.spec))
    return errs


def _statefulset_strategy(strategy: Msg, path: str) -> Errs:
    errs = _one_of(f"{path}.type", strategy.type, ("RollingUpdate", "OnDelete"))
    rolling, rolling_path = strategy.rolling_update, f"{path}.rollingUpdate"
    if strategy.type == "OnDelete" and strategy.HasField("rolling_update"):
        errs.append(_forbidden(rolling_path, "only allowed for updateStrategy 'RollingUpdate'"))
    errs.extend(_opt_at_least(rolling, "partition", f"{rolling_path}.partition", 0))
    if rolling.HasField("max_unavailable"):
        parsed = _int_or_percent(f"{rolling_path}.maxUnavailable", rolling.max_unavailable, errs)
        if parsed is not None and parsed[0] == 0:
            errs.append(
                _invalid(
                    f"{rolling_path}.maxUnavailable",
                    rolling.max_unavailable,
                    "must be greater than 0",
                )
            )
        elif parsed is not None and parsed[1] and parsed[0] > 100:
            errs.append(
                _invalid(
                    f"{rolling_path}.maxUnavailable",
                    rolling.max_unavailable,
                    "must not be greater than 100%",
                )
            )
    return errs


def _statefulset_update(new: Msg, old: Msg) -> Errs:
    # Pods and their claims are named from the spec; most of it cannot move
    # without breaking the identities the StatefulSet promised.
    mine, theirs = type(new)(), type(old)()
    mine.CopyFrom(new)
    theirs.CopyFrom(old)
    for field in _STATEFULSET_MUTABLE:
        mine.ClearField(field)
        theirs.ClearField(field)
    return [] if mine == theirs else [_forbidden("spec", _STATEFULSET_UPDATE_FORBIDDEN)]


def _daemonset(ds: Msg, old: Msg | None) -> Errs:
    spec = ds.spec
    errs = _workload_common(spec, "spec")
    errs.extend(_pod_template(spec.template, "spec.template", restart_policies=("Always",)))
    errs.extend(_opt_at_least(spec, "revision_history_limit", "spec.revisionHistoryLimit", 0))
    strategy, path = spec.update_strategy, "spec.updateStrategy"
    errs.extend(_one_of(f"{path}.type", strategy.type, ("RollingUpdate", "OnDelete")))
    if strategy.type == "OnDelete" and strategy.HasField("rolling_update"):
        errs.append(
            _forbidden(f"{path}.rollingUpdate", "only allowed for updateStrategy 'RollingUpdate'")
        )
    if strategy.type == "RollingUpdate":
        errs.extend(_daemonset_rolling(strategy.rolling_update, f"{path}.rollingUpdate"))
    return errs + _selector_update(ds, old)


def _daemonset_rolling(rolling: Msg, path: str) -> Errs:
    errs: Errs = []
    parsed = _surge_and_unavailable(rolling, path, errs, surge_max_100=True)
    if parsed is None:
        return errs
    surge, unavailable = parsed
    # One pod per node: a node either surges (old and new side by side) or
    # goes without, not both at once.
    if surge and unavailable:
        errs.append(
            _invalid(
                f"{path}.maxSurge",
                rolling.max_surge,
                "may not be set when maxUnavailable is non-zero",
            )
        )
    elif not surge and not unavailable:
        errs.append(_required(f"{path}.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    return errs


# --------------------------------------------------------------------------------------
# batch/v1
# --------------------------------------------------------------------------------------

_JOB_RESTART_POLICIES: Final = ("OnFailure", "Never")
_FAILURE_POLICY_ACTIONS: Final = ("FailJob", "FailIndex", "Ignore", "Count")


def _job_spec(spec: Msg, path: str) -> Errs:
    errs: Errs = []
    for field, json_name in (
        ("parallelism", "parallelism"),
        ("completions", "completions"),
        ("backoff_limit", "backoffLimit"),
        ("ttl_seconds_after_finished", "ttlSecondsAfterFinished"),
        ("backoff_limit_per_index", "backoffLimitPerIndex"),
        ("max_failed_indexes", "maxFailedIndexes"),
    ):
        errs.extend(_opt_at_least(spec, field, f"{path}.{json_name}", 0))
    errs.extend(_opt_at_least(spec, "active_deadline_seconds", f"{path}.activeDeadlineSeconds", 1))
    errs.extend(_completion_mode(spec, path))
    errs.extend(_template_selector(spec, path, required=False))
    errs.extend(
        _pod_template(
            spec.template,
            f"{path}.template",
            restart_policies=_JOB_RESTART_POLICIES,
            long_running=False,
        )
    )
    if spec.HasField("pod_failure_policy"):
        errs.extend(_pod_failure_policy(spec, path))
    if spec.HasField("pod_replacement_policy"):
        errs.extend(
            _one_of(
                f"{path}.podReplacementPolicy",
                spec.pod_replacement_policy,
                ("TerminatingOrFailed", "Failed"),
            )
        )
    return errs


def _completion_mode(spec: Msg, path: str) -> Errs:
    mode = spec.completion_mode if spec.HasField("completion_mode") else "NonIndexed"
    errs = _one_of(f"{path}.completionMode", mode, ("NonIndexed", "Indexed"))
    # Indexes run from 0 to completions-1: without completions there are none.
    if mode == "Indexed" and not spec.HasField("completions"):
        errs.append(_required(f"{path}.completions", "when completion mode is Indexed"))
    if mode != "Indexed" and spec.HasField("backoff_limit_per_index"):
        errs.append(_forbidden(f"{path}.backoffLimitPerIndex", "requires indexed completion mode"))
    if spec.HasField("max_failed_indexes") and not spec.HasField("backoff_limit_per_index"):
        errs.append(_required(f"{path}.backoffLimitPerIndex", "when maxFailedIndexes is specified"))
    return errs


def _pod_failure_policy(spec: Msg, path: str) -> Errs:
    here = f"{path}.podFailurePolicy.rules"
    errs: Errs = []
    # The policy reads pod exit codes; a pod that restarts its containers in
    # place never fails as a whole.
    if spec.template.spec.restart_policy != "Never":
        errs.append(
            _invalid(
                f"{path}.template.spec.restartPolicy",
                spec.template.spec.restart_policy,
                'only "Never" is supported when podFailurePolicy is specified',
            )
        )
    for i, rule in enumerate(spec.pod_failure_policy.rules):
        rule_path = f"{here}[{i}]"
        errs.extend(_one_of(f"{rule_path}.action", rule.action, _FAILURE_POLICY_ACTIONS))
        has_codes, has_conditions = rule.HasField("on_exit_codes"), bool(rule.on_pod_conditions)
        if has_codes == has_conditions:
            errs.append(
                _invalid(
                    rule_path, rule, "specifying one of OnExitCodes and OnPodConditions is required"
                )
            )
        if has_codes:
            codes = rule.on_exit_codes
            errs.extend(
                _one_of(f"{rule_path}.onExitCodes.operator", codes.operator, ("In", "NotIn"))
            )
            if not codes.values:
                errs.append(
                    _required(f"{rule_path}.onExitCodes.values", "at least one value is required")
                )
    return errs


def _job(job: Msg, old: Msg | None) -> Errs:
    errs = _job_spec(job.spec, "spec")
    if old is not None:
        # The pods already made came from this template; a different one
        # would make the Job's pods disagree about what the Job is.
        if job.spec.template != old.spec.template:
            errs.append(_immutable("spec.template", job.spec.template))
        errs.extend(_selector_update(job, old))
        if job.spec.completion_mode != old.spec.completion_mode:
            errs.append(_immutable("spec.completionMode", job.spec.completion_mode))
    return errs


def _cronjob(cj: Msg, old: Msg | None) -> Errs:
    spec = cj.spec
    errs = _schedule(spec.schedule, "spec.schedule")
    if spec.HasField("time_zone"):
        errs.extend(_time_zone(spec.time_zone, "spec.timeZone"))
    errs.extend(
        _one_of("spec.concurrencyPolicy", spec.concurrency_policy, ("Allow", "Forbid", "Replace"))
    )
    errs.extend(_opt_at_least(spec, "starting_deadline_seconds", "spec.startingDeadlineSeconds", 0))
    errs.extend(
        _opt_at_least(spec, "successful_jobs_history_limit", "spec.successfulJobsHistoryLimit", 0)
    )
    errs.extend(_opt_at_least(spec, "failed_jobs_history_limit", "spec.failedJobsHistoryLimit", 0))
    template, path = spec.job_template, "spec.jobTemplate"
    errs.extend(_labels(template.metadata.labels, f"{path}.metadata.labels"))
    errs.extend(_annotations(template.metadata.annotations, f"{path}.metadata.annotations"))
    # Each Job gets its own generated selector when the CronJob makes it.
    if template.spec.HasField("selector"):
        errs.append(
            _invalid(
                f"{path}.spec.selector", template.spec.selector, "`selector` will be auto-generated"
            )
        )
    if template.spec.HasField("manual_selector") and template.spec.manual_selector:
        errs.append(_unsupported(f"{path}.spec.manualSelector", True, ("false",)))
    errs.extend(_job_spec(template.spec, f"{path}.spec"))
    return errs


def _schedule(schedule: str, path: str) -> Errs:
    if not schedule:
        return [_required(path)]
    try:
        cron.parse_schedule(schedule)
    except cron.CronError as exc:
        return [_invalid(path, schedule, str(exc))]
    return []


def _time_zone(name: str, path: str) -> Errs:
    # "Local" would mean the apiserver's zone, which no manifest can know.
    if not name or name.lower() == "local":
        return [
            _invalid(
                path,
                name,
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            )
        ]
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return [_invalid(path, name, "unknown time zone " + name)]
    return []


# --------------------------------------------------------------------------------------
# Service and Endpoints
# --------------------------------------------------------------------------------------

_SERVICE_TYPES: Final = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_NODE_PORT_RANGE: Final = (30000, 32767)
_MAX_AFFINITY_SECONDS: Final = 86400


def _service(svc: Msg, old: Msg | None) -> Errs:
    spec = svc.spec
    errs = _one_of("spec.type", spec.type, _SERVICE_TYPES)
    headless = spec.cluster_ip == "None"
    if not spec.ports and not headless and spec.type != "ExternalName":
        errs.append(_required("spec.ports"))
    errs.extend(_service_ports(spec))
    errs.extend(_cluster_ip(spec))
    if spec.type == "ExternalName":
        if not spec.external_name:
            errs.append(_required("spec.externalName"))
        else:
            errs.extend(
                _check(
                    "spec.externalName",
                    spec.external_name.removesuffix("."),
                    names.dns1123_subdomain,
                )
            )
    errs.extend(_session_affinity(spec))
    errs.extend(_labels(spec.selector, "spec.selector"))
    for i, ip in enumerate(spec.external_ips):
        errs.extend(_ip(f"spec.externalIPs[{i}]", ip))
    for i, cidr in enumerate(spec.load_balancer_source_ranges):
        _cidr(f"spec.loadBalancerSourceRanges[{i}]", cidr, errs)
    errs.extend(
        _one_of(
            "spec.externalTrafficPolicy",
            spec.external_traffic_policy,
            ("Cluster", "Local"),
            required=False,
        )
    )
    if spec.HasField("internal_traffic_policy"):
        errs.extend(
            _one_of(
                "spec.internalTrafficPolicy", spec.internal_traffic_policy, ("Cluster", "Local")
            )
        )
    for i, family in enumerate(spec.ip_families):
        errs.extend(_one_of(f"spec.ipFamilies[{i}]", family, ("IPv4", "IPv6")))
    if spec.HasField("ip_family_policy"):
        errs.extend(
            _one_of(
                "spec.ipFamilyPolicy",
                spec.ip_family_policy,
                ("SingleStack", "PreferDualStack", "RequireDualStack"),
            )
        )
    if old is not None:
        errs.extend(_service_update(spec, old.spec))
    return errs


def _service_ports(spec: core_v1_pb2.ServiceSpec) -> Errs:
    errs: Errs = []
    port_names: set[str] = set()
    ports: set[tuple[int, str]] = set()
    node_ports: set[tuple[int, str]] = set()
    # Endpoints and kube-proxy tell ports apart by name once there are several.
    need_names = len(spec.ports) > 1
    for i, port in enumerate(spec.ports):
        here = f"spec.ports[{i}]"
        if not port.name:
            if need_names:
                errs.append(_required(f"{here}.name"))
        else:
            errs.extend(_check(f"{here}.name", port.name, names.dns1123_label))
            if port.name in port_names:
                errs.append(_duplicate(f"{here}.name", port.name))
            port_names.add(port.name)
        errs.extend(_port_number(f"{here}.port", port.port))
        errs.extend(_one_of(f"{here}.protocol", port.protocol, _PROTOCOLS))
        if (port.port, port.protocol) in ports:
            errs.append(_duplicate(here, f"{port.port}/{port.protocol}"))
        ports.add((port.port, port.protocol))
        errs.extend(_handler_port(f"{here}.targetPort", port.target_port))
        if port.node_port:
            errs.extend(_node_port(spec, port, here, node_ports))
    return errs


def _node_port(
    spec: core_v1_pb2.ServiceSpec,
    port: core_v1_pb2.ServicePort,
    path: str,
    seen: set[tuple[int, str]],
) -> Errs:
    here = f"{path}.nodePort"
    if spec.type not in ("NodePort", "LoadBalancer"):
        return [_forbidden(here, f"may not be used when `type` is '{spec.type}'")]
    low, high = _NODE_PORT_RANGE
    errs: Errs = []
    if not low <= port.node_port <= high:
        errs.append(
            _invalid(
                here,
                port.node_port,
                "provided port is not in the valid range. "
                f"The range of valid ports is {low}-{high}",
            )
        )
    key = (port.node_port, port.protocol)
    if key in seen:
        errs.append(_duplicate(here, port.node_port))
    seen.add(key)
    return errs


def _cluster_ip(spec: core_v1_pb2.ServiceSpec) -> Errs:
    errs: Errs = []
    if spec.type == "ExternalName":
        if spec.cluster_ip and spec.cluster_ip != "None":
            errs.append(_forbidden("spec.clusterIP", "may not be set for ExternalName services"))
        return errs
    if spec.cluster_ip == "None":
        if spec.type in ("NodePort", "LoadBalancer"):
            errs.append(
                _invalid(
                    "spec.clusterIP",
                    spec.cluster_ip,
                    f"may not be set to 'None' for {spec.type} services",
                )
            )
    elif spec.cluster_ip:
        # IPv4 only: this cluster's service network is IPv4 single-stack.
        errs.extend(_ip("spec.clusterIP", spec.cluster_ip, v4_only=True))
    for i, ip in enumerate(spec.cluster_ips):
        if ip != "None":
            errs.extend(_ip(f"spec.clusterIPs[{i}]", ip))
    if spec.cluster_ip and spec.cluster_ips and spec.cluster_ips[0] != spec.cluster_ip:
        errs.append(_invalid("spec.clusterIPs[0]", spec.cluster_ips[0], "must match `clusterIP`"))
    return errs


def _session_affinity(spec: core_v1_pb2.ServiceSpec) -> Errs:
    errs = _one_of("spec.sessionAffinity", spec.session_affinity, ("None", "ClientIP"))
    if spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        here = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        if not client_ip.HasField("timeout_seconds"):
            errs.append(_required(here))
        elif not 0 < client_ip.timeout_seconds <= _MAX_AFFINITY_SECONDS:
            errs.append(
                _invalid(
                    here,
                    client_ip.timeout_seconds,
                    f"must be greater than 0 and less than {_MAX_AFFINITY_SECONDS}",
                )
            )
    return errs


def _service_update(new: core_v1_pb2.ServiceSpec, old: core_v1_pb2.ServiceSpec) -> Errs:
    # Clients and proxies already point at the allocated address; only
    # turning the service into an ExternalName alias lets it go.
    if not old.cluster_ip or new.cluster_ip == old.cluster_ip:
        return []
    if new.type == "ExternalName" and not new.cluster_ip:
        return []
    return [_immutable("spec.clusterIP", new.cluster_ip)]


def _endpoints(ep: Msg, old: Msg | None) -> Errs:
    errs: Errs = []
    for i, subset in enumerate(ep.subsets):
        here = f"subsets[{i}]"
        for field, json_name in (
            ("addresses", "addresses"),
            ("not_ready_addresses", "notReadyAddresses"),
        ):
            for j, address in enumerate(getattr(subset, field)):
                errs.extend(_ip(f"{here}.{json_name}[{j}].ip", address.ip))
                errs.extend(
                    _check_set(
                        f"{here}.{json_name}[{j}].hostname", address.hostname, names.dns1123_label
                    )
                )
        for j, port in enumerate(subset.ports):
            port_path = f"{here}.ports[{j}]"
            if not port.name and len(subset.ports) > 1:
                errs.append(_required(f"{port_path}.name"))
            errs.extend(_check_set(f"{port_path}.name", port.name, names.dns1123_label))
            errs.extend(_port_number(f"{port_path}.port", port.port))
            errs.extend(_one_of(f"{port_path}.protocol", port.protocol, _PROTOCOLS))
    return errs


# --------------------------------------------------------------------------------------
# ConfigMap and Secret
# --------------------------------------------------------------------------------------

_MAX_DATA_BYTES: Final = 1024 * 1024
_IMMUTABLE_SET: Final = "field is immutable when `immutable` is set"


def _data_keys(keys: Iterable[str], path: str) -> Errs:
    errs: Errs = []
    for key in keys:
        errs.extend(_check(f"{path}[{key}]", key, names.config_map_key))
    return errs


def _data_size(path: str, *sizes: int) -> Errs:
    # The store keeps whole objects; a megabyte is its practical ceiling.
    return [_too_long(path, _MAX_DATA_BYTES)] if sum(sizes) > _MAX_DATA_BYTES else []


def _config_map(cm: Msg, old: Msg | None) -> Errs:
    errs = _data_keys(cm.data, "data") + _data_keys(cm.binary_data, "binaryData")
    for key in cm.binary_data:
        if key in cm.data:
            errs.append(_invalid(f"binaryData[{key}]", key, "duplicate of key present in data"))
    errs.extend(
        _data_size(
            "data",
            *(len(v.encode()) for v in cm.data.values()),
            *(len(v) for v in cm.binary_data.values()),
        )
    )
    if old is not None:
        errs.extend(_immutable_data(cm, old, ("data", "binary_data")))
    return errs


def _immutable_data(new: Msg, old: Msg, fields: Sequence[str]) -> Errs:
    """`immutable: true` is a promise to every reader (and the node agents'
    caches) that the data will never change, so it cannot be taken back."""
    if not (old.HasField("immutable") and old.immutable):
        return []
    errs: Errs = []
    if not (new.HasField("immutable") and new.immutable):
        errs.append(_forbidden("immutable", _IMMUTABLE_SET))
    for field in fields:
        if dict(getattr(new, field)) != dict(getattr(old, field)):
            errs.append(_forbidden(_json_name(new, field), _IMMUTABLE_SET))
    return errs


# Keys each well-known secret type must carry.
_SECRET_REQUIRED_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}
_SECRET_JSON_KEYS: Final = (".dockercfg", ".dockerconfigjson")
_BOOTSTRAP_TOKEN_TYPE: Final = "bootstrap.kubernetes.io/token"
_BOOTSTRAP_PREFIX: Final = "bootstrap-token-"
_BOOTSTRAP_ID_RE: Final = re.compile("[a-z0-9]{6}")
_BOOTSTRAP_SECRET_RE: Final = re.compile("[a-z0-9]{16}")
_SA_NAME_ANNOTATION: Final = "kubernetes.io/service-account.name"


def _secret(secret: Msg, old: Msg | None) -> Errs:
    # stringData is normally folded into data before this runs (normalize);
    # check it as well so a caller that skipped that still gets the rules.
    data: dict[str, bytes] = {
        **{k: v.encode() for k, v in secret.string_data.items()},
        **secret.data,
    }
    errs = _data_keys(secret.data, "data") + _data_keys(secret.string_data, "stringData")
    errs.extend(_data_size("data", *(len(v) for v in data.values())))
    errs.extend(_secret_type(secret, data))
    if old is not None:
        if secret.type != old.type:
            errs.append(_immutable("type", secret.type))
        errs.extend(_immutable_data(secret, old, ("data",)))
    return errs


def _secret_type(secret: Msg, data: Mapping[str, bytes]) -> Errs:
    errs: Errs = []
    for key in _SECRET_REQUIRED_KEYS.get(secret.type, ()):
        if key not in data:
            errs.append(_required(f"data[{key}]"))
        elif key in _SECRET_JSON_KEYS:
            try:
                json.loads(data[key])
            except ValueError as exc:
                errs.append(_invalid(f"data[{key}]", "<secret contents redacted>", str(exc)))
    if secret.type == "kubernetes.io/basic-auth" and not (
        data.get("username") or data.get("password")
    ):
        errs.append(_required("data[username]"))
    if secret.type == "kubernetes.io/service-account-token" and not secret.metadata.annotations.get(
        _SA_NAME_ANNOTATION
    ):
        errs.append(_required(f"metadata.annotations[{_SA_NAME_ANNOTATION}]"))
    if secret.type == _BOOTSTRAP_TOKEN_TYPE:
        errs.extend(_bootstrap_token(secret, data))
    return errs


def _bootstrap_token(secret: Msg, data: Mapping[str, bytes]) -> Errs:
    """Nodes join with `<token-id>.<token-secret>`; the id is looked up by
    secret name, so name and id must agree."""
    token_id = data.get("token-id", b"").decode(errors="replace")
    token_secret = data.get("token-secret", b"").decode(errors="replace")
    errs: Errs = []
    if not _BOOTSTRAP_ID_RE.fullmatch(token_id):
        errs.append(_invalid("data[token-id]", token_id, "must be 6 characters of [a-z0-9]"))
    if not _BOOTSTRAP_SECRET_RE.fullmatch(token_secret):
        errs.append(
            _invalid(
                "data[token-secret]",
                "<secret contents redacted>",
                "must be 16 characters of [a-z0-9]",
            )
        )
    expected = _BOOTSTRAP_PREFIX + token_id
    if secret.metadata.name and secret.metadata.name != expected:
        errs.append(
            _invalid(
                "metadata.name",
                secret.metadata.name,
                f'must be "{expected}" for a bootstrap token with token-id "{token_id}"',
            )
        )
    return errs


# --------------------------------------------------------------------------------------
# Namespace, Node, ResourceQuota, Event, Lease
# --------------------------------------------------------------------------------------


def _namespace(ns: Msg, old: Msg | None) -> Errs:
    errs: Errs = []
    for i, finalizer in enumerate(ns.spec.finalizers):
        errs.extend(_check(f"spec.finalizers[{i}]", finalizer, names.qualified_name))
    return errs


def _node(node: Msg, old: Msg | None) -> Errs:
    spec = node.spec
    errs = _taints(spec.taints, "spec.taints")
    if spec.pod_cidr:
        _cidr("spec.podCIDR", spec.pod_cidr, errs)
    for i, cidr in enumerate(spec.pod_cidrs):
        _cidr(f"spec.podCIDRs[{i}]", cidr, errs)
    if spec.pod_cidr and spec.pod_cidrs and spec.pod_cidrs[0] != spec.pod_cidr:
        errs.append(_invalid("spec.podCIDRs[0]", spec.pod_cidrs[0], "must match `podCIDR`"))
    for field, json_name in (("capacity", "capacity"), ("allocatable", "allocatable")):
        _resource_list(getattr(node.status, field), f"status.{json_name}", errs, _any_resource_name)
    if old is not None:
        # Pods already have addresses from the node's range.
        if old.spec.pod_cidr and spec.pod_cidr != old.spec.pod_cidr:
            errs.append(
                _forbidden(
                    "spec.podCIDR", 'node updates may not change podCIDR except from "" to valid'
                )
            )
    return errs


def _any_resource_name(name: str) -> list[str]:
    return names.qualified_name(name)


def _taints(taints: Sequence[core_v1_pb2.Taint], path: str) -> Errs:
    errs: Errs = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(taints):
        here = f"{path}[{i}]"
        errs.extend(_check(f"{here}.key", taint.key, names.qualified_name))
        errs.extend(_check(f"{here}.value", taint.value, names.label_value))
        errs.extend(_one_of(f"{here}.effect", taint.effect, _TOLERATION_EFFECTS))
        if (taint.key, taint.effect) in seen:
            errs.append(
                FieldError(
                    here,
                    f"Duplicate value: {_show(taint)}: "
                    "taints must be unique by key and effect pair",
                )
            )
        seen.add((taint.key, taint.effect))
    return errs


_QUOTA_RESOURCES: Final = frozenset(
    {
        "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
        "persistentvolumeclaims", "services.nodeports", "services.loadbalancers",
        "cpu", "memory", "ephemeral-storage", "storage",
        "requests.cpu", "requests.memory", "requests.storage", "requests.ephemeral-storage",
        "limits.cpu", "limits.memory", "limits.ephemeral-storage",
    }
)  # fmt: skip
_QUOTA_SCOPES: Final = (
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
)


def _quota_resource_name(name: str) -> list[str]:
    if "/" in name:
        return names.qualified_name(name)  # count/deployments.apps, example.com/gpu
    if name in _QUOTA_RESOURCES or name.startswith(("hugepages-", "requests.hugepages-")):
        return []
    return ["must be a standard resource for quota"]


def _resource_quota(rq: Msg, old: Msg | None) -> Errs:
    errs: Errs = []
    _resource_list(rq.spec.hard, "spec.hard", errs, _quota_resource_name)
    for i, scope in enumerate(rq.spec.scopes):
        errs.extend(_one_of(f"spec.scopes[{i}]", scope, _QUOTA_SCOPES))
    for i, expr in enumerate(rq.spec.scope_selector.match_expressions):
        here = f"spec.scopeSelector.matchExpressions[{i}]"
        errs.extend(_one_of(f"{here}.scopeName", expr.scope_name, _QUOTA_SCOPES))
        errs.extend(
            _one_of(f"{here}.operator", expr.operator, ("In", "NotIn", "Exists", "DoesNotExist"))
        )
    return errs


_LIMIT_TYPES: Final = ("Container", "Pod", "PersistentVolumeClaim")


def _limit_range(lr: Msg, old: Msg | None) -> Errs:
    """Each item's bounds must nest: min <= defaultRequest <= default <= max."""
    errs: Errs = []
    for i, item in enumerate(lr.spec.limits):
        here = f"spec.limits[{i}]"
        errs.extend(_one_of(f"{here}.type", item.type, _LIMIT_TYPES))
        bounds = {
            field: _resource_list(getattr(item, attr), f"{here}.{field}", errs)
            for field, attr in (
                ("min", "min"),
                ("defaultRequest", "default_request"),
                ("default", "default"),
                ("max", "max"),
            )
        }
        if item.type == "Pod" and (item.default or item.default_request):
            errs.append(_forbidden(f"{here}.default", "may not be set for type Pod"))
        order = ("min", "defaultRequest", "default", "max")
        for lo_i, lo in enumerate(order):
            for hi in order[lo_i + 1 :]:
                for name, low in bounds[lo].items():
                    high = bounds[hi].get(name)
                    if high is not None and low > high:
                        errs.append(
                            _invalid(
                                f"{here}.{lo}[{name}]",
                                str(getattr(item, _snake(lo))[name]),
                                f"{lo} value {getattr(item, _snake(lo))[name]} must be less "
                                f"than or equal to {hi} value {getattr(item, _snake(hi))[name]}",
                            )
                        )
        _resource_list(item.max_limit_request_ratio, f"{here}.maxLimitRequestRatio", errs)
    return errs


def _snake(field: str) -> str:
    return "default_request" if field == "defaultRequest" else field


_MAX_REASON: Final = 128


def _event(ev: Msg, old: Msg | None) -> Errs:
    # Events are loose in Kubernetes too: anything may report one.
    errs: Errs = []
    if not ev.involved_object.kind:
        errs.append(_required("involvedObject.kind"))
    if not ev.involved_object.name:
        errs.append(_required("involvedObject.name"))
    if len(ev.reason.encode()) > _MAX_REASON:
        errs.append(_too_long("reason", _MAX_REASON))
    return errs


def _lease(lease: Msg, old: Msg | None) -> Errs:
    errs = _opt_at_least(lease.spec, "lease_duration_seconds", "spec.leaseDurationSeconds", 1)
    return errs + _opt_at_least(lease.spec, "lease_transitions", "spec.leaseTransitions", 0)


def _no_checks(obj: Msg, old: Msg | None) -> Errs:
    return []


# --------------------------------------------------------------------------------------
# PersistentVolume and PersistentVolumeClaim
# --------------------------------------------------------------------------------------

_ACCESS_MODES: Final = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
_PV_SOURCES: Final = ("host_path", "local", "nfs", "csi")


def _access_modes(modes: Sequence[str], path: str) -> Errs:
    if not modes:
        return [_required(path, "at least 1 access mode is required")]
    errs: Errs = []
    for i, mode in enumerate(modes):
        errs.extend(_one_of(f"{path}[{i}]", mode, _ACCESS_MODES))
    # ReadWriteOncePod promises a single pod; no other mode can be added to that.
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        errs.append(_forbidden(path, "may not use ReadWriteOncePod with other access modes"))
    return errs


def _pvc_spec(spec: core_v1_pb2.PersistentVolumeClaimSpec, path: str) -> Errs:
    errs = _access_modes(spec.access_modes, f"{path}.accessModes")
    requests_path = f"{path}.resources.requests"
    storage = spec.resources.requests.get("storage")
    if storage is None:
        errs.append(_required(f"{requests_path}[storage]"))
    else:
        _quantity(f"{requests_path}[storage]", storage, errs, positive=True)
    for name, value in spec.resources.requests.items():
        if name != "storage":
            _quantity(f"{requests_path}[{name}]", value, errs)
    for name, value in spec.resources.limits.items():
        _quantity(f"{path}.resources.limits[{name}]", value, errs)
    if spec.HasField("selector"):
        errs.extend(_label_selector(spec.selector, f"{path}.selector"))
    if spec.HasField("volume_mode"):
        errs.extend(_one_of(f"{path}.volumeMode", spec.volume_mode, ("Block", "Filesystem")))
    if spec.HasField("storage_class_name"):
        errs.extend(
            _check_set(f"{path}.storageClassName", spec.storage_class_name, names.dns1123_subdomain)
        )
    for field, json_name in (("data_source", "dataSource"), ("data_source_ref", "dataSourceRef")):
        if spec.HasField(field):
            ref = getattr(spec, field)
            for attr in ("kind", "name"):
                if not getattr(ref, attr):
                    errs.append(_required(f"{path}.{json_name}.{attr}"))
    return errs


def _pvc(pvc: Msg, old: Msg | None) -> Errs:
    errs = _pvc_spec(pvc.spec, "spec")
    if old is not None:
        errs.extend(_pvc_update(pvc.spec, old.spec))
    return errs


def _pvc_update(
    new: core_v1_pb2.PersistentVolumeClaimSpec, old: core_v1_pb2.PersistentVolumeClaimSpec
) -> Errs:
    """A claim may only grow (volume expansion) and get bound or classed once."""
    mine, theirs = type(new)(), type(old)()
    mine.CopyFrom(new)
    theirs.CopyFrom(old)
    mine.resources.requests.pop("storage", None)
    theirs.resources.requests.pop("storage", None)
    if not old.volume_name:
        mine.volume_name = ""  # the PV controller binds the claim once
    if not old.HasField("storage_class_name"):
        mine.ClearField("storage_class_name")  # a default class may be assigned later
    mine.ClearField("volume_attributes_class_name")
    theirs.ClearField("volume_attributes_class_name")
    errs: Errs = []
    if mine != theirs:
        errs.append(
            _forbidden(
                "spec",
                "spec is immutable after creation except resources.requests for bound claims",
            )
        )
    new_size, old_size = _size(new), _size(old)
    if new_size is not None and old_size is not None and new_size < old_size:
        errs.append(
            _forbidden(
                "spec.resources.requests[storage]", "field can not be less than previous value"
            )
        )
    return errs


def _size(spec: core_v1_pb2.PersistentVolumeClaimSpec) -> Fraction | None:
    try:
        return parse_quantity(spec.resources.requests["storage"])
    except (KeyError, QuantityError):
        return None


def _pv(pv: Msg, old: Msg | None) -> Errs:
    spec = pv.spec
    errs = _pv_capacity(spec.capacity)
    errs.extend(_access_modes(spec.access_modes, "spec.accessModes"))
    errs.extend(
        _one_of(
            "spec.persistentVolumeReclaimPolicy",
            spec.persistent_volume_reclaim_policy,
            ("Retain", "Delete", "Recycle"),
        )
    )
    found, present = _exactly_one(spec, _PV_SOURCES, "spec", **_ONE_VOLUME_TYPE)
    errs.extend(found)
    if "host_path" in present:
        errs.extend(_host_path_source(spec.host_path, "spec.hostPath"))
    if "local" in present:
        errs.extend(_absolute_path("spec.local.path", spec.local.path))
        # A local disk exists on one node; without affinity pods land anywhere.
        if not spec.node_affinity.HasField("required"):
            errs.append(_required("spec.nodeAffinity", "Local volume requires node affinity"))
    if "nfs" in present:
        errs.extend(_nfs_source(spec.nfs, "spec.nfs"))
    if "csi" in present:
        for attr, json_name in (("driver", "driver"), ("volume_handle", "volumeHandle")):
            if not getattr(spec.csi, attr):
                errs.append(_required(f"spec.csi.{json_name}"))
    if spec.node_affinity.HasField("required"):
        errs.extend(_node_selector(spec.node_affinity.required, "spec.nodeAffinity.required"))
    if spec.HasField("volume_mode"):
        errs.extend(_one_of("spec.volumeMode", spec.volume_mode, ("Block", "Filesystem")))
    errs.extend(
        _check_set("spec.storageClassName", spec.storage_class_name, names.dns1123_subdomain)
    )
    return errs


def _pv_capacity(capacity: Mapping[str, str]) -> Errs:
    if not capacity:
        return [_required("spec.capacity")]
    errs: Errs = []
    if "storage" not in capacity:
        errs.append(_required("spec.capacity[storage]"))
    for name, value in capacity.items():
        if name != "storage":
            errs.append(_unsupported(f"spec.capacity[{name}]", name, ("storage",)))
        else:
            _quantity("spec.capacity[storage]", value, errs)
    return errs


# --------------------------------------------------------------------------------------
# autoscaling/v2
# --------------------------------------------------------------------------------------

_METRIC_SOURCES: Final[Mapping[str, str]] = {
    "Object": "object",
    "Pods": "pods",
    "Resource": "resource",
    "ContainerResource": "container_resource",
    "External": "external",
}
_TARGET_FIELDS: Final[Mapping[str, tuple[str, str]]] = {
    "Utilization": ("average_utilization", "averageUtilization"),
    "Value": ("value", "value"),
    "AverageValue": ("average_value", "averageValue"),
}
_MAX_STABILIZATION_SECONDS: Final = 3600
_MAX_POLICY_PERIOD_SECONDS: Final = 1800


def _hpa(hpa: Msg, old: Msg | None) -> Errs:
    spec = hpa.spec
    errs = _cross_version_ref(spec.scale_target_ref, "spec.scaleTargetRef")
    if spec.HasField("min_replicas"):
        errs.extend(_at_least("spec.minReplicas", spec.min_replicas, 1))
    errs.extend(_at_least("spec.maxReplicas", spec.max_replicas, 1))
    # Only compared when maxReplicas is itself valid: one mistake, one message.
    if spec.HasField("min_replicas") and 1 <= spec.max_replicas < spec.min_replicas:
        errs.append(
            _invalid(
                "spec.maxReplicas",
                spec.max_replicas,
                "must be greater than or equal to `minReplicas`",
            )
        )
    for i, metric in enumerate(spec.metrics):
        errs.extend(_metric(metric, f"spec.metrics[{i}]"))
    if spec.HasField("behavior"):
        for field, json_name in (("scale_up", "scaleUp"), ("scale_down", "scaleDown")):
            if spec.behavior.HasField(field):
                errs.extend(
                    _scaling_rules(getattr(spec.behavior, field), f"spec.behavior.{json_name}")
                )
    return errs


def _cross_version_ref(ref: Msg, path: str) -> Errs:
    errs = [] if ref.kind else [_required(f"{path}.kind")]
    if not ref.name:
        errs.append(_required(f"{path}.name"))
    else:
        errs.extend(_check(f"{path}.name", ref.name, _path_segment_name))
    return errs


def _metric(metric: Msg, path: str) -> Errs:
    errs = _one_of(f"{path}.type", metric.type, tuple(_METRIC_SOURCES))
    expected = _METRIC_SOURCES.get(metric.type)
    for field in _present(metric, _METRIC_SOURCES.values()):
        if field != expected:
            errs.append(
                _forbidden(
                    f"{path}.{_json_name(metric, field)}",
                    "must populate the given metric source only",
                )
            )
    if expected is None:
        return errs
    here = f"{path}.{_json_name(metric, expected)}"
    if not metric.HasField(expected):
        return [*errs, _required(here, "must populate information for the given metric source")]
    return errs + _METRIC_CHECKS[expected](getattr(metric, expected), here)


def _metric_target(target: Msg, path: str) -> Errs:
    errs = _one_of(f"{path}.type", target.type, tuple(_TARGET_FIELDS))
    field_json = _TARGET_FIELDS.get(target.type)
    if field_json is not None and not target.HasField(field_json[0]):
        errs.append(
            _required(f"{path}.{field_json[1]}", f"must be set when `type` is '{target.type}'")
        )
    for field in ("value", "average_value"):
        if target.HasField(field):
            _quantity(
                f"{path}.{_json_name(target, field)}", getattr(target, field), errs, positive=True
            )
    if target.HasField("average_utilization"):
        errs.extend(_at_least(f"{path}.averageUtilization", target.average_utilization, 1))
    return errs


def _metric_name(metric: Msg, path: str) -> Errs:
    return [] if metric.name else [_required(f"{path}.name", "must specify a metric name")]


def _average_target(target: Msg, path: str) -> Errs:
    """Resource metrics are per-pod averages: a raw Value would mean nothing.

    A missing field for the Utilization or AverageValue types is reported by
    _metric_target already."""
    if target.type == "Value":
        return [_unsupported(f"{path}.type", target.type, ("Utilization", "AverageValue"))]
    if target.HasField("average_utilization") and target.HasField("average_value"):
        return [
            _forbidden(
                f"{path}.averageValue",
                "may not set both a target raw value and a target utilization",
            )
        ]
    return []


def _resource_metric(src: Msg, path: str) -> Errs:
    errs = (
        [_required(f"{path}.name", "must specify a resource name")]
        if not src.name
        else _check(f"{path}.name", src.name, _container_resource_name)
    )
    errs.extend(_metric_target(src.target, f"{path}.target"))
    return errs + _average_target(src.target, f"{path}.target")


def _container_resource_metric(src: Msg, path: str) -> Errs:
    errs = _resource_metric(src, path)
    if not src.container:
        errs.append(_required(f"{path}.container", "must specify a container"))
    return errs


def _pods_metric(src: Msg, path: str) -> Errs:
    errs = _metric_name(src.metric, f"{path}.metric") + _metric_target(src.target, f"{path}.target")
    if not src.target.HasField("average_value"):
        errs.append(
            _required(f"{path}.target.averageValue", "must specify a positive target averageValue")
        )
    return errs


def _value_or_average(target: Msg, path: str) -> Errs:
    if target.HasField("value") or target.HasField("average_value"):
        return []
    return [_required(f"{path}.value", "must set either a target value or averageValue")]


def _object_metric(src: Msg, path: str) -> Errs:
    errs = _cross_version_ref(src.described_object, f"{path}.describedObject")
    errs.extend(_metric_name(src.metric, f"{path}.metric"))
    errs.extend(_metric_target(src.target, f"{path}.target"))
    return errs + _value_or_average(src.target, f"{path}.target")


def _external_metric(src: Msg, path: str) -> Errs:
    errs = _metric_name(src.metric, f"{path}.metric") + _metric_target(src.target, f"{path}.target")
    if src.metric.HasField("selector"):
        errs.extend(_label_selector(src.metric.selector, f"{path}.metric.selector"))
    return errs + _value_or_average(src.target, f"{path}.target")


_METRIC_CHECKS: Final[Mapping[str, Callable[[Any, str], Errs]]] = {
    "object": _object_metric,
    "pods": _pods_metric,
    "resource": _resource_metric,
    "container_resource": _container_resource_metric,
    "external": _external_metric,
}


def _scaling_rules(rules: Msg, path: str) -> Errs:
    errs: Errs = []
    if rules.HasField("stabilization_window_seconds"):
        errs.extend(
            _in_range(
                f"{path}.stabilizationWindowSeconds",
                rules.stabilization_window_seconds,
                0,
                _MAX_STABILIZATION_SECONDS,
            )
        )
    if rules.HasField("select_policy"):
        errs.extend(
            _one_of(f"{path}.selectPolicy", rules.select_policy, ("Max", "Min", "Disabled"))
        )
    for i, policy in enumerate(rules.policies):
        here = f"{path}.policies[{i}]"
        errs.extend(_one_of(f"{here}.type", policy.type, ("Pods", "Percent")))
        errs.extend(_at_least(f"{here}.value", policy.value, 1))
        errs.extend(
            _in_range(f"{here}.periodSeconds", policy.period_seconds, 1, _MAX_POLICY_PERIOD_SECONDS)
        )
    if rules.HasField("tolerance"):
        _quantity(f"{path}.tolerance", rules.tolerance, errs)
    return errs


# --------------------------------------------------------------------------------------
# networking.k8s.io/v1
# --------------------------------------------------------------------------------------

_PATH_TYPES: Final = ("Exact", "Prefix", "ImplementationSpecific")


def _ingress(ing: Msg, old: Msg | None) -> Errs:
    spec = ing.spec
    errs: Errs = []
    if not spec.rules and not spec.HasField("default_backend"):
        errs.append(_invalid("spec", "", "either `defaultBackend` or `rules` must be specified"))
    if spec.HasField("ingress_class_name"):
        errs.extend(
            _check("spec.ingressClassName", spec.ingress_class_name, names.dns1123_subdomain)
        )
    if spec.HasField("default_backend"):
        errs.extend(_ingress_backend(spec.default_backend, "spec.defaultBackend"))
    for i, tls in enumerate(spec.tls):
        for j, host in enumerate(tls.hosts):
            errs.extend(_check(f"spec.tls[{i}].hosts[{j}]", host, _dns_subdomain_or_wildcard))
        errs.extend(
            _check_set(f"spec.tls[{i}].secretName", tls.secret_name, names.dns1123_subdomain)
        )
    for i, rule in enumerate(spec.rules):
        errs.extend(_ingress_rule(rule, f"spec.rules[{i}]"))
    return errs


def _ingress_rule(rule: Msg, path: str) -> Errs:
    errs: Errs = []
    if rule.host:
        if _is_ip(rule.host):
            errs.append(
                _invalid(f"{path}.host", rule.host, "must be a DNS name, not an IP address")
            )
        else:
            errs.extend(_check(f"{path}.host", rule.host, _dns_subdomain_or_wildcard))
    if not rule.HasField("http"):
        return errs
    if not rule.http.paths:
        errs.append(_required(f"{path}.http.paths"))
    for i, http_path in enumerate(rule.http.paths):
        here = f"{path}.http.paths[{i}]"
        errs.extend(_one_of(f"{here}.pathType", http_path.path_type, _PATH_TYPES))
        # Exact and Prefix match URL paths, which are absolute.
        if http_path.path_type in ("Exact", "Prefix") or http_path.path:
            if not http_path.path.startswith("/"):
                errs.append(_invalid(f"{here}.path", http_path.path, "must be an absolute path"))
        errs.extend(_ingress_backend(http_path.backend, f"{here}.backend"))
    return errs


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ingress_backend(backend: Msg, path: str) -> Errs:
    has_service, has_resource = backend.HasField("service"), backend.HasField("resource")
    if not has_service and not has_resource:
        return [_invalid(path, "", "one backend (`service` or `resource`) must be specified")]
    if has_service and has_resource:
        return [_invalid(path, "", "cannot set both `service` and `resource` backends")]
    if has_resource:
        ref, here = backend.resource, f"{path}.resource"
        return [_required(f"{here}.{attr}") for attr in ("kind", "name") if not getattr(ref, attr)]
    service, here = backend.service, f"{path}.service"
    errs = (
        [_required(f"{here}.name")]
        if not service.name
        else _check(f"{here}.name", service.name, names.dns1123_label)
    )
    port, port_path = service.port, f"{here}.port"
    if port.name and port.number:
        errs.append(_invalid(port_path, port, "cannot set both port name & port number"))
    elif port.name:
        errs.extend(_check(f"{port_path}.name", port.name, names.port_name))
    elif port.number:
        errs.extend(_port_number(f"{port_path}.number", port.number))
    else:
        errs.append(_required(port_path, "port name or number is required"))
    return errs


def _ingress_class(ic: Msg, old: Msg | None) -> Errs:
    spec = ic.spec
    errs: Errs = []
    if not spec.controller:
        errs.append(_required("spec.controller"))
    elif "/" not in spec.controller:
        errs.append(
            _invalid(
                "spec.controller",
                spec.controller,
                'must be a domain-prefixed path (such as "acme.io/foo")',
            )
        )
    if spec.HasField("parameters"):
        params, here = spec.parameters, "spec.parameters"
        errs.extend(
            _required(f"{here}.{attr}") for attr in ("kind", "name") if not getattr(params, attr)
        )
        scope = params.scope if params.HasField("scope") else "Cluster"
        errs.extend(_one_of(f"{here}.scope", scope, ("Cluster", "Namespace")))
        # A namespaced parameters object needs its namespace; a cluster one has none.
        if scope == "Namespace" and not params.namespace:
            errs.append(_required(f"{here}.namespace", "`parameters.scope` is set to 'Namespace'"))
        if scope == "Cluster" and params.HasField("namespace"):
            errs.append(_forbidden(f"{here}.namespace", "`parameters.scope` is set to 'Cluster'"))
    if old is not None and spec.controller != old.spec.controller:
        errs.append(_immutable("spec.controller", spec.controller))
    return errs


def _network_policy(np: Msg, old: Msg | None) -> Errs:
    spec = np.spec
    errs = _label_selector(spec.pod_selector, "spec.podSelector")
    for i, policy_type in enumerate(spec.policy_types):
        errs.extend(_one_of(f"spec.policyTypes[{i}]", policy_type, ("Ingress", "Egress")))
    if len(spec.policy_types) > 2:
        errs.append(
            _invalid(
                "spec.policyTypes",
                list(spec.policy_types),
                "may not specify more than two policyTypes",
            )
        )
    for i, ingress_rule in enumerate(spec.ingress):
        here = f"spec.ingress[{i}]"
        errs.extend(_np_ports(ingress_rule.ports, f"{here}.ports"))
        for j, peer in enumerate(getattr(ingress_rule, "from")):
            errs.extend(_np_peer(peer, f"{here}.from[{j}]"))
    for i, egress_rule in enumerate(spec.egress):
        here = f"spec.egress[{i}]"
        errs.extend(_np_ports(egress_rule.ports, f"{here}.ports"))
        for j, peer in enumerate(egress_rule.to):
            errs.extend(_np_peer(peer, f"{here}.to[{j}]"))
    return errs


def _np_ports(ports: Sequence[Msg], path: str) -> Errs:
    errs: Errs = []
    for i, port in enumerate(ports):
        here = f"{path}[{i}]"
        if port.HasField("protocol"):
            errs.extend(_one_of(f"{here}.protocol", port.protocol, _PROTOCOLS))
        numeric: int | None = None
        if port.HasField("port"):
            errs.extend(_handler_port(f"{here}.port", port.port))
            numeric = int(port.port) if port.port.isdigit() else None
        if port.HasField("end_port"):
            errs.extend(_end_port(port, numeric, here))
    return errs


def _end_port(port: Msg, numeric: int | None, path: str) -> Errs:
    here = f"{path}.endPort"
    if not port.HasField("port"):
        return [_required(f"{path}.port", "must be specified when `endPort` is specified")]
    if numeric is None:
        return [_forbidden(here, "may not be specified when `port` is non-numeric")]
    if port.end_port < numeric:
        return [_invalid(here, port.end_port, "must be greater than or equal to `port`")]
    return _port_number(here, port.end_port)


def _np_peer(peer: Msg, path: str) -> Errs:
    selectors = [f for f in ("pod_selector", "namespace_selector") if peer.HasField(f)]
    has_block = peer.HasField("ip_block")
    if not selectors and not has_block:
        return [_required(path, "must specify a peer")]
    if selectors and has_block:
        return [_forbidden(path, "may not specify both ipBlock and another peer")]
    errs: Errs = []
    for field in selectors:
        errs.extend(_label_selector(getattr(peer, field), f"{path}.{_json_name(peer, field)}"))
    if has_block:
        errs.extend(_ip_block(peer.ip_block, f"{path}.ipBlock"))
    return errs


def _ip_block(block: Msg, path: str) -> Errs:
    errs: Errs = []
    if not block.cidr:
        return [_required(f"{path}.cidr")]
    cidr = _cidr(f"{path}.cidr", block.cidr, errs)
    for i, text in enumerate(getattr(block, "except")):
        here = f"{path}.except[{i}]"
        excepted = _cidr(here, text, errs)
        if cidr is None or excepted is None:
            continue
        # An exception outside the block (or all of it) excludes nothing sensible.
        if excepted.version != cidr.version or not excepted.subnet_of(cidr) or excepted == cidr:  # type: ignore[arg-type]
            errs.append(_invalid(here, text, "must be a strict subset of `cidr`"))
    return errs


# --------------------------------------------------------------------------------------
# rbac.authorization.k8s.io/v1
# --------------------------------------------------------------------------------------

_RBAC_GROUP: Final = "rbac.authorization.k8s.io"


def _policy_rules(rules: Sequence[Msg], *, namespaced: bool) -> Errs:
    errs: Errs = []
    for i, rule in enumerate(rules):
        here = f"rules[{i}]"
        if not rule.verbs:
            errs.append(_required(f"{here}.verbs", "verbs must contain at least one value"))
        if rule.non_resource_urls:
            if namespaced:
                errs.append(
                    _invalid(
                        f"{here}.nonResourceURLs",
                        list(rule.non_resource_urls),
                        "namespaced rules cannot apply to non-resource URLs",
                    )
                )
            if rule.api_groups or rule.resources or rule.resource_names:
                errs.append(
                    _invalid(
                        f"{here}.nonResourceURLs",
                        list(rule.non_resource_urls),
                        "rules cannot apply to both regular resources and non-resource URLs",
                    )
                )
            continue
        if not rule.api_groups:
            errs.append(
                _required(f"{here}.apiGroups", "resource rules must supply at least one api group")
            )
        if not rule.resources:
            errs.append(
                _required(f"{here}.resources", "resource rules must supply at least one resource")
            )
    return errs


def _role(role: Msg, old: Msg | None) -> Errs:
    return _policy_rules(role.rules, namespaced=True)


def _cluster_role(role: Msg, old: Msg | None) -> Errs:
    errs = _policy_rules(role.rules, namespaced=False)
    if role.HasField("aggregation_rule"):
        selectors = role.aggregation_rule.cluster_role_selectors
        if not selectors:
            errs.append(
                _required(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                )
            )
        for i, sel in enumerate(selectors):
            errs.extend(_label_selector(sel, f"aggregationRule.clusterRoleSelectors[{i}]"))
    return errs


def _role_ref(ref: Msg, kinds: Sequence[str]) -> Errs:
    errs = _one_of("roleRef.apiGroup", ref.api_group, (_RBAC_GROUP,))
    errs.extend(_one_of("roleRef.kind", ref.kind, kinds))
    errs.extend(
        [_required("roleRef.name")]
        if not ref.name
        else _check("roleRef.name", ref.name, _path_segment_name)
    )
    return errs


def _subject(subject: Msg, path: str, *, namespaced: bool) -> Errs:
    errs = [] if subject.name else [_required(f"{path}.name")]
    if subject.kind == "ServiceAccount":
        errs.extend(_check_set(f"{path}.name", subject.name, names.dns1123_subdomain))
        errs.extend(_one_of(f"{path}.apiGroup", subject.api_group, ("",), required=False))
        # A ClusterRoleBinding has no namespace of its own to default to.
        if not namespaced and not subject.namespace:
            errs.append(_required(f"{path}.namespace"))
    elif subject.kind in ("User", "Group"):
        if subject.api_group != _RBAC_GROUP:
            errs.append(_unsupported(f"{path}.apiGroup", subject.api_group, (_RBAC_GROUP,)))
    else:
        errs.append(_unsupported(f"{path}.kind", subject.kind, ("ServiceAccount", "User", "Group")))
    return errs


def _binding(binding: Msg, old: Msg | None, *, namespaced: bool) -> Errs:
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    errs = _role_ref(binding.role_ref, kinds)
    for i, subject in enumerate(binding.subjects):
        errs.extend(_subject(subject, f"subjects[{i}]", namespaced=namespaced))
    # Changing what a binding grants in place would let an editor of bindings
    # escalate; Kubernetes requires delete and re-create.
    if old is not None and binding.role_ref != old.role_ref:
        errs.append(_invalid("roleRef", binding.role_ref, "cannot change roleRef"))
    return errs


def _role_binding(binding: Msg, old: Msg | None) -> Errs:
    return _binding(binding, old, namespaced=True)


def _cluster_role_binding(binding: Msg, old: Msg | None) -> Errs:
    return _binding(binding, old, namespaced=False)


# --------------------------------------------------------------------------------------
# scheduling.k8s.io/v1 and certificates.k8s.io/v1
# --------------------------------------------------------------------------------------

_HIGHEST_USER_PRIORITY: Final = 1_000_000_000
_SYSTEM_PRIORITY_PREFIX: Final = "system-"


def _priority_class(pc: Msg, old: Msg | None) -> Errs:
    errs: Errs = []
    name = pc.metadata.name
    if name.startswith(_SYSTEM_PRIORITY_PREFIX):
        # Only the built-in system classes, exactly as built in.
        if SYSTEM_PRIORITY_CLASSES.get(name) != pc.value or pc.global_default:
            errs.append(
                _forbidden(
                    "metadata.name",
                    f"priority class names with '{_SYSTEM_PRIORITY_PREFIX}' prefix are reserved",
                )
            )
    elif pc.value > _HIGHEST_USER_PRIORITY:
        errs.append(
            _forbidden(
                "value",
                f"maximum allowed value of a user defined priority is {_HIGHEST_USER_PRIORITY}",
            )
        )
    if pc.HasField("preemption_policy"):
        errs.extend(
            _one_of("preemptionPolicy", pc.preemption_policy, ("PreemptLowerPriority", "Never"))
        )
    if old is not None:
        # Running pods carry the number they were admitted with.
        if pc.value != old.value:
            errs.append(_forbidden("value", "may not be changed in an update."))
        if pc.preemption_policy != old.preemption_policy:
            errs.append(_immutable("preemptionPolicy", pc.preemption_policy))
    return errs


_KEY_USAGES: Final = (
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
)  # fmt: skip
_MIN_CSR_SECONDS: Final = 600


def _csr(csr: Msg, old: Msg | None) -> Errs:
    spec = csr.spec
    errs = _csr_request(spec.request, "spec.request")
    errs.extend(_signer_name(spec.signer_name, "spec.signerName"))
    if not spec.usages:
        errs.append(_required("spec.usages"))
    seen: set[str] = set()
    for i, usage in enumerate(spec.usages):
        here = f"spec.usages[{i}]"
        errs.extend(_one_of(here, usage, _KEY_USAGES))
        if usage in seen:
            errs.append(_duplicate(here, usage))
        seen.add(usage)
    if spec.HasField("expiration_seconds") and spec.expiration_seconds < _MIN_CSR_SECONDS:
        errs.append(
            _invalid(
                "spec.expirationSeconds",
                spec.expiration_seconds,
                "may not specify a duration less than 600 seconds (10 minutes)",
            )
        )
    # Approvers judged this request; what they approved must be what is signed.
    if old is not None and spec != old.spec:
        errs.append(_immutable("spec", spec))
    return errs


def _csr_request(request: bytes, path: str) -> Errs:
    if not request:
        return [_required(path)]
    try:
        parsed = x509.load_pem_x509_csr(request)
    except ValueError as exc:
        return [_invalid(path, request, f"must be a PEM-encoded CERTIFICATE REQUEST: {exc}")]
    try:
        valid = parsed.is_signature_valid
    except Exception:  # unsupported algorithms raise various errors
        valid = False
    return [] if valid else [_invalid(path, request, "the request's signature does not verify")]


def _signer_name(name: str, path: str) -> Errs:
    if not name:
        return [_required(path)]
    domain, slash, rest = name.partition("/")
    if not slash or not rest or names.dns1123_subdomain(domain):
        return [
            _invalid(
                path,
                name,
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            )
        ]
    if name == "kubernetes.io/legacy-unknown":
        return [_invalid(path, name, "the legacy signerName is not allowed via this API version")]
    return []


def _controller_revision(cr: Msg, old: Msg | None) -> Errs:
    errs = _at_least("revision", cr.revision, 0)
    if old is not None and cr.data != old.data:
        errs.append(_immutable("data", "<revision data>"))
    return errs


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------

_KINDS: Final[Mapping[str, Callable[[Any, Any], Errs]]] = {
    "Pod": _pod,
    "Deployment": _deployment,
    "ReplicaSet": _replicaset,
    "StatefulSet": _statefulset,
    "DaemonSet": _daemonset,
    "ControllerRevision": _controller_revision,
    "Job": _job,
    "CronJob": _cronjob,
    "Service": _service,
    "Endpoints": _endpoints,
    "ConfigMap": _config_map,
    "Secret": _secret,
    "ServiceAccount": _no_checks,
    "Namespace": _namespace,
    "Node": _node,
    "PersistentVolume": _pv,
    "PersistentVolumeClaim": _pvc,
    "ResourceQuota": _resource_quota,
    "LimitRange": _limit_range,
    "Event": _event,
    "Lease": _lease,
    "HorizontalPodAutoscaler": _hpa,
    "Ingress": _ingress,
    "IngressClass": _ingress_class,
    "NetworkPolicy": _network_policy,
    "Role": _role,
    "ClusterRole": _cluster_role,
    "RoleBinding": _role_binding,
    "ClusterRoleBinding": _cluster_role_binding,
    "PriorityClass": _priority_class,
    "CertificateSigningRequest": _csr,
}
