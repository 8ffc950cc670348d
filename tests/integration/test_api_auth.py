"""Authentication and authorization against a real control plane: mutual TLS
on the main port, TLS bootstrap (join, renewal), the node authorizer,
bootstrap tokens and service-account tokens on the token port."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agent.join import JoinError, join, renew, request_certificate
from certs import csr as csrlib
from certs import pki, satoken, tokens
from orchestrator.api import codec
from orchestrator.api.kinds import kind_info
from orchestrator.client.client import (
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    ForbiddenError,
    UnauthenticatedError,
    UnavailableError,
)
from orchestrator.client.config import ConfigFile, Connection
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]
NODE_A = f"auth-node-a-{SUFFIX}"
NODE_B = f"auth-node-b-{SUFFIX}"
LEASE_NS = "kube-node-lease"


# -- helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinLine:
    server: str
    token: str
    ca_hash: str


def parse_join(command: str) -> JoinLine:
    words = shlex.split(command)
    server = words[words.index("join") + 1]
    return JoinLine(server, words[words.index("--token") + 1], words[words.index("--ca-hash") + 1])


def cluster_ca(cp: ControlPlane) -> pki.KeyPair:
    return pki.load_pair(cp.data_dir / "pki" / "ca.crt", cp.data_dir / "pki" / "ca.key")


def cert_connection(cp: ControlPlane, pair: pki.KeyPair) -> Connection:
    return Connection(
        server=f"127.0.0.1:{cp.port}",
        ca_pem=cluster_ca(cp).cert_pem,
        cert_pem=pair.cert_pem,
        key_pem=pair.key_pem,
    )


def token_connection(cp: ControlPlane, token: str) -> Connection:
    return Connection(
        server=f"127.0.0.1:{cp.port + 1}", ca_pem=cluster_ca(cp).cert_pem, token=token
    )


def node_connection(data_dir: Path) -> Connection:
    return ConfigFile.load(data_dir / "agent.conf").connection()


def namespace(name: str) -> Any:
    return codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def pod(name: str, ns: str, node: str, secret: str = "", config_map: str = "") -> Any:
    container: dict[str, Any] = {"name": "app", "image": "busybox"}
    env = []
    if secret:
        env.append({"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}})
    if config_map:
        env.append(
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "k"}}}
        )
    if env:
        container["env"] = env
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [container]},
        }
    )


def secret(name: str, ns: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"k": "v"},
        }
    )


def config_map(name: str, ns: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"k": "v"},
        }
    )


def node(name: str) -> Any:
    return codec.from_dict({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def lease(name: str, ns: str = LEASE_NS) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40},
        }
    )


def node_csr(cn: str, orgs: tuple[str, ...] = ("system:nodes",)) -> tuple[Any, bytes]:
    csr_pem, key_pem = csrlib.make_csr(cn, list(orgs))
    obj = kind_info("CertificateSigningRequest").new()
    obj.metadata.name = f"test-csr-{uuid.uuid4().hex[:8]}"
    obj.spec.request = csr_pem
    obj.spec.signer_name = "kubernetes.io/kube-apiserver-client-kubelet"
    obj.spec.usages.extend(["digital signature", "client auth"])
    return obj, key_pem


async def refused(conn: Connection) -> ApiError:
    """The error a call with this connection gets; fails the test if it succeeds."""
    async with Client(conn, timeout=10.0) as c:
        try:
            await c.version()
        except (UnavailableError, UnauthenticatedError) as exc:
            return exc
    raise AssertionError(f"{conn.server} accepted a connection it should refuse")


async def first_event(events: AsyncIterator[Any]) -> Any:
    gen: Any = events
    try:
        async with asyncio.timeout(10):
            return await gen.__anext__()
    finally:
        await gen.aclose()


async def wait_signed(client: Client, name: str) -> Any:
    async with asyncio.timeout(15):
        while True:
            csr = await client.get("CertificateSigningRequest", name)
            if csr.status.certificate or csr.status.conditions:
                return csr
            await asyncio.sleep(0.1)


@pytest.fixture
async def admin(control_plane: ControlPlane) -> AsyncIterator[Client]:
    async with control_plane.client() as c:
        yield c


@pytest.fixture(scope="module")
def joined(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two nodes joined with the token `orchestrator init` printed: name -> agent data dir."""
    line = parse_join(control_plane.join_command)

    async def join_both() -> dict[str, Path]:
        dirs = {}
        for name in (NODE_A, NODE_B):
            d = tmp_path_factory.mktemp(name)
            await join(
                line.server, line.token, line.ca_hash, node_name=name, data_dir=d, timeout=20
            )
            dirs[name] = d
        return dirs

    return asyncio.run(join_both())


