"""An operator's round trip through the real API and CLI: poison messages from a real mosquitto become dead
letters on a node; after a restart with a raised limit, `drsdtp deadletters replay` applies the one that now
decodes (and removes it), keeps the others with their reasons, and `purge` deletes them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drsdtp.cli import main
from drsdtp.config import NodeConfig, parse_config
from drsdtp.console import Console
from drsdtp.node.node import Node

from .support import Mosquitto, wait_until

pytestmark = pytest.mark.integration


def node_config(data: Path, broker: Mosquitto, **limits: int) -> NodeConfig:
    return parse_config(
        {
            "node_id": "letters-1",
            "data_dir": str(data),
            "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
            "history": {"enabled": False},
            "adapters": [
                {
                    "type": "mqtt",
                    "name": "site",
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "client_id": "drsdtp-letters-test",
                    "topics": [{"template": "j/{twin}/{field}", "payload": "json"}],
                    **limits,
                }
            ],
        }
    )


async def cli(node: Node, *args: str) -> tuple[int, str, str]:
    """The real CLI against the node's API (in a thread: it runs its own event loop). main() sets up
    logging as the command would: the root logger is put back as it was afterwards."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["deadletters", *args, "--api", f"127.0.0.1:{node.api.port}"]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = await asyncio.to_thread(main, argv, console=Console(out, err, json_mode="--json" in args))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


async def connected(node: Node) -> None:
    async with asyncio.timeout(10):
        await node.intake.service.runners["site"].supervisor.wait_connected()


DEEP = json.dumps(
    {"value": 4.5, "raw": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
)


async def test_list_replay_after_raising_a_limit_and_purge(tmp_path: Path, broker: Mosquitto) -> None:
    data = tmp_path / "data"
    async with Node(node_config(data, broker)) as node:
        await connected(node)
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish("j/deep/v", DEEP, qos=1)  # 40 levels: over the default max_depth of 32
            await pub.publish("j/broken/v", "{broken", qos=1)
            await pub.publish("j/long/v", '{"value": ' + "7" * 70 + "}", qos=1)
        await wait_until(lambda: len(node.dead_letters) == 3, 10, "three dead letters")
        code, out, _ = await cli(node)
        assert code == 0
        for text in (
            "3 of 3 dead letters",
            "j/deep/v",
            "too deep",
            "not JSON",
            "number too long",
            "max_depth = 32",
        ):
            assert text in out, text
        code, out, _ = await cli(node, "--json")
        letters: list[dict[str, Any]] = json.loads(out)
        assert [(lt["source"], lt["reason"]) for lt in letters] == [
            ("j/deep/v", "too deep"),
            ("j/broken/v", "not JSON"),
            ("j/long/v", "number too long"),
        ]
        assert letters[1]["preview"] == "{broken" and letters[1]["size"] == 7
        assert node.store.get("deep", "v") is None

    # The operator raises the depth limit and restarts the node: the letters are still there.
    async with Node(node_config(data, broker, max_depth=64)) as node:
        await connected(node)
        assert len(node.dead_letters) == 3
        code, out, _ = await cli(node, "replay", "--all", "--json")
        assert code == 1  # two could not be replayed
        outcomes = {o["id"]: o for o in json.loads(out)}
        deep, broken, long = (outcomes[lt["id"]] for lt in letters)
        assert (deep["applied"], deep["readings"], deep["error"]) == (True, 1, "")
        assert not broken["applied"] and broken["error"].startswith("not JSON")
        assert not long["applied"] and "max_number_digits = 64" in long["error"]
        assert node.store.get("deep", "v") == 4.5  # applied through the pipeline and the store
        assert [lt.source for lt in node.dead_letters.letters()] == ["j/broken/v", "j/long/v"]
        code, out, _ = await cli(node, "replay", str(broken["id"]))
        assert code == 1 and "kept: not JSON" in out
        code, out, _ = await cli(node, "purge", "--all", "--adapter", "site")
        assert (code, out.strip()) == (0, "2 dead letters purged")
        code, out, _ = await cli(node, "--json")
        assert json.loads(out) == []
        counts = node.dead_letters.counts()
        assert counts[("site", "too deep", "replayed")] == 1
        assert counts[("site", "not JSON", "purged")] == counts[("site", "number too long", "purged")] == 1
        code, _, err = await cli(node, "replay", "424242")
        assert code == 0 and not err  # nothing selected, nothing failed
