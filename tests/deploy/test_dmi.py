"""The node as a KubeEdge device mapper, against a stand-in for edgecore built from KubeEdge's DMI contract
(tests/deploy/edgecore.py): a real node process registers over a UNIX socket, reports its twins' reported
and desired values and the device's state, takes the cloud's desired values into the twin's desired state
(once per value the cloud states, across a re-registration), and refuses bad devices naming what was wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import yaml
from google.protobuf import wrappers_pb2

from drsdtp.client import AsyncClient
from drsdtp.config import KubeEdgeConfig
from drsdtp.errors import ConfigError, InvalidValueError
from drsdtp.kubeedge.devices import DeviceBook, parse_device, parse_model
from drsdtp.kubeedge.mapper import KubeEdgeMapper, TwinAccess
from drsdtp.kubeedge.values import desired_value, property_of
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2 as dmi
from drsdtp.wire.v1 import api_pb2
from tests.api.nodes import ApiNode
from tests.client.conftest import wait_ready
from tests.deploy.edgecore import EdgeCore, device_message, mapper_client, model_message, serving

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto" / "kubeedge"
TWIN = "room-ke1"
CYCLE_MS = 100  # the Devices' report cycle (the room model's period, 10 s, would make a slow test)


def test_the_contract_is_kubeedges_unmodified() -> None:
    origin = (PROTO / "ORIGIN.md").read_text()
    (recorded,) = re.findall(r"sha256: ([0-9a-f]{64})", origin)
    assert hashlib.sha256((PROTO / "dmi" / "v1beta1" / "api.proto").read_bytes()).hexdigest() == recorded
    # The wire names are KubeEdge's, whatever our module path.
    services = dmi.DESCRIPTOR.services_by_name
    assert services["DeviceManagerService"].full_name == "v1beta1.DeviceManagerService"
    assert {m.name for m in services["DeviceMapperService"].methods} >= {
        "RegisterDevice",
        "UpdateDevice",
        "RemoveDevice",
        "GetDevice",
    }


# --- values and devices, without a node -------------------------------------------------------------------


def test_twin_values_as_kubeedge_text() -> None:
    now = 1_700_000_000_000
    assert property_of(api_pb2.FieldValue(f64=21.5), now) == dmi.TwinProperty(
        value="21.5", metadata={"type": "double", "timestamp": str(now)}
    )
    flag = property_of(api_pb2.FieldValue(flag=True), now)
    assert flag is not None and flag.value == "true"
    both = [api_pb2.FieldValue(f64=1.0), api_pb2.FieldValue(f64=0.0)]
    conflict = api_pb2.FieldValue(desired=api_pb2.DesiredValues(values=both))
    shown = property_of(conflict, now)
    assert shown is not None and (shown.value, shown.metadata["conflict"]) == ("1.0,0.0", "2")
    assert property_of(api_pb2.FieldValue(blob=b"\x00"), now) is None


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [("1", "DOUBLE", {"f64": 1.0}), ("-3", "INT", {"i64": -3}), ("true", "BOOLEAN", {"flag": True}),
     ("open", "STRING", {"text": "open"}), ("2.5", "", {"f64": 2.5}), ("auto", "", {"text": "auto"})],
)  # fmt: skip
def test_desired_text_is_read_by_the_property_type(text: str, kind: str, expected: dict[str, Any]) -> None:
    assert desired_value(text, kind, "p") == api_pb2.FieldValue(**expected)


@pytest.mark.parametrize(
    ("text", "kind"), [("warm", "DOUBLE"), ("1.5", "INT"), ("yes", "BOOLEAN"), ("nan", "FLOAT"), ("inf", "")]
)
def test_a_bad_desired_text_is_named(text: str, kind: str) -> None:
    with pytest.raises(InvalidValueError, match=r"^spec\.properties\[0\]\.desired\.value: "):
        desired_value(text, kind, "spec.properties[0].desired.value")


def _device(**changes: Any) -> dmi.Device:
    d = dmi.Device(name="room-1", namespace="plant")
    d.spec.deviceModelReference = "room"
    d.spec.protocol.protocolName = changes.get("protocol", "drsdtp")
    d.spec.protocol.configData.data["twin"].Pack(wrappers_pb2.StringValue(value="room-1"))
    prop = d.spec.properties.add(name="heater", reportCycle=500, reportToCloud=True)
    prop.visitors.configData.data["field"].Pack(
        changes.get("field", wrappers_pb2.StringValue(value="heater"))
    )
    return d


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (_device(protocol="modbus"), "device plant/room-1: spec.protocol.protocolName is 'modbus'"),
        (
            _device(field=wrappers_pb2.Int32Value(value=3)),
            r"spec.properties\[0\].visitors.configData.field: expected a string, got .*Int32Value",
        ),
        (dmi.Device(), "device.name: empty"),
    ],
    ids=["another protocol", "a field that is not text", "no name"],
)
def test_a_bad_device_is_named(device: dmi.Device, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message):
        parse_device(device, "drsdtp")


def test_the_book_is_bounded() -> None:
    book = DeviceBook(max_devices=1)
    book.put(parse_device(_device(), "drsdtp"))
    other = _device()
    other.name = "room-2"
    with pytest.raises(Exception, match=r"kubeedge\.max_devices = 1"):
        book.put(parse_device(other, "drsdtp"))
    model = dmi.DeviceModel(name="room", namespace="plant")
    model.spec.properties.add(name="heater", type="double")
    key, types = parse_model(model)
    book.put_model(key, types)
    assert book.property_type(parse_device(_device(), "drsdtp"), "heater") == "DOUBLE"


def test_a_socket_path_too_long_for_unix_is_named(tmp_path: Path) -> None:
    config = KubeEdgeConfig(socket=tmp_path / ("s" * 120))
    with pytest.raises(ConfigError) as info:
        KubeEdgeMapper(config, tmp_path, TwinAccess(_no_call, _no_call))
    assert info.value.key == "kubeedge.socket"


async def _no_call(request: Any) -> Any:
    raise AssertionError("not called")


# --- a real node and the edgecore stand-in ------------------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short directory: a UNIX socket path has at most 107 bytes, pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def resources(node: ApiNode) -> tuple[list[dmi.DeviceModel], dict[str, Any]]:
    """``drsdtp kubeedge`` for the node's config: the room model and the device of TWIN."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "drsdtp",
            "kubeedge",
            "--config",
            str(node.config),
            "--device",
            f"{TWIN}=room",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (device,) = [d for d in docs if d["kind"] == "Device"]
    return [model_message(d) for d in docs if d["kind"] == "DeviceModel"], device


