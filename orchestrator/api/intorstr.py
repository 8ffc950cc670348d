"""IntOrString values: rollout surge/unavailability ("25%" or 3) and ports (8080 or "http").

Kubernetes keeps these as a tagged union. Over protobuf and YAML the tag can
be lost, so the digit string "3" is accepted here as the integer 3; a
percentage must still be spelt exactly ^[0-9]+%$.
"""

from __future__ import annotations

import re
from typing import Final

from orchestrator.api import names

__all__ = [
    "MAX_INT_OR_STRING",
    "IntOrStringError",
    "is_int_or_string_valid",
    "parse_int_or_percent",
    "parse_port",
    "resolve_scaled",
]

# IntOrString's integer is an int32 in Kubernetes; bounding it also keeps
# int() from being handed thousands of digits.
MAX_INT_OR_STRING: Final = 2**31 - 1
_MAX_PORT: Final = 65535

_PERCENT_RE: Final = re.compile("[0-9]+%")
_DIGITS_RE: Final = re.compile("[0-9]+")

_EXPECTED: Final = "expected a non-negative integer or a percentage such as '25%' (^[0-9]+%$)"


class IntOrStringError(ValueError):
    """An int-or-string value, or a port, that cannot be used."""


def _invalid(value: object, reason: str = _EXPECTED) -> IntOrStringError:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return IntOrStringError(f"invalid value {shown}: {reason}")


def _bounded_int(text: str, value: object) -> int:
    # Compare lengths first so int() never parses an absurdly long string.
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_INT_OR_STRING)) or int(digits) > MAX_INT_OR_STRING:
        raise _invalid(value, f"must be at most {MAX_INT_OR_STRING}")
    return int(digits)


def parse_int_or_percent(value: str | int) -> tuple[int, bool]:
    """Return (number, is_percent): 3 -> (3, False), "3" -> (3, False), "25%" -> (25, True)."""
    if isinstance(value, bool):
        # bool is an int subclass; "maxSurge: true" is a mistake, not 1.
        raise _invalid(value, "expected an integer or a percentage, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise _invalid(value, "must not be negative")
        if value > MAX_INT_OR_STRING:
            raise _invalid(value, f"must be at most {MAX_INT_OR_STRING}")
        return value, False
    if not isinstance(value, str):
        raise _invalid(value, f"expected an integer or a string, not {type(value).__name__}")
    if _PERCENT_RE.fullmatch(value):
        return _bounded_int(value[:-1], value), True
    if _DIGITS_RE.fullmatch(value):
        return _bounded_int(value, value), False
    if value.startswith("-"):
        raise _invalid(value, "must not be negative; " + _EXPECTED)
    raise _invalid(value)


def is_int_or_string_valid(s: str | int) -> bool:
    """True when ``s`` is a non-negative integer, a digit string or a percentage."""
    try:
        parse_int_or_percent(s)
    except IntOrStringError:
        return False
    return True


def resolve_scaled(value: str | int | None, total: int, round_up: bool, default: str) -> int:
    """Resolve an absolute count or a percentage of ``total``.

    As Kubernetes' GetScaledValueFromIntOrPercent: "25%" of 10 is 3 rounded up
    (maxSurge) and 2 rounded down (maxUnavailable); an integer is used as is.
    ``default`` applies when the field is unset (None).
    """
    number, is_percent = parse_int_or_percent(default if value is None else value)
    if not is_percent:
        return number
    # Integer arithmetic rather than Go's float math.Ceil/Floor: identical for
    # every realistic input and exact for the rest.
    scaled = number * total
    return -(-scaled // 100) if round_up else scaled // 100


def parse_port(s: str | int) -> int | str:
    """A port number (1-65535) or a port name (IANA_SVC_NAME), e.g. a targetPort.

    Raises IntOrStringError saying why the value is neither.
    """
    if isinstance(s, bool):
        raise _port_error(s, ["expected a port number or name, not a boolean"])
    if isinstance(s, int):
        return _port_number(s, s)
    if not isinstance(s, str):
        raise _port_error(s, [f"expected a port number or name, not {type(s).__name__}"])
    if _DIGITS_RE.fullmatch(s):
        # Six significant digits already exceed 65535; checking the length
        # first keeps int() from parsing an absurdly long string.
        digits = s.lstrip("0") or "0"
        return _port_number(int(digits) if len(digits) <= 6 else _MAX_PORT + 1, s)
    problems = names.port_name(s)
    if problems:
        raise _port_error(s, problems)
    return s


def _port_number(number: int, raw: object) -> int:
    if not 1 <= number <= _MAX_PORT:
        raise _port_error(raw, [f"must be between 1 and {_MAX_PORT}, inclusive"])
    return number


def _port_error(raw: object, problems: list[str]) -> IntOrStringError:
    shown = f'"{raw}"' if isinstance(raw, str) else str(raw)
    return IntOrStringError(f"invalid port {shown}: " + "; ".join(problems))
