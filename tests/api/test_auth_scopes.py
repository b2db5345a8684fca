"""Twin scopes on a real ``drsdtp run`` process, the same on both faces (gRPC and HTTP/JSON): a caller scoped
to ``site/a/*`` is refused, naming the twin, by every method that names a ``site/b`` twin directly or through
a record (an alarm), and the refusal is audited; listings, queries, the audit trail and Watch streams give it
only its own twins, counted as such in totals and limits, instead of a refusal."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from google.protobuf import json_format

from drsdtp.api.auth.tokens import hash_token
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc
from tests.http.support import HttpNode, http_node

pytestmark = pytest.mark.integration

TOKENS = {"ops": "ops-secret", "a-view": "a-view-secret", "a-op": "a-op-secret", "a-eng": "a-eng-secret"}
ROLES = {"ops": ("admin", "*"), "a-view": ("viewer", "site/a/*"), "a-op": ("operator", "site/a/*"),
         "a-eng": ("engineer", "site/a/*")}  # fmt: skip
CONFIG = "".join(
    f'[[api.tokens]]\nname = "{n}"\nrole = "{r}"\nhash = "{hash_token(TOKENS[n])}"\nscopes = ["{s}"]\n'
    for n, (r, s) in ROLES.items()
) + (
    "[alerting]\nperiod_s = 0.1\n"
    '[[rules]]\nname = "level-high"\ntwins = "site/*"\nwhen = "level > 80"\nseverity = "major"\n'
    'message = "level high"\n'
)
A_TWINS = ("site/a/x", "site/a/y")
B_TWINS = ("site/b/x",)
FACES = ("grpc", "http")


class Faces:
    """One node, called through either face with the same JSON request: (code name, JSON reply)."""

    def __init__(self, node: HttpNode) -> None:
        self.node = node
        self.channel = grpc.insecure_channel(f"127.0.0.1:{node.api_port}")
        self.stub = api_pb2_grpc.TwinApiStub(self.channel)

    def call(self, face: str, who: str, method: str, body: dict[str, Any]) -> tuple[str, Any]:
        if face == "http":
            headers = {"Authorization": f"Bearer {TOKENS[who]}"}
            status, reply = self.node.request("POST", f"/api/v2/{method}", body, headers=headers)
            return ("OK", reply) if status == 200 else (reply["code"], reply["message"])
        descriptor = api_pb2.DESCRIPTOR.services_by_name["TwinApi"].methods_by_name[method]
        request = json_format.ParseDict(body, getattr(api_pb2, descriptor.input_type.name)())
        try:
            reply = getattr(self.stub, method)(
                request, metadata=(("authorization", f"Bearer {TOKENS[who]}"),), timeout=20
            )
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()
        return "OK", json_format.MessageToDict(reply)

    def ok(self, face: str, who: str, method: str, body: dict[str, Any]) -> Any:
        code, reply = self.call(face, who, method, body)
        assert code == "OK", (face, who, method, reply)
        return reply


def level(twin: str, value: float, create: bool = False) -> dict[str, Any]:
    op = {"field": "level", "report": {"f64": value}}
    return {"twins": [{"twinId": twin, **({"create": {}} if create else {}), "ops": [op]}]}


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faces]:
    with http_node(tmp_path_factory.mktemp("scopes"), CONFIG, ready_token=TOKENS["ops"]) as node:
        served = Faces(node)
        try:
            for twin in (*A_TWINS, *B_TWINS):
                served.ok("grpc", "ops", "Write", level(twin, 90.0, create=True))
            deadline = time.monotonic() + 60  # one alarm per twin, raised by the rule
            while len(served.ok("grpc", "ops", "ListAlarms", {}).get("alarms", [])) < 3:
                assert time.monotonic() < deadline, "the rule raised no alarms"
                time.sleep(0.2)
            yield served
        finally:
            served.channel.close()


def alarm_of(faces: Faces, twin: str) -> str:
    alarms = faces.ok("grpc", "ops", "ListAlarms", {"twinId": twin})["alarms"]
    return str(alarms[0]["id"])


@pytest.mark.parametrize("face", FACES)
def test_methods_naming_a_twin_outside_the_scopes_are_refused_naming_it(faces: Faces, face: str) -> None:
    edge = {"twinId": "site/a/x", "relation": "feeds", "target": "site/b/x"}
    refused: list[tuple[str, str, dict[str, Any], str]] = [
        ("a-view", "GetTwin", {"twinId": "site/b/x"}, "site/b/x"),
        ("a-view", "ReadHistory", {"twinId": "site/b/x", "field": "level"}, "site/b/x"),
        ("a-view", "ListAlarms", {"twinId": "site/b/x"}, "site/b/x"),
        ("a-view", "Health", {"twinIds": ["site/a/x", "site/b/x"]}, "site/b/x"),
        ("a-view", "Query", {"related": "site/b/x"}, "site/b/x"),
        ("a-op", "Write", level("site/b/x", 1.0), "site/b/x"),
        # Through a record: the alarm belongs to site/b/x.
        ("a-op", "AcknowledgeAlarm", {"alarmId": alarm_of(faces, "site/b/x"), "reason": "t"}, "site/b/x"),
        ("a-eng", "Relate", {"add": [edge]}, "site/b/x"),
        ("a-eng", "ReadAudit", {"twinId": "site/b/x"}, "site/b/x"),
    ]
    for who, method, body, twin in refused:
        code, message = faces.call(face, who, method, body)
        assert code == "PERMISSION_DENIED", (who, method, message)
        assert f"the twin {twin!r} is outside the scopes of token:{who} (site/a/*)" in message, message
    # ... while the same caller may act on its own twins (each face acknowledges its own alarm).
    own = A_TWINS[FACES.index(face)]
    acked = faces.ok(face, "a-op", "AcknowledgeAlarm", {"alarmId": alarm_of(faces, own), "reason": "t"})
    assert acked["twinId"] == own
    # Refusals are audited naming the twin refused.
    audit = faces.ok(face, "ops", "ReadAudit", {"twinId": "site/b/x", "limit": 1000})
    refusals = {r["reason"].split(" ")[1] for r in audit["records"] if r["action"] == "refused"}
    assert {"GetTwin", "AcknowledgeAlarm", "Relate"} <= refusals, refusals
    assert faces.ok(face, "ops", "GetTwin", {"twinId": "site/b/x"})["fields"]  # nothing was changed


@pytest.mark.parametrize("face", FACES)
def test_listings_give_a_scoped_caller_its_own_twins_counted_as_such(faces: Faces, face: str) -> None:
    listed = faces.ok(face, "a-view", "ListTwins", {"limit": 1})
    assert int(listed["total"]) == len(A_TWINS) and len(listed["twins"]) == 1, listed
    assert listed["twins"][0]["twinId"] == A_TWINS[0]
    everything = faces.ok(face, "ops", "ListTwins", {})
    assert int(everything["total"]) == len(A_TWINS) + len(B_TWINS)  # the admin sees every twin
    assert faces.ok(face, "a-view", "ListTwins", {"prefix": "site/b/"}).get("twins", []) == []

    alarms = faces.ok(face, "a-view", "ListAlarms", {"limit": 1})
    assert int(alarms["total"]) == len(A_TWINS) and len(alarms["alarms"]) == 1
    assert alarms["alarms"][0]["twinId"].startswith("site/a/")

    hits = faces.ok(face, "a-view", "Query", {"where": ["level > 50"]})
    assert sorted(h["twinId"] for h in hits["twins"]) == list(A_TWINS) and hits["total"] == len(A_TWINS)

    audit = faces.ok(face, "a-eng", "ReadAudit", {"limit": 1000})
    twins = {r["twinId"] for r in audit["records"]}
    assert twins and twins <= set(A_TWINS), twins
    anomalies = faces.ok(face, "a-view", "ListAnomalies", {})
    assert all(a["twinId"].startswith("site/a/") for a in anomalies.get("anomalies", []))


async def test_a_scoped_watch_sends_only_its_twins_on_both_faces(faces: Faces) -> None:
    node = faces.node
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.api_port}") as channel:
        stub = api_pb2_grpc.TwinApiStub(channel)
        stream = stub.Watch(
            api_pb2.WatchRequest(), metadata=(("authorization", f"Bearer {TOKENS['a-view']}"),)
        )
        headers = {"Authorization": f"Bearer {TOKENS['a-view']}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{node.base}/api/v2/Watch", headers=headers) as response,
        ):
            assert response.status == 200, await response.text()

            async def sse() -> dict[str, Any]:
                while True:
                    line = (await response.content.readline()).decode()
                    assert line, "the stream ended"
                    if line.startswith("data: "):
                        return dict(json.loads(line[6:]))

            try:
                snapshot = [(await stream.read()).twin.twin_id for _ in A_TWINS]
                assert snapshot == list(A_TWINS)
                assert [(await sse())["twin"]["twinId"] for _ in A_TWINS] == list(A_TWINS)
                # A change outside the scopes, then one inside: the stream's next message is the latter.
                faces.ok("grpc", "ops", "Write", level("site/b/x", 91.0))
                faces.ok("grpc", "ops", "Write", level("site/a/y", 92.0))
                change = await stream.read()
                assert (change.origin, change.twin.twin_id) == ("local", "site/a/y")
                event = await sse()
                assert (event["origin"], event["twin"]["twinId"]) == ("local", "site/a/y")
            finally:
                stream.cancel()


async def test_a_scoped_alarm_stream_sends_only_its_twins_alarms(faces: Faces) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{faces.node.api_port}") as channel:
        stub = api_pb2_grpc.TwinApiStub(channel)
        metadata = (("authorization", f"Bearer {TOKENS['a-view']}"),)
        stream = stub.WatchAlarms(api_pb2.WatchAlarmsRequest(), metadata=metadata)
        try:
            assert sorted([(await stream.read()).twin_id for _ in A_TWINS]) == list(A_TWINS)
            # site/b/x's alarm clears first (seen by the admin), then site/a/x's: the stream's next
            # message is the latter.
            faces.ok("grpc", "ops", "Write", level("site/b/x", 10.0))
            deadline = time.monotonic() + 60
            while faces.ok("grpc", "ops", "ListAlarms", {"twinId": "site/b/x", "active": True}).get("alarms"):
                assert time.monotonic() < deadline, "site/b/x's alarm did not clear"
                await asyncio.sleep(0.2)
            faces.ok("grpc", "ops", "Write", level("site/a/x", 10.0))
            changed = await stream.read()
            assert (changed.twin_id, changed.state) == ("site/a/x", "cleared"), changed
        finally:
            stream.cancel()
