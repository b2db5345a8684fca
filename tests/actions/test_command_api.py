"""The command API and CLI against a real ``drsdtp run`` process driving the simulated pump: issue, wait,
get, list and cancel over gRPC; ``drsdtp command ... --wait --json`` and ``drsdtp commands``; a repeated
idempotency key answers the first command and writes once; refusals name what was wrong."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ROOT, ApiNode

pytestmark = pytest.mark.integration

PUMP = """
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
twin = "pump-1"
field = "speed"
node = "node-a"
adapter = "plant"
min = 0.0
max = 3000.0
tolerance = 30.0
[[actuators.interlocks]]
field = "flow"
policy = "hold"
[actuators.write]
input = "speed"
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiNode]:
    node = ApiNode("a", tmp_path_factory.mktemp("commands"))
    node.configure({}, PUMP)
    asyncio.run(node.start())  # one node for the module's tests (each call opens its own channel)
    try:
        yield node
    finally:
        node.stop()


def cli(node: ApiNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drsdtp", *args, "--api", f"127.0.0.1:{node.api_port}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_the_cli_issues_a_command_waits_for_it_and_lists_it(node: ApiNode) -> None:
    done = await asyncio.to_thread(
        cli, node, "command", "pump-1", "valve", "0.4", "--wait", "--json", "--actor", "op-1", "-m", "trim"
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["state"], doc["value"], doc["actor"], doc["reason"]) == ("applied", 0.4, "op-1", "trim")
    assert [m["state"] for m in doc["marks"]] == ["sent", "acknowledged", "applied"]
    listed = await asyncio.to_thread(cli, node, "commands", "pump-1")
    assert listed.returncode == 0 and doc["id"] in listed.stdout and "applied" in listed.stdout
    shown = await asyncio.to_thread(cli, node, "commands", "--id", doc["id"])
    assert shown.returncode == 0 and "state: applied: reported valve = " in shown.stdout


async def test_a_repeated_idempotency_key_is_one_command_written_once(node: ApiNode) -> None:
    request = api_pb2.CommandIssueRequest(
        twin_id="pump-1", action="valve", value=api_pb2.FieldValue(f64=0.55), idempotency_key="k-1", wait_s=20
    )
    first = await node.call("IssueCommand", request)
    again = await node.call("IssueCommand", request)
    assert (first.repeated, again.repeated) == (False, True)
    assert first.command.command_id == again.command.command_id
    assert again.command.state == "applied" and again.command.attempts == 1
    listed = await node.call("ListCommands", api_pb2.CommandListRequest(twin_id="pump-1"))
    assert [c.idempotency_key for c in listed.commands].count("k-1") == 1
    other = api_pb2.CommandIssueRequest(
        twin_id="pump-1", action="valve", value=api_pb2.FieldValue(f64=0.6), idempotency_key="k-1"
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await node.call("IssueCommand", other)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already names command" in (refused.value.details() or "")


async def test_bad_commands_are_refused_with_the_reason(node: ApiNode) -> None:
    cases = [
        (api_pb2.CommandIssueRequest(twin_id="pump-1", action="valve", value=api_pb2.FieldValue(f64=1.5)),
         grpc.StatusCode.INVALID_ARGUMENT, "above its maximum 1"),
        (api_pb2.CommandIssueRequest(twin_id="pump-1", action="wings", value=api_pb2.FieldValue(f64=1)),
         grpc.StatusCode.NOT_FOUND, "no actuator 'wings'"),
        (api_pb2.CommandIssueRequest(twin_id="pump-1", action="valve", value=api_pb2.FieldValue(text="x")),
         grpc.StatusCode.INVALID_ARGUMENT, "takes a number"),
    ]  # fmt: skip
    for request, code, text in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await node.call("IssueCommand", request)
        assert refused.value.code() == code and text in (refused.value.details() or ""), request
    bad = await asyncio.to_thread(cli, node, "command", "pump-1", "valve", "0.1", "0.2")
    assert bad.returncode == 1 and "takes one value, got 2" in bad.stderr


async def test_a_held_command_is_cancelled_over_the_api(node: ApiNode) -> None:
    request = api_pb2.CommandIssueRequest(
        twin_id="pump-1", action="speed", value=api_pb2.FieldValue(f64=1450)
    )
    issued = await node.call("IssueCommand", request)
    command = issued.command.command_id
    for _ in range(100):
        got = await node.call("GetCommand", api_pb2.CommandGetRequest(command_id=command))
        if got.command.held:
            break
        await asyncio.sleep(0.1)
    assert "interlock pump-1/flow" in got.command.held and got.command.state == "pending"
    done = await asyncio.to_thread(
        cli, node, "command", "--cancel", command, "-m", "wrong pump", "--actor", "op-2"
    )
    assert done.returncode == 0, done.stderr
    waited = await node.call("WaitCommand", api_pb2.CommandWaitRequest(command_id=command, timeout_s=20))
    assert (waited.command.state, waited.command.why) == ("cancelled", "cancelled by op-2: wrong pump")
    assert waited.command.attempts == 0


def test_check_config_names_a_bad_write_target(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'node_id = "node-a"\ndata_dir = "{tmp_path}"\n{PUMP}')
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('input = "speed"', 'input = "wings"'))

    def check(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drsdtp", "check-config", str(path), "--no-env"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    valid = check(good)
    assert valid.returncode == 0, valid.stderr
    refused = check(bad)
    assert refused.returncode == 2 and "actuators[1].write.input" in refused.stderr, refused.stderr


async def test_the_cli_issues_a_batch_in_one_call_and_follows_it(
    node: ApiNode, tmp_path: pathlib.Path
) -> None:
    """``--set ACTION=VALUE ...`` on one twin and ``--file`` (one command a line): each command answered on
    its own (a refused one named with its line, the others issued), ``--wait`` follows them all, the exit
    status says whether every one was applied, and ``--key K`` makes a repeat name the same commands."""
    mixed = await asyncio.to_thread(
        cli, node, "command", "pump-1", "--set", "valve=0.25", "--set", "wings=1", "--wait", "--json",
        "--actor", "op-3", "-m", "batch",
    )  # fmt: skip
    assert mixed.returncode == 1, mixed.stderr
    applied, refused = json.loads(mixed.stdout)
    got = (applied["state"], applied["value"], applied["actor"], applied["reason"])
    assert got == ("applied", 0.25, "op-3", "batch")
    assert (refused["action"], refused["error_code"]) == ("wings", "NOT_FOUND")
    assert "no actuator 'wings'" in refused["error"] and "1 of 2 commands refused" in mixed.stderr
    text = await asyncio.to_thread(cli, node, "command", "pump-1", "--set", "wings=1")
    assert text.returncode == 1 and "--set wings=1: pump-1 wings: NOT_FOUND: " in text.stderr

    lines = tmp_path / "commands.txt"
    lines.write_text("# morning trim\npump-1 valve 0.3\n\n")
    done = await asyncio.to_thread(cli, node, "command", "--file", str(lines), "--key", "trim", "--wait")
    assert done.returncode == 0, done.stderr
    assert "pump-1 valve 0.3" in done.stdout and "state: applied" in done.stdout
    again = await asyncio.to_thread(cli, node, "command", "--file", str(lines), "--key", "trim", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)[0]["repeated"] is True
    assert json.loads(again.stdout)[0]["key"] == "trim/1"

    lines.write_text("pump-1 valve 0.3\npump-1\n")
    bad = await asyncio.to_thread(cli, node, "command", "--file", str(lines))
    assert bad.returncode == 2 and "commands.txt:2: expected TWIN ACTION [ARG...]" in bad.stderr
    both = await asyncio.to_thread(cli, node, "command", "pump-1", "valve", "--set", "valve=0.3")
    assert both.returncode == 2 and "takes one TWIN and no ACTION" in both.stderr
