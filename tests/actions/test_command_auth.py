"""Commands under authorization, on a real ``drsdtp run`` process: an operator token issues (within its
scopes) and the command and every outcome land in the audit trail with the token's identity; a viewer may
read commands but not issue or cancel one; an operator outside its scopes is refused, naming the twin."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from drsdtp.api.auth.tokens import hash_token, new_token
from drsdtp.client import connect
from drsdtp.config import Address
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ROOT, ApiNode

pytestmark = pytest.mark.integration

TOKENS = {name: new_token() for name in ("grafana", "mes", "ops")}
ROLES = {"grafana": ("viewer", '["*"]'), "mes": ("operator", '["pump-*"]'), "ops": ("admin", '["*"]')}
CONFIG = (
    "".join(
        f'[[api.tokens]]\nname = "{n}"\nrole = "{r}"\nhash = "{hash_token(TOKENS[n])}"\nscopes = {s}\n'
        for n, (r, s) in ROLES.items()
    )
    + """
[[adapters]]
type = "simulated"
name = "plant"
asset = "pump"
rooms = 1
speedup = 20.0
[[actuators]]
twin = "pump-1"
field = "valve"
node = "node-a"
adapter = "plant"
min = 0.0
max = 1.0
tolerance = 0.05
[actuators.write]
input = "valve"
[[actuators]]
twin = "room-1"
field = "heater"
node = "node-a"
adapter = "plant"
min = 0.0
max = 1.0
[actuators.write]
input = "valve"
"""
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiNode]:
    node = ApiNode("a", tmp_path_factory.mktemp("command-auth"))
    node.configure({}, CONFIG)
    asyncio.run(_start(node))  # ApiNode.start polls Status without a token: this node refuses that
    try:
        yield node
    finally:
        node.stop()


async def _start(node: ApiNode) -> None:
    node.spawn()
    for _ in range(300):
        try:
            await call(node, "grafana", "Status", api_pb2.StatusRequest())
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)
    raise AssertionError("the node did not answer")


async def call(node: ApiNode, who: str, method: str, request: object) -> object:
    channel, stub = connect(Address("127.0.0.1", node.api_port))
    async with channel:
        metadata = (("authorization", f"Bearer {TOKENS[who]}"),)
        return await getattr(stub, method)(request, timeout=20, metadata=metadata)


def issue(twin: str, value: float, wait_s: float = 0.0) -> api_pb2.CommandIssueRequest:
    return api_pb2.CommandIssueRequest(
        twin_id=twin, action="valve" if twin.startswith("pump") else "heater",
        value=api_pb2.FieldValue(f64=value), wait_s=wait_s, reason="auth test",
    )  # fmt: skip


async def test_an_operator_command_is_audited_with_the_token_identity(node: ApiNode) -> None:
    reply = await call(node, "mes", "IssueCommand", issue("pump-1", 0.3, wait_s=20))
    assert isinstance(reply, api_pb2.CommandReply)
    command = reply.command
    assert (command.state, command.actor) == ("applied", "token:mes")
    audit = await call(node, "ops", "ReadAudit", api_pb2.AuditRequest(twin_id="pump-1", limit=100))
    assert isinstance(audit, api_pb2.AuditReply)
    records = [r for r in audit.records if r.ref == command.command_id]
    # One record per commit: the write's marks are in the outcome's when its echo was quick, else their own.
    assert {r.actor for r in records} == {"token:mes"}
    assert [r.reason.split(":")[0] for r in records] in (
        ["issued", "applied"],
        ["issued", "acknowledged", "applied"],
    )
    assert "(after sent: " in " ".join(r.reason for r in records)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "drsdtp", "command", "pump-1", "valve", "0.6", "--wait", "--json",
         "--api", f"127.0.0.1:{node.api_port}", "--token", TOKENS["mes"], "--actor", "token:mes"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"actor": "token:mes"' in done.stdout and '"state": "applied"' in done.stdout


async def test_a_viewer_reads_commands_and_may_not_issue_or_cancel_and_scopes_hold(node: ApiNode) -> None:
    listed = await call(node, "grafana", "ListCommands", api_pb2.CommandListRequest(twin_id="pump-1"))
    assert isinstance(listed, api_pb2.CommandListReply) and listed.commands
    refusals = [
        ("grafana", "IssueCommand", issue("pump-1", 0.5), "may not call IssueCommand"),
        ("grafana", "CancelCommand",
         api_pb2.CommandCancelRequest(command_id=listed.commands[0].command_id, reason="no"),
         "may not call CancelCommand"),
        ("mes", "IssueCommand", issue("room-1", 0.5), "room-1"),
    ]  # fmt: skip
    for who, method, request, says in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(node, who, method, request)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (who, method)
        assert says in (refused.value.details() or ""), refused.value.details()


async def test_a_command_outside_the_callers_scopes_is_refused_by_its_id(node: ApiNode) -> None:
    reply = await call(node, "ops", "IssueCommand", issue("room-1", 0.2))
    assert isinstance(reply, api_pb2.CommandReply)
    command = reply.command.command_id
    by_id = [
        ("GetCommand", api_pb2.CommandGetRequest(command_id=command)),
        ("WaitCommand", api_pb2.CommandWaitRequest(command_id=command, timeout_s=1)),
        ("CancelCommand", api_pb2.CommandCancelRequest(command_id=command, reason="not mine")),
    ]
    for method, request in by_id:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(node, "mes", method, request)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert "the twin 'room-1' is outside the scopes of token:mes (pump-*)" in (
            refused.value.details() or ""
        )
    got = await call(node, "ops", "GetCommand", api_pb2.CommandGetRequest(command_id=command))
    assert isinstance(got, api_pb2.CommandReply) and got.command.cancel_actor == ""  # not cancelled
    # Listing every command: the scoped caller gets its own twins' only.
    mine = await call(node, "mes", "ListCommands", api_pb2.CommandListRequest(limit=1000))
    every = await call(node, "ops", "ListCommands", api_pb2.CommandListRequest(limit=1000))
    assert isinstance(mine, api_pb2.CommandListReply) and isinstance(every, api_pb2.CommandListReply)
    assert {c.twin_id for c in every.commands} >= {"room-1", "pump-1"}
    assert mine.commands and {c.twin_id for c in mine.commands} == {"pump-1"}
