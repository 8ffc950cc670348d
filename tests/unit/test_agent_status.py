"""compute_pod_status: phase, conditions and container statuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from agent.pods.status import ProbeState, compute_pod_status, pod_qos_class
from agent.pods.testing import make_pod
from agent.runtime.types import ContainerState
from tests.unit.test_agent_actions import EXITED, RUNNING, T0, ctr, pod, sandbox

pytestmark = pytest.mark.unit


def status(p: Any, cs: list[Any], **kw: Any) -> Any:
    return compute_pod_status(
        p, cs, kw.pop("probes", {}), kw.pop("ip", "10.244.9.5"), "192.0.2.11", T0, **kw
    )


def cond(st: Any, type_: str) -> Any:
    return next(c for c in st.conditions if c.type == type_)


def test_pending_pod_waits_in_container_creating() -> None:
    p = pod()
    st = status(p, [], ip=None)
    assert st.phase == "Pending"
    assert st.container_statuses[0].state.waiting.reason == "ContainerCreating"
    assert cond(st, "PodScheduled").status == "True"
    assert cond(st, "Ready").status == "False"
    assert st.host_ip == "192.0.2.11"
    assert st.qos_class == "BestEffort"
    assert st.start_time


def test_running_pod_is_ready_with_container_details() -> None:
    p = pod()
    sb = sandbox()
    app = replace(ctr(p, "app", sb), image_id="sha256:abc")
    st = status(p, [sb, app])
    assert st.phase == "Running"
    cs = st.container_statuses[0]
    assert cs.state.running.started_at == "2026-01-01T12:00:01Z"
    assert cs.ready and cs.started
    assert cs.container_id == f"docker://{app.id}"
    assert cs.image == "busybox:1.36" and cs.image_id == "sha256:abc"
    assert st.pod_ip == "10.244.9.5" and st.pod_ips[0].ip == "10.244.9.5"
    assert [c.type for c in st.conditions] == [
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    assert all(c.status == "True" for c in st.conditions)


def test_readiness_probe_drives_ready() -> None:
    p = make_pod(
        {
            "metadata": {"name": "web"},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:1.36",
                        "readinessProbe": {"exec": {"command": ["true"]}},
                    }
                ]
            },
        }
    )
    sb = sandbox()
    app = ctr(p, "app", sb)
    st = status(p, [sb, app])
    assert not st.container_statuses[0].ready, "no probe result yet: not ready"
    assert cond(st, "Ready").status == "False"
    assert cond(st, "Ready").message == "containers with unready status: [app]"
    st = status(p, [sb, app], probes={app.id: ProbeState(ready=True)})
    assert cond(st, "Ready").status == "True"


def test_last_transition_time_is_kept_when_unchanged() -> None:
    p = pod()
    sb = sandbox()
    app = ctr(p, "app", sb)
    first = status(p, [sb, app])
    p.status.CopyFrom(first)
    later = compute_pod_status(
        p, [sb, app], {}, "10.244.9.5", "192.0.2.11", T0 + timedelta(hours=1)
    )
    assert cond(later, "Ready").last_transition_time == cond(first, "Ready").last_transition_time
    app2 = replace(app, state=EXITED, exit_code=1, finished_at=T0 + timedelta(hours=1))
    p.status.CopyFrom(later)
    after = compute_pod_status(
        p, [sb, app2], {}, "10.244.9.5", "192.0.2.11", T0 + timedelta(hours=1)
    )
    assert cond(after, "Ready").status == "False"
    assert cond(after, "Ready").last_transition_time == "2026-01-01T13:00:00Z"


def test_crash_loop_shows_waiting_with_last_state() -> None:
    p = pod()
    sb = sandbox()
    app = ctr(p, "app", sb, EXITED, exit_code=3, restarts=2)
    st = status(p, [sb, app], waiting={"app": ("CrashLoopBackOff", "back-off 20s ...")})
    cs = st.container_statuses[0]
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.last_state.terminated.exit_code == 3
    assert cs.last_state.terminated.reason == "Error"
    assert cs.restart_count == 2
    assert st.phase == "Running"


@pytest.mark.parametrize(
    ("policy", "code", "phase", "reason"),
    [
        ("Never", 0, "Succeeded", "Completed"),
        ("Never", 1, "Failed", "Error"),
        ("OnFailure", 0, "Succeeded", "Completed"),
        ("Always", 0, "Running", "Completed"),
    ],
)
def test_terminal_phases(policy: str, code: int, phase: str, reason: str) -> None:
    p = pod(policy)
    sb = sandbox()
    app = ctr(p, "app", sb, EXITED, exit_code=code)
    st = status(p, [sb, app])
    assert st.phase == phase
    term = st.container_statuses[0].state.terminated
    assert term.reason == reason and term.exit_code == code
    assert term.started_at and term.finished_at


def test_oom_killed_and_cannot_run() -> None:
    p = pod("Never", containers=("a", "b"))
    sb = sandbox()
    a = replace(ctr(p, "a", sb, EXITED, exit_code=137), oom_killed=True)
    b = replace(
        ctr(p, "b", sb, ContainerState.CREATED),
        exit_code=127,
        error='exec: "nope": executable file not found in $PATH',
        started_at=None,
    )
    st = status(p, [sb, a, b])
    by = {cs.name: cs for cs in st.container_statuses}
    assert by["a"].state.terminated.reason == "OOMKilled"
    assert by["b"].state.terminated.reason == "ContainerCannotRun"
    assert by["b"].state.terminated.exit_code == 127
    assert "executable file not found" in by["b"].state.terminated.message
    assert st.phase == "Failed"


def test_waiting_reasons_from_the_syncer() -> None:
    p = pod()
    st = status(p, [sandbox()], waiting={"app": ("ErrImagePull", "Failed to pull image")})
    cs = st.container_statuses[0]
    assert cs.state.waiting.reason == "ErrImagePull"
    assert cs.state.waiting.message == "Failed to pull image"
    assert st.phase == "Pending"


def test_init_containers_pending_then_initialized() -> None:
    p = pod(inits=1)
    sb = sandbox()
    i0 = ctr(p, "init0", sb, RUNNING, type_="init")
    st = status(p, [sb, i0])
    assert st.phase == "Pending"
    assert cond(st, "Initialized").status == "False"
    assert cond(st, "Initialized").message == "containers with incomplete status: [init0]"
    assert st.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert st.init_container_statuses[0].state.running.started_at

    i0 = replace(i0, state=EXITED, finished_at=T0 + timedelta(seconds=5))
    app = ctr(p, "app", sb, at=T0 + timedelta(seconds=6))
    st = status(p, [sb, i0, app])
    assert cond(st, "Initialized").status == "True"
    assert st.init_container_statuses[0].state.terminated.reason == "Completed"
    assert st.phase == "Running"


def test_failed_init_with_never_fails_the_pod() -> None:
    p = pod("Never", inits=1)
    sb = sandbox()
    i0 = ctr(p, "init0", sb, EXITED, type_="init", exit_code=2)
    st = status(p, [sb, i0])
    assert st.phase == "Failed"


def test_qos_classes() -> None:
    def spec(resources: dict[str, Any]) -> Any:
        return make_pod(
            {
                "metadata": {"name": "q"},
                "spec": {"containers": [{"name": "a", "image": "x", "resources": resources}]},
            }
        ).spec

    assert pod_qos_class(spec({})) == "BestEffort"
    assert pod_qos_class(spec({"requests": {"cpu": "100m"}})) == "Burstable"
    both = {"cpu": "1", "memory": "1Gi"}
    assert pod_qos_class(spec({"limits": both, "requests": both})) == "Guaranteed"
