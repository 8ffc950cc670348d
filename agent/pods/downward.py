"""The downward API: a pod's own fields and resources as strings (pure).

Shared by environment variables (agent/pods/sync.py) and downwardAPI and
projected volumes (agent/volumes.py), so both render a field the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from orchestrator.api.quantity import QuantityError, parse_quantity

_SUBSCRIPTED = re.compile(r"metadata\.(labels|annotations)\[['\"](.+)['\"]\]")
_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


class ConfigError(Exception):
    """The container's configuration cannot be resolved (CreateContainerConfigError)."""


def go_quote(value: str) -> str:
    """Go's %q of a string: the labels and annotations files are written with
    it upstream, and programs parse them expecting exactly that quoting."""
    out = ['"']
    for ch in value:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """`key="value"` lines in key order, as the kubelet's fieldpath.FormatMap."""
    return "\n".join(f"{k}={go_quote(v)}" for k, v in sorted(values.items()))


def field_value(pod: Any, path: str, pod_ip: str, host_ip: str) -> str:
    """The value of a fieldRef. The apiserver restricts which paths env vars
    and volumes may name; every path either may name is rendered here."""
    m = pod.metadata
    simple = {
        "metadata.name": m.name,
        "metadata.namespace": m.namespace,
        "metadata.uid": m.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = _SUBSCRIPTED.fullmatch(path)
    if match:
        source = m.labels if match.group(1) == "labels" else m.annotations
        return str(source.get(match.group(2), ""))
    if path == "metadata.labels":
        return format_map(m.labels)
    if path == "metadata.annotations":
        return format_map(m.annotations)
    raise ConfigError(f'unsupported fieldRef "{path}"')


def resource_value(pod: Any, container: Any, ref: Any, node_cpus: int, node_memory: int) -> str:
    """A resourceFieldRef: the named container's (or `container`'s) limit or
    request, divided by the divisor and rounded up, as the kubelet does. An
    unset limit is the node's capacity; an unset request is 0."""
    target = container
    if ref.container_name:
        target = None
        for c in (*pod.spec.containers, *pod.spec.init_containers):
            if c.name == ref.container_name:
                target = c
                break
        if target is None:
            raise ConfigError(
                f'resourceFieldRef "{ref.resource}": no container named "{ref.container_name}"'
            )
    if target is None:
        raise ConfigError(f'resourceFieldRef "{ref.resource}" needs a containerName')
    which, _, resource = ref.resource.partition(".")
    if which not in ("limits", "requests"):
        raise ConfigError(f'unsupported resourceFieldRef "{ref.resource}"')
    values = target.resources.limits if which == "limits" else target.resources.requests
    try:
        divisor = parse_quantity(ref.divisor) if ref.divisor else parse_quantity("1")
        if resource == "cpu":
            raw = values.get("cpu")
            amount = (
                parse_quantity(raw)
                if raw
                else parse_quantity(node_cpus if which == "limits" else 0)
            )
        elif resource in ("memory", "ephemeral-storage"):
            raw = values.get(resource)
            amount = (
                parse_quantity(raw)
                if raw
                else parse_quantity(node_memory if which == "limits" else 0)
            )
        else:
            raise ConfigError(f'unsupported resourceFieldRef "{ref.resource}"')
    except QuantityError as exc:
        raise ConfigError(f'resourceFieldRef "{ref.resource}": {exc}') from None
    if divisor <= 0:
        raise ConfigError(f'resourceFieldRef "{ref.resource}": invalid divisor "{ref.divisor}"')
    return str(math.ceil(amount / divisor))
