"""Scheduler profiles from a KubeSchedulerConfiguration-like file, and the
binding/condition writes against a fake client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.client.client import ConflictError
from orchestrator.scheduler.binder import BindError, bind, write_condition
from orchestrator.scheduler.plugins.node_resources_fit import MOST_ALLOCATED, NodeResourcesFit
from orchestrator.scheduler.profiles import ConfigError, load_config, parse_config
from orchestrator.scheduler.testing import make_pod

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sched.yaml"
    path.write_text(text)
    return path


def test_built_in_profiles_stay_and_custom_profiles_are_added(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
  - schedulerName: packer
    percentageOfNodesToScore: 70
    plugins:
      score:
        disabled: [{name: SelectorSpread}, {name: ImageLocality}]
        enabled: [{name: NodeResourcesFit, weight: 7}]
      filter:
        disabled: [{name: NodePorts}]
    pluginConfig:
      - name: NodeResourcesFit
        args:
          scoringStrategy:
            type: MostAllocated
            resources: [{name: cpu, weight: 2}, {name: memory, weight: 1}]
""",
        )
    )
    assert config.percentage_of_nodes_to_score == 30
    profiles = {p.scheduler_name: p for p in config.profiles}
    assert set(profiles) == {"default-scheduler", "bin-packing", "packer"}
    packer = profiles["packer"]
    assert packer.percentage_of_nodes_to_score == 70
    scores = {s.plugin.name: s.weight for s in packer.scores}
    assert scores["NodeResourcesFit"] == 7
    assert "SelectorSpread" not in scores and "ImageLocality" not in scores
    assert "NodePorts" not in [f.name for f in packer.filters]
    fit = next(s.plugin for s in packer.scores if s.plugin.name == "NodeResourcesFit")
    assert isinstance(fit, NodeResourcesFit)
    assert (fit.strategy, fit.cpu_weight, fit.memory_weight) == (MOST_ALLOCATED, 2, 1)
    # The same object filters and scores, so PreFilter data is shared.
    assert any(f is fit for f in packer.filters)


def test_multipoint_and_star() -> None:
    config = parse_config(
        {
            "profiles": [
                {
                    "schedulerName": "bare",
                    "plugins": {
                        "multiPoint": {"disabled": [{"name": "*"}]},
                        "filter": {"enabled": [{"name": "NodeResourcesFit"}]},
                    },
                }
            ]
        }
    )
    bare = next(p for p in config.profiles if p.scheduler_name == "bare")
    assert [f.name for f in bare.filters] == ["NodeResourcesFit"]
    assert bare.scores == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a mapping"),
        ({"apiVersion": "v9"}, "apiVersion: 'v9' is not supported"),
        ({"kind": "Pod"}, "kind: 'Pod' is not KubeSchedulerConfiguration"),
        ({"percentageOfNodesToScore": 150}, "percentageOfNodesToScore: must be an integer"),
        ({"profiles": [{}]}, r"profiles\[0\].schedulerName: required"),
        (
            {"profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]},
            r"profiles\[1\].schedulerName: 'a' is defined twice",
        ),
        (
            {
                "profiles": [
                    {"schedulerName": "a", "plugins": {"score": {"enabled": [{"name": "Magic"}]}}}
                ]
            },
            r"profiles\[0\].plugins.score.enabled\[0\].name: unknown plugin 'Magic'",
        ),
        (
            {"profiles": [{"schedulerName": "a", "plugins": {"preFilter": {}}}]},
            r"plugins.preFilter: unsupported extension point \(PreFilter follows Filter here\)",
        ),
        (
            {
                "profiles": [
                    {
                        "schedulerName": "a",
                        "plugins": {"filter": {"enabled": [{"name": "ImageLocality"}]}},
                    }
                ]
            },
            "plugin 'ImageLocality' has no filter extension point",
        ),
        (
            {
                "profiles": [
                    {
                        "schedulerName": "a",
                        "pluginConfig": [
                            {
                                "name": "NodeResourcesFit",
                                "args": {"scoringStrategy": {"type": "Fancy"}},
                            }
                        ],
                    }
                ]
            },
            r"profiles\[0\].pluginConfig\[0\].args: NodeResourcesFit: scoringStrategy.type 'Fancy'",
        ),
        (
            {
                "profiles": [
                    {
                        "schedulerName": "a",
                        "pluginConfig": [{"name": "NodePorts", "args": {"x": 1}}],
                    }
                ]
            },
            "takes no args",
        ),
        (
            {
                "profiles": [
                    {
                        "schedulerName": "a",
                        "plugins": {"score": {"enabled": [{"name": "NodeAffinity", "weight": -1}]}},
                    }
                ]
            },
            r"weight: must be a non-negative integer",
        ),
    ],
)
def test_config_errors_name_the_field(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path, "profiles: [\n")
    with pytest.raises(ConfigError, match=r"sched\.yaml: not valid YAML"):
        load_config(bad)
    wrong = write(tmp_path, "profiles: [{schedulerName: 3}]\n")
    with pytest.raises(ConfigError, match=r"sched.yaml: profiles\[0\].schedulerName"):
        load_config(wrong)


