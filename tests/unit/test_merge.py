import copy
from typing import Any

import pytest

from orchestrator.api.merge import MERGE_KEYS, json_equal, three_way_merge

pytestmark = pytest.mark.unit


def deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": spec,
    }


def container(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


def pod_spec(*containers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"template": {"spec": {"containers": list(containers), **fields}}}


def containers_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


# --- plain fields -------------------------------------------------------------------------------


def test_first_apply_onto_live_without_last_applied() -> None:
    live = {"metadata": {"name": "a", "uid": "u1"}, "status": {"phase": "Running"}}
    new = {"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"x": 1}}
    assert three_way_merge(None, new, live) == {
        "metadata": {"name": "a", "uid": "u1", "labels": {"app": "web"}},
        "spec": {"x": 1},
        "status": {"phase": "Running"},
    }


def test_add_field() -> None:
    last = deployment(replicas=2)
    new = deployment(replicas=2, paused=True)
    live = deployment(replicas=2)
    assert three_way_merge(last, new, live)["spec"] == {"replicas": 2, "paused": True}


def test_change_field() -> None:
    last = deployment(replicas=2)
    new = deployment(replicas=5)
    live = deployment(replicas=2)
    assert three_way_merge(last, new, live)["spec"] == {"replicas": 5}


def test_new_wins_over_a_live_change_to_a_field_it_sets() -> None:
    # kubectl's known behaviour: applying a manifest that sets replicas resets a scaler's choice.
    last = deployment(replicas=2)
    new = deployment(replicas=2)
    live = deployment(replicas=7)
    assert three_way_merge(last, new, live)["spec"] == {"replicas": 2}


def test_remove_field_that_was_last_applied() -> None:
    last = deployment(replicas=2, paused=True)
    new = deployment(replicas=2)
    live = deployment(replicas=2, paused=True)
    assert three_way_merge(last, new, live)["spec"] == {"replicas": 2}


def test_keep_field_set_by_others() -> None:
    # The scaler changed replicas; the user's manifest never mentioned them.
    last = deployment(strategy={"type": "RollingUpdate"})
    new = deployment(strategy={"type": "RollingUpdate"}, minReadySeconds=5)
    live = deployment(
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
        replicas=7,
        revisionHistoryLimit=10,
    )
    live["status"] = {"readyReplicas": 7}
    live["metadata"]["resourceVersion"] = "42"
    result = three_way_merge(last, new, live)
    assert result["spec"] == {
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
        "replicas": 7,
        "revisionHistoryLimit": 10,
        "minReadySeconds": 5,
    }
    assert result["status"] == {"readyReplicas": 7}
    assert result["metadata"] == {"name": "web", "resourceVersion": "42"}


def test_removed_field_is_deleted_even_if_someone_changed_it() -> None:
    last = deployment(paused=True)
    new = deployment()
    live = deployment(paused=False)
    assert three_way_merge(last, new, live)["spec"] == {}


def test_nested_dict_removal() -> None:
    last = {"metadata": {"labels": {"app": "web", "tier": "fe"}, "annotations": {"a": "1"}}}
    new = {"metadata": {"labels": {"app": "web"}}}
    live = {
        "metadata": {
            "labels": {"app": "web", "tier": "fe", "pod-template-hash": "abc"},
            "annotations": {"a": "1", "deployment.kubernetes.io/revision": "3"},
        }
    }
    result = three_way_merge(last, new, live)
    # tier was the user's and is gone; the hash was a controller's and stays; the whole
    # annotations map was the user's, so it goes, including what others had added to it.
    assert result == {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}}


def test_nested_dict_key_removed_inside_kept_parent() -> None:
    last = {"spec": {"selector": {"matchLabels": {"app": "web", "old": "x"}}}}
    new = {"spec": {"selector": {"matchLabels": {"app": "web"}}}}
    live = copy.deepcopy(last)
    assert three_way_merge(last, new, live) == new


def test_none_in_new_deletes() -> None:
    last = {"spec": {"a": 1}}
    new = {"spec": {"a": 1, "b": None, "c": {"d": None, "e": 2}}, "status": None}
    live = {"spec": {"a": 1, "b": 2, "c": {"d": 3}}, "status": {"x": 1}}
    assert three_way_merge(last, new, live) == {"spec": {"a": 1, "c": {"e": 2}}}


def test_none_inside_a_new_dict_absent_from_live_is_dropped() -> None:
    assert three_way_merge(None, {"spec": {"a": None, "b": 1}}, {}) == {"spec": {"b": 1}}


def test_scalar_replaced_by_dict_and_dict_by_scalar() -> None:
    assert three_way_merge({"a": 1}, {"a": {"b": 2}}, {"a": 1}) == {"a": {"b": 2}}
    assert three_way_merge({"a": {"b": 2}}, {"a": 3}, {"a": {"b": 2, "c": 4}}) == {"a": 3}


def test_scalar_list_replaced() -> None:
    last = {"spec": {"args": ["a", "b"], "finalizers": ["x"]}}
    new = {"spec": {"args": ["c"], "finalizers": ["x"]}}
    live = {"spec": {"args": ["a", "b", "from-someone"], "finalizers": ["x", "y"]}}
    assert three_way_merge(last, new, live) == new


def test_tolerations_replaced_wholesale() -> None:
    assert MERGE_KEYS["tolerations"] is None
    last = {"tolerations": [{"key": "a", "operator": "Exists"}]}
    new = {"tolerations": [{"key": "b", "operator": "Exists"}]}
    live = {"tolerations": [{"key": "a", "operator": "Exists"}, {"key": "c", "effect": "X"}]}
    assert three_way_merge(last, new, live) == new


def test_unknown_list_of_dicts_replaced() -> None:
    last = {"rules": [{"host": "a"}]}
    new = {"rules": [{"host": "b"}]}
    live = {"rules": [{"host": "a"}, {"host": "c"}]}
    assert three_way_merge(last, new, live) == new


# --- lists merged by key ------------------------------------------------------------------------


def test_container_list_merge_by_name() -> None:
    last = deployment(**pod_spec(container("app", image="app:1"), container("old", image="o:1")))
    new = deployment(**pod_spec(container("app", image="app:2"), container("new", image="n:1")))
    live = deployment(
        **pod_spec(
            container("app", image="app:1", imagePullPolicy="IfNotPresent"),
            container("old", image="o:1"),
            container("injected-sidecar", image="proxy:1"),
        )
    )
    assert containers_of(three_way_merge(last, new, live)) == [
        # the user's field changed, the defaulted field kept
        {"name": "app", "image": "app:2", "imagePullPolicy": "IfNotPresent"},
        {"name": "new", "image": "n:1"},  # added
        {"name": "injected-sidecar", "image": "proxy:1"},  # never the user's: kept, after new's
        # "old" was last applied and is gone from new: removed
    ]


def test_container_order_follows_new() -> None:
    last = deployment(**pod_spec(container("a"), container("b")))
    new = deployment(**pod_spec(container("b"), container("a")))
    live = deployment(**pod_spec(container("a", x=1), container("b", y=2)))
    assert containers_of(three_way_merge(last, new, live)) == [
        {"name": "b", "y": 2},
        {"name": "a", "x": 1},
    ]


def test_field_removed_inside_a_container() -> None:
    last = deployment(**pod_spec(container("app", image="a", command=["run"])))
    new = deployment(**pod_spec(container("app", image="a")))
    live = deployment(**pod_spec(container("app", image="a", command=["run"], tty=False)))
    assert containers_of(three_way_merge(last, new, live)) == [
        {"name": "app", "image": "a", "tty": False}
    ]


def test_env_list_merge() -> None:
    last = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    new = {
        "env": [
            {"name": "A", "value": "10"},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
    }
    live = {
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "2"},
            {"name": "INJECTED", "value": "x"},
        ]
    }
    assert three_way_merge(last, new, live) == {
        "env": [
            {"name": "A", "value": "10"},
            {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "INJECTED", "value": "x"},
        ]
    }