@pytest.fixture
async def node_a(joined: dict[str, Path]) -> AsyncIterator[Client]:
    async with Client(node_connection(joined[NODE_A]), timeout=10.0) as c:
        yield c


@pytest.fixture
async def workloads(admin: Client) -> AsyncIterator[str]:
    """A namespace with a pod (and what it references) on each node."""
    ns = f"auth-{uuid.uuid4().hex[:8]}"
    await admin.create(namespace(ns))
    for s in ("secret-a", "secret-b", "secret-free"):
        await admin.create(secret(s, ns))
    for cm in ("cm-a", "cm-free"):
        await admin.create(config_map(cm, ns))
    await admin.create(pod("pod-a", ns, NODE_A, secret="secret-a", config_map="cm-a"))
    await admin.create(pod("pod-b", ns, NODE_B, secret="secret-b"))
    yield ns
    for name in ("pod-a", "pod-b"):
        with contextlib.suppress(ApiError):
            await admin.delete("Pod", name, ns, grace_period=0)


# -- mutual TLS on the main port ------------------------------------------------------------------


async def test_no_client_certificate_fails_the_handshake(control_plane: ControlPlane) -> None:
    conn = Connection(
        server=f"127.0.0.1:{control_plane.port}", ca_pem=cluster_ca(control_plane).cert_pem
    )
    await refused(conn)


async def test_certificate_from_another_ca_fails(control_plane: ControlPlane) -> None:
    rogue = pki.create_ca("rogue-ca")
    pair = pki.issue_certificate(
        rogue, common_name="admin", organizations=["system:masters"], client=True
    )
    await refused(cert_connection(control_plane, pair))


async def test_expired_certificate_fails(control_plane: ControlPlane) -> None:
    pair = pki.issue_certificate(
        cluster_ca(control_plane),
        common_name="late",
        organizations=["system:masters"],
        client=True,
        not_before=datetime.now(UTC) - timedelta(hours=2),
        valid_seconds=3600,
    )
    await refused(cert_connection(control_plane, pair))


async def test_not_yet_valid_certificate_fails(control_plane: ControlPlane) -> None:
    pair = pki.issue_certificate(
        cluster_ca(control_plane),
        common_name="early",
        organizations=["system:masters"],
        client=True,
        not_before=datetime.now(UTC) + timedelta(hours=2),
        valid_seconds=3600,
    )
    await refused(cert_connection(control_plane, pair))


async def test_cluster_certificate_in_system_masters_may_do_everything(
    control_plane: ControlPlane,
) -> None:
    pair = pki.issue_certificate(
        cluster_ca(control_plane),
        common_name="alice",
        organizations=["system:masters"],
        client=True,
    )
    async with Client(cert_connection(control_plane, pair)) as c:
        v = await c.version()
        assert v.user == "alice"
        assert "system:masters" in v.groups and "system:authenticated" in v.groups
        names = {n.metadata.name for n in (await c.list("Namespace")).items}
        assert {"default", "kube-system"} <= names
        ns = f"auth-alice-{uuid.uuid4().hex[:6]}"
        await c.create(namespace(ns))
        await c.create(config_map("x", ns))


