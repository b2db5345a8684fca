"""Auto-correction's verdicts and its durable hourly count, on the Corrector with a real store and the
actuator parsed from its config (the book records what it is asked to issue): a verdict corrects a minor
divergence without waiting ``after_s`` (with ``auto = false`` only a verdict does), once per episode; a
verdict blaming the sensor blocks it; a critical divergence still only raises an alarm; ``max_per_hour``
counts the corrections the durable records hold from before a restart. A rule's ``correct`` action is
checked against the actuators by ``check-config``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from drsdtp._core import Store
from drsdtp.actions import parse_actuators
from drsdtp.actions.actuators import ActuatorSpec
from drsdtp.actions.correct import Corrector, Verdict
from drsdtp.actions.executor import FieldQuality
from drsdtp.config import parse_config
from drsdtp.rules.cli import check_config

TWIN = "tank-1"


class Book:
    def __init__(self) -> None:
        self.issued: list[tuple[str, str, float | None, str]] = []

    async def issue_command(
        self,
        twin: str,
        action: str,
        value: float | None = None,
        *,
        actor: str = "anonymous",
        reason: str = "",
        origin: str = "api",
    ) -> str:
        self.issued.append((twin, action, value, reason))
        return f"c{len(self.issued)}"


class Health:
    def field_quality(self, twin: str, field: str) -> FieldQuality | None:
        return FieldQuality(1.0, (), 0.0)


class Alarms:
    def __init__(self) -> None:
        self.raised: list[str] = []

    async def raise_alarm(self, rule: str, twin: str, severity: str, message: str) -> object:
        self.raised.append(message)
        return None

    async def clear_alarm(self, rule: str, twin: str, reason: str = "") -> object:
        return None


def actuator(**correct: Any) -> ActuatorSpec:
    raw = {"twin": TWIN, "field": "level", "node": "a", "adapter": "plc", "tolerance": 0.5,
           "write": {"address": 20},
           "correct": {"minor_within": 10.0, "after_s": 60.0, "max_per_hour": 2, **correct}}  # fmt: skip
    return parse_actuators([raw]).executed_by("a")[0]


class Rig:
    """A corrector over a real store, with a hand-driven clock and verdicts."""

    def __init__(self, spec: ActuatorSpec, history: Sequence[int] = ()) -> None:
        self.store = Store(1)
        self.book, self.alarms = Book(), Alarms()
        self.verdicts: list[Verdict] = []
        self.now = 1000.0
        self.wall_ms = 10_000_000
        self.corrector = Corrector(
            self.store, specs=(spec,), book=self.book, health=Health(), busy=lambda t, a: False,
            interlocked=lambda s: "", alarms=lambda: self.alarms, verdicts=lambda s: self.verdicts,
            history=lambda twin, action, since: [ms for ms in history if ms >= since],
            clock=lambda: self.now, wall_ms=lambda: self.wall_ms,
        )  # fmt: skip
        self.corrector.restore()
        self.store.desire(TWIN, "level.desired", 50.0)

    async def reported(self, value: float) -> None:
        self.store.set(TWIN, "level", value)
        await self.check()

    async def check(self) -> None:
        await self.corrector._check(self.corrector._watches[0])


async def test_a_verdict_corrects_at_once_and_once_per_episode() -> None:
    rig = Rig(actuator())
    await rig.reported(55.0)
    assert rig.book.issued == []  # after_s (60 s) has not passed: nothing yet
    rig.verdicts = [Verdict("rule level-high #1", "rule level-high fired")]
    await rig.check()
    ((twin, action, value, reason),) = rig.book.issued
    assert (twin, action, value) == (TWIN, "level", 50.0) and "rule level-high fired" in reason
    await rig.reported(55.0)  # the same episode still active: it counts once
    assert len(rig.book.issued) == 1 and rig.corrector.stats.verdicts == 1
    rig.verdicts = [Verdict("rule level-high #2", "rule level-high fired")]  # a new episode
    await rig.check()
    assert len(rig.book.issued) == 2 and rig.corrector.stats.verdicts == 2


async def test_without_auto_only_a_verdict_corrects() -> None:
    rig = Rig(actuator(auto=False, after_s=0.0))
    await rig.reported(55.0)
    rig.now += 3600
    await rig.check()
    assert rig.book.issued == []
    rig.verdicts = [Verdict("divergence pump/level MODEL_DRIFT", "model pump diverges on level")]
    await rig.check()
    assert len(rig.book.issued) == 1 and "model pump diverges" in rig.book.issued[0][3]


async def test_a_verdict_blaming_the_sensor_blocks_and_critical_only_alarms() -> None:
    rig = Rig(actuator())
    await rig.reported(55.0)
    rig.verdicts = [Verdict("divergence pump/level SENSOR_FAULT", "model pump: SENSOR_FAULT", True)]
    await rig.check()
    assert rig.book.issued == [] and rig.corrector.stats.blocked == 1
    assert rig.corrector.status(TWIN, "level").startswith("blocked: the verdict blames the sensor")
    rig.verdicts = []  # the sensor is no longer blamed; a new call to correct comes, but it is critical
    await rig.reported(80.0)
    rig.verdicts = [Verdict("rule level-high #1", "rule level-high fired")]
    await rig.check()
    assert rig.book.issued == [] and len(rig.alarms.raised) == 1 and "not corrected" in rig.alarms.raised[0]


async def test_max_per_hour_counts_the_corrections_from_before_a_restart() -> None:
    wall = 10_000_000
    # Two corrections in the last hour (one older than an hour does not count): max_per_hour 2 is reached.
    rig = Rig(actuator(), history=[wall - 4_000_000, wall - 600_000, wall - 60_000])
    await rig.reported(55.0)
    rig.verdicts = [Verdict("rule level-high #1", "rule level-high fired")]
    await rig.check()
    assert rig.book.issued == [] and rig.corrector.stats.over_rate == 1
    rig.now += 3001.0  # the older of the two (600 s old) leaves the hour
    await rig.check()
    assert len(rig.book.issued) == 1


def rule_config(tmp: pathlib.Path, correct: dict[str, Any] | None) -> dict[str, Any]:
    act = {"twin": TWIN, "field": "level", "node": "a", "adapter": "plc", "write": {"address": 20}}
    return {
        "node_id": "a",
        "data_dir": str(tmp),
        "adapters": [{"type": "modbus", "name": "plc", "host": "127.0.0.1", "port": 1502, "twin": TWIN,
                      "registers": [{"field": "level", "address": 20}]}],
        "actuators": [act if correct is None else {**act, "correct": correct}],
        "rules": [{"name": "level-high", "twins": "tank-*", "when": "level > 52",
                   "actions": [{"type": "correct", "action": "level"}]}],
    }  # fmt: skip


def test_check_config_names_a_correct_action_without_a_policy(tmp_path: pathlib.Path) -> None:
    assert check_config(parse_config(rule_config(tmp_path, {"minor_within": 10.0}))) == []
    (error,) = check_config(parse_config(rule_config(tmp_path, None)))
    assert error.key == "rules[0].actions[0].action" and "[actuators.correct]" in error.reason
