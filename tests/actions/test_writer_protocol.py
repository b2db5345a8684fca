"""The Writer Protocol: the simulated plant writes its inputs, and the write shows up in its readings."""

from __future__ import annotations

import pytest

from drsdtp.adapters import build_adapter
from drsdtp.adapters.write import WriteRequest, WriteStatus, writer_of
from drsdtp.errors import AdapterError, ConfigError


def request(value: object, twin: str = "pump-1") -> WriteRequest:
    return WriteRequest("c1", twin, "valve", "valve", value, (), 1, 1.0)  # type: ignore[arg-type]


async def test_the_simulated_plant_writes_an_input_and_reports_it() -> None:
    raw = {
        "type": "simulated",
        "name": "p",
        "asset": "pump",
        "rooms": 1,
        "speedup": 1000.0,
    }  # a step per 10 ms
    adapter = build_adapter(raw, "adapters[0]")
    writer = writer_of(adapter)
    assert writer is not None
    target = writer.write_target({"input": "valve"}, "actuators[0].write")
    assert target.label == "plant input valve"
    outcome = await writer.write(target, request(0.25))
    assert outcome.status == WriteStatus.ACKNOWLEDGED
    async with adapter.session() as batches:
        batch = await anext(batches)
    valves = [r.value for r in batch.readings() if r.field == "valve"]
    assert valves and abs(valves[0] - 0.25) < 0.05


async def test_bad_targets_and_values_are_named() -> None:
    adapter = build_adapter({"type": "simulated", "name": "p", "asset": "pump", "rooms": 1}, "adapters[0]")
    writer = writer_of(adapter)
    assert writer is not None
    with pytest.raises(ConfigError, match=r"actuators\[0\]\.write\.input"):
        writer.write_target({"input": "wings"}, "actuators[0].write")
    target = writer.write_target({"input": "valve"}, "actuators[0].write")
    rejected = await writer.write(target, request("open"))
    assert rejected.status == WriteStatus.REJECTED and "takes a number" in rejected.detail
    unknown = await writer.write(target, request(0.5, twin="pump-9"))
    assert unknown.status == WriteStatus.REJECTED and "pump-9" in unknown.detail
    adapter.fail_writes = 1  # type: ignore[attr-defined]
    with pytest.raises(AdapterError, match="unreachable"):
        await writer.write(target, request(0.5))
