"""Approve and sign node client certificates, as Kubernetes' csrapproving and
csrsigning controllers do for kubelets.

A CSR for signer `kubernetes.io/kube-apiserver-client-kubelet` is approved
when its subject is exactly `CN=system:node:<name>, O=system:nodes` and it
came from a bootstrap token (a node joining) or from that same node (a node
renewing). A CSR for signer `kubernetes.io/kubelet-serving` (the agent's
serving certificate for logs and exec) is approved when it comes from the node
it names (see certs/serving.py). Anything else is denied with the reason,
never left hanging.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from certs import csr as csrlib
from certs import serving
from certs.pki import KeyPair
from orchestrator.api.meta import now_rfc3339
from orchestrator.controllers.base import Controller

KUBELET_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
BOOTSTRAPPERS = "system:bootstrappers"
NODE_PREFIX = "system:node:"
DEFAULT_DURATION = timedelta(days=365)


def review(csr: Any) -> tuple[bool, str]:
    """(approve?, reason) for one CertificateSigningRequest."""
    spec = csr.spec
    if spec.signer_name == serving.KUBELET_SERVING_SIGNER:
        problem = serving.node_serving_csr_problem(
            bytes(spec.request), spec.username, spec.groups, spec.usages
        )
        if problem is not None:
            return False, problem
        return True, "node serving certificate request from the node itself"
    if spec.signer_name != KUBELET_SIGNER:
        return False, f'signer "{spec.signer_name}" is not handled by this cluster'
    try:
        request = csrlib.parse_csr(spec.request)
    except csrlib.CSRError as exc:
        return False, str(exc)
    if BOOTSTRAPPERS in spec.groups:
        expected = None  # a joining node may name itself
    elif spec.username.startswith(NODE_PREFIX):
        expected = spec.username[len(NODE_PREFIX) :]  # a node renews only its own identity
    else:
        return False, f'user "{spec.username}" may not request node client certificates'
    problem = csrlib.node_client_csr_problem(request, expected)
    if problem is not None:
        return False, problem
    return True, "node client certificate request from a bootstrap token or the node itself"


class CSRSigner(Controller):
    name = "csr-signer"
    workers = 1

    def __init__(self, client: Any, ca: KeyPair) -> None:
        super().__init__(client)
        self.ca = ca

    def setup(self) -> None:
        self.csrs = self.informer("CertificateSigningRequest")
        self.csrs.add_handler(lambda _t, obj, _old: self.enqueue(obj))

    async def sync(self, key: str) -> None:
        cached = self.csrs.get(key)
        if cached is None or cached.status.certificate:
            return
        if any(c.type in ("Denied", "Failed") for c in cached.status.conditions):
            return
        csr = type(cached)()
        csr.CopyFrom(cached)
        approve, reason = review(csr)
        cond = csr.status.conditions.add()
        cond.type = "Approved" if approve else "Denied"
        cond.status = "True"
        cond.reason = "AutoApproved" if approve else "AutoDenied"
        cond.message = reason
        cond.last_update_time = cond.last_transition_time = now_rfc3339()
        if approve:
            # Callers may ask for less than the cluster's signing duration, never more.
            longest = int(DEFAULT_DURATION.total_seconds())
            seconds = min(csr.spec.expiration_seconds or longest, longest)
            csr.status.certificate = csrlib.sign_csr(
                self.ca,
                csr.spec.request,
                valid_seconds=max(600, seconds),
                usages=(
                    serving.SERVING_USAGES
                    if csr.spec.signer_name == serving.KUBELET_SERVING_SIGNER
                    else ("digital signature", "client auth")
                ),
            )
        await self.client.update_status(csr)
