"""A stand-in for edgecore's device manager, built from KubeEdge's DMI contract (proto/kubeedge/): a real gRPC
server on a UNIX socket serving DeviceManagerService as edgecore's dmiserver does, and a client of the
mapper's DeviceMapperService at the address the mapper registered, as edgecore's dmiclient is.

What edgecore checks is checked here too: MapperRegister needs a protocol and lists only the devices of that
protocol; ReportDeviceStatus needs twins, each with ``reported`` and ``observedDesired`` set (edgecore reads
both without checking); ReportDeviceStates needs a device name and a state. Devices and models come from
``drsdtp kubeedge`` output converted as edgecore's ``dtcommon.ConvertDevice`` does (configData strings packed
as ``google.protobuf.StringValue``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import wrappers_pb2

from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2 as dmi
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2_grpc as dmi_grpc


def _pack(target: Any, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        target.data[key].Pack(wrappers_pb2.StringValue(value=str(value)))


def device_message(
    doc: Mapping[str, Any], desired: Mapping[str, str] | None = None, cycle_ms: int | None = None
) -> dmi.Device:
    """A Device resource (devices.kubeedge.io/v1beta1) as edgecore hands it to a mapper; ``desired`` and
    ``cycle_ms`` as a user would set them in its spec."""
    meta, spec = doc["metadata"], doc["spec"]
    out = dmi.Device(name=meta["name"], namespace=meta.get("namespace", "default"))
    out.spec.deviceModelReference = spec["deviceModelRef"]["name"]
    out.spec.protocol.protocolName = spec["protocol"]["protocolName"]
    _pack(out.spec.protocol.configData, spec["protocol"].get("configData", {}))
    for p in spec["properties"]:
        prop = out.spec.properties.add(
            name=p["name"],
            reportCycle=cycle_ms if cycle_ms is not None else p.get("reportCycle", 0),
            collectCycle=p.get("collectCycle", 0),
            reportToCloud=p.get("reportToCloud", False),
        )
        prop.visitors.protocolName = p["visitors"]["protocolName"]
        _pack(prop.visitors.configData, p["visitors"].get("configData", {}))
        value = (desired or {}).get(p["name"], p.get("desired", {}).get("value", ""))
        if value:
            prop.desired.value = value
    return out


def model_message(doc: Mapping[str, Any]) -> dmi.DeviceModel:
    meta = doc["metadata"]
    out = dmi.DeviceModel(name=meta["name"], namespace=meta.get("namespace", "default"))
    for p in doc["spec"]["properties"]:
        out.spec.properties.add(
            name=p["name"],
            type=p["type"],
            accessMode=p["accessMode"],
            minimum=p.get("minimum", ""),
            maximum=p.get("maximum", ""),
            unit=p.get("unit", ""),
        )
    return out


@dataclass
class EdgeCore(dmi_grpc.DeviceManagerServiceServicer):
    """Serves DeviceManagerService; what mappers send lands in the queues (``violations`` must stay empty)."""

    socket: Path
    devices: list[dmi.Device] = field(default_factory=list)
    models: list[dmi.DeviceModel] = field(default_factory=list)
    mappers: asyncio.Queue[dmi.MapperInfo] = field(default_factory=asyncio.Queue)
    status: asyncio.Queue[dmi.ReportDeviceStatusRequest] = field(default_factory=asyncio.Queue)
    states: asyncio.Queue[dmi.ReportDeviceStatesRequest] = field(default_factory=asyncio.Queue)
    violations: list[str] = field(default_factory=list)

    async def MapperRegister(
        self, request: dmi.MapperRegisterRequest, context: Any
    ) -> dmi.MapperRegisterResponse:
        if not request.mapper.protocol:
            self.violations.append("MapperRegister without a protocol")
            await context.abort(grpc.StatusCode.UNKNOWN, "the protocol is nil")
        await self.mappers.put(request.mapper)
        if not request.withData:
            return dmi.MapperRegisterResponse()
        mine = [d for d in self.devices if d.spec.protocol.protocolName == request.mapper.protocol]
        names = {d.spec.deviceModelReference for d in mine}
        return dmi.MapperRegisterResponse(
            deviceList=mine, modelList=[m for m in self.models if m.name in names]
        )

    async def ReportDeviceStatus(
        self, request: dmi.ReportDeviceStatusRequest, context: Any
    ) -> dmi.ReportDeviceStatusResponse:
        if not request.HasField("reportedDevice") or not request.reportedDevice.twins:
            self.violations.append(f"ReportDeviceStatus without twins: {request}")
            await context.abort(grpc.StatusCode.UNKNOWN, "ReportDeviceStatusRequest does not have twin data")
        for twin in request.reportedDevice.twins:
            if not (twin.HasField("reported") and twin.HasField("observedDesired")):
                self.violations.append(f"a twin edgecore would crash on (nil value): {twin}")
        await self.status.put(request)
        return dmi.ReportDeviceStatusResponse()

    async def ReportDeviceStates(
        self, request: dmi.ReportDeviceStatesRequest, context: Any
    ) -> dmi.ReportDeviceStatesResponse:
        if not request.state or not request.deviceName:
            self.violations.append(f"invalid ReportDeviceStates: {request}")
            await context.abort(grpc.StatusCode.UNKNOWN, "ReportDeviceStatesRequest is invalid data")
        await self.states.put(request)
        return dmi.ReportDeviceStatesResponse()


@contextlib.asynccontextmanager
async def serving(edgecore: EdgeCore) -> AsyncIterator[EdgeCore]:
    server = grpc.aio.server()
    dmi_grpc.add_DeviceManagerServiceServicer_to_server(edgecore, server)
    assert server.add_insecure_port(f"unix:{edgecore.socket}") != 0
    await server.start()
    try:
        yield edgecore
    finally:
        await server.stop(grace=None)


@contextlib.asynccontextmanager
async def mapper_client(info: dmi.MapperInfo) -> AsyncIterator[dmi_grpc.DeviceMapperServiceStub]:
    """edgecore's dmiclient: a channel to the address the mapper registered."""
    async with grpc.aio.insecure_channel(f"unix:{info.address.decode()}") as channel:
        yield dmi_grpc.DeviceMapperServiceStub(channel)
