"""Fixtures shared by every tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane (SQLite store) shared by the integration tests.

    Tests must use their own namespaces so they do not see each other. Every
    controller runs, but not the scheduler: API tests leave pods unbound on
    purpose, and the scheduler's own tests run one in-process."""
    cp = ControlPlane(tmp_path_factory.mktemp("control-plane"), serve_args=("--no-scheduler",))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def fresh_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of the test's own, for tests that kill or restart it."""
    cp = ControlPlane(tmp_path / "cp")
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def api_only_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """The API alone, no controllers and no scheduler: for tests of what is
    stored and read back, which controllers acting on the objects (an HPA
    scaling a Deployment, the endpoints controller rewriting Endpoints) would
    change under them."""
    cp = ControlPlane(tmp_path / "cp", serve_args=("--controllers", "", "--no-scheduler"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
