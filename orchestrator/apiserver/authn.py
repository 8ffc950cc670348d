"""Authentication: who is calling.

A verified client certificate (CN = user, O = groups) is checked by TLS
itself; a caller without one may present a bearer token: a bootstrap token
(`abcdef.0123456789abcdef`, stored as a Secret in kube-system) or a
service-account JWT signed by the cluster's service-account key.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from certs import satoken, tokens
from orchestrator.api.kinds import kind_info
from orchestrator.apiserver.cache import WatchCache
from orchestrator.apiserver.errors import Unauthenticated
from orchestrator.apiserver.registry import UserInfo

BOOTSTRAPPERS = "system:bootstrappers"
AUTHENTICATED = "system:authenticated"
BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
_TOKEN_RE = re.compile(tokens.TOKEN_RE)


@functools.lru_cache(maxsize=4096)
def _identity_from_pem(pem: bytes) -> UserInfo:
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    name = str(cns[0].value) if cns else ""
    groups = tuple(str(o.value) for o in orgs)
    return UserInfo(name=name, groups=(*groups, AUTHENTICATED))


class Authenticator:
    def __init__(self, cache: WatchCache, sa_public_pem: bytes | None) -> None:
        self._cache = cache
        self._sa_public_pem = sa_public_pem

    def authenticate(self, context: grpc.aio.ServicerContext) -> UserInfo:
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert")
        if pems:
            user = _identity_from_pem(pems[0])
            if user.name:
                return user
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer":
                    raise Unauthenticated("the authorization header must be 'Bearer <token>'")
                token = token.strip()
        if not token:
            raise Unauthenticated(
                "no client certificate and no bearer token: present a certificate signed by "
                "the cluster CA, or a bootstrap or service-account token"
            )
        if _TOKEN_RE.match(token):
            return self._bootstrap_user(token)
        if self._sa_public_pem is None:
            raise Unauthenticated("service-account tokens are not accepted by this server")
        try:
            ident = satoken.verify_sa_token(self._sa_public_pem, token)
        except satoken.TokenInvalid as exc:
            raise Unauthenticated(f"invalid bearer token: {exc}") from None
        return UserInfo(name=ident.username, groups=(*ident.groups, AUTHENTICATED), uid=ident.uid)

    def _bootstrap_user(self, presented: str) -> UserInfo:
        token_id, _ = tokens.parse_token(presented)
        cached = self._cache.get(kind_info("Secret"), "kube-system", f"bootstrap-token-{token_id}")
        if cached is None:
            raise Unauthenticated(f'bootstrap token "{token_id}" is unknown')
        secret = cached.decode()
        if secret.type != BOOTSTRAP_TOKEN_TYPE:  # type: ignore[attr-defined]
            raise Unauthenticated(
                f'bootstrap token "{token_id}" is rejected: its Secret is not of type '
                f"{BOOTSTRAP_TOKEN_TYPE}"
            )
        try:
            stored = tokens.BootstrapToken.from_secret_data(dict(secret.data))  # type: ignore[attr-defined]
        except (ValueError, KeyError) as exc:
            raise Unauthenticated(f'bootstrap token "{token_id}" is malformed: {exc}') from None
        problem = tokens.check_token(presented, stored, datetime.now(UTC))
        if problem is not None:
            raise Unauthenticated(f'bootstrap token "{token_id}" is rejected: {problem}')
        return UserInfo(name=stored.username, groups=(*stored.groups, AUTHENTICATED))
