"""The pods a Job makes: its template, owned by the Job, carrying the tracking
finalizer, and for Indexed Jobs the completion index in every place a
workload may look for it (annotation, label, JOB_COMPLETION_INDEX, hostname)."""

from __future__ import annotations

from typing import Any

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.job_indexes import COMPLETION_INDEX_ENV, COMPLETION_INDEX_KEY
from orchestrator.controllers.job_plan import TRACKING_FINALIZER
from orchestrator.controllers.podtemplate import pod_from_template

# A hostname is one DNS label.
_MAX_HOSTNAME = 63


def with_type(job: Any) -> Any:
    """job, with apiVersion and kind filled in if a decoder left them empty:
    ownerReferences and events name them."""
    if job.api_version and job.kind:
        return job
    typed = type(job)()
    typed.CopyFrom(job)
    typed.api_version = typed.api_version or "batch/v1"
    typed.kind = typed.kind or "Job"
    return typed


def new_job_pod(job: Any, index: int | None) -> core.Pod:
    """A Pod (not yet created) for job; index is its completion index, or
    None for a NonIndexed Job."""
    job = with_type(job)
    name = job.metadata.name
    prefix = f"{name}-" if index is None else f"{name}-{index}-"
    pod: core.Pod = pod_from_template(job.spec.template, job, generate_name=prefix)
    if TRACKING_FINALIZER not in pod.metadata.finalizers:
        pod.metadata.finalizers.append(TRACKING_FINALIZER)
    if index is None:
        return pod
    pod.metadata.annotations[COMPLETION_INDEX_KEY] = str(index)
    pod.metadata.labels[COMPLETION_INDEX_KEY] = str(index)
    if not pod.spec.hostname:
        # Stable per index, so peers of an Indexed Job can find each other
        # through a headless Service as <job>-<index>.<subdomain>.
        pod.spec.hostname = f"{name}-{index}"[:_MAX_HOSTNAME].rstrip("-")
    for container in (*pod.spec.init_containers, *pod.spec.containers):
        if not any(env.name == COMPLETION_INDEX_ENV for env in container.env):
            container.env.append(core.EnvVar(name=COMPLETION_INDEX_ENV, value=str(index)))
    return pod
