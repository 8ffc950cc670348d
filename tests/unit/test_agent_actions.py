"""compute_pod_actions: what a pod needs done, from its spec and containers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.pods.actions import BackOff, backoff_key, compute_pod_actions
from agent.pods.podutil import container_hash
from agent.pods.testing import make_pod
from agent.runtime.types import LABEL_SANDBOX_ID, SANDBOX_NAME, ContainerInfo, ContainerState

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
RUNNING = ContainerState.RUNNING
EXITED = ContainerState.EXITED


def pod(restart: str = "Always", inits: int = 0, containers: tuple[str, ...] = ("app",)) -> Any:
    return make_pod(
        {
            "metadata": {"name": "web"},
            "spec": {
                "restartPolicy": restart,
                "initContainers": [
                    {"name": f"init{i}", "image": "busybox:1.36"} for i in range(inits)
                ],
                "containers": [{"name": n, "image": "busybox:1.36"} for n in containers],
            },
        }
    )


_n = iter(range(1, 10_000))


def sandbox(state: ContainerState = RUNNING, at: datetime = T0) -> ContainerInfo:
    return ContainerInfo(
        id=f"sb{next(_n)}",
        pod_uid="uid-web",
        pod_name="web",
        pod_namespace="default",
        name=SANDBOX_NAME,
        type="sandbox",
        state=state,
        created_at=at,
        started_at=at,
        pid=10,
    )


def ctr(
    p: Any,
    name: str,
    sb: ContainerInfo,
    state: ContainerState = RUNNING,
    *,
    type_: str = "app",
    exit_code: int = 0,
    restarts: int = 0,
    at: datetime | None = None,
    finished: datetime | None = None,
    spec_hash: str | None = None,
) -> ContainerInfo:
    at = at or T0 + timedelta(seconds=1 + restarts)
    specs = {c.name: c for c in (*p.spec.containers, *p.spec.init_containers)}
    return ContainerInfo(
        id=f"{name}{next(_n)}",
        pod_uid="uid-web",
        pod_name="web",
        pod_namespace="default",
        name=name,
        type=type_,
        state=state,
        exit_code=exit_code,
        created_at=at,
        started_at=at,
        finished_at=finished or (at + timedelta(seconds=1) if state == EXITED else None),
        restart_count=restarts,
        spec_hash=spec_hash if spec_hash is not None else container_hash(specs[name]),
        labels={LABEL_SANDBOX_ID: sb.id},
    )


def test_new_pod_creates_sandbox_and_starts_every_container() -> None:
    p = pod(containers=("a", "b"))
    actions = compute_pod_actions(p, [], T0, BackOff())
    assert actions.create_sandbox
    assert [s.container.name for s in actions.start] == ["a", "b"]
    assert all(s.restart_count == 0 for s in actions.start)


def test_running_containers_with_right_hash_are_adopted() -> None:
    p = pod(containers=("a", "b"))
    sb = sandbox()
    cs = [sb, ctr(p, "a", sb), ctr(p, "b", sb)]
    actions = compute_pod_actions(p, cs, T0, BackOff())
    assert not actions.create_sandbox
    assert not actions.start and not actions.kill
    assert actions.sandbox is sb


def test_dead_sandbox_is_recreated_and_running_containers_killed() -> None:
    p = pod()
    sb = sandbox(EXITED)
    app = ctr(p, "app", sb)
    actions = compute_pod_actions(p, [sb, app], T0, BackOff())
    assert actions.create_sandbox
    assert [k[0].id for k in actions.kill] == [app.id]
    assert actions.start[0].restart_count == 1
    assert actions.attempt == 1


def test_restart_never_with_dead_sandbox_is_left_alone() -> None:
    p = pod("Never")
    sb = sandbox(EXITED)
    app = ctr(p, "app", sb, EXITED, exit_code=0)
    actions = compute_pod_actions(p, [sb, app], T0, BackOff())
    assert not actions.create_sandbox and not actions.start
    assert actions.finished


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 1, False),
        ("Never", 0, False),
    ],
)
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    p = pod(policy)
    sb = sandbox()
    app = ctr(p, "app", sb, EXITED, exit_code=code)
    actions = compute_pod_actions(p, [sb, app], T0 + timedelta(minutes=1), BackOff())
    assert bool(actions.start) == restart
    if restart:
        assert actions.start[0].restart_count == 1
    else:
        assert actions.finished and actions.stop_sandbox


def test_crash_loop_backoff_doubles_up_to_five_minutes() -> None:
    p = pod()
    sb = sandbox()
    backoff = BackOff()
    key = backoff_key("uid-web", "app")
    delays = []
    now = T0
    for i in range(8):
        app = ctr(p, "app", sb, EXITED, exit_code=1, restarts=i, at=now, finished=now)
        actions = compute_pod_actions(p, [sb, app], now, backoff)
        if i == 0:
            assert actions.start, "the first restart is immediate"
        else:
            assert not actions.start
            assert "back-off" in actions.backoff["app"]
            assert actions.requeue_after == pytest.approx(backoff.delay(key))
            delays.append(backoff.delay(key))
            now = now + timedelta(seconds=backoff.delay(key))
            app = replace(app, finished_at=now - timedelta(seconds=backoff.delay(key)))
            actions = compute_pod_actions(p, [sb, app], now, backoff)
            assert actions.start
        backoff.next(key, now, 0)
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_backoff_resets_after_ten_minutes_of_running() -> None:
    p = pod()
    sb = sandbox()
    backoff = BackOff()
    key = backoff_key("uid-web", "app")
    backoff.next(key, T0)
    backoff.next(key, T0)  # 20 s
    started = T0
    finished = T0 + timedelta(minutes=11)
    app = replace(
        ctr(p, "app", sb, EXITED, exit_code=1, restarts=2),
        started_at=started,
        finished_at=finished,
    )
    actions = compute_pod_actions(p, [sb, app], finished, backoff)
    assert actions.start
    assert backoff.next(key, finished, actions.start[0].ran_for) == 10


def test_changed_spec_hash_replaces_running_container() -> None:
    p = pod()
    sb = sandbox()
    app = ctr(p, "app", sb, spec_hash="old")
    actions = compute_pod_actions(p, [sb, app], T0, BackOff())
    assert actions.kill[0][0].id == app.id
    assert "definition changed" in actions.kill[0][1]
    assert actions.start[0].restart_count == 1


def test_failed_liveness_kills_container() -> None:
    p = pod()
    sb = sandbox()
    app = ctr(p, "app", sb)
    actions = compute_pod_actions(
        p, [sb, app], T0, BackOff(), unhealthy={app.id: "failed liveness probe"}
    )
    assert actions.kill == [(app, "failed liveness probe")]
    assert not actions.start
    assert actions.requeue_after == 0


def test_init_containers_run_in_order() -> None:
    p = pod(inits=2)
    actions = compute_pod_actions(p, [], T0, BackOff())
    assert actions.create_sandbox
    assert actions.start_init is not None and actions.start_init.container.name == "init0"
    assert not actions.start

    sb = sandbox()
    i0 = ctr(p, "init0", sb, RUNNING, type_="init")
    actions = compute_pod_actions(p, [sb, i0], T0, BackOff())
    assert actions.start_init is None and not actions.start

    i0 = replace(i0, state=EXITED, finished_at=T0 + timedelta(seconds=3))
    actions = compute_pod_actions(p, [sb, i0], T0, BackOff())
    assert actions.start_init is not None and actions.start_init.container.name == "init1"

    i1 = ctr(p, "init1", sb, EXITED, type_="init", at=T0 + timedelta(seconds=4))
    actions = compute_pod_actions(p, [sb, i0, i1], T0, BackOff())
    assert actions.start_init is None
    assert [s.container.name for s in actions.start] == ["app"]


def test_failed_init_container_restarts_or_fails_the_pod() -> None:
    p = pod("Always", inits=1)
    sb = sandbox()
    i0 = ctr(p, "init0", sb, EXITED, type_="init", exit_code=1)
    actions = compute_pod_actions(p, [sb, i0], T0 + timedelta(minutes=1), BackOff())
    assert actions.start_init is not None and actions.start_init.restart_count == 1

    never = pod("Never", inits=1)
    actions = compute_pod_actions(never, [sb, i0], T0 + timedelta(minutes=1), BackOff())
    assert actions.init_failed and actions.finished and actions.start_init is None


def test_new_sandbox_reruns_init_containers() -> None:
    p = pod(inits=1)
    old = sandbox(EXITED)
    i0 = ctr(p, "init0", old, EXITED, type_="init")
    app = ctr(p, "app", old, RUNNING)
    actions = compute_pod_actions(p, [old, i0, app], T0, BackOff())
    assert actions.create_sandbox
    assert actions.start_init is not None and actions.start_init.restart_count == 1


def test_terminal_pod_does_nothing_but_stop() -> None:
    p = pod("OnFailure")
    p.status.phase = "Succeeded"
    sb = sandbox()
    actions = compute_pod_actions(p, [sb], T0, BackOff())
    assert actions.finished and actions.stop_sandbox and not actions.start


def test_command_not_found_counts_as_exited() -> None:
    p = pod()
    sb = sandbox()
    app = replace(
        ctr(p, "app", sb, ContainerState.CREATED),
        exit_code=127,
        error='exec: "nope": executable file not found in $PATH',
        started_at=None,
    )
    actions = compute_pod_actions(p, [sb, app], T0 + timedelta(seconds=30), BackOff())
    assert actions.start and actions.start[0].restart_count == 1