async def test_cluster_certificate_without_groups_is_forbidden_everything(
    control_plane: ControlPlane,
) -> None:
    pair = pki.issue_certificate(cluster_ca(control_plane), common_name="nobody", client=True)
    async with Client(cert_connection(control_plane, pair)) as c:
        v = await c.version()  # authenticated, so this works
        assert v.user == "nobody"
        assert list(v.groups) == ["system:authenticated"]
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: c.list("Pod", "default"),
            lambda: c.list("Namespace"),
            lambda: c.get("Namespace", "default"),
            lambda: c.create(config_map("x", "default")),
            lambda: c.update(config_map("x", "default")),
            lambda: c.delete("Namespace", "default"),
            lambda: c.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "y", "namespace": "default"},
                }
            ),
            lambda: first_event(c.watch("Pod", "default")),
        ]
        for call in calls:
            with pytest.raises(ForbiddenError) as err:
                await call()
            assert "nobody" in err.value.message


# -- joining and renewal -----------------------------------------------------------------------


async def test_join_with_the_init_token_gives_a_node_identity(joined: dict[str, Path]) -> None:
    for name, data_dir in joined.items():
        cert = x509.load_pem_x509_certificate((data_dir / "pki" / "node.crt").read_bytes())
        assert pki.identity_from_cert(cert) == (f"system:node:{name}", ["system:nodes"])
        async with Client(node_connection(data_dir)) as c:
            v = await c.version()
            assert v.user == f"system:node:{name}"
            assert "system:nodes" in v.groups


