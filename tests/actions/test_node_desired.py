"""In a real node: a desired value written through the API on an actuated field becomes a command record
carrying the caller, and every command event lands in the audit trail."""

from __future__ import annotations

import pathlib

import pytest

from drsdtp.actions import State
from drsdtp.client import connect
from drsdtp.config import Address, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2

from .support import actuator


def config(tmp: pathlib.Path, **extra: object) -> dict[str, object]:
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "adapters": [{"type": "simulated", "name": "plant", "asset": "pump", "rooms": 1, "speedup": 20.0}],
        "actuators": [actuator(node="elsewhere")],
        **extra,
    }


@pytest.mark.integration
async def test_a_desired_value_on_an_actuated_field_is_a_command_of_its_caller(
    tmp_path: pathlib.Path,
) -> None:
    async with Node(parse_config(config(tmp_path))) as node:
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            op = api_pb2.FieldOp(field="valve", desire=api_pb2.FieldValue(f64=0.3))
            await stub.Write(
                api_pb2.WriteRequest(
                    twins=[api_pb2.TwinWrite(twin_id="pump-1", ops=[op], create=api_pb2.CreateTwin())],
                    actor="operator-7",
                    reason="less flow",
                )
            )
        (record,) = node.commands.list("pump-1")
        assert (record.origin, record.value, record.actor, record.reason) == (
            "desired", 0.3, "operator-7", "less flow",
        )  # fmt: skip
        assert record.state == State.PENDING and record.executor == "elsewhere"
        command = await node.commands.issue_command("pump-1", "valve", 0.5, actor="rules", reason="test")
        await node.commands.cancel(command, "operator-7", "changed my mind")
        audit, verification = await node.snapshots.read_audit("pump-1", None, None, None)
        events = [(r.action, r.actor, r.reason, r.ref) for r in audit if r.action == "command"]
        assert events == [
            ("command", "operator-7", "issued: less flow", record.id),
            ("command", "rules", "issued: test", command),
            ("command", "operator-7", "cancel: changed my mind", command),
        ]
        assert verification.ok
