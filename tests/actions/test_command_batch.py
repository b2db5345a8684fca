"""Batched commands (IssueCommands, WaitCommands and the SDK's ``issue_commands`` / ``wait_commands``)
against real ``drsdtp run`` processes: each command of a batch is answered on its own (a refused one never
fails the others), a repeated key is one command, and the guarantees of single commands hold for a batch:
SIGKILL of the executor mid-flight completes each command once, a batch issued on the other side of a
partition executes once after the heal.

The Modbus device has two actuators, each a command register the node writes and a status register the
test copies it to when it plays the firmware (as in :mod:`.test_command_durability`)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drsdtp.adapters.modbus_codec import decode
from drsdtp.api.auth.authority import AUDIT_BURST
from drsdtp.api.auth.tokens import hash_token
from drsdtp.api.caller import Caller, set_caller
from drsdtp.api.node import AuditEntry
from drsdtp.api.services.commands import CommandService
from drsdtp.client import AsyncClient, Client, CommandSpec, InvalidArgumentError, PermissionDeniedError
from drsdtp.config import parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode, eventually
from tests.gossip.procs import Proxy

from .test_command_api import PUMP
from .test_executor import config, plant
from .writes_support import RecordingModbusServer

pytestmark = pytest.mark.integration

COMMAND_AT = {"sp_a": 20, "sp_b": 24}  # command registers; each one's status register is 2 above


def device_config(port: int) -> str:
    registers = "".join(
        f'[[adapters.registers]]\nfield = "{f}"\naddress = {a + 2}\ndata_type = "float32"\n'
        for f, a in COMMAND_AT.items()
    )
    return f"""
[[adapters]]
type = "modbus"
name = "plc"
host = "127.0.0.1"
port = {port}
twin = "boiler-1"
poll_interval_s = 0.1
[adapters.reconnect]
initial_s = 0.1
max_s = 0.5
{registers}"""


ACTUATORS = "".join(
    f"""
