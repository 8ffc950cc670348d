"""The CronJob controller against the real apiserver, on a fake clock.

The control plane here runs every controller but the CronJob one (the Job
controller makes the pods); the CronJob controller runs in the test
process with a clock the test moves, so a "* * * * *" schedule fires
without waiting for minutes to pass. Bad schedules and zones are refused
by the apiserver itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.api.meta import parse_rfc3339
from orchestrator.client.client import Client, ConflictError, InvalidError, NotFoundError
from orchestrator.controllers.cronjob import CronJobController
from orchestrator.controllers.manager import select_controllers
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition"
) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout}s") from None


def cronjob_manifest(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "schedule": "* * * * *",
            "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "work", "image": "busybox"}],
                        }
                    }
                },
            },
            **spec,
        },
    }


Running = tuple[CronJobController, FakeClock]


@pytest.fixture(scope="module")
def cron_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(
        tmp_path_factory.mktemp("cron-plane"), serve_args=("--controllers", "*,-cronjob")
    )
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
async def client(cron_plane: ControlPlane) -> AsyncIterator[Client]:
    async with cron_plane.client() as c:
        yield c


@pytest.fixture
async def ns(client: Client) -> str:
    name = f"cron-{uuid.uuid4().hex[:10]}"
    await client.create(
        codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    )
    return name


@pytest.fixture
async def controller(
    cron_plane: ControlPlane,
) -> AsyncIterator[tuple[CronJobController, FakeClock]]:
    clock = FakeClock(datetime.now().astimezone())
    client = cron_plane.client()
    ctrl = CronJobController(client, clock=clock)
    await ctrl.start()
    try:
        yield ctrl, clock
    finally:
        await ctrl.stop()
        await client.close()


async def create_cronjob(client: Client, ns: str, clock: FakeClock, name: str, **spec: Any) -> Any:
    cj, _ = await client.apply(cronjob_manifest(name, ns, **spec))
    # The fake clock starts at the CronJob's creation, so the next minute
    # boundary is its first start time.
    clock.now = parse_rfc3339(cj.metadata.creation_timestamp)
    return cj


async def tick(ctrl: CronJobController, clock: FakeClock, ns: str, name: str) -> None:
    """Move to the next start time and let the controller look."""
    clock.advance(minutes=1)
    ctrl.queue.add(f"{ns}/{name}")


async def cron_jobs(client: Client, ns: str, cj: Any) -> list[Any]:
    jobs = (await client.list("Job", ns)).items
    mine = [j for j in jobs if any(r.uid == cj.metadata.uid for r in j.metadata.owner_references)]
    return sorted(mine, key=lambda j: j.metadata.name)


async def jobs_named(client: Client, ns: str, cj: Any, n: int) -> list[Any]:
    async def check() -> list[Any]:
        jobs = await cron_jobs(client, ns, cj)
        return jobs if len(jobs) == n else []

    result: list[Any] = await eventually(check, what=f"{n} jobs of {cj.metadata.name}")
    return result


async def finish_job(client: Client, ns: str, job: Any, phase: str = "Succeeded") -> None:
    """Play the kubelet: end the Job's pod with phase."""

    async def a_pod() -> Any:
        pods = (
            await client.list(
                "Pod", ns, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
            )
        ).items
        return pods[0] if pods else None

    pod = await eventually(a_pod, what=f"pod of job {job.metadata.name}")
    for _ in range(20):
        pod = await client.get("Pod", pod.metadata.name, ns)
        pod.status.phase = phase
        try:
            await client.update_status(pod)
            break
        except ConflictError:
            continue
    wanted = "Complete" if phase == "Succeeded" else "Failed"

    async def finished() -> bool:
        j = await client.get("Job", job.metadata.name, ns)
        return any(c.type == wanted and c.status == "True" for c in j.status.conditions)

    await eventually(finished, what=f"job {job.metadata.name} {wanted}")


def test_cronjob_controller_is_registered() -> None:
    assert "cronjob" in select_controllers(["*"])
    assert "cronjob" not in select_controllers(["*", "-cronjob"])


