"""What a StatefulSet's pods and claims look like, and what state a pod is in.

A StatefulSet pod's identity is its ordinal: the name `<set>-<ordinal>`, the
hostname (the same), the subdomain (spec.serviceName, so the pod resolves as
`<pod>.<service>.<ns>.svc.cluster.local`), and one PersistentVolumeClaim per
volumeClaimTemplate named `<template>-<set>-<ordinal>`, which outlives the pod.

The pod-state predicates at the bottom (running and ready, available, failed,
terminating) are what every workload controller asks of a pod; the DaemonSet
controller uses them too.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.api.selectors import LabelSelector, selector_from_match
from orchestrator.controllers.history import REVISION_HASH_LABEL
from orchestrator.controllers.podtemplate import controller_ref, pod_from_template

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"

_ORDINAL_RE = re.compile(r"^(.*)-([0-9]+)$")


def pod_name(set_name: str, ordinal: int) -> str:
    return f"{set_name}-{ordinal}"


def claim_name(template_name: str, set_name: str, ordinal: int) -> str:
    return f"{template_name}-{set_name}-{ordinal}"


def ordinal_of(set_name: str, name: str) -> int | None:
    """The ordinal in a pod name `<set>-<n>`, or None when the name is not one
    of this set's (a pod adopted by selector but named otherwise)."""
    match = _ORDINAL_RE.match(name)
    if match is None or match.group(1) != set_name:
        return None
    digits = match.group(2)
    if len(digits) > 1 and digits.startswith("0"):
        return None  # "web-01" is not ordinal 1's name
    return int(digits)


def revision_of(pod: Any) -> str:
    return str(pod.metadata.labels.get(REVISION_HASH_LABEL, ""))


def new_pod(sts: Any, template: core.PodTemplateSpec, ordinal: int, revision: str) -> core.Pod:
    """The pod for ordinal, from template (the current or the update revision's)."""
    set_name = sts.metadata.name
    name = pod_name(set_name, ordinal)
    pod = pod_from_template(
        template,
        sts,
        name=name,
        extra_labels={
            POD_NAME_LABEL: name,
            POD_INDEX_LABEL: str(ordinal),
            REVISION_HASH_LABEL: revision,
        },
    )
    pod.spec.hostname = name
    if sts.spec.service_name:
        pod.spec.subdomain = sts.spec.service_name
    _attach_claims(pod, sts, ordinal)
    return pod


def _attach_claims(pod: core.Pod, sts: Any, ordinal: int) -> None:
    """Point the volumes named after claim templates at this ordinal's claims
    (replacing a template volume of that name, as Kubernetes does)."""
    claims = {
        t.metadata.name: claim_name(t.metadata.name, sts.metadata.name, ordinal)
        for t in sts.spec.volume_claim_templates
    }
    if not claims:
        return
    kept = [v for v in pod.spec.volumes if v.name not in claims]
    del pod.spec.volumes[:]
    for template_name, claim in claims.items():
        vol = pod.spec.volumes.add()
        vol.name = template_name
        vol.persistent_volume_claim.claim_name = claim
    pod.spec.volumes.extend(kept)


def new_claims(sts: Any, ordinal: int) -> list[core.PersistentVolumeClaim]:
    """The claims ordinal's pod needs (not yet created). They carry no owner
    unless the retention policy says to delete them with the set: by default
    they outlive both pod and set, so a recreated pod finds its data."""
    selector_labels = dict(sts.spec.selector.match_labels)
    claims = []
    for template in sts.spec.volume_claim_templates:
        pvc = core.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
        pvc.metadata.name = claim_name(template.metadata.name, sts.metadata.name, ordinal)
        pvc.metadata.namespace = sts.metadata.namespace
        pvc.metadata.labels.update(template.metadata.labels)
        pvc.metadata.labels.update(selector_labels)
        pvc.metadata.annotations.update(template.metadata.annotations)
        pvc.spec.CopyFrom(template.spec)
        if sts.spec.persistent_volume_claim_retention_policy.when_deleted == "Delete":
            ref = controller_ref(sts)
            ref.controller = False  # the set owns but does not control its claims
            pvc.metadata.owner_references.append(ref)
        claims.append(pvc)
    return claims


def selector_of(msg: Any) -> LabelSelector:
    """A metav1.LabelSelector message as a matcher (no requirements: everything)."""
    return selector_from_match(
        dict(msg.match_labels),
        [(e.key, e.operator, list(e.values)) for e in msg.match_expressions],
    )


# -- pod state -----------------------------------------------------------------------


def is_terminating(pod: Any) -> bool:
    return bool(pod.metadata.deletion_timestamp)


def is_failed(pod: Any) -> bool:
    """Ended for good: a StatefulSet or DaemonSet pod (restartPolicy Always)
    only gets here when evicted or its node gave up on it."""
    return pod.status.phase in ("Failed", "Succeeded")


def _ready_condition(pod: Any) -> Any | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def is_running_and_ready(pod: Any) -> bool:
    cond = _ready_condition(pod)
    return pod.status.phase == "Running" and cond is not None and cond.status == "True"


def ready_since(pod: Any) -> datetime | None:
    cond = _ready_condition(pod)
    if cond is None or cond.status != "True" or not cond.last_transition_time:
        return None
    try:
        return parse_rfc3339(cond.last_transition_time)
    except ValueError:
        return None


def available_in(pod: Any, min_ready_seconds: int, now: datetime) -> float | None:
    """Seconds until pod counts as available (0 when it already does), or None
    when it is not running and ready at all."""
    if not is_running_and_ready(pod) or is_terminating(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    since = ready_since(pod)
    if since is None:
        return 0.0  # ready without a timestamp: nothing to wait on
    left = since + timedelta(seconds=min_ready_seconds) - now
    return max(left.total_seconds(), 0.0)


def is_available(pod: Any, min_ready_seconds: int, now: datetime) -> bool:
    return available_in(pod, min_ready_seconds, now) == 0.0
