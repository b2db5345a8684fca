"""OPC UA adapter against a real asyncua server."""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from drsdtp.adapters import build_adapter
from drsdtp.adapters.base import Quality
from drsdtp.adapters.opcua import OpcUaAdapter, quality_of
from drsdtp.ingest.runner import AdapterRunner

from .opcua_server import CLIENT_URI, OpcServer, make_certs
from .support import FAST, DictInterner, RecordingSink, serving, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[OpcServer]:
    srv = OpcServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def opc_config(srv: OpcServer, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "type": "opcua",
        "name": "plc",
        "url": srv.url,
        "security_policy": "None",
        "publishing_interval_ms": 20,
        "twin": "boiler",
        "watchdog_interval_s": 0.5,
        "nodes": [
            {"node_id": f"ns={srv.idx};s=Temp", "field": "temp"},
            {"browse_path": f"0:Objects/{srv.idx}:Plant/{srv.idx}:Hum", "field": "hum"},
            {"node_id": f"ns={srv.idx};s=Running", "field": "running"},
            {"node_id": f"ns={srv.idx};s=Label", "field": "label"},
            {"node_id": f"ns={srv.idx};s=DoesNotExist", "field": "ghost"},
        ],
    }
    cfg.update(extra)
    return cfg


async def test_values_quality_timestamps_and_a_missing_node(
    server: OpcServer, sink: RecordingSink, interner: DictInterner
) -> None:
    runner = AdapterRunner(build_adapter(opc_config(server), "adapters[1]"), sink, interner, FAST)
    async with serving(runner):
        # The unknown node is reported BAD once, the others keep flowing.
        await wait_until(lambda: ("boiler", "ghost") in sink.seen(), 10, "missing node reported")
        src = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=3)
        await server.write("Temp", 21.5, source_time=src)
        await server.write("Hum", 40.0)
        await server.write("Running", True)
        await server.write("Label", "text is not a number")
        await wait_until(
            lambda: (
                21.5 in sink.values("boiler", "temp")
                and 40.0 in sink.values("boiler", "hum")
                and 1.0 in sink.values("boiler", "running")
            ),
            10,
            "values applied",
        )
        await server.write("Temp", 22.0, status=StatusCodes.UncertainLastUsableValue)
        # queue_size 1: a second change inside one publishing interval would replace this one (OPC UA rules).
        await wait_until(lambda: 22.0 in sink.values("boiler", "temp"), 10, "uncertain value applied")
        await server.write("Temp", 99.0, status=StatusCodes.BadSensorFailure)
        await wait_until(
            lambda: any(r.quality == Quality.BAD for r in sink.rows if r.field == "temp"),
            10,
            "bad status applied",
        )
    [ghost] = [r for r in sink.rows if r.field == "ghost"]
    assert ghost.quality == Quality.BAD
    assert math.isnan(ghost.value)
    temp = [r for r in sink.rows if r.field == "temp"]
    good = next(r for r in temp if r.value == 21.5)
    assert good.quality == Quality.GOOD
    assert abs(good.source_ms - src.timestamp() * 1000) < 1
    assert any(r.value == 22.0 and r.quality == Quality.UNCERTAIN for r in temp)
    bad = [r for r in temp if r.quality == Quality.BAD]
    assert bad
    assert all(math.isnan(r.value) for r in bad)
    assert runner.adapter.stats.malformed >= 1  # the string
    assert runner.adapter.stats.bad_reads == 1


async def test_server_side_absolute_deadband(
    server: OpcServer, sink: RecordingSink, interner: DictInterner
) -> None:
    cfg = opc_config(
        server,
        nodes=[
            {
                "node_id": f"ns={server.idx};s=Temp",
                "field": "temp",
                "deadband": 1.0,
                "sampling_interval_ms": 0,
            }
        ],
    )
    runner = AdapterRunner(build_adapter(cfg, "adapters[0]"), sink, interner, FAST)
    async with serving(runner):
        await wait_until(lambda: sink.values("boiler", "temp") == [0.0], 10, "initial value")
        for v in (10.0, 10.5, 12.0, 12.3):
            await server.write("Temp", v)
            await asyncio.sleep(0.1)
        await wait_until(lambda: 12.0 in sink.values("boiler", "temp"), 10, "change beyond the deadband")
        await asyncio.sleep(0.2)
    assert sink.values("boiler", "temp") == [0.0, 10.0, 12.0]


async def test_percent_deadband_of_the_eu_range(
    server: OpcServer, sink: RecordingSink, interner: DictInterner
) -> None:
    # 1 % of Level's EURange (0 to 200) is 2.0. asyncua's server passes every change through for a percent
    # deadband, so this is the adapter's own filter at work. Temp has no EURange: refused and marked BAD.
    band = {"deadband": 1.0, "deadband_type": "percent", "sampling_interval_ms": 0}
    cfg = opc_config(
        server,
        nodes=[
            {"node_id": f"ns={server.idx};s=Level", "field": "level", **band},
            {"node_id": f"ns={server.idx};s=Temp", "field": "temp", **band},
        ],
    )
    runner = AdapterRunner(build_adapter(cfg, "adapters[0]"), sink, interner, FAST)
    async with serving(runner):
        await wait_until(lambda: sink.values("boiler", "level") == [0.0], 10, "initial value")
        for v in (10.0, 11.0, 11.9, 12.5, 13.0, 10.4):
            await server.write("Level", v)
            await asyncio.sleep(0.1)
        await wait_until(lambda: 10.4 in sink.values("boiler", "level"), 10, "change beyond the band")
        await asyncio.sleep(0.2)
    # From the last value reported: 10 passes, 11 and 11.9 are within 2 of it, 12.5 passes, 13 is within 2 of
    # 12.5, and 10.4 is 2.1 below it.
    assert sink.values("boiler", "level") == [0.0, 10.0, 12.5, 10.4]
    assert runner.adapter.stats.filtered == 3
    temp = [r for r in sink.rows if r.field == "temp"]
    assert temp and all(math.isnan(r.value) and r.quality == Quality.BAD for r in temp)


