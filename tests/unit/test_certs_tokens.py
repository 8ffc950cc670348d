"""Bootstrap tokens: format, expiry, secret checks and the Secret round trip."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from certs import tokens

pytestmark = pytest.mark.unit


def test_generate_matches_format_and_is_random() -> None:
    seen = {tokens.generate_token() for _ in range(50)}
    assert len(seen) == 50
    assert all(re.match(tokens.TOKEN_RE, t) for t in seen)


def test_parse_token() -> None:
    assert tokens.parse_token("abcdef.0123456789abcdef") == ("abcdef", "0123456789abcdef")
    assert tokens.parse_token(" abcdef.0123456789abcdef\n") == ("abcdef", "0123456789abcdef")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abcdef",
        "abcdef.0123456789abcde",  # secret too short
        "abcdef.0123456789abcdef0",  # too long
        "ABCDEF.0123456789abcdef",  # upper case
        "abcde.0123456789abcdeff",
        "abcdef:0123456789abcdef",
        "abc-ef.0123456789abcdef",
    ],
)
def test_parse_token_format_errors(bad: str) -> None:
    with pytest.raises(tokens.TokenFormatError, match=re.escape("[a-z0-9]{6}.[a-z0-9]{16}")):
        tokens.parse_token(bad)


def test_format_error_does_not_echo_input() -> None:
    with pytest.raises(ValueError) as info:
        tokens.parse_token("abcdef.0123456789ABCDEF")
    assert "0123456789ABCDEF" not in str(info.value)


def test_new_bootstrap_token() -> None:
    before = datetime.now(UTC)
    tok = tokens.new_bootstrap_token(timedelta(hours=2), description="join n1")
    assert re.match(tokens.TOKEN_RE, tok.token)
    assert tok.secret_name == f"bootstrap-token-{tok.token_id}"
    assert tok.usages == ["authentication", "signing"]
    assert tok.description == "join n1"
    assert timedelta(hours=2) - timedelta(seconds=2) < tok.expiration - before <= timedelta(hours=2)
    assert tok.username == f"system:bootstrap:{tok.token_id}"
    assert "system:bootstrappers" in tok.groups


def test_secret_data_keys_and_round_trip() -> None:
    tok = tokens.new_bootstrap_token(description="d")
    data = tok.to_secret_data()
    assert data["token-id"] == tok.token_id.encode()
    assert data["token-secret"] == tok.secret.encode()
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["expiration"])
    assert data["usage-bootstrap-authentication"] == b"true"
    assert data["usage-bootstrap-signing"] == b"true"
    assert data["description"] == b"d"
    assert data["auth-extra-groups"] == b"system:bootstrappers:kubeadm:default-node-token"
    assert tokens.BootstrapToken.from_secret_data(data) == tok
    # Secret data often arrives as str (stringData) too.
    as_str = {k: v.decode() for k, v in data.items()}
    assert tokens.BootstrapToken.from_secret_data(as_str) == tok


def test_from_secret_data_rejects_bad() -> None:
    data = tokens.new_bootstrap_token().to_secret_data()
    with pytest.raises(tokens.TokenFormatError):
        tokens.BootstrapToken.from_secret_data({**data, "token-secret": b"short"})
    with pytest.raises(tokens.TokenFormatError, match="expiration"):
        tokens.BootstrapToken.from_secret_data({**data, "expiration": b"tomorrow"})
    no_exp = {k: v for k, v in data.items() if k != "expiration"}
    with pytest.raises(tokens.TokenFormatError, match="no expiration"):
        tokens.BootstrapToken.from_secret_data(no_exp)


def test_check_token() -> None:
    tok = tokens.new_bootstrap_token(timedelta(hours=1))
    now = datetime.now(UTC)
    assert tokens.check_token(tok.token, tok, now) is None
    wrong = tok.secret[:-1] + ("a" if tok.secret[-1] != "a" else "b")
    assert tokens.check_token(f"{tok.token_id}.{wrong}", tok, now) == "secret does not match"
    assert tokens.check_token("zzzzzz.0123456789abcdef", tok, now) == "token id does not match"
    assert "[a-z0-9]{6}" in (tokens.check_token("nonsense", tok, now) or "")


def test_check_token_expired() -> None:
    tok = tokens.new_bootstrap_token(timedelta(hours=1))
    later = tok.expiration + timedelta(seconds=1)
    assert tok.is_expired(later)
    assert not tok.is_expired(tok.expiration - timedelta(seconds=1))
    assert (tokens.check_token(tok.token, tok, later) or "").startswith("expired")
    # A wrong secret says so even when expired: expiry is not disclosed to strangers.
    bad = f"{tok.token_id}.{'0' * 16}"
    assert tokens.check_token(bad, tok, later) == "secret does not match"


def test_check_token_needs_authentication_usage() -> None:
    tok = tokens.new_bootstrap_token()
    tok.usages = ["signing"]
    assert "authentication" in (tokens.check_token(tok.token, tok) or "")
