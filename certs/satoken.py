"""Service-account tokens: ES256 JWTs with Kubernetes' claims."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import new_private_key, private_key_pem

DEFAULT_AUDIENCE = "orchestrator"
DEFAULT_ISSUER = "https://orchestrator.local"
ALGORITHM = "ES256"
SA_USER_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
# Tolerate small clock differences between apiservers.
LEEWAY = timedelta(seconds=60)


class TokenInvalid(Exception):
    """A service-account token failed verification; str() says why."""


@dataclass(frozen=True)
class ServiceAccountIdentity:
    namespace: str
    name: str
    uid: str
    username: str
    groups: list[str] = field(default_factory=list)


def generate_signing_key() -> bytes:
    return private_key_pem(new_private_key())


def public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _username(namespace: str, name: str) -> str:
    return f"{SA_USER_PREFIX}{namespace}:{name}"


def issue_sa_token(
    private_pem: bytes,
    *,
    namespace: str,
    name: str,
    uid: str,
    audience: str = DEFAULT_AUDIENCE,
    ttl: timedelta | None = None,
    issuer: str = DEFAULT_ISSUER,
    now: datetime | None = None,
) -> str:
    """Sign a token for service account `namespace/name`. No `ttl` means no expiry
    (like Kubernetes' legacy Secret-based tokens)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("service-account signing key must be an EC P-256 key")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": _username(namespace, name),
        "aud": [audience],
        "iat": int(issued.timestamp()),
        "nbf": int(issued.timestamp()),
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
    }
    if ttl is not None:
        claims["exp"] = int((issued + ttl).timestamp())
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_sa_token(
    public_pem: bytes,
    token: str,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str | None = None,
) -> ServiceAccountIdentity:
    """Check signature, audience, time and shape; return who the token speaks for."""
    try:
        key = serialization.load_pem_public_key(public_pem)
        claims = jwt.decode(
            token,
            key,  # type: ignore[arg-type]
            # Pin the algorithm: never let the token choose (alg=none, HS256 with the public key).
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY,
            options={"require": ["iss", "sub", "aud", "iat"]},
        )
    except jwt.ExpiredSignatureError as e:
        raise TokenInvalid("token has expired") from e
    except jwt.InvalidAudienceError as e:
        raise TokenInvalid(f"token audience is not {audience!r}") from e
    except jwt.InvalidSignatureError as e:
        raise TokenInvalid("token signature is invalid (signed by another key?)") from e
    except jwt.PyJWTError as e:
        raise TokenInvalid(f"invalid token: {e}") from e
    except ValueError as e:  # bad public key PEM
        raise TokenInvalid(f"cannot load the verification key: {e}") from e

    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict):
        raise TokenInvalid('token has no "kubernetes.io" claim')
    namespace = k8s.get("namespace")
    sa = k8s.get("serviceaccount")
    if not isinstance(namespace, str) or not isinstance(sa, dict):
        raise TokenInvalid('token "kubernetes.io" claim lacks namespace or serviceaccount')
    name, uid = sa.get("name"), sa.get("uid")
    if not isinstance(name, str) or not isinstance(uid, str) or not namespace or not name:
        raise TokenInvalid("token serviceaccount claim lacks name or uid")
    username = _username(namespace, name)
    if claims["sub"] != username:
        # A token whose subject and private claims disagree was not minted by us.
        raise TokenInvalid(f"token subject {claims['sub']!r} does not match {username!r}")
    return ServiceAccountIdentity(
        namespace=namespace,
        name=name,
        uid=uid,
        username=username,
        groups=[SA_GROUP, f"{SA_GROUP}:{namespace}"],
    )
