"""Label and field selectors, with kubectl's string syntax.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``,
``a`` (exists) and ``!a`` (does not exist), joined by commas (all must hold).
The lexer and parser follow Kubernetes' labels.Parse token for token, so odd
corners behave the same: ``a=`` means "a is the empty string", ``a in ()``
means ``a in ("")``, and ``in``/``notin`` may be used as keys and values.

Field selectors: ``f=v``, ``f==v``, ``f!=v`` joined by commas, over a fixed
set of fields per kind; a missing field compares as the empty string.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from orchestrator.api import names

__all__ = [
    "LABEL_OPERATORS",
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
    "selector_from_dict",
    "selector_from_match",
]


class SelectorError(ValueError):
    """A selector that cannot be parsed, or a requirement that is not valid."""


LABEL_OPERATORS: Final = frozenset({"=", "!=", "in", "notin", "exists", "!exists"})

# metav1.LabelSelectorRequirement operators -> ours.
_EXPRESSION_OPERATORS: Final[Mapping[str, str]] = {
    "In": "in",
    "NotIn": "notin",
    "Exists": "exists",
    "DoesNotExist": "!exists",
}


def _check_label_key(key: object) -> str:
    if not isinstance(key, str):
        raise SelectorError(f"invalid label key {key!r}: must be a string")
    problems = names.qualified_name(key)
    if problems:
        raise SelectorError(f'invalid label key "{key}": ' + "; ".join(problems))
    return key


def _check_label_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise SelectorError(f'invalid label value {value!r} for key "{key}": must be a string')
    problems = names.label_value(value)
    if problems:
        raise SelectorError(
            f'invalid label value "{value}" for key "{key}": ' + "; ".join(problems)
        )
    return value


def _check_value_count(op: str, values: Sequence[str]) -> None:
    # Texts are Kubernetes' NewRequirement messages.
    if op in ("in", "notin") and not values:
        raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
    if op in ("=", "!=") and len(values) != 1:
        raise SelectorError("exact-match compatibility requires one single value")
    if op in ("exists", "!exists") and values:
        raise SelectorError("values set must be empty for exists and does not exist")


@dataclass(frozen=True)
class Requirement:
    """One label condition. Construction validates it; values become a sorted set."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in LABEL_OPERATORS:
            allowed = ", ".join(sorted(LABEL_OPERATORS))
            raise SelectorError(f'unsupported operator "{self.op}": expected one of {allowed}')
        _check_label_key(self.key)
        if isinstance(self.values, str):
            # tuple("abc") would silently become ('a', 'b', 'c').
            raise SelectorError(f'values for key "{self.key}" must be a list, not a string')
        values = tuple(self.values)
        _check_value_count(self.op, values)
        for v in values:
            _check_label_value(self.key, v)
        # A set, as in Kubernetes: canonical order makes equal selectors equal.
        object.__setattr__(self, "values", tuple(sorted(set(values))))

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.key not in labels:
            # "a!=x" and "a notin (x)" hold for objects without the label at all.
            return self.op in ("!=", "notin")
        found = labels[self.key] in self.values
        return found if self.op in ("=", "in") else not found

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return "!" + self.key
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements, kept sorted by key. No requirements matches everything."""

    requirements: tuple[Requirement, ...] = ()

    # The selector that matches every object (assigned below the class).
    empty: ClassVar[LabelSelector]

    def __post_init__(self) -> None:
        # Stable sort by key, as Kubernetes orders a parsed selector, so that
        # "b=1,a=2" and "a=2,b=1" compare and print the same.
        ordered = tuple(sorted(self.requirements, key=lambda r: r.key))
        object.__setattr__(self, "requirements", ordered)

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


LabelSelector.empty = LabelSelector()


# --- label selector lexer and parser -------------------------------------------------------

_IDENT: Final = "identifier"
_EOS: Final = "end of string"
_WHITESPACE: Final = " \t\r\n"
_SPECIAL: Final = "=!(),<>"
_KEYWORDS: Final = frozenset({"in", "notin"})

_Token = tuple[str, str]  # (kind, literal); symbols and keywords are their own kind


def _lex(s: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in _SPECIAL:
            # Longest match, as Kubernetes' scanSpecialSymbol: "==" and "!=".
            symbol = s[i : i + 2] if s[i : i + 2] in ("==", "!=") else ch
            tokens.append((symbol, symbol))
            i += len(symbol)
        else:
            end = i
            while end < len(s) and s[end] not in _WHITESPACE and s[end] not in _SPECIAL:
                end += 1
            word = s[i:end]
            tokens.append((word if word in _KEYWORDS else _IDENT, word))
            i = end
    tokens.append((_EOS, ""))
    return tokens


def _found(kind: str, literal: str, expected: str) -> SelectorError:
    shown = _EOS if kind == _EOS else literal
    return SelectorError(f"found '{shown}', expected: {expected}")


class _LabelParser:
    """Recursive descent over the token list, mirroring Kubernetes' labels.Parser."""

    def __init__(self, text: str) -> None:
        self._tokens = _lex(text)
        self._pos = 0

    def _peek(self, values: bool = True) -> _Token:
        kind, literal = self._tokens[self._pos]
        # Where a value is expected, the keywords are plain words ("in=notin").
        if values and kind in _KEYWORDS:
            kind = _IDENT
        return kind, literal

    def _next(self, values: bool = True) -> _Token:
        token = self._peek(values)
        if token[0] != _EOS:
            self._pos += 1
        return token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self._peek()
            if kind == _EOS:
                return requirements
            if kind not in (_IDENT, "!"):
                raise _found(kind, literal, "!, identifier, or 'end of string'")
            requirements.append(self._requirement())
            kind, literal = self._next()
            if kind == _EOS:
                return requirements
            if kind != ",":
                raise _found(kind, literal, "',' or 'end of string'")
            kind, literal = self._peek()
            if kind not in (_IDENT, "!"):
                raise _found(kind, literal, "identifier after ','")

    def _requirement(self) -> Requirement:
        negated = False
        kind, literal = self._next()
        if kind == "!":
            negated = True
            kind, literal = self._next()
        if kind != _IDENT:
            raise _found(kind, literal, "identifier")
        key = _check_label_key(literal)  # checked before the operator, as Kubernetes
        if negated or self._peek()[0] in (_EOS, ","):
            # "!a" takes no operator; anything after it is reported by parse().
            return Requirement(key, "!exists" if negated else "exists")
        kind, literal = self._next(values=False)
        if kind in _KEYWORDS:
            return Requirement(key, kind, self._value_set())
        if kind in ("=", "=="):
            return Requirement(key, "=", self._exact_value())
        if kind == "!=":
            return Requirement(key, "!=", self._exact_value())
        if kind in ("<", ">"):
            raise SelectorError(
                f"operator '{literal}' is not supported; use =, ==, !=, in, notin, key or !key"
            )
        raise _found(kind, literal, "'=', '!=', '==', 'in', 'notin'")

    def _exact_value(self) -> tuple[str, ...]:
        kind, _ = self._peek()
        if kind in (_EOS, ","):
            return ("",)  # "a=" selects the empty value
        kind, literal = self._next()
        if kind != _IDENT:
            raise _found(kind, literal, "identifier")
        return (literal,)

    def _value_set(self) -> tuple[str, ...]:
        kind, literal = self._next()
        if kind != "(":
            raise _found(kind, literal, "'('")
        kind, literal = self._peek()
        if kind == ")":
            self._next()
            return ("",)  # "a in ()" is "a in ('')" in Kubernetes
        if kind not in (_IDENT, ","):
            raise _found(kind, literal, "',', ')' or identifier")
        values = self._value_list()
        kind, literal = self._next()
        if kind != ")":
            raise _found(kind, literal, "')'")
        return tuple(values)

    def _value_list(self) -> list[str]:
        # Empty slots between commas are empty-string values, as in Kubernetes:
        # "(a,,b)" is {"a", "", "b"} and "(a,)" is {"a", ""}.
        values: list[str] = []
        while True:
            kind, literal = self._next()
            if kind == _IDENT:
                values.append(literal)
                kind, literal = self._peek()
                if kind == ")":
                    return values
                if kind != ",":
                    raise _found(kind, literal, "',' or ')'")
            elif kind == ",":
                if not values:
                    values.append("")
                following, _ = self._peek()
                if following == ")":
                    values.append("")
                    return values
                if following == ",":
                    self._next()
                    values.append("")
            else:
                raise _found(kind, literal, "',', or identifier")