[[actuators]]
twin = "boiler-1"
field = "{f}"
node = "node-a"
adapter = "plc"
min = 0.0
max = 90.0
tolerance = 0.01
ack_timeout_s = 2.0
deadline_s = 120.0
[actuators.write]
address = {a}
data_type = "float32"
"""
    for f, a in COMMAND_AT.items()
)


@pytest.fixture
async def device() -> AsyncIterator[RecordingModbusServer]:
    async with RecordingModbusServer({1: [0] * 40}) as server:
        yield server


def written(device: RecordingModbusServer, field: str) -> list[float]:
    at = COMMAND_AT[field]
    return [decode(list(w), "float32", "ABCD") for _, address, w in device.writes if address == at]


async def firmware_applies(device: RecordingModbusServer) -> None:
    """The device's firmware: each status register takes its command register's last written words."""
    client = AsyncModbusTcpClient("127.0.0.1", port=device.port)
    await client.connect()
    try:
        for at in COMMAND_AT.values():
            words = [list(w) for _, address, w in device.writes if address == at]
            if words:
                await client.write_registers(at + 2, words[-1])
    finally:
        client.close()


def spec(field: str, value: float, key: str) -> CommandSpec:
    return CommandSpec("boiler-1", field, value, idempotency_key=key)


async def states(node: ApiNode, *commands: str) -> list[api_pb2.Command]:
    """The commands as ``node`` holds them (one WaitCommands call that does not wait)."""
    reply = await node.call("WaitCommands", api_pb2.CommandWaitBatch(command_ids=commands, timeout_s=0.001))
    return [r.command for r in reply.results]


async def test_a_batch_survives_sigkill_of_its_executor_and_each_command_is_written_once(
    tmp_path: Path, device: RecordingModbusServer
) -> None:
    node = ApiNode("a", tmp_path)
    node.configure({}, device_config(device.port) + ACTUATORS)
    await node.start()
    batch = [spec("sp_a", 42.5, "k-a"), spec("sp_b", 17.0, "k-b"), spec("sp_a", 200.0, "k-high")]
    try:
        async with AsyncClient(f"127.0.0.1:{node.api_port}", actor="op-1") as client:
            first = await client.issue_commands(batch)
        assert [o.ok for o in first] == [True, True, False]
        assert first[2].error_code == "INVALID_ARGUMENT" and "above its maximum" in first[2].error
        ids = [o.command.id for o in first[:2] if o.command is not None]

        async def acknowledged() -> bool:
            return all(c.state == "acknowledged" for c in await states(node, *ids))

        await eventually(acknowledged, 30, "both writes landed and were acknowledged")
        node.kill()  # mid-flight: written, acknowledged, not applied
        assert (written(device, "sp_a"), written(device, "sp_b")) == ([42.5], [17.0])
        await firmware_applies(device)
        await node.start()
        async with AsyncClient(f"127.0.0.1:{node.api_port}") as client:
            done = await client.wait_commands(ids, wait=30)
            assert [(o.command.state, o.command.attempts) for o in done if o.command] == [("applied", 1)] * 2
            again = await client.issue_commands(batch[:2], wait=5)  # a retry of the batch: the same commands
        assert [(o.repeated, o.command.id if o.command else "") for o in again] == [(True, i) for i in ids]
        assert (written(device, "sp_a"), written(device, "sp_b")) == ([42.5], [17.0])  # each written once
    finally:
        node.stop()


async def test_a_batch_issued_across_a_partition_executes_once_after_the_heal(
    tmp_path: Path, device: RecordingModbusServer
) -> None:
    nodes = {n: ApiNode(n, tmp_path) for n in ("a", "b")}
    proxies: dict[tuple[str, str], Proxy] = {}
    for x, y in itertools.permutations(nodes, 2):
        proxies[x, y] = Proxy(nodes[y].peer_port)
        await proxies[x, y].start()
    for name, node in nodes.items():
        other = "b" if name == "a" else "a"
        device_part = device_config(device.port) if name == "a" else ""
        node.configure({nodes[other].node_id: proxies[name, other].port}, device_part + ACTUATORS)
    try:
        await asyncio.gather(*(n.start() for n in nodes.values()))
        a, b = nodes["a"], nodes["b"]
        for proxy in proxies.values():
            proxy.block()
        async with AsyncClient(f"127.0.0.1:{b.api_port}") as on_b:
            from_b = await on_b.issue_commands([spec("sp_a", 30.0, "shift"), spec("sp_b", 31.0, "shift-b")])
        async with AsyncClient(f"127.0.0.1:{a.api_port}") as on_a:
            from_a = await on_a.issue_commands([spec("sp_a", 30.0, "shift")])
        ids = [o.command.id for o in from_b if o.command is not None]
        assert len(ids) == 2 and from_a[0].command is not None and from_a[0].command.id == ids[0]
        await eventually(lambda: _is(a, ids[0], "acknowledged"), 30, "a wrote the key both sides used")
        await asyncio.sleep(1.0)  # the partition holds b's other command: a has not heard of it
        assert (written(device, "sp_a"), written(device, "sp_b")) == ([30.0], [])
        for proxy in proxies.values():
            proxy.unblock()
        await eventually(lambda: _is(a, ids[1], "acknowledged"), 60, "a wrote b's other command")
        await firmware_applies(device)

        async def both_applied_on_b() -> bool:
            return [c.state for c in await states(b, *ids)] == ["applied", "applied"]

        await eventually(both_applied_on_b, 60, "b sees both applied")
        assert [c.attempts for c in await states(b, *ids)] == [1, 1]
        assert (written(device, "sp_a"), written(device, "sp_b")) == ([30.0], [31.0])  # each written once
    finally:
        for node in nodes.values():
            node.stop()
        for proxy in proxies.values():
            await proxy.close()


async def _is(node: ApiNode, command: str, wanted: str) -> bool:
    reply = await node.call("WaitCommands", api_pb2.CommandWaitBatch(command_ids=[command], timeout_s=0.001))
    return bool(reply.results[0].command.state == wanted)  # NOT_FOUND (not replicated yet): no state


@pytest.fixture(scope="module")
def pump(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiNode]:
    node = ApiNode("a", tmp_path_factory.mktemp("batch"))
    node.configure({}, PUMP)
    asyncio.run(node.start())
    try:
        yield node
    finally:
        node.stop()


async def test_each_command_of_a_batch_is_answered_on_its_own(pump: ApiNode) -> None:
    batch = [
        CommandSpec("pump-1", "valve", 0.3, idempotency_key="b-1", reason="trim"),
        CommandSpec("pump-1", "valve", 1.5),  # above the actuator's max
        CommandSpec("pump-1", "wings", 1.0),  # no such actuator
        CommandSpec("pump-1", "valve", "open"),  # not a number
        CommandSpec("pump-1", "valve", 0.3, idempotency_key="b-1", reason="trim"),  # the first one again
        CommandSpec("pump-1", "valve", 0.7, idempotency_key="b-1"),  # the key of another command
    ]
    async with AsyncClient(f"127.0.0.1:{pump.api_port}", actor="op-7") as client:
        got = await client.issue_commands(batch, wait=20)
        codes = [o.error_code for o in got]
        assert codes == ["", "INVALID_ARGUMENT", "NOT_FOUND", "INVALID_ARGUMENT", "", "INVALID_ARGUMENT"]
        assert "above its maximum 1" in got[1].error and "no actuator 'wings'" in got[2].error
        assert "already names command" in got[5].error
        first, repeat = got[0].command, got[4].command
        assert first is not None and repeat is not None and got[4].repeated and not got[0].repeated
        assert (first.id, first.state, first.attempts, first.actor) == (repeat.id, "applied", 1, "op-7")

        async def issued_audited() -> bool:
            audit = await client.audit("pump-1", limit=1000)
            return any(
                (r.actor, r.reason) == ("op-7", "issued: trim") for r in audit.records if r.ref == first.id
            )

        await eventually(issued_audited, 20, "the batch's command is in the audit trail with its actor")
        followed = await client.wait_commands([first.id, "no-such-command"], wait=1)
        assert followed[0].command is not None and followed[0].command.state == "applied"
        assert (followed[1].command, followed[1].error_code) == (None, "NOT_FOUND")
        per_command_wait = api_pb2.CommandIssueRequest(
            twin_id="pump-1", action="valve", value=api_pb2.FieldValue(f64=0.2), wait_s=1
        )
        reply = await client.call("IssueCommands", api_pb2.CommandIssueBatch(commands=[per_command_wait]))
        assert "set wait_s on the batch" in reply.results[0].error
        with pytest.raises(InvalidArgumentError, match="at most 512 per call"):
            await client.issue_commands([CommandSpec("pump-1", "valve", 0.1)] * 513)


async def test_the_sdk_follows_a_batch_as_a_stream_one_answer_per_command(pump: ApiNode) -> None:
    """FollowCommands through the SDK: each command's answer with its place in the request, a command the
    node does not hold refused at once (NOT_FOUND), the others once applied; one answer each, then the
    stream ends. Over the limit of a call, the whole stream is refused with the reason."""
    async with AsyncClient(f"127.0.0.1:{pump.api_port}") as client:
        got = await client.issue_commands([CommandSpec("pump-1", "valve", v) for v in (0.31, 0.32)])
        ids = [o.command.id for o in got if o.command is not None]
        assert len(ids) == 2, got
        followed = [x async for x in client.follow_commands([ids[0], "no-such-command", ids[1]], wait=20)]
        assert followed[0][0] == 1 and followed[0][1].error_code == "NOT_FOUND"  # refusals come first
        by_place = dict(followed)
        assert sorted(by_place) == [0, 1, 2] and len(followed) == 3
        assert [by_place[i].command.id for i in (0, 2)] == ids  # type: ignore[union-attr]
        # Two commands of one actuator: the newer supersedes the other (a batch's commands are issued in
        # one millisecond: its id breaks the tie), and is applied.
        states = sorted(by_place[i].command.state for i in (0, 2))  # type: ignore[union-attr]
        assert states == ["applied", "superseded"], followed
        with pytest.raises(InvalidArgumentError, match="at most 512 per call"):
            async for _ in client.follow_commands(["x"] * 513):
                pass


def test_the_blocking_client_issues_a_batch_and_follows_it(pump: ApiNode) -> None:
    with Client(f"127.0.0.1:{pump.api_port}") as client:
        got = client.issue_commands([CommandSpec("pump-1", "valve", 0.45)])
        command = got[0].command
        assert command is not None
        done = client.wait_commands([command.id], wait=20)
        assert done[0].command is not None and done[0].command.applied
        assert client.command(command.id).state == "applied"
        ((at, streamed),) = list(client.follow_commands([command.id], wait=20))
        assert at == 0 and streamed.command is not None and streamed.command.state == "applied"
        single = client.issue_command("pump-1", "valve", 0.5, wait=20)
        assert single.state == "applied" and single.value == 0.5


async def test_a_batchs_refusals_are_counted_and_its_commands_written_once_each(tmp_path: Path) -> None:
    """In process: every refused command of a batch is counted by its status (the metric), the taken ones
    are written once each by the simulated plant, and a scoped caller's command outside its scopes is
    refused on its own."""

    def one(value: float, twin: str = "pump-1") -> api_pb2.CommandIssueRequest:
        return api_pb2.CommandIssueRequest(twin_id=twin, action="valve", value=api_pb2.FieldValue(f64=value))

    async with Node(parse_config(config(tmp_path))) as node:
        service = CommandService(lambda: node.commands)
        reply = await service.issue_batch(
            api_pb2.CommandIssueBatch(commands=[one(0.3), one(7.0), one(0.3, "pump-9")], wait_s=20)
        )
        assert [r.error_code for r in reply.results] == ["", "INVALID_ARGUMENT", "NOT_FOUND"]
        assert reply.results[0].command.state == "applied" and plant(node).writes == 1
        set_caller(Caller("token:op", True, "operator", ("line1/*",)))
        scoped = await service.issue_batch(api_pb2.CommandIssueBatch(commands=[one(0.4)]))
        assert scoped.results[0].error_code == "PERMISSION_DENIED" and plant(node).writes == 1
        text = node.metrics.render()[0].decode()
        assert 'drsdtp_commands_batch_refusals_total{code="INVALID_ARGUMENT"} 1.0' in text
        assert 'drsdtp_commands_batch_refusals_total{code="NOT_FOUND"} 1.0' in text
        assert 'drsdtp_commands_batch_refusals_total{code="PERMISSION_DENIED"} 1.0' in text


SCOPED = '[api]\nanonymous_role = "viewer"\n' + "".join(
    f'[[api.tokens]]\nname = "{name}"\nrole = "{role}"\nhash = "{hash_token(name + "-secret")}"\n'
    f'scopes = ["{scope}"]\n'
    for name, role, scope in (("ops", "admin", "*"), ("line1", "operator", "line1/*"))
)


async def test_a_batchs_scope_refusals_are_audited_as_a_single_calls_are(tmp_path: Path) -> None:
    """A scoped caller's commands outside its scopes: each refusal of a batch is in the audit trail with
    the action, twin, actor and reason of a refused single IssueCommand (the method named), and WaitCommands
    on a command outside the scopes the same."""
    node = ApiNode("a", tmp_path)
    node.configure({}, PUMP + SCOPED)
    await node.start()
    try:
        address = f"127.0.0.1:{node.api_port}"
        async with (
            AsyncClient(address, token="line1-secret") as scoped,
            AsyncClient(address, token="ops-secret") as admin,
        ):
            with pytest.raises(PermissionDeniedError):
                await scoped.issue_command("pump-1", "valve", 0.3, idempotency_key="")
            batch = [CommandSpec("pump-1", "valve", 0.3), CommandSpec("pump-1", "wings", 1.0)]
            got = await scoped.issue_commands(batch)
            assert [o.error_code for o in got] == ["PERMISSION_DENIED"] * 2
            assert (
                "IssueCommands: the twin 'pump-1' is outside the scopes of token:line1 (line1/*)"
                in got[0].error
            )
            mine = await admin.issue_commands([CommandSpec("pump-1", "valve", 0.2)])
            assert mine[0].command is not None
            waited = await scoped.wait_commands([mine[0].command.id], wait=0.001)
            assert waited[0].error_code == "PERMISSION_DENIED"

            async def refusals() -> list[tuple[str, str, str, str]]:
                audit = await admin.audit("pump-1", limit=1000)
                return [
                    (r.action, r.twin_id, r.actor, r.reason) for r in audit.records if r.action == "refused"
                ]

            await eventually(lambda: _has(refusals, 3), 20, "every refusal audited")
            why = "(permission_denied): the twin 'pump-1' is outside the scopes of token:line1 (line1/*)"
            assert sorted(await refusals()) == sorted(
                ("refused", "pump-1", "token:line1", f"refused {m} {why}{n}") for m, n in
                (("IssueCommand", ""), ("IssueCommands", " (2 commands)"), ("WaitCommands", ""))
            )  # fmt: skip
    finally:
        node.stop()


async def _has(refusals: Callable[[], Awaitable[list[tuple[str, str, str, str]]]], n: int) -> bool:
    return len(await refusals()) >= n


async def test_a_fault_checking_one_command_of_a_batch_fails_that_command_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: a fault of the node's own (not a DrsdtpError) while checking one command is that
    command's INTERNAL answer, counted and logged naming its twin and actuator; the batch's other commands,
    before and after it, are issued and carried out (the call never half-fails)."""
    async with Node(parse_config(config(tmp_path))) as node:
        actuators = node.commands.actuators
        lookup = actuators.get

        def damaged(twin: str, action: str) -> Any:
            if action == "wings":
                raise RuntimeError("the actuator table is damaged")
            return lookup(twin, action)

        monkeypatch.setattr(actuators, "get", damaged)
        batch = [
            api_pb2.CommandIssueRequest(twin_id="pump-1", action=a, value=api_pb2.FieldValue(f64=0.3))
            for a in ("wings", "valve")
        ]
        reply = await CommandService(lambda: node.commands).issue_batch(
            api_pb2.CommandIssueBatch(commands=batch, wait_s=20)
        )
        assert [r.error_code for r in reply.results] == ["INTERNAL", ""]
        assert "pump-1 wings: the node failed while checking it: RuntimeError" in reply.results[0].error
        assert reply.results[1].command.state == "applied" and plant(node).writes == 1
        assert "command pump-1 wings of a batch failed" in caplog.text
        text = node.metrics.render()[0].decode()
        assert 'drsdtp_commands_batch_refusals_total{code="INTERNAL"} 1.0' in text


