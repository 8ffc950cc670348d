"""Kubernetes resource quantities ("500m", "1.5Gi", "1e3"), parsed exactly.

Quantities are kept as ``Fraction`` so that "0.1" + "0.2" is exactly "0.3" and
"1Gi" is exactly 1073741824: resource accounting (requests against node
capacity, quota) must never drift because of binary floating point.

Grammar (as Kubernetes' resource.Quantity)::

    <quantity>   ::= <sign>? <number> <suffix>
    <number>     ::= <digits> | <digits> "." <digits>? | "." <digits>
    <suffix>     ::= <binarySI> | <decimalSI> | ("e" | "E") <sign>? <digits>
    <binarySI>   ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>  ::= n | u | m | "" | k | M | G | T | P | E
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction
from typing import Final

__all__ = [
    "QuantityError",
    "QuantityLike",
    "cpu_millis",
    "format_bytes",
    "format_cpu_millis",
    "format_quantity",
    "memory_bytes",
    "milli_value",
    "parse_quantity",
    "value",
]

QuantityLike = Fraction | str | int | float


class QuantityError(ValueError):
    """A quantity that does not follow the Kubernetes quantity format."""


_BINARY_SUFFIXES: Final[dict[str, int]] = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}

# Decimal suffixes by power of ten; the empty suffix is 10**0.
_DECIMAL_EXPONENTS: Final[dict[str, int]] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_SUFFIX_BY_EXPONENT: Final[dict[int, str]] = {e: s for s, e in _DECIMAL_EXPONENTS.items()}

# fullmatch() is used, so no anchors; [0-9] rather than \d so that non-ASCII
# digits (which Python's \d accepts) are rejected as Kubernetes rejects them.
# "E" alone is the exa suffix; "E3" backtracks into the exponent branch.
_QUANTITY_RE: Final = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?[0-9]+))?"
)

# Bounds that keep a hostile value ("1e999999999", a megabyte of digits) from
# turning exact arithmetic into a denial of service. Real quantities are far
# smaller: Kubernetes itself stores them in an int64 where it can.
_MAX_DIGITS: Final = 64
_MAX_EXPONENT: Final = 64

_FORMAT_HINT: Final = "expected a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, ...)"


def _invalid(raw: object, reason: str = _FORMAT_HINT) -> QuantityError:
    return QuantityError(f'quantity "{raw}" is invalid: {reason}')


def parse_quantity(s: str | int | float) -> Fraction:
    """Parse a quantity exactly; YAML may hand us ints and floats as well as strings."""
    if isinstance(s, bool):
        # bool is an int subclass; "cpu: true" is a mistake, not the number 1.
        raise _invalid(s, "expected a number, not a boolean")
    if isinstance(s, int):
        return Fraction(s)
    if isinstance(s, float):
        return _parse_float(s)
    if not isinstance(s, str):
        raise _invalid(s, f"expected a string or a number, not {type(s).__name__}")
    return _parse_string(s)


def _parse_float(f: float) -> Fraction:
    if not math.isfinite(f):
        raise _invalid(f, "expected a finite number")
    # repr() is the shortest string that round-trips, so 0.1 becomes exactly
    # 1/10 (what the manifest author wrote) rather than the binary float.
    return Fraction(repr(f))


@functools.lru_cache(maxsize=4096)
def _parse_string(s: str) -> Fraction:
    """Cached: a cluster uses a handful of distinct quantities ("100m", "128Mi")
    millions of times, and Fractions are immutable. Errors are not cached."""
    match = _QUANTITY_RE.fullmatch(s)
    if match is None:
        raise _invalid(s)
    int_part, frac_part = match["int"], match["frac"] or ""
    if not int_part and not frac_part:
        raise _invalid(s)  # "", "Mi", ".", "+"
    if len(int_part) + len(frac_part) > _MAX_DIGITS:
        raise _invalid(s, f"too many digits (at most {_MAX_DIGITS})")
    number = Fraction(int(int_part or "0")) + Fraction(int(frac_part or "0"), 10 ** len(frac_part))
    if match["sign"] == "-":
        number = -number
    return number * _multiplier(s, match["suffix"], match["exp"])


def _multiplier(raw: str, suffix: str | None, exponent: str | None) -> Fraction:
    if exponent is not None:
        exp = int(exponent)
        if abs(exp) > _MAX_EXPONENT:
            raise _invalid(raw, f"exponent out of range (at most {_MAX_EXPONENT} in magnitude)")
        return Fraction(10) ** exp
    suffix = suffix or ""
    if suffix in _BINARY_SUFFIXES:
        return Fraction(_BINARY_SUFFIXES[suffix])
    return Fraction(10) ** _DECIMAL_EXPONENTS[suffix]


def _as_fraction(q: QuantityLike) -> Fraction:
    return q if isinstance(q, Fraction) else parse_quantity(q)


def _round_away_from_zero(x: Fraction) -> int:
    # Kubernetes' ScaledValue rounds any lost fraction away from zero, so a
    # request of "0.1m" CPU still counts as 1 milli rather than vanishing.
    return math.ceil(x) if x >= 0 else math.floor(x)


def milli_value(q: QuantityLike) -> int:
    """Value in thousandths, rounded up (away from zero), as Kubernetes' MilliValue."""
    return _round_away_from_zero(_as_fraction(q) * 1000)


def value(q: QuantityLike) -> int:
    """Value in units, rounded up (away from zero), as Kubernetes' Value."""
    return _round_away_from_zero(_as_fraction(q))


def cpu_millis(s: QuantityLike) -> int:
    """CPU quantity in millicores: "500m" -> 500, "2" -> 2000, "0.1" -> 100."""
    return milli_value(s)


def memory_bytes(s: QuantityLike) -> int:
    """Memory quantity in bytes: "1Gi" -> 1073741824, "1G" -> 1000000000."""
    return value(s)


def format_quantity(q: QuantityLike, *, binary: bool = False) -> str:
    """Canonical display form, as Kubernetes prints a quantity back.

    Decimal form uses the largest SI suffix that keeps an integer ("1500m",
    "2", "3k"); values finer than 1n are rounded up to 1n. With ``binary``
    (memory), integers of at least 1024 use the largest exact binary suffix
    ("1536Mi"); anything else falls back to the decimal form, as Kubernetes
    does for BinarySI quantities.
    """
    amount = _as_fraction(q)
    if binary and amount.denominator == 1 and abs(amount) >= 1024:
        return format_bytes(int(amount))
    return _format_decimal(amount)


def _format_decimal(amount: Fraction) -> str:
    scaled = _round_away_from_zero(amount * 10**9)
    if scaled == 0:
        return "0"
    exponent = -9
    while scaled % 1000 == 0 and exponent < max(_DECIMAL_SUFFIX_BY_EXPONENT):
        scaled //= 1000
        exponent += 3
    return f"{scaled}{_DECIMAL_SUFFIX_BY_EXPONENT[exponent]}"


def format_cpu_millis(m: int) -> str:
    """Millicores for display: 500 -> "500m", 2000 -> "2", 1500 -> "1500m"."""
    if m % 1000 == 0:
        return str(m // 1000)
    return f"{m}m"


def format_bytes(n: int) -> str:
    """Bytes for display with the largest exact binary suffix: 134217728 -> "128Mi".

    Values that are not an exact multiple of 1Ki are shown as plain bytes
    ("1000", "1536") so the display never rounds.
    """
    if n == 0:
        return "0"
    for suffix, size in reversed(_BINARY_SUFFIXES.items()):
        if n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)
