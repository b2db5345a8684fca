"""DeviceMapperService: what edgecore calls on this mapper (KubeEdge DMI v1beta1).

RegisterDevice and UpdateDevice hold the device (its twin and fields) and write the cloud's desired values
into the twin; RemoveDevice stops serving it (the twin stays: it is the node's and its peers', not the
cloud's); Create/Update/RemoveDeviceModel keep the property types desired values are read by; GetDevice
answers the device with its twins as the node holds them now. Bad input is refused with INVALID_ARGUMENT
naming the device and the path in it (RESOURCE_EXHAUSTED over ``kubeedge.max_devices``), and counted in
``drsdtp_kubeedge_refused``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from drsdtp.api.errors import abort_with
from drsdtp.core import DESIRED_SUFFIX
from drsdtp.errors import DrsdtpError, InvalidValueError, LimitError
from drsdtp.kubeedge.devices import DEFAULT_NAMESPACE, parse_device, parse_model
from drsdtp.kubeedge.values import property_of
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2 as dmi
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2_grpc as dmi_grpc

if TYPE_CHECKING:
    from drsdtp.kubeedge.mapper import KubeEdgeMapper

__all__ = ["MapperService"]


class MapperService(dmi_grpc.DeviceMapperServiceServicer):
    def __init__(self, mapper: KubeEdgeMapper) -> None:
        self.mapper = mapper
        self.book = mapper.book

    async def _refuse(self, context: Any, method: str, reason: str, exc: DrsdtpError) -> None:
        self.mapper.refuse(reason, exc)
        await abort_with(context, method, exc)

    async def _hold(self, request: dmi.Device, context: Any, method: str) -> tuple[str, str]:
        try:
            device = parse_device(request, self.mapper.config.protocol)
            self.book.put(device)
        except LimitError as exc:
            await self._refuse(context, method, "too_many_devices", exc)
            raise
        except DrsdtpError as exc:
            await self._refuse(context, method, "invalid_device", exc)
            raise
        self.mapper.changed(device)
        errors = await self.mapper.apply_desired(device)
        if errors:  # the device is held; the desired value it states is not taken: say why
            await abort_with(context, method, errors[0])
        return device.name, device.namespace

    async def RegisterDevice(
        self, request: dmi.RegisterDeviceRequest, context: Any
    ) -> dmi.RegisterDeviceResponse:
        name, namespace = await self._hold(request.device, context, "RegisterDevice")
        return dmi.RegisterDeviceResponse(deviceName=name, deviceNamespace=namespace)

    async def UpdateDevice(self, request: dmi.UpdateDeviceRequest, context: Any) -> dmi.UpdateDeviceResponse:
        await self._hold(request.device, context, "UpdateDevice")
        return dmi.UpdateDeviceResponse()

    async def RemoveDevice(self, request: dmi.RemoveDeviceRequest, context: Any) -> dmi.RemoveDeviceResponse:
        device = self.book.remove(request.deviceNamespace, request.deviceName)
        if device is not None:
            self.mapper.forget(device)
        return dmi.RemoveDeviceResponse()

    async def CreateDeviceModel(
        self, request: dmi.CreateDeviceModelRequest, context: Any
    ) -> dmi.CreateDeviceModelResponse:
        key = await self._model(request.model, context, "CreateDeviceModel")
        namespace, _, name = key.partition("/")
        return dmi.CreateDeviceModelResponse(deviceModelName=name, deviceModelNamespace=namespace)

    async def UpdateDeviceModel(
        self, request: dmi.UpdateDeviceModelRequest, context: Any
    ) -> dmi.UpdateDeviceModelResponse:
        await self._model(request.model, context, "UpdateDeviceModel")
        return dmi.UpdateDeviceModelResponse()

    async def _model(self, request: dmi.DeviceModel, context: Any, method: str) -> str:
        try:
            key, types = parse_model(request)
            self.book.put_model(key, types)
        except LimitError as exc:
            await self._refuse(context, method, "too_many_models", exc)
            raise
        except DrsdtpError as exc:
            await self._refuse(context, method, "invalid_model", exc)
            raise
        return key

    async def RemoveDeviceModel(
        self, request: dmi.RemoveDeviceModelRequest, context: Any
    ) -> dmi.RemoveDeviceModelResponse:
        self.book.remove_model(request.modelNamespace, request.modelName)
        return dmi.RemoveDeviceModelResponse()

    async def GetDevice(self, request: dmi.GetDeviceRequest, context: Any) -> dmi.GetDeviceResponse:
        device = self.book.get(request.deviceNamespace, request.deviceName)
        if device is None:
            where = f"{request.deviceNamespace or DEFAULT_NAMESPACE}/{request.deviceName}"
            await self._refuse(
                context, "GetDevice", "unknown_device", InvalidValueError(f"device {where}: not served here")
            )
            raise AssertionError("unreachable: abort raises")
        answer = dmi.Device()
        answer.CopyFrom(device.source)
        twin = await self.mapper.read(device)
        if twin is not None:
            values = {f.name: f for f in twin.fields}
            now_ms = int(time.time() * 1000)
            for p in device.properties:
                reported = values.get(p.field)
                desired = values.get(p.field + DESIRED_SUFFIX)
                answer.status.twins.append(
                    dmi.Twin(
                        propertyName=p.name,
                        reported=(property_of(reported, now_ms) if reported else None) or dmi.TwinProperty(),
                        observedDesired=(property_of(desired, now_ms) if desired else None)
                        or dmi.TwinProperty(),
                    )
                )
        return dmi.GetDeviceResponse(device=answer)