async def test_percent_deadband_passes_a_change_of_quality(
    server: OpcServer, sink: RecordingSink, interner: DictInterner
) -> None:
    band = {"deadband": 1.0, "deadband_type": "percent", "sampling_interval_ms": 0}
    cfg = opc_config(server, nodes=[{"node_id": f"ns={server.idx};s=Level", "field": "level", **band}])
    runner = AdapterRunner(build_adapter(cfg, "adapters[0]"), sink, interner, FAST)
    async with serving(runner):
        await wait_until(lambda: sink.values("boiler", "level") == [0.0], 10, "initial value")
        # Inside the band (2.0), but no longer trustworthy: the twin must learn of it.
        await server.write("Level", 0.5, status=StatusCodes.UncertainLastUsableValue)
        await wait_until(lambda: len(sink.values("boiler", "level")) == 2, 10, "the quality change")
    last = [r for r in sink.rows if r.field == "level"][-1]
    assert (last.value, last.quality) == (0.5, Quality.UNCERTAIN)
    assert runner.adapter.stats.filtered == 0


async def test_server_restart_recreates_session_and_items(
    server: OpcServer, sink: RecordingSink, interner: DictInterner
) -> None:
    runner = AdapterRunner(build_adapter(opc_config(server), "adapters[0]"), sink, interner, FAST)
    async with serving(runner):
        await server.write("Temp", 1.0)
        await wait_until(lambda: 1.0 in sink.values("boiler", "temp"), 10, "value before restart")
        await server.stop()
        await asyncio.sleep(0.3)
        await server.start()
        restarted = time.monotonic()
        await wait_until(lambda: runner.reconnects >= 1, 10, "adapter reconnected")
        await server.write("Temp", 2.0)
        await wait_until(lambda: 2.0 in sink.values("boiler", "temp"), 10, "value after restart")
        assert time.monotonic() - restarted < 10


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_certificates_and_username(
    tmp_path: Path, sink: RecordingSink, interner: DictInterner, mode: str
) -> None:
    certs = await make_certs(tmp_path)
    policy = getattr(ua.SecurityPolicyType, f"Basic256Sha256_{mode}")
    srv = OpcServer(policies=[policy], certs=certs, users={"ingest": "pw"})
    await srv.start()
    try:
        cfg = opc_config(
            srv,
            security_policy="Basic256Sha256",
            security_mode=mode,
            certificate=str(certs.client_cert),
            private_key=str(certs.client_key),
            server_certificate=str(certs.server_cert),
            application_uri=CLIENT_URI,
            username="ingest",
            password="pw",
        )
        runner = AdapterRunner(build_adapter(cfg, "adapters[0]"), sink, interner, FAST)
        async with serving(runner):
            await srv.write("Temp", 5.5)
            await wait_until(lambda: 5.5 in sink.values("boiler", "temp"), 10, "value over a secure channel")
        # The same client without credentials is refused (and retried, not fatal).
        anon_cfg = {k: v for k, v in cfg.items() if k not in ("username", "password")}
        anon = AdapterRunner(build_adapter(anon_cfg, "adapters[1]"), sink, interner, FAST)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(anon.run())
            await wait_until(lambda: anon.supervisor.stats.failures >= 2, 10, "anonymous session refused")
            task.cancel()
        assert anon.supervisor.stats.starts == 0
    finally:
        await srv.stop()


def test_server_timestamps_and_status_severity_without_a_server() -> None:
    cfg = {
        "type": "opcua",
        "name": "plc",
        "url": "opc.tcp://127.0.0.1:4840/",
        "security_policy": "None",
        "timestamps": "server",
        "twin": "boiler",
        "nodes": [{"node_id": "ns=2;s=Temp", "field": "temp"}],
    }
    adapter = build_adapter(cfg, "adapters[0]")
    assert isinstance(adapter, OpcUaAdapter)
    src = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    server_time = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)

    def item(value: Any, status: int, source: datetime.datetime | None) -> ua.MonitoredItemNotification:
        dv = ua.DataValue(
            ua.Variant(value),
            StatusCode=ua.StatusCode(ua.UInt32(status)),
            SourceTimestamp=cast(ua.DateTime, source),
            ServerTimestamp=cast(ua.DateTime, server_time),
        )
        return ua.MonitoredItemNotification(ClientHandle=ua.UInt32(1000), Value=dv)

    adapter.on_data_change([item(1.5, StatusCodes.Good, src), item(2.5, 0xC0000000, None)])
    readings = list(adapter._take().readings())
    assert readings[0].value == 1.5 and readings[0].source_ms == int(server_time.timestamp() * 1000)
    assert readings[1].quality == Quality.BAD and math.isnan(readings[1].value)  # severity 11 counts as Bad
    assert quality_of(StatusCodes.UncertainInitialValue) == Quality.UNCERTAIN
