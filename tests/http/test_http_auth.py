"""Authorization on the HTTP face of a real node with tokens: the same decisions, codes and messages as on
gRPC (one authority behind both faces), the bearer header or, for EventSource, an access_token parameter,
refusals audited with who was refused."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format

from drsdtp.api.auth.tokens import hash_token
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc
from tests.http.support import HttpNode, http_node

pytestmark = pytest.mark.integration

TOKENS = {"viewer": "viewer-secret", "operator": "operator-secret", "admin": "admin-secret"}
SCOPES = {"viewer": "*", "operator": "line1/*", "admin": "*"}
CONFIG = "".join(
    f'[[api.tokens]]\nname = "{role}"\nrole = "{role}"\nhash = "{hash_token(token)}"\n'
    f'scopes = ["{SCOPES[role]}"]\n'
    for role, token in TOKENS.items()
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpNode]:
    with http_node(tmp_path_factory.mktemp("auth"), CONFIG, ready_token=TOKENS["viewer"]) as n:
        yield n


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def report(twin: str, create: bool = False) -> dict[str, object]:
    op = {"field": "level", "report": {"f64": 1.5}}
    return {"twins": [{"twinId": twin, **({"create": {}} if create else {}), "ops": [op]}]}


async def grpc_refusal(node: HttpNode, role: str, method: str, request: object) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.api_port}") as channel:
        stub = api_pb2_grpc.TwinApiStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(stub, method)(request, metadata=(("authorization", f"Bearer {TOKENS[role]}"),))
    return info.value


def test_no_or_an_unknown_credential_is_unauthenticated(node: HttpNode) -> None:
    status, body = node.request("GET", "/api/v2/Status")
    assert status == 401 and body["code"] == "UNAUTHENTICATED", body
    assert "Bearer" in body["message"]
    status, body = node.request("GET", "/api/v2/Status", headers={"Authorization": "Bearer guessed"})
    assert status == 401 and "not one of this node's api.tokens" in body["message"], body
    req = urllib.request.Request(node.base + "/api/v2/Status")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=20)
    assert info.value.headers["WWW-Authenticate"] == "Bearer"


async def test_roles_and_scopes_decide_as_on_grpc(node: HttpNode) -> None:
    status, body = node.request("POST", "/api/v2/Write", report("line1/tank", create=True), bearer("admin"))
    assert status == 200, body
    status, _ = node.request("GET", "/api/v2/GetTwin?twin_id=line1/tank", headers=bearer("viewer"))
    assert status == 200
    # A viewer may not write: the same code and message as the gRPC face gives.
    status, body = node.request("POST", "/api/v2/Write", report("line1/tank"), bearer("viewer"))
    request = json_format.ParseDict(report("line1/tank"), api_pb2.WriteRequest())
    rpc = await grpc_refusal(node, "viewer", "Write", request)
    assert status == 403 and body["code"] == rpc.code().name == "PERMISSION_DENIED", body
    assert body["message"] == rpc.details() and "needs the role operator" in body["message"]
    # An operator writes within its scope, not outside it.
    status, body = node.request("POST", "/api/v2/Write", report("line1/tank"), bearer("operator"))
    assert status == 200, body
    node.request("POST", "/api/v2/Write", report("line2/tank", create=True), bearer("admin"))
    status, body = node.request("POST", "/api/v2/Write", report("line2/tank"), bearer("operator"))
    assert status == 403 and "outside the scopes of token:operator" in body["message"], body


def test_refusals_are_audited_with_who_was_refused(node: HttpNode) -> None:
    node.request("POST", "/api/v2/Write", report("line1/tank"), bearer("viewer"))
    status, body = node.request("GET", "/api/v2/ReadAudit?limit=1000", headers=bearer("admin"))
    assert status == 200, body
    refused = [r for r in body["records"] if r["action"] == "refused"]
    assert any(r["actor"] == "token:viewer" and "Write" in r["reason"] for r in refused), refused


def test_event_source_sends_its_token_as_a_parameter(node: HttpNode) -> None:
    status, body = node.request("GET", "/api/v2/Watch?twin_ids=line1/tank")
    assert status == 401, body
    url = f"{node.base}/api/v2/Watch?twin_ids=line1/tank&access_token={TOKENS['viewer']}"
    with urllib.request.urlopen(url, timeout=20) as stream:
        assert stream.status == 200
        lines = [stream.readline() for _ in range(4)]
    event = json.loads(next(line for line in lines if line.startswith(b"data: "))[6:])
    assert event["twin"]["twinId"] == "line1/tank"
