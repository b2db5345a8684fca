"""An interlock on a real stuck sensor: the simulated pump's flow sensor sticks, the node's twin intelligence
finds it STUCK (quality 0.2), and a command whose interlock reads the flow is refused, with that reason;
with the hold policy it is held, saying why. Before the fault the same command goes through."""

from __future__ import annotations

import asyncio
import pathlib
import re
from typing import Any

import pytest

from drsdtp.actions import State
from drsdtp.config import parse_config
from drsdtp.node.node import Node

pytestmark = pytest.mark.integration

SPEED = 100.0  # plant seconds per wall second: the sensor sticks about 6 s after start


def config(tmp: pathlib.Path) -> dict[str, Any]:
    lock = {"field": "flow", "min_quality": 0.5}
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "listen": {"api": "127.0.0.1:0", "metrics": "127.0.0.1:0", "peer": "127.0.0.1:0"},
        "intelligence": {"time_scale": SPEED},
        "models": [{"name": "pump", "version": "1", "extends": "centrifugal_pump"}],
        "twins": [{"match": "pump-1", "model": "pump"}],
        "adapters": [{
            "type": "simulated", "name": "plant", "asset": "pump", "rooms": 1, "speedup": SPEED,
            "faults": [{"kind": "stuck", "twin": "pump-1", "field": "flow", "onset_step": 60}],
        }],
        "actuators": [
            {"twin": "pump-1", "field": "valve", "node": "a", "adapter": "plant", "min": 0.0, "max": 1.0,
             "tolerance": 0.05, "write": {"input": "valve"}, "interlocks": [{**lock, "policy": "refuse"}]},
            {"twin": "pump-1", "field": "speed", "node": "a", "adapter": "plant", "min": 0.0, "max": 3000.0,
             "tolerance": 50.0, "write": {"input": "speed"}, "interlocks": [{**lock, "policy": "hold"}]},
        ],
    }  # fmt: skip


async def test_an_interlock_refuses_or_holds_a_command_on_a_stuck_sensor(tmp_path: pathlib.Path) -> None:
    async with Node(parse_config(config(tmp_path))) as node:
        book, health = node.commands, node.actuation.health
        stream = node.feed.subscribe()
        async with asyncio.timeout(60):  # the model has learnt the flow's noise: quality known and good
            while (q := health.field_quality("pump-1", "flow")) is None or q.quality < 0.5:
                await stream.next_batch(4096)
        before = await book.wait(await book.issue_command("pump-1", "valve", 0.5, actor="op"), 20)
        assert before is not None and before.state == State.APPLIED, before
        async with asyncio.timeout(60):
            while (q := health.field_quality("pump-1", "flow")) is None or "STUCK" not in q.reasons:
                await stream.next_batch(4096)
        refused = await book.wait(await book.issue_command("pump-1", "valve", 0.7, actor="op"), 20)
        assert refused is not None and refused.state == State.REJECTED
        # The score and any further reasons (STALE, DROPOUT on a loaded machine) are the detectors' to say.
        assert re.fullmatch(r"interlock pump-1/flow: quality 0\.\d\d < 0\.5 \(.*STUCK.*\)", refused.why)
        assert refused.attempts == 0
        held = await book.issue_command("pump-1", "speed", 1500, actor="op", deadline_s=30)
        record = await book.wait(held, 20, until=lambda r: bool(r.held))
        assert record is not None and record.state == State.PENDING
        assert re.fullmatch(r"interlock pump-1/flow: quality 0\.\d\d < 0\.5 \(.*STUCK.*\)", record.held)
        await book.cancel(held, "op", "sensor under repair")
        done = await book.wait(held, 20)
        assert done is not None and done.state == State.CANCELLED and done.attempts == 0
