"""The devices and device models edgecore hands this mapper (KubeEdge DMI), as the node sees them.

A Device of this mapper's protocol is one twin: ``spec.protocol.configData.twin`` (default: the Device's
name); each of its properties is one field: ``visitors.configData.field`` (default: the property's name).
``drsdtp kubeedge`` writes both. The cloud's intent for a property, ``spec.properties[i].desired.value``,
comes with every RegisterDevice and UpdateDevice. A DeviceModel gives each property's type (``INT``,
``FLOAT``, ``DOUBLE``, ``BOOLEAN``, ``STRING``), which says how a desired value's text is read.

Everything here is checked before the node holds it; an error names the Device and the path in it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from google.protobuf import any_pb2, wrappers_pb2

from drsdtp.errors import InvalidValueError, LimitError
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2 as dmi

__all__ = ["DeviceBook", "MappedDevice", "MappedProperty", "parse_device", "parse_model"]

MAX_PROPERTIES: Final = 1_000  # per device or model
MAX_NAME: Final = 253  # a Kubernetes object name
DEFAULT_NAMESPACE: Final = "default"


@dataclass(frozen=True, slots=True)
class MappedProperty:
    name: str
    field: str
    desired: str  # the cloud's desired value as KubeEdge writes it, "" when it states none
    report_cycle_ms: int  # 0: the mapper's default
    report_to_cloud: bool


@dataclass(frozen=True, slots=True)
class MappedDevice:
    namespace: str
    name: str
    twin: str
    model: str  # the DeviceModel's name (same namespace)
    properties: tuple[MappedProperty, ...]
    source: dmi.Device = field(compare=False, repr=False)  # as edgecore sent it (GetDevice answers it)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _error(where: str, text: str) -> InvalidValueError:
    return InvalidValueError(f"{where}: {text}")


def _name(value: str, where: str) -> str:
    if not value:
        raise _error(where, "empty")
    if len(value) > MAX_NAME:
        raise _error(where, f"longer than {MAX_NAME} characters")
    return value


def _text(data: Mapping[str, any_pb2.Any], key: str, where: str) -> str | None:
    """``data[key]`` if it is a string (KubeEdge packs configData strings as StringValue); None if absent."""
    if key not in data:
        return None
    packed = data[key]
    if not packed.Is(wrappers_pb2.StringValue.DESCRIPTOR):
        raise _error(f"{where}.{key}", f"expected a string, got {packed.type_url or 'an empty Any'}")
    text = wrappers_pb2.StringValue()
    packed.Unpack(text)
    return _name(text.value, f"{where}.{key}")


def parse_device(device: dmi.Device, protocol: str) -> MappedDevice:
    name = _name(device.name, "device.name")
    namespace = device.namespace or DEFAULT_NAMESPACE
    where = f"device {namespace}/{name}"
    spec = device.spec
    if spec.protocol.protocolName != protocol:
        shown = spec.protocol.protocolName or "none"
        raise _error(where, f"spec.protocol.protocolName is {shown!r}; this mapper serves {protocol!r}")
    twin = _text(spec.protocol.configData.data, "twin", f"{where}: spec.protocol.configData") or name
    model = _name(spec.deviceModelReference, f"{where}: spec.deviceModelReference")
    if len(spec.properties) > MAX_PROPERTIES:
        raise _error(where, f"more than {MAX_PROPERTIES} properties")
    properties: list[MappedProperty] = []
    seen: set[str] = set()
    for i, prop in enumerate(spec.properties):
        path = f"{where}: spec.properties[{i}]"
        pname = _name(prop.name, f"{path}.name")
        if pname in seen:
            raise _error(f"{path}.name", f"{pname!r} appears twice")
        seen.add(pname)
        target = _text(prop.visitors.configData.data, "field", f"{path}.visitors.configData") or pname
        properties.append(
            MappedProperty(pname, target, prop.desired.value, max(0, prop.reportCycle), prop.reportToCloud)
        )
    return MappedDevice(namespace, name, twin, model, tuple(properties), device)


def parse_model(model: dmi.DeviceModel) -> tuple[str, dict[str, str]]:
    """``(namespace/name, {property: TYPE})``."""
    name = _name(model.name, "model.name")
    key = f"{model.namespace or DEFAULT_NAMESPACE}/{name}"
    if len(model.spec.properties) > MAX_PROPERTIES:
        raise _error(f"device model {key}", f"more than {MAX_PROPERTIES} properties")
    return key, {p.name: p.type.upper() for p in model.spec.properties}


class DeviceBook:
    """The devices and models this mapper serves, bounded by ``max_devices`` each."""

    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self._devices: dict[str, MappedDevice] = {}
        self._models: dict[str, dict[str, str]] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[MappedDevice]:
        return iter(list(self._devices.values()))

    def get(self, namespace: str, name: str) -> MappedDevice | None:
        return self._devices.get(f"{namespace or DEFAULT_NAMESPACE}/{name}")

    def put(self, device: MappedDevice) -> MappedDevice | None:
        """Holds ``device``; returns the one it replaces."""
        if device.key not in self._devices and len(self._devices) >= self.max_devices:
            raise _full(f"device {device.key}: this mapper serves kubeedge.max_devices = {self.max_devices}")
        old = self._devices.get(device.key)
        self._devices[device.key] = device
        return old

    def remove(self, namespace: str, name: str) -> MappedDevice | None:
        return self._devices.pop(f"{namespace or DEFAULT_NAMESPACE}/{name}", None)

    def put_model(self, key: str, types: dict[str, str]) -> None:
        if key not in self._models and len(self._models) >= self.max_devices:
            raise _full(f"device model {key}: this mapper holds kubeedge.max_devices = {self.max_devices}")
        self._models[key] = types

    def remove_model(self, namespace: str, name: str) -> None:
        self._models.pop(f"{namespace or DEFAULT_NAMESPACE}/{name}", None)

    def property_type(self, device: MappedDevice, prop: str) -> str:
        """The property's type in the device's model; "" when the model or property is not known."""
        return self._models.get(f"{device.namespace}/{device.model}", {}).get(prop, "")

    def replace(self, devices: list[MappedDevice], models: dict[str, dict[str, str]]) -> None:
        """Everything edgecore listed at registration, in place of what was held."""
        self._devices = {d.key: d for d in devices[: self.max_devices]}
        self._models = dict(list(models.items())[: self.max_devices])


def _full(text: str) -> LimitError:
    exc = LimitError(text)
    exc.exhausted = True  # type: ignore[attr-defined]
    return exc