# -- binding and conditions against a fake client ------------------------------------------


class FakeClient:
    """Holds one pod; update_status compares resourceVersions like the apiserver."""

    def __init__(self, pod: Any) -> None:
        self.pod = pod
        self.pod.metadata.resource_version = "1"
        self.binds = 0
        self.status_updates = 0

    def _cas(self, obj: Any) -> None:
        if obj.metadata.resource_version != self.pod.metadata.resource_version:
            raise ConflictError(grpc.StatusCode.ABORTED, "the object has been modified")

    def _bump(self) -> Any:
        self.pod.metadata.resource_version = str(int(self.pod.metadata.resource_version) + 1)
        out = type(self.pod)()
        out.CopyFrom(self.pod)
        return out

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> Any:
        """As the apiserver's pods/binding: no resourceVersion, but the pod must
        be the same one and unbound."""
        self.binds += 1
        if uid and uid != self.pod.metadata.uid:
            raise ConflictError(grpc.StatusCode.ABORTED, "the pod was replaced")
        if self.pod.spec.node_name:
            raise ConflictError(
                grpc.StatusCode.ABORTED,
                f'pod {name} is already assigned to node "{self.pod.spec.node_name}"',
            )
        self.pod.spec.node_name = node
        return self._bump()

    async def update_status(self, obj: Any) -> Any:
        self.status_updates += 1
        self._cas(obj)
        self.pod.status.CopyFrom(obj.status)
        return self._bump()

    async def get(self, kind: str, name: str, namespace: str) -> Any:
        out = type(self.pod)()
        out.CopyFrom(self.pod)
        return out


async def test_bind_needs_no_fresh_copy_of_an_unbound_pod() -> None:
    client = FakeClient(make_pod("p"))
    stale = make_pod("p")
    stale.metadata.resource_version = "0"  # a status write happened since
    bound = await bind(client, stale, "n1")
    assert bound.spec.node_name == "n1" and client.binds == 1


async def test_bind_gives_up_when_bound_elsewhere() -> None:
    client = FakeClient(make_pod("p", node_name="other"))
    with pytest.raises(BindError, match='already assigned to node "other"'):
        await bind(client, make_pod("p"), "n1")


async def test_bind_found_done_counts_as_done() -> None:
    # The first reply was lost and the scheduler retried: the pod is already on n1.
    client = FakeClient(make_pod("p", node_name="n1"))
    bound = await bind(client, make_pod("p"), "n1")
    assert bound.spec.node_name == "n1"


async def test_bind_refuses_a_replaced_pod() -> None:
    client = FakeClient(make_pod("p"))
    client.pod.metadata.uid = "new-uid"
    old = make_pod("p")
    old.metadata.uid = "old-uid"
    with pytest.raises(BindError, match="replaced"):
        await bind(client, old, "n1")
    assert not client.pod.spec.node_name


async def test_condition_written_only_when_changed() -> None:
    client = FakeClient(make_pod("p"))
    pod = await client.get("Pod", "p", "default")
    assert await write_condition(client, pod, "False", "Unschedulable", "0/1 nodes are available.")
    cond = client.pod.status.conditions[0]
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert cond.last_transition_time
    fresh = await client.get("Pod", "p", "default")
    same = await write_condition(
        client, fresh, "False", "Unschedulable", "0/1 nodes are available."
    )
    assert not same and client.status_updates == 1
    # A stale copy conflicts; the fresh one already says so: nothing more written.
    assert not await write_condition(
        client, pod, "False", "Unschedulable", "0/1 nodes are available."
    )
    assert client.status_updates == 2
