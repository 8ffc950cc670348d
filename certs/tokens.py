"""Bootstrap tokens in kubeadm's format: "<6 chars id>.<16 chars secret>".

The id is public (it names the Secret "bootstrap-token-<id>" in kube-system);
the secret part proves the joiner was given the token.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

TOKEN_RE = r"^([a-z0-9]{6})\.([a-z0-9]{16})$"
_TOKEN = re.compile(TOKEN_RE)
TOKEN_FORMAT = "[a-z0-9]{6}.[a-z0-9]{16}"
_ALPHABET = string.ascii_lowercase + string.digits

SECRET_NAME_PREFIX = "bootstrap-token-"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
USAGE_AUTHENTICATION = "authentication"
USAGE_SIGNING = "signing"
DEFAULT_USAGES = (USAGE_AUTHENTICATION, USAGE_SIGNING)
DEFAULT_EXTRA_GROUPS = "system:bootstrappers:kubeadm:default-node-token"
BOOTSTRAPPER_USER_PREFIX = "system:bootstrap:"
BOOTSTRAPPERS_GROUP = "system:bootstrappers"

# The keys of a bootstrap-token Secret's data, as Kubernetes names them.
KEY_TOKEN_ID = "token-id"
KEY_TOKEN_SECRET = "token-secret"
KEY_EXPIRATION = "expiration"
KEY_DESCRIPTION = "description"
KEY_EXTRA_GROUPS = "auth-extra-groups"
KEY_USAGE_PREFIX = "usage-bootstrap-"


class TokenFormatError(ValueError):
    """A string is not a bootstrap token."""


def generate_token() -> str:
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return f"{token_id}.{secret}"


def parse_token(s: str) -> tuple[str, str]:
    """Split a token into (token_id, token_secret)."""
    m = _TOKEN.match(s.strip()) if isinstance(s, str) else None
    if m is None:
        # Never echo the input: it may be a real token with a typo.
        raise TokenFormatError(
            f"a bootstrap token must match {TOKEN_FORMAT!r}, e.g. abcdef.0123456789abcdef"
        )
    return m.group(1), m.group(2)


def format_rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str) -> datetime:
    # fromisoformat in 3.11 accepts "Z" and offsets; a naive result is taken as UTC.
    t = datetime.fromisoformat(s)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass
class BootstrapToken:
    token_id: str
    secret: str
    expiration: datetime
    usages: list[str] = field(default_factory=lambda: list(DEFAULT_USAGES))
    description: str = ""
    extra_groups: list[str] = field(default_factory=lambda: [DEFAULT_EXTRA_GROUPS])

    @property
    def token(self) -> str:
        return f"{self.token_id}.{self.secret}"

    @property
    def secret_name(self) -> str:
        return SECRET_NAME_PREFIX + self.token_id

    @property
    def username(self) -> str:
        """The user a joiner authenticates as, as in Kubernetes."""
        return BOOTSTRAPPER_USER_PREFIX + self.token_id

    @property
    def groups(self) -> list[str]:
        return [BOOTSTRAPPERS_GROUP, *self.extra_groups]

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expiration

    def to_secret_data(self) -> dict[str, bytes]:
        data = {
            KEY_TOKEN_ID: self.token_id.encode(),
            KEY_TOKEN_SECRET: self.secret.encode(),
            KEY_EXPIRATION: format_rfc3339(self.expiration).encode(),
        }
        for usage in self.usages:
            data[KEY_USAGE_PREFIX + usage] = b"true"
        if self.description:
            data[KEY_DESCRIPTION] = self.description.encode()
        if self.extra_groups:
            data[KEY_EXTRA_GROUPS] = ",".join(self.extra_groups).encode()
        return data

    @classmethod
    def from_secret_data(cls, d: Mapping[str, bytes | str]) -> BootstrapToken:
        def text(key: str) -> str:
            v = d.get(key, b"")
            return v.decode() if isinstance(v, bytes) else v

        token_id, secret = text(KEY_TOKEN_ID), text(KEY_TOKEN_SECRET)
        parse_token(f"{token_id}.{secret}")  # reject a hand-edited Secret early
        raw_exp = text(KEY_EXPIRATION)
        if not raw_exp:
            # kubeadm allows tokens without expiry; we do not mint them, and
            # refusing one is safer than trusting it forever.
            raise TokenFormatError(f"bootstrap token {token_id} has no expiration")
        try:
            expiration = parse_rfc3339(raw_exp)
        except ValueError as e:
            raise TokenFormatError(f"bootstrap token {token_id}: bad expiration {raw_exp!r}") from e
        usages = sorted(
            k.removeprefix(KEY_USAGE_PREFIX)
            for k in d
            if k.startswith(KEY_USAGE_PREFIX) and text(k) == "true"
        )
        groups = [g.strip() for g in text(KEY_EXTRA_GROUPS).split(",") if g.strip()]
        # As Kubernetes: a bootstrap token may only add bootstrapper groups, so a
        # Secret cannot turn a token into, say, system:masters.
        bad = [g for g in groups if not g.startswith(BOOTSTRAPPERS_GROUP + ":")]
        if bad:
            raise TokenFormatError(
                f"bootstrap token {token_id}: extra groups {bad} must start with "
                f"{BOOTSTRAPPERS_GROUP}:"
            )
        return cls(token_id, secret, expiration, usages, text(KEY_DESCRIPTION), groups)


def new_bootstrap_token(
    ttl: timedelta = timedelta(hours=24), description: str = ""
) -> BootstrapToken:
    token_id, secret = parse_token(generate_token())
    return BootstrapToken(
        token_id=token_id,
        secret=secret,
        # Whole seconds: RFC3339 in the Secret drops fractions, and a round
        # trip should give back an equal object.
        expiration=(datetime.now(UTC) + ttl).replace(microsecond=0),
        description=description,
    )


def check_token(presented: str, token: BootstrapToken, now: datetime | None = None) -> str | None:
    """None if `presented` is a valid use of `token`, else the reason it is not.

    The caller looks `token` up by the presented id and reports "unknown"
    itself when there is no such Secret.
    """
    try:
        token_id, secret = parse_token(presented)
    except TokenFormatError as e:
        return str(e)
    if token_id != token.token_id:
        return "token id does not match"
    # Constant time, so the secret cannot be guessed byte by byte from timing.
    if not hmac.compare_digest(secret.encode(), token.secret.encode()):
        return "secret does not match"
    if token.is_expired(now):
        return f"expired at {format_rfc3339(token.expiration)}"
    if USAGE_AUTHENTICATION not in token.usages:
        return "token is not usable for authentication"
    return None
