"""Kubernetes' defaults, per kind, as its SetDefaults_* functions apply them.

`apply_defaults` runs on create and again on every update (on the merged
object), so every rule here only fills what is unset and is idempotent.
Where upstream applies a default only to Pods and not to pod templates
(SetDefaults_Pod rather than SetDefaults_PodSpec, or an admission plugin),
so does this module: a Deployment read back must look as Kubernetes shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any, Final

from google.protobuf.message import Message

from orchestrator.api.pb import core_v1_pb2
from orchestrator.api.quantity import QuantityError, parse_quantity

__all__ = ["apply_defaults", "image_pull_policy", "pod_qos_class"]

# 0644, as Kubernetes' SecretVolumeSourceDefaultMode and friends.
_DEFAULT_FILE_MODE: Final = 0o644
_DEFAULT_GRACE_SECONDS: Final = 30
_TOKEN_EXPIRATION_SECONDS: Final = 3600
_CLIENT_IP_AFFINITY_SECONDS: Final = 10800
_DEFAULT_CPU_UTILIZATION: Final = 80
_RBAC_GROUP: Final = "rbac.authorization.k8s.io"

# The sources a Volume may name: every field but its name.
_VOLUME_SOURCES: Final = tuple(
    f.name for f in core_v1_pb2.Volume.DESCRIPTOR.fields if f.name != "name"
)

# Job labels and selector the apiserver generates (batch/v1 constants).
JOB_CONTROLLER_UID_LABEL: Final = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
LEGACY_JOB_CONTROLLER_UID_LABEL: Final = "controller-uid"
LEGACY_JOB_NAME_LABEL: Final = "job-name"


def apply_defaults(obj: Message) -> None:
    defaulter = _DEFAULTERS.get(obj.kind)  # type: ignore[attr-defined]
    if defaulter is not None:
        defaulter(obj)


# --------------------------------------------------------------------------------------
# Pod spec pieces (SetDefaults_PodSpec, _Container, _Probe, _Volume, ...)
# --------------------------------------------------------------------------------------


def image_pull_policy(image: str) -> str:
    """Always for ":latest" or an untagged, undigested image; IfNotPresent otherwise."""
    if not image:
        return "IfNotPresent"  # unparsable: Kubernetes ignores the error; validation reports it
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]  # "registry:5000/app" has a port, not a tag
    tag = last.rpartition(":")[2] if ":" in last else ""
    if not tag and not digest:
        tag = "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_http_get(action: core_v1_pb2.HTTPGetAction) -> None:
    if not action.path:
        action.path = "/"
    if not action.scheme:
        action.scheme = "HTTP"


def _default_probe(probe: core_v1_pb2.Probe) -> None:
    # Upstream these are plain int32s, so an explicit 0 means "unset" too.
    if not probe.timeout_seconds:
        probe.timeout_seconds = 1
    if not probe.period_seconds:
        probe.period_seconds = 10
    if not probe.success_threshold:
        probe.success_threshold = 1
    if not probe.failure_threshold:
        probe.failure_threshold = 3
    if probe.HasField("http_get"):
        _default_http_get(probe.http_get)
    if probe.HasField("grpc") and not probe.grpc.HasField("service"):
        probe.grpc.service = ""


def _default_lifecycle(lifecycle: core_v1_pb2.Lifecycle) -> None:
    for handler_name in ("post_start", "pre_stop"):
        if lifecycle.HasField(handler_name):
            handler = getattr(lifecycle, handler_name)
            if handler.HasField("http_get"):
                _default_http_get(handler.http_get)


def _default_field_ref(ref: core_v1_pb2.ObjectFieldSelector) -> None:
    if not ref.api_version:
        ref.api_version = "v1"


def _default_container(c: Any) -> None:
    """Containers, init containers and ephemeral containers (same fields)."""
    if not c.image_pull_policy:
        c.image_pull_policy = image_pull_policy(c.image)
    if not c.termination_message_path:
        c.termination_message_path = "/dev/termination-log"
    if not c.termination_message_policy:
        c.termination_message_policy = "File"
    for port in c.ports:
        if not port.protocol:
            port.protocol = "TCP"
    for probe_name in ("liveness_probe", "readiness_probe", "startup_probe"):
        if c.HasField(probe_name):
            _default_probe(getattr(c, probe_name))
    if c.HasField("lifecycle"):
        _default_lifecycle(c.lifecycle)
    for env in c.env:
        if env.HasField("value_from") and env.value_from.HasField("field_ref"):
            _default_field_ref(env.value_from.field_ref)


def _default_downward_items(items: Iterable[core_v1_pb2.DownwardAPIVolumeFile]) -> None:
    for item in items:
        if item.HasField("field_ref"):
            _default_field_ref(item.field_ref)


def _default_projected(projected: core_v1_pb2.ProjectedVolumeSource) -> None:
    if not projected.HasField("default_mode"):
        projected.default_mode = _DEFAULT_FILE_MODE
    for source in projected.sources:
        if source.HasField("service_account_token"):
            token = source.service_account_token
            if not token.HasField("expiration_seconds"):
                token.expiration_seconds = _TOKEN_EXPIRATION_SECONDS
        if source.HasField("downward_api"):
            _default_downward_items(source.downward_api.items)


def _default_pvc_spec(spec: core_v1_pb2.PersistentVolumeClaimSpec) -> None:
    if not spec.HasField("volume_mode"):
        spec.volume_mode = "Filesystem"


def _default_volume(v: core_v1_pb2.Volume) -> None:
    if not any(v.HasField(source) for source in _VOLUME_SOURCES):
        v.empty_dir.SetInParent()  # a volume with no source is an emptyDir
    if v.HasField("host_path") and not v.host_path.HasField("type"):
        v.host_path.type = ""
    for source_name in ("secret", "config_map", "downward_api"):
        if v.HasField(source_name):
            source = getattr(v, source_name)
            if not source.HasField("default_mode"):
                source.default_mode = _DEFAULT_FILE_MODE
    if v.HasField("downward_api"):
        _default_downward_items(v.downward_api.items)
    if v.HasField("projected"):
        _default_projected(v.projected)
    if v.HasField("ephemeral") and v.ephemeral.HasField("volume_claim_template"):
        _default_pvc_spec(v.ephemeral.volume_claim_template.spec)


def _default_service_account(spec: core_v1_pb2.PodSpec) -> None:
    # serviceAccount is the deprecated alias: read it when the new name is
    # empty, and always write the alias back, as Kubernetes' conversion does.
    if not spec.service_account_name and spec.service_account:
        spec.service_account_name = spec.service_account
    spec.service_account = spec.service_account_name


def _default_pod_spec(spec: core_v1_pb2.PodSpec, restart_policy: str | None) -> None:
    """SetDefaults_PodSpec: everything with a pod spec, pods and templates alike.

    ``restart_policy`` is None for Job templates: Kubernetes requires an
    explicit OnFailure or Never there, and validation says so.
    """
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if restart_policy and not spec.restart_policy:
        spec.restart_policy = restart_policy
    spec.security_context.SetInParent()
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = _DEFAULT_GRACE_SECONDS
    if not spec.scheduler_name:
        spec.scheduler_name = "default-scheduler"
    _default_service_account(spec)
    for container in (*spec.init_containers, *spec.containers, *spec.ephemeral_containers):
        _default_container(container)
    for volume in spec.volumes:
        _default_volume(volume)


def _default_pod_template(
    template: core_v1_pb2.PodTemplateSpec, restart_policy: str | None
) -> None:
    _default_pod_spec(template.spec, restart_policy)


# --------------------------------------------------------------------------------------
# Pod (SetDefaults_Pod, plus what the ServiceAccount and Priority admission plugins set)
# --------------------------------------------------------------------------------------


def _requests_from_limits(resources: core_v1_pb2.ResourceRequirements) -> None:
    # Per resource: a limit without a request means "request exactly that".
    for name, limit in resources.limits.items():
        if name not in resources.requests:
            resources.requests[name] = limit


def _host_network_ports(containers: Iterable[core_v1_pb2.Container]) -> None:
    # With the host's network the container port is the host port.
    for c in containers:
        for port in c.ports:
            if not port.host_port:
                port.host_port = port.container_port


def _positive(value: str) -> Fraction:
    try:
        q = parse_quantity(value)
    except QuantityError:
        return Fraction(0)  # validation reports it; QoS ignores it
    return q if q > 0 else Fraction(0)


_QOS_RESOURCES: Final = ("cpu", "memory")


def pod_qos_class(spec: core_v1_pb2.PodSpec) -> str:
    """Guaranteed, Burstable or BestEffort, as Kubernetes' ComputePodQOS."""
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for c in (*spec.containers, *spec.init_containers):
        for name in _QOS_RESOURCES:
            req = _positive(c.resources.requests.get(name, "0"))
            if req:
                requests[name] = requests.get(name, Fraction(0)) + req
            lim = _positive(c.resources.limits.get(name, "0"))
            if lim:
                limits[name] = limits.get(name, Fraction(0)) + lim
        if not all(_positive(c.resources.limits.get(n, "0")) for n in _QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if (
        guaranteed
        and requests.keys() == limits.keys()
        and all(limits[name] == value for name, value in requests.items())
    ):
        return "Guaranteed"
    return "Burstable"


def _default_pod(pod: Any) -> None:
    spec: core_v1_pb2.PodSpec = pod.spec
    for c in (*spec.containers, *spec.init_containers):
        _requests_from_limits(c.resources)
    if not spec.HasField("enable_service_links"):
        spec.enable_service_links = True
    if spec.host_network:
        _host_network_ports(spec.containers)
        _host_network_ports(spec.init_containers)
    # The ServiceAccount admission plugin's default; pods only, never templates.
    if not spec.service_account_name and not spec.service_account:
        spec.service_account_name = "default"
    # The Priority admission plugin's floor; the policy step may raise it
    # from the pod's priorityClassName.
    if not spec.HasField("priority"):
        spec.priority = 0
    _default_pod_spec(spec, "Always")
    # Set once at creation, as Kubernetes' pod strategy does.
    if pod.status.phase == "Pending" and not pod.status.qos_class:
        pod.status.qos_class = pod_qos_class(spec)


# --------------------------------------------------------------------------------------
# apps/v1
# --------------------------------------------------------------------------------------


def _default_replicas(spec: Any) -> None:
    if not spec.HasField("replicas"):
        spec.replicas = 1


def _default_history_limit(spec: Any) -> None:
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = 10


def _default_deployment(d: Any) -> None:
    spec = d.spec
    _default_replicas(spec)
    strategy = spec.strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update
        if not rolling.HasField("max_unavailable"):
            rolling.max_unavailable = "25%"
        if not rolling.HasField("max_surge"):
            rolling.max_surge = "25%"
    _default_history_limit(spec)
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = 600
    _default_pod_template(spec.template, "Always")


def _default_replicaset(rs: Any) -> None:
    _default_replicas(rs.spec)
    _default_pod_template(rs.spec.template, "Always")


def _default_pvc_template(pvc: core_v1_pb2.PersistentVolumeClaim) -> None:
    _default_pvc(pvc)


def _default_statefulset(sts: Any) -> None:
    spec = sts.spec
    if not spec.pod_management_policy:
        spec.pod_management_policy = "OrderedReady"
    strategy = spec.update_strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
        strategy.rolling_update.SetInParent()
    # Upstream fills the partition only when rollingUpdate exists: an explicit
    # "type: RollingUpdate" without it stays as written.
    if strategy.type == "RollingUpdate" and strategy.HasField("rolling_update"):
        if not strategy.rolling_update.HasField("partition"):
            strategy.rolling_update.partition = 0
    retention = spec.persistent_volume_claim_retention_policy
    if not retention.when_deleted:
        retention.when_deleted = "Retain"
    if not retention.when_scaled:
        retention.when_scaled = "Retain"
    _default_replicas(spec)
    _default_history_limit(spec)
    _default_pod_template(spec.template, "Always")
    for pvc in spec.volume_claim_templates:
        _default_pvc_template(pvc)


def _default_daemonset(ds: Any) -> None:
    spec = ds.spec
    strategy = spec.update_strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update
        if not rolling.HasField("max_unavailable"):
            rolling.max_unavailable = "1"
        if not rolling.HasField("max_surge"):
            rolling.max_surge = "0"
    _default_history_limit(spec)
    _default_pod_template(spec.template, "Always")


# --------------------------------------------------------------------------------------
# batch/v1
# --------------------------------------------------------------------------------------


def _selector_is_empty(selector: Any) -> bool:
    return not selector.match_labels and not selector.match_expressions


def _generate_job_selector(job: Any) -> None:
    """What Kubernetes' job strategy does on create unless manualSelector is true:
    label the pods with the job's uid and name, and select on the uid."""
    meta, spec = job.metadata, job.spec
    labels = spec.template.metadata.labels
    for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
        labels.setdefault(key, meta.name)
    for key in (LEGACY_JOB_CONTROLLER_UID_LABEL, JOB_CONTROLLER_UID_LABEL):
        labels.setdefault(key, meta.uid)
    spec.selector.match_labels[JOB_CONTROLLER_UID_LABEL] = meta.uid


def _default_job_spec_fields(spec: Any) -> None:
    # Both unset: one pod, run once. Parallelism alone set: a work queue,
    # where completions stays unset.
    if not spec.HasField("completions") and not spec.HasField("parallelism"):
        spec.completions = 1
        spec.parallelism = 1
    if not spec.HasField("parallelism"):
        spec.parallelism = 1
    if not spec.HasField("backoff_limit"):
        # With a per-index limit the global one must not end the job first.
        spec.backoff_limit = 2**31 - 1 if spec.HasField("backoff_limit_per_index") else 6
    if not spec.HasField("completion_mode"):
        spec.completion_mode = "NonIndexed"
    if not spec.HasField("suspend"):
        spec.suspend = False
    has_failure_policy = spec.HasField("pod_failure_policy")
    for rule in spec.pod_failure_policy.rules if has_failure_policy else ():
        for pattern in rule.on_pod_conditions:
            if not pattern.status:
                pattern.status = "True"
    if not spec.HasField("pod_replacement_policy"):
        spec.pod_replacement_policy = "Failed" if has_failure_policy else "TerminatingOrFailed"


def _default_job(job: Any) -> None:
    spec = job.spec
    _default_job_spec_fields(spec)
    _default_pod_template(spec.template, None)
    manual = spec.HasField("manual_selector") and spec.manual_selector
    if not manual and job.metadata.uid and _selector_is_empty(spec.selector):
        _generate_job_selector(job)
    # A Job without labels takes its pods' labels (after the generated ones
    # are added, which is what Kubernetes shows on read).
    if spec.template.metadata.labels and not job.metadata.labels:
        job.metadata.labels.update(spec.template.metadata.labels)


def _default_cronjob(cj: Any) -> None:
    spec = cj.spec
    if not spec.concurrency_policy:
        spec.concurrency_policy = "Allow"
    if not spec.HasField("suspend"):
        spec.suspend = False
    if not spec.HasField("successful_jobs_history_limit"):
        spec.successful_jobs_history_limit = 3
    if not spec.HasField("failed_jobs_history_limit"):
        spec.failed_jobs_history_limit = 1
    # Only the pod template inside: SetDefaults_Job applies to Jobs, and the
    # CronJob controller's Jobs get those defaults when they are created.
    if spec.HasField("job_template"):
        _default_pod_template(spec.job_template.spec.template, None)


# --------------------------------------------------------------------------------------
# core/v1 (besides Pod)
# --------------------------------------------------------------------------------------


def _externally_accessible(spec: core_v1_pb2.ServiceSpec) -> bool:
    return spec.type in ("NodePort", "LoadBalancer") or (
        spec.type == "ClusterIP" and bool(spec.external_ips)
    )


def _default_service_ports(spec: core_v1_pb2.ServiceSpec) -> None:
    for port in spec.ports:
        if not port.protocol:
            port.protocol = "TCP"
        if port.target_port in ("", "0"):
            port.target_port = str(port.port)


def _default_session_affinity(spec: core_v1_pb2.ServiceSpec) -> None:
    if not spec.session_affinity:
        spec.session_affinity = "None"
    if spec.session_affinity == "None":
        spec.ClearField("session_affinity_config")
    elif spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        if not client_ip.HasField("timeout_seconds"):
            client_ip.timeout_seconds = _CLIENT_IP_AFFINITY_SECONDS


def _default_service(svc: Any) -> None:
    spec: core_v1_pb2.ServiceSpec = svc.spec
    _default_session_affinity(spec)
    if not spec.type:
        spec.type = "ClusterIP"
    _default_service_ports(spec)
    if _externally_accessible(spec) and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    if spec.type in ("ClusterIP", "NodePort", "LoadBalancer"):
        if not spec.HasField("internal_traffic_policy"):
            spec.internal_traffic_policy = "Cluster"
        # Kubernetes' allocator fills these; this cluster is IPv4 single-stack.
        if not spec.HasField("ip_family_policy"):
            spec.ip_family_policy = "SingleStack"
        if not spec.ip_families:
            spec.ip_families.append("IPv4")
    if spec.type == "LoadBalancer" and not spec.HasField("allocate_load_balancer_node_ports"):
        spec.allocate_load_balancer_node_ports = True


def _default_endpoints(ep: Any) -> None:
    for subset in ep.subsets:
        for port in subset.ports:
            if not port.protocol:
                port.protocol = "TCP"


def _default_namespace(ns: Any) -> None:
    # Every namespace carries its own name as a label, so namespace selectors
    # (NetworkPolicy, pod affinity) can pick a namespace by name.
    if ns.metadata.name:
        ns.metadata.labels["kubernetes.io/metadata.name"] = ns.metadata.name
    if not ns.status.phase:
        ns.status.phase = "Active"


def _default_persistent_volume(pv: Any) -> None:
    spec = pv.spec
    if not pv.status.phase:
        pv.status.phase = "Pending"
    if not spec.persistent_volume_reclaim_policy:
        spec.persistent_volume_reclaim_policy = "Retain"
    if not spec.HasField("volume_mode"):
        spec.volume_mode = "Filesystem"
    if spec.HasField("host_path") and not spec.host_path.HasField("type"):
        spec.host_path.type = ""


def _default_pvc(pvc: Any) -> None:
    if not pvc.status.phase:
        pvc.status.phase = "Pending"
    _default_pvc_spec(pvc.spec)


def _default_secret(secret: Any) -> None:
    if not secret.type:
        secret.type = "Opaque"


def _default_node(node: Any) -> None:
    # A node that reports only capacity can allocate all of it.
    if node.status.capacity and not node.status.allocatable:
        node.status.allocatable.update(node.status.capacity)


def _default_event(ev: Any) -> None:
    if not ev.type:
        ev.type = "Normal"
    if not ev.count:
        ev.count = 1


# --------------------------------------------------------------------------------------
# Other groups
# --------------------------------------------------------------------------------------


def _default_scaling_rules(
    rules: Any, stabilization: int | None, policies: tuple[tuple[str, int, int], ...]
) -> None:
    """GenerateHPAScale{Up,Down}Rules: fill what the user left unset."""
    if stabilization is not None and not rules.HasField("stabilization_window_seconds"):
        rules.stabilization_window_seconds = stabilization
    if not rules.HasField("select_policy"):
        rules.select_policy = "Max"
    if not rules.policies:
        for kind, value, period in policies:
            rules.policies.add(type=kind, value=value, period_seconds=period)


def _default_hpa(hpa: Any) -> None:
    spec = hpa.spec
    if not spec.HasField("min_replicas"):
        spec.min_replicas = 1
    if not spec.metrics:
        metric = spec.metrics.add(type="Resource")
        metric.resource.name = "cpu"
        metric.resource.target.type = "Utilization"
        metric.resource.target.average_utilization = _DEFAULT_CPU_UTILIZATION
    # Upstream fills behavior only when the user wrote one; without it the
    # controller uses the same values. Scale-down stabilization stays unset
    # here because Kubernetes takes it from a controller flag (300s default).
    if spec.HasField("behavior"):
        _default_scaling_rules(spec.behavior.scale_up, 0, (("Pods", 4, 15), ("Percent", 100, 15)))
        _default_scaling_rules(spec.behavior.scale_down, None, (("Percent", 100, 15),))


def _default_priority_class(pc: Any) -> None:
    if not pc.HasField("preemption_policy"):
        pc.preemption_policy = "PreemptLowerPriority"


def _default_network_policy(np: Any) -> None:
    spec = np.spec
    if not spec.policy_types:
        # A policy without policyTypes is at least about ingress.
        spec.policy_types.append("Ingress")
        if spec.egress:
            spec.policy_types.append("Egress")
    for rules in (spec.ingress, spec.egress):
        for rule in rules:
            for port in rule.ports:
                if not port.HasField("protocol"):
                    port.protocol = "TCP"


def _default_ingress_class(ic: Any) -> None:
    params = ic.spec.parameters
    if ic.spec.HasField("parameters") and not params.HasField("scope"):
        params.scope = "Cluster"


def _default_binding(binding: Any) -> None:
    if not binding.role_ref.api_group:
        binding.role_ref.api_group = _RBAC_GROUP
    for subject in binding.subjects:
        if not subject.api_group and subject.kind in ("User", "Group"):
            subject.api_group = _RBAC_GROUP


_DEFAULTERS: Final[dict[str, Callable[[Any], None]]] = {
    "Pod": _default_pod,
    "Deployment": _default_deployment,
    "ReplicaSet": _default_replicaset,
    "StatefulSet": _default_statefulset,
    "DaemonSet": _default_daemonset,
    "Job": _default_job,
    "CronJob": _default_cronjob,
    "Service": _default_service,
    "Endpoints": _default_endpoints,
    "Namespace": _default_namespace,
    "PersistentVolume": _default_persistent_volume,
    "PersistentVolumeClaim": _default_pvc,
    "Secret": _default_secret,
    "Node": _default_node,
    "Event": _default_event,
    "HorizontalPodAutoscaler": _default_hpa,
    "PriorityClass": _default_priority_class,
    "NetworkPolicy": _default_network_policy,
    "IngressClass": _default_ingress_class,
    "RoleBinding": _default_binding,
    "ClusterRoleBinding": _default_binding,
}
