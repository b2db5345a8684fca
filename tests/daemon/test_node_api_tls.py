"""The application API over TLS: with ``tls.api = "mutual"`` only clients holding a certificate from the
cluster CA get in; with ``"server"`` any client that trusts the CA does; plaintext is refused either way.
The CLI reaches a TLS API through the node's own config."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import subprocess
import sys

import grpc
import pytest

from drsdtp.client import connect
from drsdtp.config import Address, LimitsConfig, NodeConfig, TlsConfig, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc
from tests.gossip.pki import Ca, issue, make_ca

ROOT = pathlib.Path(__file__).parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Ca, Ca]:
    directory = tmp_path_factory.mktemp("pki")
    return directory, make_ca(directory, "cluster-ca"), make_ca(directory, "other-ca")


def config(tmp: pathlib.Path, tls: TlsConfig) -> NodeConfig:
    base = parse_config(
        {
            "node_id": "api-tls",
            "data_dir": str(tmp / "data"),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        }
    )
    return dataclasses.replace(base, tls=tls)


async def status(channel: grpc.aio.Channel) -> str:
    reply = await api_pb2_grpc.TwinApiStub(channel).Status(api_pb2.StatusRequest(), timeout=5)
    node_id: str = reply.node_id
    return node_id


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await status(channel)
    return info.value.code()


def ca_only(tls: TlsConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())


NAME = [("grpc.ssl_target_name_override", "api-tls")]


@pytest.mark.integration
async def test_mutual_tls_admits_only_clients_with_a_cluster_certificate(
    tmp_path: pathlib.Path, pki: tuple[pathlib.Path, Ca, Ca]
) -> None:
    directory, ca, other = pki
    node_tls = dataclasses.replace(issue(ca, directory, "api-tls"), api="mutual")
    async with Node(config(tmp_path, node_tls)) as node:
        address = Address("127.0.0.1", node.api.port)
        target = f"127.0.0.1:{node.api.port}"
        operator = dataclasses.replace(issue(ca, directory, "operator"), api="mutual")
        channel, _ = connect(address, operator, server_name="api-tls")
        async with channel:
            assert await status(channel) == "api-tls"
        assert await refused(grpc.aio.insecure_channel(target)) == grpc.StatusCode.UNAVAILABLE
        # Trusting the CA is not enough: the node wants a client certificate it signed.
        no_cert = grpc.aio.secure_channel(target, ca_only(node_tls), options=NAME)
        assert await refused(no_cert) == grpc.StatusCode.UNAVAILABLE
        stranger = dataclasses.replace(issue(other, directory, "stranger", trust=ca), api="mutual")
        channel, _ = connect(address, stranger, server_name="api-tls")
        assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
        # The client checks the server too: a certificate that does not name the node it meant is refused.
        channel, _ = connect(address, operator, server_name="some-other-node")
        assert await refused(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.integration
async def test_server_tls_admits_any_client_that_trusts_the_ca(
    tmp_path: pathlib.Path, pki: tuple[pathlib.Path, Ca, Ca]
) -> None:
    directory, ca, _ = pki
    node_tls = dataclasses.replace(issue(ca, directory, "api-tls"), api="server")
    async with Node(config(tmp_path, node_tls)) as node:
        target = f"127.0.0.1:{node.api.port}"
        async with grpc.aio.secure_channel(target, ca_only(node_tls), options=NAME) as channel:
            assert await status(channel) == "api-tls"
        # The client side of "server" mode reads only the CA: an operator needs no access to the node's key.
        keyless = dataclasses.replace(node_tls, key=tmp_path / "no-such.key")
        channel, _ = connect(Address("127.0.0.1", node.api.port), keyless, server_name="api-tls")
        async with channel:
            assert await status(channel) == "api-tls"
        assert await refused(grpc.aio.insecure_channel(target)) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.integration
async def test_the_cli_reaches_a_tls_api_through_the_node_config(
    tmp_path: pathlib.Path, pki: tuple[pathlib.Path, Ca, Ca]
) -> None:
    directory, ca, _ = pki
    tls = issue(ca, directory, "api-tls")
    async with Node(config(tmp_path, dataclasses.replace(tls, api="mutual"))) as node:
        toml = tmp_path / "node.toml"
        toml.write_text(
            f'node_id = "api-tls"\ndata_dir = "{tmp_path / "data"}"\n'
            f'[listen]\napi = "127.0.0.1:{node.api.port}"\n'
            f'[tls]\nca = "{tls.ca}"\ncert = "{tls.cert}"\nkey = "{tls.key}"\napi = "mutual"\n'
        )
        argv = [sys.executable, "-m", "drsdtp", "status", "--config", str(toml), "--json"]
        done = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert '"node": "api-tls"' in done.stdout


@pytest.mark.integration
async def test_mutual_tls_applies_allowed_names_to_api_callers(
    tmp_path: pathlib.Path, pki: tuple[pathlib.Path, Ca, Ca]
) -> None:
    directory, ca, _ = pki
    node_tls = dataclasses.replace(
        issue(ca, directory, "api-tls"), api="mutual", allowed_names=("operator", "peer-2")
    )
    async with Node(config(tmp_path, node_tls)) as node:
        address = Address("127.0.0.1", node.api.port)
        operator = dataclasses.replace(issue(ca, directory, "operator"), api="mutual")
        channel, _ = connect(address, operator, server_name="api-tls")
        async with channel:
            assert await status(channel) == "api-tls"
        # Signed by the cluster CA, but not a name the node admits: refused on every method, Watch too.
        intruder = dataclasses.replace(issue(ca, directory, "intruder"), api="mutual")
        channel, stub = connect(address, intruder, server_name="api-tls")
        async with channel:
            for attempt in (stub.Status(api_pb2.StatusRequest()), stub.Watch(api_pb2.WatchRequest()).read()):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await attempt
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                details = str(info.value.details())
                assert "intruder" in details and "is not in tls.allowed_names" in details
    counts = node.api.requests.counts
    assert counts[("Status", "PERMISSION_DENIED")] == counts[("Watch", "PERMISSION_DENIED")] == 1
    assert counts[("Status", "OK")] == 1


@pytest.mark.integration
async def test_the_watch_cap_per_caller_follows_the_certificate(
    tmp_path: pathlib.Path, pki: tuple[pathlib.Path, Ca, Ca]
) -> None:
    directory, ca, _ = pki
    node_tls = dataclasses.replace(issue(ca, directory, "api-tls"), api="mutual")
    cfg = dataclasses.replace(
        config(tmp_path, node_tls),
        limits=dataclasses.replace(LimitsConfig(), api_max_watchers=4, api_max_watchers_per_caller=1),
    )
    async with Node(cfg) as node:
        await node.commit(node.store.set("pump-1", "rpm", 1.0), ["pump-1"], "local")
        address = Address("127.0.0.1", node.api.port)
        clients = {
            name: connect(address, dataclasses.replace(issue(ca, directory, name), api="mutual"), "api-tls")
            for name in ("operator-a", "operator-b")
        }
        try:
            a, b = (stub for _, stub in clients.values())
            assert (await a.Watch(api_pb2.WatchRequest()).read()).origin == "snapshot"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await a.Watch(api_pb2.WatchRequest()).read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = str(refused.value.details())  # a caller is named by its certificate's names
            assert "from tls:" in details and "operator-a (1 open" in details
            # Same address, other certificate: another caller.
            assert (await b.Watch(api_pb2.WatchRequest()).read()).origin == "snapshot"
        finally:
            for channel, _ in clients.values():
                await channel.close()