def parse_label_selector(s: str) -> LabelSelector:
    """Parse kubectl's label selector syntax; "" is the empty selector (matches everything)."""
    try:
        return LabelSelector(tuple(_LabelParser(s).parse()))
    except SelectorError as exc:
        raise SelectorError(f'invalid label selector "{s}": {exc}') from None


def selector_from_match(
    match_labels: Mapping[str, str],
    match_expressions: Sequence[tuple[str, str, Sequence[str]] | Mapping[str, Any]],
) -> LabelSelector:
    """Build a selector from a metav1.LabelSelector's parts.

    Expressions are (key, operator, values) tuples or their JSON form
    ({"key", "operator", "values"}). With neither labels nor expressions the
    result matches everything; a nil selector (which matches nothing) is the
    caller's to handle.
    """
    requirements = [Requirement(k, "=", (v,)) for k, v in match_labels.items()]
    requirements.extend(_expression_requirement(e) for e in match_expressions)
    return LabelSelector(tuple(requirements))


def _expression_requirement(
    expression: tuple[str, str, Sequence[str]] | Mapping[str, Any],
) -> Requirement:
    if isinstance(expression, Mapping):
        key = expression.get("key", "")
        operator = expression.get("operator", "")
        values = expression.get("values") or ()
    else:
        key, operator, values = expression
    op = _EXPRESSION_OPERATORS.get(operator)
    if op is None:
        raise SelectorError(
            f'"{operator}" is not a valid label selector operator '
            "(expected In, NotIn, Exists or DoesNotExist)"
        )
    if isinstance(values, str):
        # tuple("abc") would silently become ('a', 'b', 'c').
        raise SelectorError(f'values for key "{key}" must be a list, not a string')
    return Requirement(key, op, tuple(values))