def test_env_value_switched_to_value_from() -> None:
    last = {"env": [{"name": "A", "value": "1"}]}
    new = {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    live = copy.deepcopy(last)
    assert three_way_merge(last, new, live) == new


def test_volume_mounts_merge_by_mount_path() -> None:
    last = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    new = {"volumeMounts": [{"name": "data2", "mountPath": "/data", "readOnly": True}]}
    live = {
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "token", "mountPath": "/var/run/secrets/token"},
        ]
    }
    assert three_way_merge(last, new, live) == {
        "volumeMounts": [
            {"name": "data2", "mountPath": "/data", "readOnly": True},
            {"name": "token", "mountPath": "/var/run/secrets/token"},
        ]
    }


def test_container_ports_merge_by_container_port() -> None:
    last = {"ports": [{"containerPort": 80}, {"containerPort": 81}]}
    new = {"ports": [{"containerPort": 80, "name": "http"}]}
    live = {"ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}]}
    assert three_way_merge(last, new, live) == {
        "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    }


def test_service_ports_merge_by_port() -> None:
    last = {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    new = {"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}
    live = {"spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    assert three_way_merge(last, new, live) == {
        "spec": {
            "ports": [
                {"port": 80, "targetPort": 9090, "protocol": "TCP"},
                {"port": 443},
            ]
        }
    }


def test_list_without_usable_key_is_replaced() -> None:
    # Duplicate names cannot be matched up; items without the key neither.
    last = {"env": [{"name": "A", "value": "1"}]}
    new = {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}
    live = {"env": [{"name": "A", "value": "1"}, {"name": "X", "value": "x"}]}
    assert three_way_merge(last, new, live) == new
    new2 = {"ports": [{"protocol": "TCP"}]}
    live2 = {"ports": [{"port": 80}]}
    assert three_way_merge(None, new2, live2) == new2


def test_empty_new_list_removes_last_applied_items_only() -> None:
    last = {"imagePullSecrets": [{"name": "a"}]}
    new: dict[str, Any] = {"imagePullSecrets": []}
    live = {"imagePullSecrets": [{"name": "a"}, {"name": "b"}]}
    assert three_way_merge(last, new, live) == {"imagePullSecrets": [{"name": "b"}]}


def test_keyed_list_when_live_has_none() -> None:
    new: dict[str, Any] = {"volumes": [{"name": "v", "emptyDir": {}, "hostPath": None}]}
    assert three_way_merge(None, new, {}) == {"volumes": [{"name": "v", "emptyDir": {}}]}


def test_keyed_list_removed_entirely_when_last_applied() -> None:
    last = {"spec": {"initContainers": [{"name": "init"}], "x": 1}}
    new = {"spec": {"x": 1}}
    live = {"spec": {"initContainers": [{"name": "init"}, {"name": "other"}], "x": 1}}
    assert three_way_merge(last, new, live) == {"spec": {"x": 1}}


def test_nested_keyed_lists_in_containers() -> None:
    last = deployment(
        **pod_spec(container("app", env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]))
    )
    new = deployment(**pod_spec(container("app", env=[{"name": "A", "value": "1"}])))
    live = deployment(
        **pod_spec(
            container(
                "app",
                env=[
                    {"name": "A", "value": "1"},
                    {"name": "B", "value": "2"},
                    {"name": "Z", "value": "z"},
                ],
            )
        )
    )
    assert containers_of(three_way_merge(last, new, live)) == [
        {"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "Z", "value": "z"}]}
    ]


# --- purity -------------------------------------------------------------------------------------


def test_inputs_not_mutated_and_result_shares_nothing() -> None:
    last = deployment(paused=True, **pod_spec(container("a", image="1"), container("b")))
    new = deployment(**pod_spec(container("a", image="2"), container("c", env=None)), x=None)
    live = deployment(
        paused=True,
        replicas=3,
        **pod_spec(container("a", image="1", ports=[{"containerPort": 1}]), container("b")),
    )
    live["status"] = {"conditions": [{"type": "Available", "status": "True"}]}
    snapshots = [copy.deepcopy(x) for x in (last, new, live)]
    result = three_way_merge(last, new, live)
    assert [last, new, live] == snapshots
    # Mutating the result must not reach any input.
    result["status"]["conditions"][0]["status"] = "False"
    containers_of(result)[0]["ports"][0]["containerPort"] = 99
    containers_of(result)[0]["image"] = "changed"
    assert [last, new, live] == snapshots


def test_merge_is_idempotent() -> None:
    last = deployment(**pod_spec(container("a", image="1")))
    new = deployment(replicas=2, **pod_spec(container("a", image="2"), container("b")))
    live = deployment(replicas=9, **pod_spec(container("a", image="1", tty=False)))
    once = three_way_merge(last, new, live)
    assert json_equal(three_way_merge(new, new, once), once)


# --- json_equal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
        ([1, 2], [2, 1], False),
        (1, 1.0, True),
        ({"x": 1}, {"x": 1.0}, True),
        (True, 1, False),
        (False, 0, False),
        ({"x": True}, {"x": 1}, False),
        (True, True, True),
        (None, None, True),
        ({"a": None}, {}, False),
        ("1", 1, False),
        ([1], (1,), True),
        ({"a": {"b": [{"c": "d"}]}}, {"a": {"b": [{"c": "d"}]}}, True),
        ({"a": {"b": [{"c": "d"}]}}, {"a": {"b": [{"c": "e"}]}}, False),
        ([1, 2], [1, 2, 3], False),
        ({}, [], False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal
