"""kubectl's client-side three-way apply merge, on plain JSON-like dicts.

Three inputs: what the user applied last time (``last_applied``, from the
last-applied annotation), what they apply now (``new``) and what the server
holds (``live``). The rule, field by field:

- a field in ``new`` is set on live (dicts merge recursively; ``None`` deletes);
- a field in ``last_applied`` but not in ``new`` was removed by the user, so it
  is deleted from live;
- a field in live that was never in ``last_applied`` belongs to someone else
  (defaults, controllers, a scaler, status) and is kept.

Lists named in MERGE_KEYS whose items are dicts with a unique merge key are
merged item by item under the same rule, as strategic merge patch does for
containers, env, volumes and the like. All other values, including lists of
scalars and lists without a usable key, are replaced by ``new``'s value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

__all__ = ["MERGE_KEYS", "json_equal", "three_way_merge"]

# Field name -> candidate merge keys, tried in order; the first that every
# item carries (uniquely) is used. None: always replace the list wholesale.
# From the patchMergeKey tags of Kubernetes' core types; "ports" is keyed by
# containerPort in a container and by port in a Service.
MERGE_KEYS: Final[Mapping[str, tuple[str, ...] | None]] = MappingProxyType(
    {
        "containers": ("name",),
        "initContainers": ("name",),
        "ephemeralContainers": ("name",),
        "env": ("name",),
        "volumes": ("name",),
        "volumeMounts": ("mountPath",),
        "volumeDevices": ("devicePath",),
        "ports": ("containerPort", "port"),
        "imagePullSecrets": ("name",),
        "hostAliases": ("ip",),
        "conditions": ("type",),
        "ownerReferences": ("uid",),
        "readinessGates": ("conditionType",),
        "tolerations": None,
    }
)

JSONDict = dict[str, Any]


def three_way_merge(
    last_applied: Mapping[str, Any] | None, new: Mapping[str, Any], live: Mapping[str, Any]
) -> JSONDict:
    """Return the object to write. Inputs are never mutated; the result shares nothing with them."""
    return _merge_dicts(last_applied, new, live)


def _merge_dicts(last: object, new: Mapping[str, Any], live: object) -> JSONDict:
    last_map: Mapping[str, Any] = last if isinstance(last, Mapping) else {}
    live_map: Mapping[str, Any] = live if isinstance(live, Mapping) else {}
    result = {key: copy.deepcopy(value) for key, value in live_map.items()}
    for key in last_map:
        if key not in new:
            result.pop(key, None)  # the user removed it from their manifest
    for key, value in new.items():
        if value is None:
            result.pop(key, None)  # an explicit null asks for deletion
        else:
            result[key] = _merge_value(key, last_map.get(key), value, live_map.get(key))
    return result


def _merge_value(field: str, last: object, new: object, live: object) -> Any:
    if isinstance(new, Mapping):
        # Merged even when live has nothing there, so nulls inside are dropped.
        return _merge_dicts(last, new, live)
    if isinstance(new, list):
        key = _merge_key(field, new, live)
        if key is not None:
            return _merge_keyed_lists(key, last, new, live)
    return _without_nulls(new)


def _merge_key(field: str, new: list[Any], live: object) -> str | None:
    candidates = MERGE_KEYS.get(field)
    if not candidates:
        return None
    lists = [new, live] if isinstance(live, list) else [new]
    for candidate in candidates:
        if all(_keyed_uniquely(items, candidate) for items in lists):
            return candidate
    # Items without the key, or duplicates, cannot be matched up reliably.
    return None


def _keyed_uniquely(items: Sequence[Any], key: str) -> bool:
    seen: set[object] = set()
    for item in items:
        if not isinstance(item, Mapping):
            return False
        value = item.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int) or value in seen:
            return False
        seen.add(value)
    return True


def _index(items: object, key: str) -> dict[object, Mapping[str, Any]]:
    # last_applied may be malformed or differently shaped; index what can be.
    if not isinstance(items, list):
        return {}
    return {item[key]: item for item in items if isinstance(item, Mapping) and key in item}


def _merge_keyed_lists(key: str, last: object, new: list[Any], live: object) -> list[Any]:
    last_items = _index(last, key)
    live_items = _index(live, key)
    new_keys = {item[key] for item in new}
    merged: list[Any] = [
        _merge_dicts(last_items.get(item[key]), item, live_items.get(item[key])) for item in new
    ]
    # Items only in live were added by someone else: keep them, after new's.
    # Items that were last applied but are gone from new were removed by the user.
    merged.extend(
        copy.deepcopy(item)
        for item_key, item in live_items.items()
        if item_key not in new_keys and item_key not in last_items
    )
    return merged


def _without_nulls(value: Any) -> Any:
    """Deep copy, dropping null-valued dict entries (a null means "absent")."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return copy.deepcopy(value)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it, for deciding that an apply changes nothing.

    1 and 1.0 are the same JSON number, but true is not 1 (Python says it is);
    dict order is irrelevant, list order is not; tuples compare as lists.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
