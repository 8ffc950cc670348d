"""Fixtures for the store contract suite: every test runs against each backend.

`store` is parametrized over "sqlite" (a fresh database file per test) and
"etcd" (one real etcd per test session, a unique key prefix per test, so tests
cannot see each other's keys).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orchestrator.store.base import Store
from orchestrator.store.etcd import EtcdStore
from orchestrator.store.sqlite import SqliteStore
from tests.support.etcd import EtcdProcess

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdProcess]:
    """One real etcd for the whole session (raises, rather than skips, without etcd)."""
    with EtcdProcess() as etcd:
        yield etcd


def unique_prefix() -> str:
    return f"/test-{uuid.uuid4().hex}/"


@pytest.fixture
async def etcd_store(etcd_server: EtcdProcess) -> AsyncIterator[EtcdStore]:
    store = await EtcdStore.open([etcd_server.endpoint], prefix=unique_prefix())
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = await SqliteStore.open(tmp_path / "store.db")
    else:
        etcd: EtcdProcess = request.getfixturevalue("etcd_server")
        s = await EtcdStore.open([etcd.endpoint], prefix=unique_prefix())
    try:
        yield s
    finally:
        await s.close()
