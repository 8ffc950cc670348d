"""Name and key validation, as Kubernetes' apimachinery validation.

Each function returns a list of problems; an empty list means valid. Lists
rather than exceptions let a caller report every problem with an object at
once, prefixed with the field path, instead of one per round trip. The
message texts are Kubernetes' own, so they read the same as kubectl's.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DNS1123_LABEL_MAX_LENGTH",
    "DNS1123_SUBDOMAIN_MAX_LENGTH",
    "LABEL_VALUE_MAX_LENGTH",
    "PORT_NAME_MAX_LENGTH",
    "QUALIFIED_NAME_MAX_LENGTH",
    "c_identifier",
    "config_map_key",
    "dns1123_label",
    "dns1123_subdomain",
    "env_var_name",
    "label_value",
    "port_name",
    "qualified_name",
]

DNS1123_LABEL_MAX_LENGTH: Final = 63
DNS1123_SUBDOMAIN_MAX_LENGTH: Final = 253
QUALIFIED_NAME_MAX_LENGTH: Final = 63
LABEL_VALUE_MAX_LENGTH: Final = 63
PORT_NAME_MAX_LENGTH: Final = 15

_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_QUALIFIED_NAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT: Final = "(" + _QUALIFIED_NAME_FMT + ")?"
_C_IDENTIFIER_FMT: Final = "[A-Za-z_][A-Za-z0-9_]*"
_ENV_VAR_NAME_FMT: Final = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_CONFIG_MAP_KEY_FMT: Final = "[-._a-zA-Z0-9]+"

# Compiled for fullmatch(): Go's MatchString with ^...$ matches the whole
# text, whereas Python's "$" would also accept a trailing newline.
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_QUALIFIED_NAME_RE: Final = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)
_C_IDENTIFIER_RE: Final = re.compile(_C_IDENTIFIER_FMT)
_ENV_VAR_NAME_RE: Final = re.compile(_ENV_VAR_NAME_FMT)
_CONFIG_MAP_KEY_RE: Final = re.compile(_CONFIG_MAP_KEY_FMT)
_PORT_NAME_CHARSET_RE: Final = re.compile("[-a-z0-9]+")
_PORT_NAME_LETTER_RE: Final = re.compile("[a-z]")

_DNS1123_LABEL_MSG: Final = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_QUALIFIED_NAME_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MSG: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_C_IDENTIFIER_MSG: Final = (
    "a valid C identifier must start with alphabetic character or '_', "
    "followed by a string of alphanumeric characters or '_'"
)
_ENV_VAR_NAME_MSG: Final = (
    "a valid environment variable name must consist of alphabetic characters, digits, "
    "'_', '-', or '.', and must not start with a digit"
)
_CONFIG_MAP_KEY_MSG: Final = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
)


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _empty_error() -> str:
    return "must be non-empty"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # Reproduces Go's RegexError byte for byte, including the doubled space
    # before "or" that its loop produces, so messages match kubectl's.
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    rendered = " or ".join(f"'{example}', " for example in examples)
    return f"{msg} (e.g. {rendered}regex used for validation is '{fmt}')"


def dns1123_label(name: str) -> list[str]:
    """Namespace, Service, container names and the like: at most 63, no dots."""
    errs: list[str] = []
    if len(name) > DNS1123_LABEL_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL_RE.fullmatch(name):
        errs.append(_regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def dns1123_subdomain(name: str) -> list[str]:
    """Most object names: at most 253, dot-separated RFC 1123 labels."""
    errs: list[str] = []
    if len(name) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(name):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def qualified_name(key: str) -> list[str]:
    """Label and annotation keys: an optional DNS subdomain prefix and '/', then a name."""
    parts = key.split("/")
    if len(parts) > 2:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    errs: list[str] = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part " + _empty_error())
        else:
            errs.extend("prefix part " + msg for msg in dns1123_subdomain(prefix))
    name = parts[-1]
    if not name:
        errs.append("name part " + _empty_error())
    elif len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append("name part " + _max_len_error(QUALIFIED_NAME_MAX_LENGTH))
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value(v: str) -> list[str]:
    """Label values: at most 63, may be empty."""
    errs: list[str] = []
    if len(v) > LABEL_VALUE_MAX_LENGTH:
        errs.append(_max_len_error(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE_RE.fullmatch(v):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


def c_identifier(s: str) -> list[str]:
    """A C identifier. Not used for env vars: Kubernetes accepts more there (env_var_name)."""
    if _C_IDENTIFIER_RE.fullmatch(s):
        return []
    return [_regex_error(_C_IDENTIFIER_MSG, _C_IDENTIFIER_FMT, "my_name", "MY_NAME", "MyName")]


def _chdir_prefix_errors(s: str) -> list[str]:
    # Keys can become file names (ConfigMap volumes); these would escape the
    # directory or name it.
    if s == ".":
        return ["must not be '.'"]
    if s == "..":
        return ["must not be '..'"]
    if s.startswith(".."):
        return ["must not start with '..'"]
    return []


def env_var_name(s: str) -> list[str]:
    """Environment variable names, as Kubernetes' IsEnvVarName."""
    errs: list[str] = []
    if not _ENV_VAR_NAME_RE.fullmatch(s):
        errs.append(
            _regex_error(
                _ENV_VAR_NAME_MSG, _ENV_VAR_NAME_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"
            )
        )
    errs.extend(_chdir_prefix_errors(s))
    return errs


def config_map_key(s: str) -> list[str]:
    """ConfigMap and Secret data keys: at most 253, not '.', '..' or starting with '..'."""
    errs: list[str] = []
    if len(s) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _CONFIG_MAP_KEY_RE.fullmatch(s):
        errs.append(
            _regex_error(
                _CONFIG_MAP_KEY_MSG, _CONFIG_MAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"
            )
        )
    errs.extend(_chdir_prefix_errors(s))
    return errs


def port_name(s: str) -> list[str]:
    """A named port (IANA_SVC_NAME, RFC 6335), as Kubernetes' IsValidPortName."""
    errs: list[str] = []
    if len(s) > PORT_NAME_MAX_LENGTH:
        errs.append(_max_len_error(PORT_NAME_MAX_LENGTH))
    if not _PORT_NAME_CHARSET_RE.fullmatch(s):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_LETTER_RE.search(s):
        errs.append("must contain at least one letter (a-z)")
    if "--" in s:
        errs.append("must not contain consecutive hyphens")
    if s.startswith("-") or s.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs
