"""Authorization on real ``drsdtp run`` processes: bearer tokens (viewer refused a write, operator allowed,
scopes, unknown tokens), OIDC JWTs against a local issuer, the per-caller rate limit counted in /metrics,
mutual TLS with ``allowed_names`` and certificate roles, and the audit trail naming who wrote and who was
refused."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from drsdtp.api.auth.tokens import hash_token, new_token
from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc
from tests.api.auth_support import AUDIENCE, ISSUER, Issuer, serve_issuer
from tests.api.nodes import ApiNode
from tests.gossip.pki import issue, make_ca
from tests.ingest.support import free_port

# One node serves the module's tests (in the module's event loop, as its channel is).
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOKENS = {name: new_token() for name in ("grafana", "mes", "ops", "slow")}


def tokens_toml(issuer: Issuer) -> str:
    entries = [
        ("grafana", "viewer", '["*"]', ""),
        ("mes", "operator", '["room-*"]', ""),
        ("ops", "admin", '["*"]', ""),
        ("slow", "viewer", '["*"]', "rate_per_s = 0.001\n"),
    ]
    text = "".join(
        f'[[api.tokens]]\nname = "{n}"\nrole = "{r}"\nhash = "{hash_token(TOKENS[n])}"\nscopes = {s}\n{x}'
        for n, r, s, x in entries
    )
    limits = "[limits]\napi_max_watchers_per_caller = 1\n"
    return (
        f'{limits}{text}[api.oidc]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\njwks_url = "{issuer.url}"\n'
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def wait_until_up(node: ApiNode, stub: api_pb2_grpc.TwinApiStub, token: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert node.proc is not None and node.proc.poll() is None, (node.dir / "node.log").read_text()[-2000:]
        try:
            await stub.Status(api_pb2.StatusRequest(), metadata=bearer(token), timeout=2)
            return
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline, f"{node.name} did not answer in time"
            await asyncio.sleep(0.2)


@dataclasses.dataclass
class Served:
    node: ApiNode
    stub: api_pb2_grpc.TwinApiStub
    issuer: Issuer
    metrics_port: int

    async def call(self, method: str, request: Any, token: str | None) -> Any:
        metadata = bearer(token) if token is not None else None
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=10)

    async def refused(self, method: str, request: Any, token: str | None) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.call(method, request, token)
        return info.value

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            return str(reply.read().decode())


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as served:
        yield served


def spawn_with_metrics(node: ApiNode) -> int:
    """Spawns ``node`` with its /metrics on a port of its own (the tests read refusal counters there)."""
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DRSDTP_LISTEN__METRICS", f"127.0.0.1:{port}")
        node.spawn()
    return port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> AsyncIterator[Served]:
    node = ApiNode("auth", tmp_path_factory.mktemp("auth"))
    node.configure({}, tokens_toml(issuer))
    metrics_port = spawn_with_metrics(node)
    channel, stub = connect(Address("127.0.0.1", node.api_port))
    try:
        async with channel:
            await wait_until_up(node, stub, TOKENS["ops"])
            create = api_pb2.WriteRequest(
                twins=[
                    api_pb2.TwinWrite(twin_id=t, create=api_pb2.CreateTwin()) for t in ("room-1", "pump-1")
                ]
            )
            await stub.Write(create, metadata=bearer(TOKENS["ops"]), timeout=10)
            yield Served(node, stub, issuer, metrics_port)
    finally:
        node.stop()


def report(twin: str, field: str, value: float) -> api_pb2.WriteRequest:
    op = api_pb2.FieldOp(field=field, report=api_pb2.FieldValue(f64=value))
    return api_pb2.WriteRequest(twins=[api_pb2.TwinWrite(twin_id=twin, ops=[op])], reason="test")


async def value(served: Served, twin: str, field: str) -> float | None:
    got = await served.call("GetTwin", api_pb2.GetTwinRequest(twin_id=twin), TOKENS["grafana"])
    fields = {f.name: f for f in got.fields}
    return fields[field].f64 if field in fields else None


async def test_a_viewer_token_is_refused_a_write_and_an_operator_is_allowed(served: Served) -> None:
    refused = await served.refused("Write", report("room-1", "temp_1", 30.0), TOKENS["grafana"])
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        "Write: token:grafana (role viewer) may not call Write: it needs the role operator"
    )
    assert await value(served, "room-1", "temp_1") is None  # nothing changed
    await served.call("Write", report("room-1", "temp_1", 21.5), TOKENS["mes"])
    assert await value(served, "room-1", "temp_1") == 21.5
    # The operator's scope is room-*: another twin is refused, naming the twin and the scopes.
    outside = await served.refused("Write", report("pump-1", "rpm", 1.0), TOKENS["mes"])
    assert outside.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "the twin 'pump-1' is outside the scopes of token:mes (room-*)" in str(outside.details())


async def test_missing_and_unknown_tokens_are_unauthenticated(served: Served) -> None:
    for token, says in ((None, "no credentials"), (new_token(), "is not one of this node's api.tokens")):
        for method, request in (("Status", api_pb2.StatusRequest()), ("GetTwin", api_pb2.GetTwinRequest())):
            refused = await served.refused(method, request, token)
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and says in str(refused.details())
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the Watch stream passes the same guard
        await served.stub.Watch(api_pb2.WatchRequest()).read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_oidc_jwts_are_verified_against_the_issuers_key_set(served: Served) -> None:
    issuer = served.issuer
    await served.call(
        "Write", report("room-1", "temp_2", 19.0), issuer.token("alice", drsdtp_scopes="room-*")
    )
    assert await value(served, "room-1", "temp_2") == 19.0
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token, says in (
        (issuer.token(expires_in=-3600), "the JWT has expired"),
        (issuer.token(iss="https://evil.test"), "the JWT's issuer is not"),
        (issuer.token(kid="k7", key=stranger), "key id 'k7' is not in the issuer's key set"),
    ):
        refused = await served.refused("Write", report("room-1", "temp_2", 99.0), token)
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and says in str(refused.details())
    viewer = await served.refused(
        "Write", report("room-1", "temp_2", 99.0), issuer.token("vic", role="viewer")
    )
    assert viewer.code() == grpc.StatusCode.PERMISSION_DENIED and "jwt:vic (role viewer)" in str(
        viewer.details()
    )
    assert await value(served, "room-1", "temp_2") == 19.0


async def test_a_caller_over_its_rate_limit_is_refused_and_counted(served: Served) -> None:
    await served.call("Status", api_pb2.StatusRequest(), TOKENS["slow"])
    refused = await served.refused("Status", api_pb2.StatusRequest(), TOKENS["slow"])
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "token:slow is over its rate limit (0.001 requests/s)" in str(refused.details())
    await served.call("Status", api_pb2.StatusRequest(), TOKENS["grafana"])  # others are not slowed
    counted = [line for line in served.metrics().splitlines() if line.startswith("drsdtp_api_auth_refusals")]
    assert any('reason="rate"' in line and not line.endswith(" 0.0") for line in counted), counted


async def test_the_audit_trail_names_who_wrote_and_who_was_refused(served: Served) -> None:
    await served.call("Write", report("room-1", "temp_1", 22.0), TOKENS["mes"])
    await served.refused("Write", report("room-1", "temp_1", 23.0), TOKENS["grafana"])
    # An audit read needs an engineer: a viewer is refused, an admin reads.
    await served.refused("ReadAudit", api_pb2.AuditRequest(twin_id="room-1"), TOKENS["grafana"])
    reply = await served.call("ReadAudit", api_pb2.AuditRequest(twin_id="room-1", limit=1000), TOKENS["ops"])
    records = [(r.actor, r.action) for r in reply.records]
    assert ("token:mes", "write") in records
    assert ("token:grafana", "refused") in records
    refusal = next(r for r in reply.records if r.action == "refused")
    assert "refused Write (permission_denied)" in refusal.reason and refusal.twin_id == "room-1"


async def test_the_watch_cap_per_caller_follows_the_token(served: Served) -> None:
    streams = [
        served.stub.Watch(api_pb2.WatchRequest(twin_ids=["room-1"]), metadata=bearer(TOKENS[name]))
        for name in ("grafana", "grafana", "ops")
    ]
    try:
        assert (await streams[0].read()).origin == "snapshot"
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the same token from the same address: over
            await streams[1].read()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "from token:grafana (1 open" in str(info.value.details())
        assert (await streams[2].read()).origin == "snapshot"  # the same address, another token
    finally:
        for stream in streams:
            stream.cancel()


# ----- mutual TLS ---------------------------------------------------------------------------------------
async def test_mutual_tls_admits_allowed_names_with_their_roles(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = make_ca(pki, "cluster-ca")
    node = ApiNode("mtls", tmp_path)
    own = issue(ca, pki, node.node_id)
    node.configure(
        {},
        f'[tls]\nca = "{own.ca}"\ncert = "{own.cert}"\nkey = "{own.key}"\napi = "mutual"\n'
        'allowed_names = ["scada", "hmi", "' + node.node_id + '"]\n'
        '[[api.certificates]]\nname = "hmi"\nrole = "viewer"\n',
    )
    node.spawn()
    address = Address("127.0.0.1", node.api_port)

    def client(name: str) -> tuple[grpc.aio.Channel, api_pb2_grpc.TwinApiStub]:
        return connect(address, dataclasses.replace(issue(ca, pki, name), api="mutual"), node.node_id)

    try:
        channel, scada = client("scada")
        async with channel:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await scada.Status(api_pb2.StatusRequest(), timeout=2)
                    break
                except grpc.aio.AioRpcError:
                    assert node.proc is not None and node.proc.poll() is None
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            create = api_pb2.WriteRequest(
                twins=[api_pb2.TwinWrite(twin_id="room-9", create=api_pb2.CreateTwin())]
            )
            await scada.Write(create, timeout=10)  # certificate_role: admin by default
        channel, intruder = client("intruder")  # signed by the CA, not in allowed_names
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await intruder.GetTwin(api_pb2.GetTwinRequest(twin_id="room-9"), timeout=10)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "intruder" in str(info.value.details()) and "tls.allowed_names" in str(
                info.value.details()
            )
        channel, hmi = client("hmi")  # allowed, mapped to viewer
        async with channel:
            assert (
                await hmi.GetTwin(api_pb2.GetTwinRequest(twin_id="room-9"), timeout=10)
            ).twin_id == "room-9"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await hmi.Write(report("room-9", "temp_1", 20.0), timeout=10)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "tls:127.0.0.1,hmi (role viewer) may not call Write" in str(info.value.details())
    finally:
        node.stop()


# ----- OIDC discovery ------------------------------------------------------------------------------------
async def test_oidc_discovery_on_a_node_and_an_unreachable_issuer(tmp_path: Path) -> None:
    """One node finds the key set through its issuer's discovery document; another, whose issuer is
    down, starts anyway and refuses JWTs UNAUTHENTICATED with the reason, counted in its metrics."""
    with serve_issuer() as issuer:
        up = issuer.discovered()
        down = f"http://127.0.0.1:{free_port()}/realms/edge"
        ops = f'[[api.tokens]]\nname = "ops"\nrole = "admin"\nhash = "{hash_token(TOKENS["ops"])}"\n'
        for name, issuer_url in (("discovers", up), ("down", down)):
            node = ApiNode(name, tmp_path)
            node.configure({}, f'{ops}[api.oidc]\nissuer = "{issuer_url}"\naudience = "{AUDIENCE}"\n')
            metrics_port = spawn_with_metrics(node)
            channel, stub = connect(Address("127.0.0.1", node.api_port))
            try:
                async with channel:
                    await wait_until_up(node, stub, TOKENS["ops"])
                    served = Served(node, stub, issuer, metrics_port)
                    issuer.name = issuer_url
                    if name == "discovers":
                        reply = await served.call("WhoAmI", api_pb2.WhoAmIRequest(), issuer.token("alice"))
                        assert (reply.identity, reply.role) == ("jwt:alice", "operator")
                        assert issuer.discoveries == 1 and issuer.fetches == 1
                        continue
                    refused = await served.refused("WhoAmI", api_pb2.WhoAmIRequest(), issuer.token("bob"))
                    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "the issuer's key set could not be fetched (cannot fetch " + down in str(
                        refused.details()
                    )
                    metrics = served.metrics().splitlines()
                    assert 'drsdtp_api_auth_refusals_total{reason="issuer"} 1.0' in metrics, metrics
                    assert 'drsdtp_api_oidc_fetch_errors_total{stage="discovery"} 1.0' in metrics
            finally:
                node.stop()
