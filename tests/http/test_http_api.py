"""The HTTP/JSON face on a real node process: the same methods as gRPC (one implementation: a write over
one face reads back over the other, an error is the same code and message on both), the OpenAPI document
validated by a maintained validator, errors as JSON, bounded bodies, reads by GET."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from openapi_spec_validator import validate

from drsdtp.wire.v1 import api_pb2
from tests.http.support import HttpNode, field_values, http_node

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpNode]:
    with http_node(tmp_path_factory.mktemp("http")) as n:
        yield n


def create(twin: str, **fields: float) -> dict[str, object]:
    ops = [{"field": name, "report": {"f64": value}} for name, value in fields.items()]
    return {"twins": [{"twinId": twin, "create": {"model": "room"}, "ops": ops}]}


async def grpc_error(node: HttpNode, method: str, request: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.call(method, request)
    return info.value


def test_openapi_document_is_valid_and_lists_every_method(node: HttpNode) -> None:
    status, doc = node.request("GET", "/api/v2/openapi.json")
    assert status == 200
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    methods = {m.name for m in api_pb2.DESCRIPTOR.services_by_name["TwinApi"].methods}
    assert {p.rsplit("/", 1)[-1] for p in doc["paths"]} == methods
    assert "text/event-stream" in doc["paths"]["/api/v2/Watch"]["get"]["responses"]["200"]["content"]
    assert "get" in doc["paths"]["/api/v2/GetTwin"] and "get" not in doc["paths"]["/api/v2/Write"]
    assert doc["components"]["schemas"]["Twin"]["properties"]["twinId"] == {"type": "string"}


async def test_a_write_over_http_reads_back_over_grpc_and_http(node: HttpNode) -> None:
    reply = node.post("Write", {**create("room-rw", temperature=21.5), "actor": "curl", "reason": "test"})
    (written,) = reply["twins"]
    assert written["twinId"] == "room-rw" and int(written["version"]) != 0
    # The same state through the gRPC face ...
    twin = await node.get("room-rw")
    assert twin is not None
    assert {f.name: f.f64 for f in twin.fields}["temperature"] == 21.5
    assert str(twin.version) == written["version"]
    # ... and through GET with query parameters (repeated ones by repeating them).
    status, got = node.request("GET", "/api/v2/GetTwin?twin_id=room-rw&fields=temperature")
    assert status == 200
    assert field_values(got) == {"temperature": 21.5}
    status, listed = node.request("GET", "/api/v2/ListTwins?prefix=room-rw")
    assert status == 200 and [t["twinId"] for t in listed["twins"]] == ["room-rw"]


async def test_a_write_over_grpc_reads_back_over_http(node: HttpNode) -> None:
    op = api_pb2.FieldOp(field="temperature", report=api_pb2.FieldValue(f64=7.25))
    request = api_pb2.WriteRequest(
        twins=[api_pb2.TwinWrite(twin_id="room-g", create=api_pb2.CreateTwin(model="room"), ops=[op])]
    )
    await node.call("Write", request)
    assert field_values(node.post("GetTwin", {"twin_id": "room-g"}))["temperature"] == 7.25


async def test_errors_have_the_grpc_code_and_message(node: HttpNode) -> None:
    status, body = node.request("GET", "/api/v2/GetTwin?twin_id=no-such-twin")
    rpc = await grpc_error(node, "GetTwin", api_pb2.GetTwinRequest(twin_id="no-such-twin"))
    assert status == 404
    assert body["code"] == rpc.code().name == "NOT_FOUND"
    assert body["message"] == rpc.details()
    # A bad value names the field, as on gRPC; nothing is changed.
    node.post("Write", create("room-err", temperature=21.5))
    bad = {"twins": [{"twinId": "room-err", "ops": [{"field": "temperature", "report": {"f64": "NaN"}}]}]}
    status, body = node.request("POST", "/api/v2/Write", bad)
    assert status == 400 and body["code"] == "INVALID_ARGUMENT", body
    assert body["field"].startswith("twins[0].ops[0]"), body
    assert field_values(node.post("GetTwin", {"twinId": "room-err"}))["temperature"] == 21.5


async def test_a_stale_if_version_is_refused_with_the_current_version(node: HttpNode) -> None:
    node.post("Write", create("room-cond", temperature=1.0))
    current = node.post("GetTwin", {"twinId": "room-cond"})["version"]
    stale = {
        "twins": [{"twinId": "room-cond", "ifVersion": "12345", "ops": [{"field": "x", "increment": 1}]}]
    }
    status, body = node.request("POST", "/api/v2/Write", stale)
    assert status == 400 and body["code"] == "FAILED_PRECONDITION", body
    assert body["details"]["version"] == current


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"twinId": "a", "noSuchField": 1}', "does not parse as its message"),
        (b'{"twinId": 12}', "does not parse as its message"),
    ],
)
def test_bodies_that_do_not_parse_are_invalid_argument(node: HttpNode, body: bytes, words: str) -> None:
    status, reply = node.request("POST", "/api/v2/GetTwin", body)
    assert status == 400 and reply["code"] == "INVALID_ARGUMENT", reply
    assert reply["message"].startswith("GetTwin: ") and words in reply["message"], reply


def test_request_bodies_are_bounded(node: HttpNode) -> None:
    big = json.dumps({"twinId": "x" * (70 * 1024)}).encode()
    status, reply = node.request("POST", "/api/v2/GetTwin", big)
    assert status == 413 and reply["code"] == "RESOURCE_EXHAUSTED", reply
    assert node.post("Status")["nodeId"] == node.node_id  # the node serves on


def test_unknown_paths_methods_and_parameters(node: HttpNode) -> None:
    status, reply = node.request("POST", "/api/v2/NoSuchMethod", {})
    assert status == 404 and reply["code"] == "NOT_FOUND" and "NoSuchMethod" in reply["message"]
    status, reply = node.request("GET", "/api/v2/Write")
    assert status == 405 and reply["code"] == "UNIMPLEMENTED", reply
    status, reply = node.request("GET", "/api/v2/ListTwins?colour=red")
    assert status == 400 and reply["field"] == "colour" and "prefix" in reply["message"], reply
    status, reply = node.request("GET", "/api/v2/ReadHistory?twin_id=a&limit=many")
    assert status == 400 and reply["field"] == "limit", reply
    status, reply = node.request("GET", "/nowhere")
    assert status == 404 and reply["code"] == "NOT_FOUND", reply


def test_curl_reads_what_the_readme_shows(node: HttpNode) -> None:
    node.post("Write", create("room-curl", temperature=20.0))  # its own twin: the test runs alone too
    out = subprocess.run(
        ["curl", "-sf", f"{node.base}/api/v2/Status"], check=True, capture_output=True, timeout=30
    ).stdout
    assert json.loads(out)["nodeId"] == node.node_id
    out = subprocess.run(
        ["curl", "-sf", "-X", "POST", "-d", '{"prefix": "room-curl"}', f"{node.base}/api/v2/ListTwins"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    assert [t["twinId"] for t in json.loads(out)["twins"]] == ["room-curl"]


async def test_health_before_the_first_intelligence_pass_is_unavailable(node: HttpNode) -> None:
    # This node ingests nothing, so no intelligence pass runs: a state to retry, not a bad request.
    status, body = node.request("POST", "/api/v2/Health", {})
    assert status == 503, body
    assert body["code"] == "UNAVAILABLE" and "no intelligence pass" in body["message"]
    error = await grpc_error(node, "Health", api_pb2.HealthRequest())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
