"""The loop closed through rules, with a real node process: a thermostat rule on a simulated room issues
heater commands (heater on below 19 C, off above 21 C: hysteresis), the executor writes them to the plant,
and the room's temperature is held in the band while the plant, left alone, would cool away."""

from __future__ import annotations

import pathlib

import pytest

from drsdtp.client import field_to_python
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode, eventually

pytestmark = pytest.mark.integration

SPEED = 600.0  # plant seconds per wall second

CONFIG = f"""
[intelligence]
time_scale = {SPEED}
[alerting]
period_s = 0.05
[[adapters]]
type = "simulated"
name = "plant"
asset = "room"
rooms = 1
speedup = {SPEED}
[[actuators]]
twin = "room-1"
field = "heater"
node = "node-solo"
adapter = "plant"
min = 0.0
max = 1.0
tolerance = 0.05
deadline_s = 30.0
[actuators.write]
input = "heater"
[[rules]]
name = "thermostat"
twins = "room-*"
when = "temp_1 < 19"
clear_when = "temp_1 > 21"
alarm = false
[[rules.actions]]
on = "raise"
type = "command"
action = "heater"
value = 1.0
[[rules.actions]]
on = "clear"
type = "command"
action = "heater"
value = 0.0
"""


async def test_a_thermostat_rule_holds_the_room_in_its_band(tmp_path: pathlib.Path) -> None:
    node = ApiNode("solo", tmp_path)
    node.configure({}, CONFIG)
    temps: list[float] = []
    try:
        await node.start()

        async def sample() -> bool:
            twin = await node.get("room-1")
            if twin is None:
                return False
            values = {f.name: field_to_python(f) for f in twin.fields}
            temp = values.get("temp_1")
            if isinstance(temp, float):
                temps.append(temp)
            return len(temps) >= 30

        async def cycles() -> bool:
            reply = await node.call("ListRules", api_pb2.ListRulesRequest())
            (rule,) = reply.rules
            return bool(rule.fired >= 2 and rule.cleared >= 1)

        await eventually(cycles, 120, "the thermostat switched the heater on, off and on again")
        temps.clear()
        await eventually(sample, 60, "30 samples of the room")  # one every 0.2 s: 2 plant minutes apart
        reply = await node.call("ListRules", api_pb2.ListRulesRequest())
        (rule,) = reply.rules
        assert rule.errors == 0, rule.last_error
    finally:
        node.stop()
    print(f"temp_1 over the last samples: min {min(temps):.2f} max {max(temps):.2f}")
    # The band is 19..21; the loop lags by a pass, a command and a plant step (plant time runs 600x).
    assert min(temps) > 17.5 and max(temps) < 22.5