async def test_a_caller_refused_in_a_loop_is_audited_at_the_guards_rate(tmp_path: Path) -> None:
    """In process, on a frozen clock: a scoped caller's refused batches are written one by one up to the
    guard's burst; later ones are counted and said in the caller's next record once the rate allows."""
    now = [0.0]
    written: list[list[str]] = []

    async def sink(entries: Sequence[AuditEntry]) -> None:
        written.append([e.reason for e in entries])

    async with Node(parse_config(config(tmp_path))) as node:
        service = CommandService(lambda: node.commands, sink, clock=lambda: now[0])
        set_caller(Caller("token:op", True, "operator", ("line1/*",)))
        out = api_pb2.CommandIssueRequest(twin_id="pump-1", action="valve", value=api_pb2.FieldValue(f64=0.4))
        for _ in range(AUDIT_BURST + 3):
            reply = await service.issue_batch(api_pb2.CommandIssueBatch(commands=[out, out]))
            assert [r.error_code for r in reply.results] == ["PERMISSION_DENIED"] * 2
        assert len(written) == AUDIT_BURST and written[0][0].endswith("(line1/*) (2 commands)")
        now[0] += 1.0
        await service.issue_batch(api_pb2.CommandIssueBatch(commands=[out]))
        assert written[-1] == [
            "refused IssueCommands (permission_denied): the twin 'pump-1' is outside the scopes of token:op "
            "(line1/*) (and 6 earlier refusals of this caller, not recorded one by one)"
        ]
        assert plant(node).writes == 0
