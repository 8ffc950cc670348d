"""Authorization: may this user do this?

Authorizers sit behind one small interface and are asked in order; the first
that allows or denies decides, and nobody having an opinion means denied.
Admins (group system:masters) may do everything. Nodes (system:node:<name>
in system:nodes) get what a kubelet needs and no more, like Kubernetes' node
authorizer: their own Node and Lease, the pods bound to them and what those
pods reference. Joining nodes (system:bootstrappers) may only ask for a
certificate. RBAC will be one more authorizer in the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo, kind_info
from orchestrator.api.selectors import FieldSelector
from orchestrator.apiserver.cache import WatchCache
from orchestrator.apiserver.registry import UserInfo

MASTERS = "system:masters"
NODES = "system:nodes"
NODE_PREFIX = "system:node:"
BOOTSTRAPPERS = "system:bootstrappers"
NODE_LEASE_NAMESPACE = "kube-node-lease"

READ_VERBS = frozenset({"get", "list", "watch"})
# Pod subresources proxied to the node's agent (get pods/log, create pods/exec):
# only admins for now, not the nodes nor the control-plane components.
STREAM_SUBRESOURCES = frozenset({"log", "exec"})
# Resource usage of pods and nodes (apiserver/metrics.py): admins and the
# controller-manager (its autoscaler), as metrics-server's RBAC allows.
METRICS_SUBRESOURCE = "metrics"
CONTROLLER_MANAGER = "system:kube-controller-manager"


@dataclass(frozen=True)
class Attributes:
    verb: str  # get list watch create update delete apply
    info: KindInfo
    namespace: str = ""
    name: str = ""
    subresource: str = ""  # "status" for status updates; "log", "exec" (STREAM_SUBRESOURCES)
    # The object being written (create/update/apply), or None.
    obj: Message | None = None
    field_selector: FieldSelector | None = None

    def describe(self) -> str:
        what = self.info.resource + (f"/{self.subresource}" if self.subresource else "")
        where = (
            f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        )
        named = f' "{self.name}"' if self.name else ""
        return f"{self.verb} resource {what}{named}{where}"


@dataclass(frozen=True)
class Decision:
    allowed: bool | None  # None: no opinion, ask the next authorizer
    reason: str = ""


NO_OPINION = Decision(None)


class Authorizer(Protocol):
    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision: ...


class AdminAuthorizer:
    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        return Decision(True) if user.in_group(MASTERS) else NO_OPINION


class SystemComponentAuthorizer:
    """The scheduler and controller-manager act on every kind, as their built-in
    cluster roles allow in Kubernetes. (RBAC will express this as bindings.)"""

    USERS = frozenset({CONTROLLER_MANAGER, "system:kube-scheduler"})

    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        if user.name not in self.USERS or attrs.subresource in STREAM_SUBRESOURCES:
            return NO_OPINION
        if attrs.subresource == METRICS_SUBRESOURCE and user.name != CONTROLLER_MANAGER:
            return NO_OPINION
        return Decision(True)


class BootstrapAuthorizer:
    """A joining node may create its certificate request and read it back."""

    def __init__(self, cache: WatchCache) -> None:
        self._cache = cache

    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        if not user.in_group(BOOTSTRAPPERS) or attrs.info.kind != "CertificateSigningRequest":
            return NO_OPINION
        if attrs.verb == "create":
            return Decision(True)
        if attrs.verb == "get" and _csr_owned_by(self._cache, attrs.name, user):
            return Decision(True)
        return NO_OPINION


def _csr_owned_by(cache: WatchCache, name: str, user: UserInfo) -> bool:
    cached = cache.get(kind_info("CertificateSigningRequest"), "", name)
    if cached is None:
        return True  # let the request proceed to a clean NotFound
    csr: Any = cached.decode()
    return bool(csr.spec.username == user.name)


class NodeAuthorizer:
    def __init__(self, cache: WatchCache) -> None:
        self._cache = cache

    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        if not user.in_group(NODES) or not user.name.startswith(NODE_PREFIX):
            return NO_OPINION
        if attrs.subresource == METRICS_SUBRESOURCE:
            return NO_OPINION  # not even its own pods': only the apiserver reads agents
        node = user.name[len(NODE_PREFIX) :]
        kind = attrs.info.kind
        rule = getattr(self, f"_{kind.lower()}", None)
        if rule is None:
            return NO_OPINION
        allowed = rule(node, attrs, user)
        if allowed:
            return Decision(True)
        return Decision(False, f'node "{node}" may not {attrs.describe()}')

    # One rule per kind a node agent touches.

    def _node(self, node: str, a: Attributes, user: UserInfo) -> bool:
        if a.verb in READ_VERBS:
            return True
        return a.verb in ("create", "update", "apply") and a.name == node

    def _lease(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return (
            a.namespace == NODE_LEASE_NAMESPACE
            and a.name == node
            and a.verb in ("get", "create", "update", "apply", "delete")
        )

    def _pod(self, node: str, a: Attributes, user: UserInfo) -> bool:
        if a.subresource in STREAM_SUBRESOURCES:
            return False
        if a.verb in ("list", "watch"):
            return a.field_selector is not None and a.field_selector.exact("spec.nodeName") == node
        if a.verb == "get":
            return self._pod_on(node, a.namespace, a.name)
        if a.verb == "update" and a.subresource == "status":
            return self._pod_on(node, a.namespace, a.name)
        if a.verb == "delete":
            return self._pod_on(node, a.namespace, a.name)
        return False

    def _pod_on(self, node: str, namespace: str, name: str) -> bool:
        cached = self._cache.get(kind_info("Pod"), namespace, name)
        return cached is not None and cached.fields.get("spec.nodeName") == node

    def _event(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb in ("create", "update", "get", "list")

    def _service(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb in READ_VERBS  # the node's service proxy and DNS need every service

    def _endpoints(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb in READ_VERBS

    def _namespace(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb == "get"

    def _certificatesigningrequest(self, node: str, a: Attributes, user: UserInfo) -> bool:
        if a.verb == "create":
            return True  # renewal: the CSR approver checks the CN is this node's
        return a.verb == "get" and _csr_owned_by(self._cache, a.name, user)

    def _configmap(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb == "get" and self._referenced(node, a, "configmap")

    def _secret(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb == "get" and self._referenced(node, a, "secret")

    def _persistentvolumeclaim(self, node: str, a: Attributes, user: UserInfo) -> bool:
        return a.verb == "get" and self._referenced(node, a, "pvc")

    def _persistentvolume(self, node: str, a: Attributes, user: UserInfo) -> bool:
        if a.verb != "get":
            return False
        pv = self._cache.get(a.info, "", a.name)
        if pv is None:
            return True  # NotFound reveals nothing
        claim: Any = pv.decode()
        ref = claim.spec.claim_ref
        return self._referenced_name(node, ref.namespace, "pvc", ref.name)

    def _referenced(self, node: str, a: Attributes, what: str) -> bool:
        return self._referenced_name(node, a.namespace, what, a.name)

    def _referenced_name(self, node: str, namespace: str, what: str, name: str) -> bool:
        pods = self._cache.list(kind_info("Pod"), _node_filter(namespace, node))
        return any(name in pod_references(p.decode(), what) for p in pods)


def _node_filter(namespace: str, node: str) -> Any:
    from orchestrator.api.selectors import parse_field_selector
    from orchestrator.apiserver.cache import Filter

    return Filter(
        namespace=namespace,
        fields=parse_field_selector(f"spec.nodeName={node}", ("spec.nodeName",)),
    )


def pod_references(pod: Any, what: str) -> set[str]:
    """Names of the ConfigMaps, Secrets or PVCs a pod uses."""
    names: set[str] = set()
    spec = pod.spec
    for vol in spec.volumes:
        if what == "configmap" and vol.HasField("config_map"):
            names.add(vol.config_map.name)
        elif what == "secret" and vol.HasField("secret"):
            names.add(vol.secret.secret_name)
        elif what == "pvc" and vol.HasField("persistent_volume_claim"):
            names.add(vol.persistent_volume_claim.claim_name)
        if vol.HasField("projected"):
            for src in vol.projected.sources:
                if what == "configmap" and src.HasField("config_map"):
                    names.add(src.config_map.name)
                elif what == "secret" and src.HasField("secret"):
                    names.add(src.secret.name)
    if what == "secret":
        names.update(s.name for s in spec.image_pull_secrets)
    for c in [*spec.init_containers, *spec.containers]:
        for env in c.env:
            src = env.value_from
            if what == "configmap" and src.HasField("config_map_key_ref"):
                names.add(src.config_map_key_ref.name)
            elif what == "secret" and src.HasField("secret_key_ref"):
                names.add(src.secret_key_ref.name)
        for env_from in c.env_from:
            if what == "configmap" and env_from.HasField("config_map_ref"):
                names.add(env_from.config_map_ref.name)
            elif what == "secret" and env_from.HasField("secret_ref"):
                names.add(env_from.secret_ref.name)
    return names


class UnionAuthorizer:
    def __init__(self, authorizers: list[Authorizer]) -> None:
        self._authorizers = authorizers

    def authorize(self, user: UserInfo, attrs: Attributes) -> Decision:
        for authorizer in self._authorizers:
            decision = authorizer.authorize(user, attrs)
            if decision.allowed is not None:
                return decision
        return Decision(False, f'user "{user.name}" cannot {attrs.describe()}')


def default_authorizer(cache: WatchCache) -> UnionAuthorizer:
    return UnionAuthorizer(
        [
            AdminAuthorizer(),
            SystemComponentAuthorizer(),
            NodeAuthorizer(cache),
            BootstrapAuthorizer(cache),
        ]
    )