async def next_item(queue: asyncio.Queue[Any], want: Any, what: str) -> Any:
    """The first item ``want(item)`` accepts (earlier ones are skipped)."""
    async with asyncio.timeout(30):
        while True:
            item = await queue.get()
            if want(item):
                return item
    raise AssertionError(what)


def twins_of(report: dmi.ReportDeviceStatusRequest) -> dict[str, tuple[str, str]]:
    return {t.propertyName: (t.reported.value, t.observedDesired.value) for t in report.reportedDevice.twins}


async def cloud_view(
    queue: asyncio.Queue[dmi.ReportDeviceStatusRequest], want: dict[str, tuple[str, str]]
) -> None:
    """Returns once the reports (each holding only what changed) add up to ``want`` for its properties."""
    seen: dict[str, tuple[str, str]] = {}
    async with asyncio.timeout(30):
        while {k: seen.get(k) for k in want} != want:
            report = await queue.get()
            assert (report.deviceName, report.deviceNamespace) == (TWIN, "default")
            seen.update(twins_of(report))


@pytest.fixture
async def node(tmp_path: Path, sockets: Path) -> AsyncIterator[ApiNode]:
    n = ApiNode("mapper", tmp_path)
    n.configure(
        {},
        f'[kubeedge]\nedgecore_socket = "{sockets / "dmi.sock"}"\nsocket = "{sockets / "drsdtp.sock"}"\n'
        "report_interval_s = 0.2\nmin_report_interval_s = 0.05\nreports_per_s = 1000\n",
    )
    yield n
    n.stop()


