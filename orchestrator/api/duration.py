"""Go-style durations, as Kubernetes' flags and kubectl take them: `90s`,
`1h30m`, `250ms`, or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str) -> float:
    """Seconds in `value`; ValueError naming it when it is not a duration."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f'invalid duration "{value}": use e.g. 30s, 5m, 24h')
    return sum(float(n) * _UNITS[u] for n, u in parts)
