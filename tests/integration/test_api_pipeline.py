"""The Pipeline RPC against a real apiserver over mutual TLS: the client's
create, get, update, bind and delete travel on it; the unary RPCs of the same
verbs still answer alike (other clients use them); many calls in flight on
one stream each get their own answer; a restarted apiserver breaks the
stream and the client's next call opens a new one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from orchestrator.api import codec
from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.api.pb import apiservice_pb2_grpc as pb_grpc
from orchestrator.client.client import (
    AlreadyExistsError,
    Client,
    ConflictError,
    InvalidError,
    NotFoundError,
    UnavailableError,
)
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def config_map(name: str, ns: str, value: str = "v") -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"key": value},
        }
    )


def pod(name: str, ns: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }
    )


async def new_namespace(client: Client) -> str:
    ns = f"pipe-{uuid.uuid4().hex[:8]}"
    await client.create(
        codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    )
    return ns


def wrap(obj: Any) -> pb.Object:
    return pb.Object(kind=obj.kind, raw=obj.SerializeToString())


async def test_every_pipelined_verb_answers_as_its_unary_twin(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as client:
        ns = await new_namespace(client)
        unary = pb_grpc.ApiStub(client._channel)

        # create: pipelined, then the same through the unary RPC
        piped = await client.create(config_map("a", ns))
        raw = await unary.Create(pb.CreateRequest(object=wrap(config_map("b", ns))))
        assert piped.metadata.uid and raw.kind == "ConfigMap"
        exists = rf'configmaps "a" in namespace "{ns}" already exists'
        with pytest.raises(AlreadyExistsError, match=exists):
            await client.create(config_map("a", ns))
        with pytest.raises(grpc.aio.AioRpcError) as unary_err:
            await unary.Create(pb.CreateRequest(object=wrap(config_map("a", ns))))
        assert unary_err.value.code() == grpc.StatusCode.ALREADY_EXISTS

        # get
        got = await client.get("ConfigMap", "b", ns)
        assert got.data["key"] == "v"
        with pytest.raises(NotFoundError) as missing:
            await client.get("ConfigMap", "nope", ns)
        with pytest.raises(grpc.aio.AioRpcError) as unary_missing:
            await unary.Get(pb.GetRequest(kind="ConfigMap", namespace=ns, name="nope"))
        assert missing.value.message == unary_missing.value.details()

        # update, with a stale resourceVersion refused the same way
        got.data["key"] = "w"
        updated = await client.update(got)
        assert updated.data["key"] == "w"
        with pytest.raises(ConflictError) as stale:
            await client.update(got)
        with pytest.raises(grpc.aio.AioRpcError) as unary_stale:
            await unary.Update(pb.UpdateRequest(object=wrap(got)))
        assert unary_stale.value.code() == grpc.StatusCode.ABORTED
        assert stale.value.message == unary_stale.value.details()

        # invalid input names the field on both paths
        bad = config_map("Bad_Name", ns)
        with pytest.raises(InvalidError, match=r"metadata\.name") as invalid:
            await client.create(bad)
        with pytest.raises(grpc.aio.AioRpcError) as unary_invalid:
            await unary.Create(pb.CreateRequest(object=wrap(bad)))
        assert invalid.value.message == unary_invalid.value.details()

        # bind
        await client.create(pod("p", ns))
        bound = await client.bind(ns, "p", "node-1")
        assert bound.spec.node_name == "node-1"
        with pytest.raises(ConflictError):
            await client.bind(ns, "p", "node-2")
        await client.create(pod("q", ns))
        raw = await unary.Bind(pb.BindRequest(namespace=ns, name="q", node="node-2"))
        assert kind_info("Pod").message.FromString(raw.raw).spec.node_name == "node-2"

        # delete
        gone, deleted = await client.delete("ConfigMap", "a", ns)
        assert deleted and gone.metadata.name == "a"
        with pytest.raises(NotFoundError):
            await client.delete("ConfigMap", "a", ns)
        resp = await unary.Delete(pb.DeleteRequest(kind="ConfigMap", namespace=ns, name="b"))
        assert resp.deleted


async def test_many_calls_in_flight_on_one_stream_each_get_their_own_answer(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as client:
        ns = await new_namespace(client)
        names = [f"cm-{i}" for i in range(300)]
        # Every tenth create collides with one made before: its own error, nobody else's.
        await asyncio.gather(*(client.create(config_map(n, ns)) for n in names[::10]))
        results = await asyncio.gather(
            *(client.create(config_map(n, ns, value=n)) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if name in names[::10]:
                assert isinstance(result, AlreadyExistsError), (name, result)
            else:
                assert not isinstance(result, BaseException), (name, result)
                assert result.metadata.name == name and result.data["key"] == name
        reads = await asyncio.gather(*(client.get("ConfigMap", n, ns) for n in names))
        assert [r.metadata.name for r in reads] == names


async def test_a_restarted_apiserver_breaks_the_stream_and_the_next_call_opens_one(
    fresh_control_plane: ControlPlane,
) -> None:
    cp = fresh_control_plane
    async with Client(cp.connection(), timeout=5.0) as client:
        ns = await new_namespace(client)
        await client.create(config_map("before", ns))
        cp.stop()
        with pytest.raises(UnavailableError):
            await client.get("ConfigMap", "before", ns)
        cp.start()
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                got = await client.get("ConfigMap", "before", ns)
                break
            except UnavailableError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert got.metadata.name == "before"
        await client.create(config_map("after", ns))
