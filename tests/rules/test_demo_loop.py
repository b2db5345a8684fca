"""The demo's closed loop is a valid config: the first node's thermostat rule, its heater actuator with the
interlock on the sensor that sticks, and the alarm rule validate as the node validates them at start."""

from __future__ import annotations

import tomllib
from pathlib import Path

from drsdtp.actions import parse_actuators
from drsdtp.config import Address, parse_config
from drsdtp.node.cluster_demo import DemoNode, node_toml
from drsdtp.node_commands import DemoOptions
from drsdtp.rules.alerting import parse_alerting


def demo_config(tmp_path: Path, index: int) -> dict[str, object]:
    fleet = [
        DemoNode(f"edge-{s}", s, Address("127.0.0.1", 7000 + i), Address("127.0.0.1", 7100 + i),
                 Address("127.0.0.1", 7200 + i), tmp_path / s)
        for i, s in enumerate("ab")
    ]  # fmt: skip
    return tomllib.loads(node_toml(fleet[index], fleet, DemoOptions(), index))


def test_the_first_demo_node_closes_the_loop_on_its_room(tmp_path: Path) -> None:
    config = parse_config(demo_config(tmp_path, 0))
    spec = parse_alerting(config)
    rules = {r.name: r for r in spec.rules}
    thermostat = rules["thermostat"]
    assert thermostat.twins == ("a/room-1",) and not thermostat.alarm
    assert [(a.on, a.type, a.action, a.value) for a in thermostat.actions] == [
        ("raise", "command", "heater", 1.0),
        ("clear", "command", "heater", 0.0),
    ]
    assert rules["sensor-unreliable"].alarm and rules["sensor-unreliable"].severity == "major"
    heater = parse_actuators(config.actuators).get("a/room-1", "heater")
    assert heater.node == "edge-a" and heater.adapter == "plant-a"
    assert [(i.field, i.policy) for i in heater.interlocks] == [("temp_2", "refuse")]
    assert not parse_config(demo_config(tmp_path, 1)).rules  # the loop runs on one node
