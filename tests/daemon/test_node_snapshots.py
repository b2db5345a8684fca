"""Twin snapshots, rollback and the audit trail of a real node, over its real gRPC API and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib
import subprocess
import sys

import grpc
import pytest

from drsdtp.client import connect, field_to_python
from drsdtp.config import Address, NodeConfig, parse_config
from drsdtp.node.node import Node
from drsdtp.wire.v1 import api_pb2

ROOT = pathlib.Path(__file__).parents[2]


def config(tmp: pathlib.Path) -> NodeConfig:
    return parse_config(
        {
            "node_id": "snap-1",
            "data_dir": str(tmp),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        }
    )


async def write(node: Node, twin: str, **values: float | str) -> None:
    await node.commit(node.store.set_many(twin, dict(values)), [twin], "local")


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def drsdtp(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, waited for off the event loop (the node serving it runs on the loop)."""
    argv = [sys.executable, "-m", "drsdtp", *args]
    return await asyncio.to_thread(subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.integration
async def test_rollback_restores_a_snapshot_durably_and_audits_it(tmp_path: pathlib.Path) -> None:
    async with Node(config(tmp_path)) as node:
        await write(node, "pump-1", speed=1.0, mode="auto")
        state_then = node.store.encode_state(["pump-1"])
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            taken = await stub.TakeSnapshot(
                api_pb2.TakeSnapshotRequest(twin_id="pump-1", reason="baseline", actor="alice")
            )
            assert taken.sha256 == hashlib.sha256(state_then).hexdigest() and taken.actor == "alice"
            await write(node, "pump-1", speed=2.5, mode="manual", extra=7.0)
            reply = await stub.Rollback(
                api_pb2.RollbackRequest(
                    twin_id="pump-1", snapshot_id=taken.id, reason="bad tune", actor="bob"
                )
            )
            changed = {c.name: (field_to_python(c.before), field_to_python(c.after)) for c in reply.changed}
            assert changed == {"speed": (2.5, 1.0), "mode": ("manual", "auto")}
            assert list(reply.extra_fields) == ["extra"] and reply.snapshot.id == taken.id
            assert reply.safety_snapshot.reason == f"before rollback to {taken.id}"
            # Returned only once durable: nothing of it is still waiting for the disk.
            assert node.store.get("pump-1", "speed") == 1.0 and node.durable.pending == 0
    # A restart (recovery from the log) still has the restored values, both snapshots and the audit trail.
    async with Node(config(tmp_path)) as node:
        assert node.store.get("pump-1", "speed") == 1.0 and node.store.get("pump-1", "mode") == "auto"
        assert node.store.get("pump-1", "extra") == 7.0
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            listing = await stub.ListSnapshots(api_pb2.ListSnapshotsRequest(twin_id="pump-1"))
            assert [s.id for s in listing.snapshots] == [taken.id, reply.safety_snapshot.id]
            audit = await stub.ReadAudit(api_pb2.AuditRequest(twin_id="pump-1"))
            assert audit.chain_ok and audit.total == 3
            assert [(r.action, r.actor, r.via) for r in audit.records] == [
                ("snapshot", "alice", "api"),
                ("snapshot", "bob", "rollback"),
                ("rollback", "bob", "rollback"),
            ]
            last = audit.records[-1]
            assert last.ref == taken.id and last.reason == "bad tune"
            assert {c.name: field_to_python(c.after) for c in last.changes} == {"speed": 1.0, "mode": "auto"}
            only_alice = await stub.ReadAudit(api_pb2.AuditRequest(actor="alice", limit=5))
            assert [r.seq for r in only_alice.records] == [0]


@pytest.mark.integration
async def test_bad_requests_get_clear_status_codes_and_change_nothing(tmp_path: pathlib.Path) -> None:
    async with Node(config(tmp_path)) as node:
        await write(node, "pump-1", speed=1.0)
        channel, stub = connect(Address("127.0.0.1", node.api.port))
        async with channel:
            taken = await stub.TakeSnapshot(api_pb2.TakeSnapshotRequest(twin_id="pump-1", reason="r"))
            assert taken.actor == "anonymous"
            await write(node, "pump-1", speed=3.0)

            def rollback(snapshot_id: str, reason: str = "why") -> object:
                return stub.Rollback(
                    api_pb2.RollbackRequest(twin_id="pump-1", snapshot_id=snapshot_id, reason=reason)
                )

            take = api_pb2.TakeSnapshotRequest(twin_id="nope", reason="r")
            assert await code_of(stub.TakeSnapshot(take)) == grpc.StatusCode.NOT_FOUND
            # The node's own bookkeeping twins (membership) are not the caller's to roll back.
            internal = next(t for t in node.store.twins() if t.startswith("_"))
            take = api_pb2.TakeSnapshotRequest(twin_id=internal, reason="r")
            assert await code_of(stub.TakeSnapshot(take)) == grpc.StatusCode.INVALID_ARGUMENT
            no_reason = api_pb2.TakeSnapshotRequest(twin_id="pump-1", reason=" ")
            assert await code_of(stub.TakeSnapshot(no_reason)) == grpc.StatusCode.INVALID_ARGUMENT
            assert await code_of(rollback(taken.id, reason="")) == grpc.StatusCode.INVALID_ARGUMENT
            assert await code_of(rollback("1700000000000-00000000")) == grpc.StatusCode.NOT_FOUND
            # Ids come from callers: one that walks out of the twin's directory is not a snapshot id.
            assert await code_of(rollback("../../audit/audit")) == grpc.StatusCode.NOT_FOUND
            # A damaged snapshot is refused, never rolled back to.
            (path,) = (tmp_path / "snapshots").rglob(f"{taken.id}.snap")
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF
            path.write_bytes(bytes(data))
            assert await code_of(rollback(taken.id)) == grpc.StatusCode.FAILED_PRECONDITION
            assert node.store.get("pump-1", "speed") == 3.0
            # Editing the audit trail breaks its hash chain, and the reply says so.
            log = tmp_path / "audit" / "audit.log"
            log.write_text(log.read_text().replace('"reason":"r"', '"reason":"x"'))
            audit = await stub.ReadAudit(api_pb2.AuditRequest())
            assert not audit.chain_ok and "edited" in audit.chain_problems[0]


@pytest.mark.integration
async def test_cli_takes_lists_rolls_back_and_audits(tmp_path: pathlib.Path) -> None:
    async with Node(config(tmp_path)) as node:
        await write(node, "pump-1", speed=1.0)
        api = f"127.0.0.1:{node.api.port}"
        done = await drsdtp(
            "snapshot", "pump-1", "-m", "baseline", "--actor", "carol", "--api", api, "--json"
        )
        assert done.returncode == 0, done.stderr
        snapshot_id = json.loads(done.stdout)["id"]
        await write(node, "pump-1", speed=9.0)
        listed = await drsdtp("snapshots", "pump-1", "--api", api)
        assert listed.returncode == 0 and snapshot_id in listed.stdout and "carol" in listed.stdout
        rolled = await drsdtp(
            "rollback", "pump-1", snapshot_id, "-m", "revert", "--actor", "carol", "--api", api
        )
        assert rolled.returncode == 0, rolled.stderr
        assert "1 fields changed" in rolled.stdout and "undo with: drsdtp rollback pump-1" in rolled.stdout
        assert node.store.get("pump-1", "speed") == 1.0
        audit = await drsdtp("audit", "--api", api, "--json")
        assert audit.returncode == 0, audit.stderr
        doc = json.loads(audit.stdout)
        assert doc["chain_ok"] and [r["action"] for r in doc["records"]] == [
            "snapshot",
            "snapshot",
            "rollback",
        ]
        missing = await drsdtp("rollback", "pump-1", "1700000000000-00000000", "-m", "x", "--api", api)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
