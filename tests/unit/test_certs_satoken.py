"""Service-account JWTs: issue, verify, and every way verification must fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from certs import satoken

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def key() -> bytes:
    return satoken.generate_signing_key()


def _issue(key: bytes, **kw) -> str:  # type: ignore[no-untyped-def]
    return satoken.issue_sa_token(key, namespace="team-a", name="builder", uid="u-1", **kw)


def test_issue_and_verify(key: bytes) -> None:
    token = _issue(key, ttl=timedelta(hours=1))
    ident = satoken.verify_sa_token(satoken.public_pem(key), token)
    assert ident == satoken.ServiceAccountIdentity(
        namespace="team-a",
        name="builder",
        uid="u-1",
        username="system:serviceaccount:team-a:builder",
        groups=["system:serviceaccounts", "system:serviceaccounts:team-a"],
    )


def test_claims_look_like_kubernetes(key: bytes) -> None:
    token = _issue(key, ttl=timedelta(minutes=10))
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "https://orchestrator.local"
    assert claims["sub"] == "system:serviceaccount:team-a:builder"
    assert claims["aud"] == ["orchestrator"]
    assert claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"] == {
        "namespace": "team-a",
        "serviceaccount": {"name": "builder", "uid": "u-1"},
    }


def test_no_ttl_means_no_exp(key: bytes) -> None:
    token = _issue(key)
    assert "exp" not in jwt.decode(token, options={"verify_signature": False})
    satoken.verify_sa_token(satoken.public_pem(key), token)


def test_wrong_key(key: bytes) -> None:
    other = satoken.generate_signing_key()
    with pytest.raises(satoken.TokenInvalid, match="signature"):
        satoken.verify_sa_token(satoken.public_pem(other), _issue(key))


def test_wrong_audience(key: bytes) -> None:
    token = _issue(key, audience="vault")
    with pytest.raises(satoken.TokenInvalid, match="audience"):
        satoken.verify_sa_token(satoken.public_pem(key), token)
    assert satoken.verify_sa_token(satoken.public_pem(key), token, audience="vault").name == (
        "builder"
    )


def test_expired(key: bytes) -> None:
    token = _issue(key, ttl=timedelta(minutes=5), now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(satoken.TokenInvalid, match="expired"):
        satoken.verify_sa_token(satoken.public_pem(key), token)


def test_issuer_checked_when_asked(key: bytes) -> None:
    token = _issue(key, issuer="https://elsewhere")
    satoken.verify_sa_token(satoken.public_pem(key), token)
    with pytest.raises(satoken.TokenInvalid):
        satoken.verify_sa_token(satoken.public_pem(key), token, issuer="https://orchestrator.local")


def test_garbage_and_alg_none(key: bytes) -> None:
    pub = satoken.public_pem(key)
    with pytest.raises(satoken.TokenInvalid):
        satoken.verify_sa_token(pub, "not.a.jwt")
    unsigned = jwt.encode(
        {"iss": "x", "sub": "system:serviceaccount:a:b", "aud": "orchestrator", "iat": 0},
        key="",
        algorithm="none",
    )
    with pytest.raises(satoken.TokenInvalid):
        satoken.verify_sa_token(pub, unsigned)


def test_subject_must_match_private_claims(key: bytes) -> None:
    signer = serialization.load_pem_private_key(key, password=None)
    forged = jwt.encode(
        {
            "iss": "https://orchestrator.local",
            "sub": "system:serviceaccount:kube-system:admin",
            "aud": ["orchestrator"],
            "iat": int(datetime.now(UTC).timestamp()),
            "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "b", "uid": "u"}},
        },
        signer,  # type: ignore[arg-type]
        algorithm="ES256",
    )
    with pytest.raises(satoken.TokenInvalid, match="subject"):
        satoken.verify_sa_token(satoken.public_pem(key), forged)
