"""`orchctl token create|list|delete`: bootstrap tokens, as `kubeadm token`.

A token is a Secret of type bootstrap.kubernetes.io/token in kube-system,
written through the API like any other object."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from cryptography import x509

from certs import tokens
from certs.pki import spki_sha256
from orchestrator.api.kinds import kind_info
from orchestrator.api.meta import meta
from orchestrator.cli import tabwriter
from orchestrator.cli.errors import CliError, from_server, report
from orchestrator.cli.printers import human_duration
from orchestrator.cli.session import Session
from orchestrator.client.client import ApiError, NotFoundError, UnavailableError

TOKEN_NAMESPACE = "kube-system"


def ca_hash(ca_pem: bytes) -> str:
    """`sha256:<hex>` of the CA's public key, as kubeadm's --discovery-token-ca-cert-hash."""
    if not ca_pem:
        raise CliError("the current context has no certificate authority to pin")
    try:
        cert = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise CliError(
            f"the current context's certificate authority is not a PEM certificate: {exc}"
        ) from None
    return spki_sha256(cert)


def join_command(server: str, token: str, ca_pem: bytes) -> str:
    return f"orch-agent join {server} --token {token} --ca-hash {ca_hash(ca_pem)}"


async def run_create(session: Session, args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise CliError("--ttl must be positive: tokens that never expire are not issued")
    token = tokens.new_bootstrap_token(timedelta(seconds=args.ttl), args.description)
    conn = session.connection()
    line = (
        join_command(conn.server, token.token, conn.ca_pem)
        if args.print_join_command
        else token.token
    )
    secret = kind_info("Secret").new()
    m = meta(secret)
    m.name = token.secret_name
    m.namespace = TOKEN_NAMESPACE
    secret.type = tokens.SECRET_TYPE  # type: ignore[attr-defined]
    for key, value in token.to_secret_data().items():
        secret.data[key] = value  # type: ignore[attr-defined]
    client = await session.client()
    await client.create(secret)
    print(line, flush=True)
    return 0


async def run_list(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    listing = await client.list(
        "Secret", TOKEN_NAMESPACE, field_selector=f"type={tokens.SECRET_TYPE}"
    )
    now = datetime.now(UTC)
    rows = [["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"]]
    for secret in listing.items:
        try:
            tok = tokens.BootstrapToken.from_secret_data(dict(secret.data))
        except tokens.TokenFormatError as exc:
            report(f"warning: {meta(secret).name}: {exc}")
            continue
        left = (tok.expiration - now).total_seconds()
        rows.append(
            [
                tok.token,
                human_duration(left) if left > 0 else "<invalid>",
                tokens.format_rfc3339(tok.expiration),
                ",".join(tok.usages),
                tok.description or "<none>",
                ",".join(tok.extra_groups),
            ]
        )
    for line in tabwriter.table(rows):
        print(line)
    return 0


def token_id(text: str) -> str:
    if "." in text:
        try:
            return tokens.parse_token(text)[0]
        except tokens.TokenFormatError as exc:
            raise CliError(str(exc)) from None
    if len(text) != 6 or not text.isalnum() or text.lower() != text:
        raise CliError(f'"{text}" is neither a token id ([a-z0-9]{{6}}) nor a token')
    return text


async def run_delete(session: Session, args: argparse.Namespace) -> int:
    client = await session.client()
    rc = 0
    for text in args.tokens:
        tid = token_id(text)
        try:
            await client.delete("Secret", tokens.SECRET_NAME_PREFIX + tid, TOKEN_NAMESPACE)
        except NotFoundError:
            report(f'error: bootstrap token "{tid}" not found')
            rc = 1
            continue
        except UnavailableError:
            raise
        except ApiError as exc:
            report(from_server(exc))
            rc = 1
            continue
        print(f'bootstrap token "{tid}" deleted', flush=True)
    return rc