async def test_every_minute_schedule_creates_named_jobs_and_tracks_them(
    client: Client, ns: str, controller: Running
) -> None:
    ctrl, clock = controller
    cj = await create_cronjob(client, ns, clock, "tick")
    await tick(ctrl, clock, ns, "tick")
    (job,) = await jobs_named(client, ns, cj, 1)
    scheduled = clock.now.replace(second=0, microsecond=0)
    assert job.metadata.name == f"tick-{int(scheduled.timestamp()) // 60}"
    assert parse_rfc3339(job.metadata.annotations[SCHEDULED_ANNOTATION]) == scheduled
    assert job.metadata.labels["app"] == "tick"
    ref = job.metadata.owner_references[0]
    assert (ref.kind, ref.uid, ref.controller) == ("CronJob", cj.metadata.uid, True)

    async def active() -> Any:
        got = await client.get("CronJob", "tick", ns)
        return got if [r.name for r in got.status.active] == [job.metadata.name] else None

    status = (await eventually(active, what="job listed active")).status
    assert parse_rfc3339(status.last_schedule_time) == scheduled

    # The served Job controller runs its pod; the test finishes it.
    await finish_job(client, ns, job)

    async def settled() -> Any:
        got = await client.get("CronJob", "tick", ns)
        return got if not got.status.active and got.status.last_successful_time else None

    await eventually(settled, what="active emptied, last success recorded")


async def test_forbid_skips_while_a_run_is_active(
    client: Client, ns: str, controller: Running
) -> None:
    ctrl, clock = controller
    cj = await create_cronjob(client, ns, clock, "solo", concurrencyPolicy="Forbid")
    await tick(ctrl, clock, ns, "solo")
    (first,) = await jobs_named(client, ns, cj, 1)
    await tick(ctrl, clock, ns, "solo")

    async def refused() -> bool:
        events = (await client.list("Event", ns)).items
        return any(e.reason == "JobAlreadyActive" for e in events)

    await eventually(refused, what="JobAlreadyActive event")
    assert len(await cron_jobs(client, ns, cj)) == 1
    await finish_job(client, ns, first)
    # The missed start time is still within reach: it runs once the first is done.
    ctrl.queue.add(f"{ns}/solo")
    await jobs_named(client, ns, cj, 2)


async def test_replace_deletes_the_running_job(
    client: Client, ns: str, controller: Running
) -> None:
    ctrl, clock = controller
    cj = await create_cronjob(client, ns, clock, "swap", concurrencyPolicy="Replace")
    await tick(ctrl, clock, ns, "swap")
    (first,) = await jobs_named(client, ns, cj, 1)
    await tick(ctrl, clock, ns, "swap")

    async def replaced() -> list[Any]:
        jobs = await cron_jobs(client, ns, cj)
        names = [j.metadata.name for j in jobs]
        return jobs if len(jobs) == 1 and first.metadata.name not in names else []

    (second,) = await eventually(replaced, what="first job replaced by a second")

    async def active_is_second() -> bool:
        got = await client.get("CronJob", "swap", ns)
        return [r.name for r in got.status.active] == [second.metadata.name]

    await eventually(active_is_second, what="only the new job active")


async def test_history_limit_trims_old_successful_jobs(
    client: Client, ns: str, controller: Running
) -> None:
    ctrl, clock = controller
    cj = await create_cronjob(client, ns, clock, "keep", successfulJobsHistoryLimit=1)
    await tick(ctrl, clock, ns, "keep")
    (first,) = await jobs_named(client, ns, cj, 1)
    await finish_job(client, ns, first)
    await tick(ctrl, clock, ns, "keep")

    async def second_done() -> list[Any]:
        jobs = await cron_jobs(client, ns, cj)
        return [j for j in jobs if j.metadata.name != first.metadata.name]

    (second,) = await eventually(second_done, what="second job")
    await finish_job(client, ns, second)

    async def trimmed() -> bool:
        names = [j.metadata.name for j in await cron_jobs(client, ns, cj)]
        return names == [second.metadata.name]

    await eventually(trimmed, what="oldest successful job deleted")


async def test_bad_schedule_and_zone_are_rejected_clearly(client: Client, ns: str) -> None:
    with pytest.raises(InvalidError) as bad_schedule:
        await client.apply(cronjob_manifest("bad", ns, schedule="61 * * * *"))
    assert "spec.schedule" in bad_schedule.value.message
    assert "out of range" in bad_schedule.value.message
    with pytest.raises(InvalidError) as too_few:
        await client.apply(cronjob_manifest("bad", ns, schedule="* * *"))
    assert "expected exactly 5 fields" in too_few.value.message
    with pytest.raises(InvalidError) as zone_in_schedule:
        await client.apply(cronjob_manifest("bad", ns, schedule="TZ=UTC * * * * *"))
    assert "timeZone" in zone_in_schedule.value.message
    with pytest.raises(InvalidError) as bad_zone:
        await client.apply(cronjob_manifest("bad", ns, timeZone="Mars/Olympus_Mons"))
    assert "spec.timeZone" in bad_zone.value.message
    assert "Mars/Olympus_Mons" in bad_zone.value.message
    with pytest.raises(NotFoundError):
        await client.get("CronJob", "bad", ns)  # nothing half-written