async def test_join_with_an_unknown_token_fails(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    line = parse_join(control_plane.join_command)
    with pytest.raises(JoinError) as err:
        await join(
            line.server,
            tokens.generate_token(),
            line.ca_hash,
            node_name="intruder",
            data_dir=tmp_path,
            timeout=10,
        )
    assert "unknown" in str(err.value)
    assert not (tmp_path / "agent.conf").exists()


async def test_join_with_an_expired_token_fails(
    control_plane: ControlPlane, admin: Client, tmp_path: Path
) -> None:
    expired = tokens.new_bootstrap_token(ttl=timedelta(hours=-1), description="expired")
    await admin.create(_bootstrap_secret(expired, tokens.SECRET_TYPE))
    line = parse_join(control_plane.join_command)
    with pytest.raises(JoinError) as err:
        await join(
            line.server,
            expired.token,
            line.ca_hash,
            node_name="too-late",
            data_dir=tmp_path,
            timeout=10,
        )
    assert "expired" in str(err.value)


async def test_join_with_a_wrong_ca_hash_fails(control_plane: ControlPlane, tmp_path: Path) -> None:
    line = parse_join(control_plane.join_command)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(JoinError) as err:
        await join(line.server, line.token, wrong, node_name="mitm", data_dir=tmp_path, timeout=10)
    assert "ca-hash" in str(err.value) or "CA" in str(err.value)
    # The CA of another cluster does not match either.
    other = pki.spki_sha256(pki.create_ca("other").cert)
    with pytest.raises(JoinError):
        await join(line.server, line.token, other, node_name="mitm", data_dir=tmp_path, timeout=10)


async def test_renewal_gives_a_new_certificate(joined: dict[str, Path]) -> None:
    data_dir = joined[NODE_B]
    old = x509.load_pem_x509_certificate((data_dir / "pki" / "node.crt").read_bytes())
    old_key = (data_dir / "pki" / "node.key").read_bytes()
    await renew(data_dir, NODE_B, timeout=20)
    new = x509.load_pem_x509_certificate((data_dir / "pki" / "node.crt").read_bytes())
    assert new.serial_number != old.serial_number
    assert (data_dir / "pki" / "node.key").read_bytes() != old_key
    assert new.not_valid_after_utc >= old.not_valid_after_utc
    assert pki.identity_from_cert(new) == (f"system:node:{NODE_B}", ["system:nodes"])
    async with Client(node_connection(data_dir)) as c:
        assert (await c.version()).user == f"system:node:{NODE_B}"


# -- the node authorizer ----------------------------------------------------------------------


async def modify(client: Client, name: str, change: Any, write: Any) -> Any:
    for _ in range(10):
        fresh = await client.get("Node", name)
        change(fresh)
        try:
            return await write(fresh)
        except ConflictError:
            continue
    raise AssertionError(f"node {name} kept conflicting")


async def test_node_may_write_its_own_node_and_lease_only(
    admin: Client, node_a: Client, joined: dict[str, Path]
) -> None:
    with contextlib.suppress(AlreadyExistsError):
        await admin.create(namespace(LEASE_NS))
    with contextlib.suppress(AlreadyExistsError):
        await admin.create(node(NODE_B))
    await admin.create(lease(NODE_B))

    await node_a.create(node(NODE_A))

    # The control plane's pod-CIDR allocator writes new Nodes too: retry on
    # conflict with a fresh read, as every real client does.
    def label(n: Any) -> None:
        n.metadata.labels["example.com/ready"] = "yes"

    def phase(n: Any) -> None:
        n.status.phase = "Running"

    await modify(node_a, NODE_A, label, node_a.update)
    await modify(node_a, NODE_A, phase, node_a.update_status)
    assert len((await node_a.list("Node")).items) >= 2  # nodes may read every Node

    other = await node_a.get("Node", NODE_B)
    other.metadata.labels["hijacked"] = "yes"
    with pytest.raises(ForbiddenError) as err:
        await node_a.update(other)
    assert NODE_A in err.value.message
    with pytest.raises(ForbiddenError):
        await node_a.update_status(other)
    with pytest.raises(ForbiddenError):
        await node_a.create(node(f"auth-node-c-{SUFFIX}"))
    with pytest.raises(ForbiddenError):
        await node_a.delete("Node", NODE_B)

    my_lease = await node_a.create(lease(NODE_A))
    my_lease.spec.renew_time = "2030-01-01T00:00:00.000000Z"
    await node_a.update(my_lease)
    assert (await node_a.get("Lease", NODE_A, LEASE_NS)).spec.renew_time.startswith("2030")
    with pytest.raises(ForbiddenError):
        await node_a.update(lease(NODE_B))
    with pytest.raises(ForbiddenError):
        await node_a.get("Lease", NODE_B, LEASE_NS)
    with pytest.raises(ForbiddenError):
        await node_a.create(lease(f"auth-node-c-{SUFFIX}"))
    with pytest.raises(ForbiddenError):
        await node_a.create(lease(NODE_A, ns="default"))


async def test_node_lists_and_watches_only_its_own_pods(
    admin: Client, node_a: Client, workloads: str
) -> None:
    ns = workloads
    own = await node_a.list("Pod", all_namespaces=True, field_selector=f"spec.nodeName={NODE_A}")
    assert {(p.metadata.namespace, p.metadata.name) for p in own.items} >= {(ns, "pod-a")}
    assert all(p.spec.node_name == NODE_A for p in own.items)
    in_ns = await node_a.list("Pod", ns, field_selector=f"spec.nodeName={NODE_A}")
    assert [p.metadata.name for p in in_ns.items] == ["pod-a"]

    for selector in ("", f"spec.nodeName={NODE_B}", f"spec.nodeName!={NODE_A}"):
        with pytest.raises(ForbiddenError):
            await node_a.list("Pod", ns, field_selector=selector)
    with pytest.raises(ForbiddenError):
        await first_event(node_a.watch("Pod", ns))
    first = await first_event(node_a.watch("Pod", ns, field_selector=f"spec.nodeName={NODE_A}"))
    assert (first.type, first.object.metadata.name) == ("ADDED", "pod-a")

    assert (await node_a.get("Pod", "pod-a", ns)).metadata.name == "pod-a"
    with pytest.raises(ForbiddenError):
        await node_a.get("Pod", "pod-b", ns)


async def test_node_reads_only_what_its_pods_reference(node_a: Client, workloads: str) -> None:
    ns = workloads
    assert (await node_a.get("Secret", "secret-a", ns)).data["k"] == b"v"
    assert (await node_a.get("ConfigMap", "cm-a", ns)).data["k"] == "v"
    for kind, name in (("Secret", "secret-b"), ("Secret", "secret-free"), ("ConfigMap", "cm-free")):
        with pytest.raises(ForbiddenError):
            await node_a.get(kind, name, ns)
    with pytest.raises(ForbiddenError):
        await node_a.list("Secret", ns)
    with pytest.raises(ForbiddenError):
        await node_a.create(secret("planted", ns))


async def test_node_updates_status_of_its_own_pods_only(
    admin: Client, node_a: Client, workloads: str
) -> None:
    ns = workloads
    mine = await node_a.get("Pod", "pod-a", ns)
    mine.status.phase = "Running"
    updated = await node_a.update_status(mine)
    assert updated.status.phase == "Running"
    # Status only: the spec of its pods is not the node's to change.
    updated.spec.containers[0].image = "other:latest"
    with pytest.raises(ForbiddenError):
        await node_a.update(updated)

    theirs = await admin.get("Pod", "pod-b", ns)
    theirs.status.phase = "Failed"
    with pytest.raises(ForbiddenError):
        await node_a.update_status(theirs)
    with pytest.raises(ForbiddenError):
        await node_a.delete("Pod", "pod-b", ns)
    with pytest.raises(ForbiddenError):
        await node_a.create(pod("pod-new", ns, NODE_A))
    assert (await admin.get("Pod", "pod-b", ns)).status.phase == "Pending"
    # Placing pods is the scheduler's: a node may not bind one, not even to itself.
    await admin.create(pod("pod-unbound", ns, ""))
    with pytest.raises(ForbiddenError, match="pods/binding"):
        await node_a.bind(ns, "pod-unbound", NODE_A)
    assert not (await admin.get("Pod", "pod-unbound", ns)).spec.node_name


# -- bootstrap tokens ------------------------------------------------------------------------


async def test_bootstrap_token_may_create_a_csr_and_nothing_else(
    control_plane: ControlPlane, admin: Client
) -> None:
    line = parse_join(control_plane.join_command)
    token_id, _ = tokens.parse_token(line.token)
    async with Client(token_connection(control_plane, line.token), timeout=10) as c:
        v = await c.version()
        assert v.user == f"system:bootstrap:{token_id}"
        assert "system:bootstrappers" in v.groups

        # A joiner names itself: any node name is fine.
        csr, _ = node_csr(f"system:node:self-named-{SUFFIX}")
        created = await c.create(csr)
        assert created.spec.username == v.user
        assert "system:bootstrappers" in created.spec.groups
        signed = await wait_signed(c, created.metadata.name)
        assert signed.status.certificate
        assert [cond.type for cond in signed.status.conditions] == ["Approved"]

        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: c.list("Pod", "default"),
            lambda: c.get("Namespace", "default"),
            lambda: c.list("CertificateSigningRequest"),
            lambda: c.list("Secret", "kube-system"),
            lambda: c.create(config_map("x", "default")),
            lambda: first_event(c.watch("Pod", "default")),
        ]
        for call in calls:
            with pytest.raises(ForbiddenError):
                await call()
        # It reads back only its own requests.
        other, _ = node_csr(f"system:node:someone-{SUFFIX}")
        other = await admin.create(other)
        with pytest.raises(ForbiddenError):
            await c.get("CertificateSigningRequest", other.metadata.name)


