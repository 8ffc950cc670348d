"""Controller settings from the command line: the node monitor grace periods
reach the node lifecycle controller, durations read as Kubernetes' flags do,
and bad values stop the process with a message naming the flag."""

from __future__ import annotations

import pytest

from orchestrator.api.duration import parse_duration
from orchestrator.client.config import Connection
from orchestrator.controllers.manager import ControllerManager, ControllerOptions
from orchestrator.controllers.node_lifecycle import NodeLifecycleController
from orchestrator.server_main import build_parser, main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("40", 40.0),
        ("40s", 40.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        (" 2m ", 120.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "40x", "s", "1m 30s", "-"])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_flags_default_to_kubernetes_values_and_parse_durations() -> None:
    args = build_parser().parse_args(["serve", "--data-dir", "/d"])
    assert (args.node_monitor_grace_period, args.node_startup_grace_period) == (50.0, 60.0)
    cm = ["controller-manager", "--kubeconfig", "k", "--data-dir", "/d"]
    args = build_parser().parse_args(
        [*cm, "--node-monitor-grace-period", "20s", "--node-startup-grace-period", "1m"]
    )
    assert (args.node_monitor_grace_period, args.node_startup_grace_period) == (20.0, 60.0)


def test_a_non_positive_grace_period_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--node-monitor-grace-period must be positive"):
        ControllerOptions(node_monitor_grace_period=0)
    code = main(["serve", "--data-dir", "/nonexistent", "--node-startup-grace-period", "0"])
    assert code == 2
    assert "--node-startup-grace-period must be positive" in capsys.readouterr().err


async def test_the_grace_periods_reach_the_node_lifecycle_controller() -> None:
    conn = Connection(server="127.0.0.1:1", ca_pem=b"")  # never dialled
    manager = ControllerManager(
        conn,
        pki=None,  # type: ignore[arg-type]  # node lifecycle needs no CA
        enabled=["nodelifecycle"],
        options=ControllerOptions(node_monitor_grace_period=20, node_startup_grace_period=30),
    )
    (controller,) = manager.controllers
    assert isinstance(controller, NodeLifecycleController)
    assert (controller.grace_period, controller.startup_grace_period) == (20, 30)
    await manager.client.close()
