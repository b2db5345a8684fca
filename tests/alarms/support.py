"""Helpers for the alarm tests: writing readings to a real node and reading its alarm records."""

from __future__ import annotations

import asyncio
import sys

from drsdtp.alarms.record import AlarmRecord, alarm_id, alarm_twin, record_from_fields
from drsdtp.client import field_to_python
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode


def report(twin: str, create: bool = False, **values: float) -> api_pb2.WriteRequest:
    ops = [api_pb2.FieldOp(field=k, report=api_pb2.FieldValue(f64=v)) for k, v in values.items()]
    write = api_pb2.TwinWrite(twin_id=twin, ops=ops)
    if create:
        write.create.SetInParent()
    return api_pb2.WriteRequest(twins=[write])


async def alarm_of(node: ApiNode, rule: str, twin: str) -> AlarmRecord | None:
    """The alarm as the node's store holds it (read through GetTwin, independent of the alarm API)."""
    alarm = alarm_id(rule, twin)
    got = await node.get(alarm_twin(alarm))
    if got is None:
        return None
    return record_from_fields(alarm, {f.name: field_to_python(f) for f in got.fields})


def rule_config(extra: str = "") -> str:
    return (
        "[alerting]\nperiod_s = 0.1\n"
        '[[rules]]\nname = "tank-high"\ntwins = "tank-*"\nwhen = "level > 80"\nfor = "1s"\n'
        'deadband = 5.0\nseverity = "major"\nmessage = "tank level high"\n' + extra
    )


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``drsdtp ARGS`` as a real process: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drsdtp", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def expose_metrics(node: ApiNode, port: int) -> None:
    """Serves the configured node's /metrics on ``port`` (the helper's config picks a free port)."""
    text = node.config.read_text()
    assert 'metrics = "127.0.0.1:0"' in text
    node.config.write_text(text.replace('metrics = "127.0.0.1:0"', f'metrics = "127.0.0.1:{port}"'))