def selector_from_dict(selector: Mapping[str, Any]) -> LabelSelector:
    """Build a selector from a metav1.LabelSelector in JSON form (matchLabels, matchExpressions)."""
    return selector_from_match(
        selector.get("matchLabels") or {}, selector.get("matchExpressions") or ()
    )


# --- field selectors -------------------------------------------------------------------------

_FIELD_OPERATORS: Final = ("!=", "==", "=")  # tried in this order at each position


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        equal = fields.get(self.field, "") == self.value
        return equal if self.op == "=" else not equal

    def __str__(self) -> str:
        return f"{self.field}{self.op}{_escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of field requirements, in the order written. None matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    empty: ClassVar[FieldSelector]

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def exact(self, field: str) -> str | None:
        """The value required by a ``field=value`` term, so a caller can use an index."""
        for r in self.requirements:
            if r.field == field and r.op == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


FieldSelector.empty = FieldSelector()


def parse_field_selector(s: str, allowed: Collection[str]) -> FieldSelector:
    """Parse ``f=v,f!=v`` over the ``allowed`` field names; "" matches everything.

    Values may escape ',', '=' and '\\' with a backslash, as Kubernetes'
    fields.EscapeValue writes them.
    """
    try:
        terms = _split_unescaped(s, lambda text, i: 1 if text[i] == "," else 0)
        requirements = [_field_term(t, allowed) for t in terms if t.strip()]
    except SelectorError as exc:
        raise SelectorError(f'invalid field selector "{s}": {exc}') from None
    return FieldSelector(tuple(requirements))


def _field_term(term: str, allowed: Collection[str]) -> FieldRequirement:
    def operator_at(text: str, i: int) -> int:
        return next((len(op) for op in _FIELD_OPERATORS if text.startswith(op, i)), 0)

    parts = _split_unescaped(term, operator_at, limit=1)
    if len(parts) != 2:
        raise SelectorError(
            f"term '{term.strip()}' has no operator; expected field=value, field==value "
            "or field!=value"
        )
    field, rest = parts[0].strip(), parts[1]
    op = "!=" if term[len(parts[0]) :].startswith("!=") else "="
    if field not in allowed:
        supported = ", ".join(sorted(allowed)) or "none"
        raise SelectorError(
            f'field "{field}" is not supported in a field selector; supported fields: {supported}'
        )
    return FieldRequirement(field, op, _unescape_field_value(rest.strip()))


def _split_unescaped(
    text: str, separator_at: Callable[[str, int], int], limit: int | None = None
) -> list[str]:
    """Split where ``separator_at`` reports a separator length, skipping backslash escapes."""
    parts: list[str] = []
    start = i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        width = separator_at(text, i) if limit is None or len(parts) < limit else 0
        if width:
            parts.append(text[start:i])
            start = i = i + width
        else:
            i += 1
    parts.append(text[start:])
    return parts


def _unescape_field_value(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            escaped = value[i + 1 : i + 2]
            if escaped not in ("\\", ",", "="):
                raise SelectorError(f"invalid escape sequence '\\{escaped}' in value '{value}'")
            out.append(escaped)
            i += 2
            continue
        if ch in (",", "="):
            raise SelectorError(f"unescaped '{ch}' in value '{value}'; write it as '\\{ch}'")
        out.append(ch)
        i += 1
    return "".join(out)


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