async def test_csr_requester_fields_and_status_are_set_by_the_server(
    control_plane: ControlPlane,
) -> None:
    line = parse_join(control_plane.join_command)
    rogue = pki.create_ca("rogue")
    forged = pki.issue_certificate(
        rogue, common_name="admin", organizations=["system:masters"], client=True
    )
    async with Client(token_connection(control_plane, line.token), timeout=10) as c:
        csr, _ = node_csr(f"system:node:forger-{SUFFIX}")
        csr.spec.username = "system:node:someone-else"
        del csr.spec.groups[:]
        csr.spec.groups.append("system:masters")
        csr.status.certificate = forged.cert_pem
        cond = csr.status.conditions.add()
        cond.type = "Approved"
        created = await c.create(csr)
        assert created.spec.username.startswith("system:bootstrap:")
        assert "system:masters" not in created.spec.groups
        signed = await wait_signed(c, created.metadata.name)
        assert signed.status.certificate != forged.cert_pem
        cert = x509.load_pem_x509_certificate(signed.status.certificate)
        assert cert.issuer == cluster_ca(control_plane).cert.subject


async def test_bootstrap_csr_asking_for_more_than_a_node_identity_is_denied(
    control_plane: ControlPlane,
) -> None:
    line = parse_join(control_plane.join_command)
    async with Client(token_connection(control_plane, line.token), timeout=10) as c:
        for cn, orgs in (
            ("admin", ("system:masters",)),
            (f"system:node:greedy-{SUFFIX}", ("system:nodes", "system:masters")),
        ):
            csr, _ = node_csr(cn, orgs)
            created = await c.create(csr)
            result = await wait_signed(c, created.metadata.name)
            assert not result.status.certificate
            assert [cond.type for cond in result.status.conditions] == ["Denied"]