@pytest.mark.integration
async def test_the_node_serves_its_twins_to_kubeedge_as_a_dmi_mapper(node: ApiNode, sockets: Path) -> None:
    models, doc = resources(node)
    edgecore = EdgeCore(
        sockets / "dmi.sock", [device_message(doc, cycle_ms=CYCLE_MS, desired={"heater": "1"})], models
    )
    async with serving(edgecore):
        node.spawn()
        await asyncio.to_thread(wait_ready, node)
        info = await next_item(edgecore.mappers, lambda _: True, "no MapperRegister")
        assert (info.protocol, info.api_version, info.address.decode()) == (
            "drsdtp", "v1beta1", str(sockets / "drsdtp.sock"),
        )  # fmt: skip
        # The twin is not on the node yet: the device is there, its state unknown.
        await next_item(edgecore.states, lambda s: s.state == "unknown", "no unknown state")
        async with AsyncClient(f"127.0.0.1:{node.api_port}", timeout=10) as client:
            await client.create(TWIN, model="room")
            await client.report(TWIN, {"temp_1": 21.5})
            await next_item(edgecore.states, lambda s: s.state == "online", "no online state")
            # The cloud's desired value waited for the twin, then entered its desired state.
            await cloud_view(edgecore.status, {"heater": ("", "1.0"), "temp_1": ("21.5", "")})
            assert (await client.get(TWIN)).desired("heater") == (1.0,)

            # edgecore calls the mapper as the cloud changes the Device.
            async with mapper_client(info) as mapper:
                await mapper.UpdateDevice(
                    dmi.UpdateDeviceRequest(
                        device=device_message(doc, cycle_ms=CYCLE_MS, desired={"heater": "0"})
                    )
                )
                assert (await client.get(TWIN)).desired("heater") == (0.0,)
                audit = await client.audit(TWIN)
                assert any(
                    e.actor == "kubeedge" and e.reason == f"KubeEdge Device default/{TWIN}"
                    for e in audit.records
                )
                got = await mapper.GetDevice(dmi.GetDeviceRequest(deviceName=TWIN, deviceNamespace="default"))
                shown = {
                    t.propertyName: (t.reported.value, t.observedDesired.value)
                    for t in got.device.status.twins
                }
                assert shown["temp_1"] == ("21.5", "") and shown["heater"][1] == "0.0"

                # Bad input: refused, naming what was wrong; the node serves on.
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await mapper.UpdateDevice(
                        dmi.UpdateDeviceRequest(
                            device=device_message(doc, cycle_ms=CYCLE_MS, desired={"heater": "warm"})
                        )
                    )
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "spec.properties[" in (bad.value.details() or "") and "'warm'" in (
                    bad.value.details() or ""
                )
                foreign = device_message(doc)
                foreign.spec.protocol.protocolName = "modbus"
                with pytest.raises(grpc.aio.AioRpcError, match="protocolName is 'modbus'"):
                    await mapper.RegisterDevice(dmi.RegisterDeviceRequest(device=foreign))
                assert (await client.get(TWIN)).desired("heater") == (0.0,)

                # A local intent after the cloud's: a re-registration (edgecore restarted) lists the Device
                # with the cloud's unchanged value, which does not overwrite it.
                await client.desire(TWIN, {"heater": 0.5})
    again = EdgeCore(
        sockets / "dmi.sock", [device_message(doc, cycle_ms=CYCLE_MS, desired={"heater": "0"})], models
    )
    async with serving(again):
        await next_item(again.mappers, lambda _: True, "no second MapperRegister")
        await next_item(again.states, lambda s: s.state == "online", "no state after re-registering")
        await cloud_view(again.status, {"heater": ("", "0.5"), "temp_1": ("21.5", "")})
        async with mapper_client(info) as mapper:
            await mapper.RemoveDevice(dmi.RemoveDeviceRequest(deviceName=TWIN, deviceNamespace="default"))
            with pytest.raises(grpc.aio.AioRpcError, match="not served here"):
                await mapper.GetDevice(dmi.GetDeviceRequest(deviceName=TWIN, deviceNamespace="default"))
    async with AsyncClient(f"127.0.0.1:{node.api_port}", timeout=10) as client:
        assert (await client.get(TWIN)).desired("heater") == (0.5,)  # the twin stays the node's
    assert edgecore.violations == [] and again.violations == []
    log = (node.dir / "node.log").read_text()
    assert log.count("registered with edgecore") == 2, log[-3000:]