async def test_signer_honours_a_short_expiration(control_plane: ControlPlane) -> None:
    line = parse_join(control_plane.join_command)
    async with Client(token_connection(control_plane, line.token), timeout=10) as c:
        csr, _ = node_csr(f"system:node:short-{SUFFIX}")
        csr.spec.expiration_seconds = 3600
        created = await c.create(csr)
        signed = await wait_signed(c, created.metadata.name)
    cert = x509.load_pem_x509_certificate(signed.status.certificate)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(seconds=3600)


async def test_signer_caps_the_certificate_lifetime(control_plane: ControlPlane) -> None:
    line = parse_join(control_plane.join_command)
    async with Client(token_connection(control_plane, line.token), timeout=10) as c:
        csr, _ = node_csr(f"system:node:forever-{SUFFIX}")
        csr.spec.expiration_seconds = 20 * 365 * 86400
        created = await c.create(csr)
        signed = await wait_signed(c, created.metadata.name)
    cert = x509.load_pem_x509_certificate(signed.status.certificate)
    # Kubernetes: min(expirationSeconds, --cluster-signing-duration (1 year)).
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=366)


def _bootstrap_secret(token: tokens.BootstrapToken, secret_type: str) -> Any:
    s = kind_info("Secret").new()
    s.metadata.name = token.secret_name
    s.metadata.namespace = "kube-system"
    s.type = secret_type
    for key, value in token.to_secret_data().items():
        s.data[key] = value
    return s


@pytest.mark.parametrize(
    ("extra_groups", "secret_type"),
    [
        pytest.param(
            ["system:masters"],
            tokens.SECRET_TYPE,
            id="extra-group-outside-bootstrappers",
        ),
        pytest.param(
            [tokens.DEFAULT_EXTRA_GROUPS],
            "Opaque",
            id="secret-of-another-type",
        ),
    ],
)
async def test_bootstrap_token_secrets_are_validated_as_in_kubernetes(
    control_plane: ControlPlane, admin: Client, extra_groups: list[str], secret_type: str
) -> None:
    token = tokens.new_bootstrap_token(ttl=timedelta(hours=1))
    token.extra_groups = extra_groups
    await admin.create(_bootstrap_secret(token, secret_type))
    try:
        async with Client(token_connection(control_plane, token.token), timeout=10) as c:
            with pytest.raises(UnauthenticatedError):
                await c.version()
            with pytest.raises((UnauthenticatedError, ForbiddenError)):
                await c.list("Pod", "kube-system")
    finally:
        await admin.delete("Secret", token.secret_name, "kube-system")


async def test_node_renewing_with_another_nodes_name_is_denied(
    admin: Client, node_a: Client
) -> None:
    with pytest.raises(JoinError) as err:
        await request_certificate(node_a, NODE_B, timeout=15)
    assert "denied" in str(err.value)
    assert NODE_B in str(err.value) and NODE_A in str(err.value)
    csrs = (await admin.list("CertificateSigningRequest")).items
    denied = [
        c
        for c in csrs
        if c.spec.username == f"system:node:{NODE_A}"
        and c.metadata.name.startswith(f"node-csr-{NODE_B}-")
    ]
    assert len(denied) == 1
    assert not denied[0].status.certificate
    conditions = {c.type: c for c in denied[0].status.conditions}
    assert "Denied" in conditions and "Approved" not in conditions
    assert conditions["Denied"].status == "True"


# -- service-account and other bearer tokens ---------------------------------------------------


async def test_service_account_token_authenticates_but_is_not_authorized(
    control_plane: ControlPlane,
) -> None:
    key = (control_plane.data_dir / "pki" / "sa.key").read_bytes()
    token = satoken.issue_sa_token(
        key, namespace="default", name="robot", uid=str(uuid.uuid4()), ttl=timedelta(minutes=10)
    )
    async with Client(token_connection(control_plane, token), timeout=10) as c:
        v = await c.version()
        assert v.user == "system:serviceaccount:default:robot"
        assert {
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated",
        } <= set(v.groups)
        with pytest.raises(ForbiddenError) as err:
            await c.list("Pod", "default")
        assert "system:serviceaccount:default:robot" in err.value.message


async def test_bad_bearer_tokens_are_unauthenticated(control_plane: ControlPlane) -> None:
    other_key = satoken.generate_signing_key()
    own_key = (control_plane.data_dir / "pki" / "sa.key").read_bytes()
    bad = {
        "garbage": "garbage",
        "foreign key": satoken.issue_sa_token(
            other_key, namespace="default", name="robot", uid="u"
        ),
        "expired": satoken.issue_sa_token(
            own_key,
            namespace="default",
            name="robot",
            uid="u",
            ttl=timedelta(minutes=1),
            now=datetime.now(UTC) - timedelta(hours=1),
        ),
        "wrong audience": satoken.issue_sa_token(
            own_key, namespace="default", name="robot", uid="u", audience="someone-else"
        ),
        "bad bootstrap secret": parse_join(control_plane.join_command).token[:7] + "x" * 16,
    }
    for what, token in bad.items():
        async with Client(token_connection(control_plane, token), timeout=10) as c:
            for call in (c.version, lambda: c.list("Pod", "default")):
                try:
                    await call()
                except UnauthenticatedError:
                    continue
                raise AssertionError(f"a {what} token was accepted")
    # No token at all on the token port.
    conn = replace(token_connection(control_plane, "x"), token="")
    async with Client(conn, timeout=10) as c:
        with pytest.raises(UnauthenticatedError):
            await c.version()


async def test_token_port_does_not_trust_client_certificates(
    control_plane: ControlPlane,
) -> None:
    rogue = pki.create_ca("rogue")
    forged = pki.issue_certificate(
        rogue, common_name="admin", organizations=["system:masters"], client=True
    )
    conn = Connection(
        server=f"127.0.0.1:{control_plane.port + 1}",
        ca_pem=cluster_ca(control_plane).cert_pem,
        cert_pem=forged.cert_pem,
        key_pem=forged.key_pem,
    )
    await refused(conn)


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_nodes(control_plane: ControlPlane) -> Iterator[None]:
    yield

    async def cleanup() -> None:
        async with control_plane.client() as c:
            for name in (NODE_A, NODE_B):
                with contextlib.suppress(ApiError):
                    await c.delete("Node", name)

    asyncio.run(cleanup())
