"""The node as a KubeEdge device mapper, over KubeEdge's DMI gRPC API (proto/kubeedge/, v1beta1).

Settings::

    [kubeedge]
    edgecore_socket = "/etc/kubeedge/dmi.sock"   # edgecore's DMI server (its default)
    socket = "/var/lib/drsdtp/kubeedge/drsdtp.sock"  # where edgecore calls back (default: under data_dir)
    protocol = "drsdtp"                           # the Devices' spec.protocol.protocolName it serves
    report_interval_s = 10.0                      # a device's report cycle when its properties give none
    min_report_interval_s = 1.0                   # the floor of any
    reports_per_s = 1.0                           # edgecore's own DMI rate limit (1/s, burst 100)

The session: serve DeviceMapperService on ``socket`` (edgecore calls it to register, update and remove
devices and models: :mod:`drsdtp.kubeedge.service`), then register with edgecore (MapperRegister, with its
devices and models in the reply) and report, per device and at its cycle, the twin's properties whose
reported or desired value changed (ReportDeviceStatus) and the device's state when it changes
(ReportDeviceStates: ``online`` while the node holds the twin, ``unknown`` before). edgecore unreachable:
register again with backoff. A cloud desired value enters the twin's desired state (``<field>.desired``)
through the API's Write, once per value the cloud states, audited as ``kubeedge``; which value was taken is
kept on disk so a restart does not state it again over a newer local intent (deploy/kubeedge/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

import grpc
import grpc.aio

from drsdtp import __version__
from drsdtp.api.caller import Caller, set_caller
from drsdtp.config import KubeEdgeConfig
from drsdtp.core import DESIRED_SUFFIX
from drsdtp.errors import (
    AdapterError,
    ConfigError,
    DrsdtpError,
    InvalidValueError,
    UnknownTwinError,
)
from drsdtp.history.files import atomic_write
from drsdtp.kubeedge.devices import DeviceBook, MappedDevice, parse_device, parse_model
from drsdtp.kubeedge.values import desired_value, property_of
from drsdtp.lifecycle import BackgroundService
from drsdtp.metrics import NodeMetrics
from drsdtp.supervisor import Backoff, Supervisor
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2 as dmi
from drsdtp.wire.kubeedge.dmi.v1beta1 import api_pb2_grpc as dmi_grpc
from drsdtp.wire.v1 import api_pb2

__all__ = ["DesiredLedger", "KubeEdgeMapper", "MapperStats", "TwinAccess", "add_mapper_metrics"]

log = logging.getLogger(__name__)

API_VERSION: Final = "v1beta1"
CALL_TIMEOUT_S: Final = 10.0
MAX_SOCKET_PATH: Final = 107  # sun_path
BURST: Final = 100  # edgecore's limiter's burst
CALLER: Final = Caller("kubeedge", authenticated=True)


@dataclass(frozen=True, slots=True)
class TwinAccess:
    """The two API methods the mapper uses (the node's one implementation of each, drsdtp.api.services)."""

    get_twin: Callable[[api_pb2.GetTwinRequest], Awaitable[api_pb2.Twin]]
    write: Callable[[api_pb2.WriteRequest], Awaitable[api_pb2.WriteReply]]


@dataclass(slots=True)
class MapperStats:
    registrations: int = 0
    registered: bool = False
    status_reports: int = 0  # ReportDeviceStatus calls edgecore took
    twins_reported: int = 0  # properties in them
    state_reports: int = 0
    desired_applied: int = 0  # cloud desired values written into twins
    refused: Counter[str] = field(default_factory=Counter)  # what was refused, by reason


class DesiredLedger:
    """Which cloud desired value of each device property was written (data_dir/kubeedge/desired.json), so one
    the cloud states once enters the twin once, across restarts; bounded by the devices held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._taken: dict[str, dict[str, str]] = {}
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self._taken = {
                    str(k): {str(p): str(t) for p, t in v.items()}
                    for k, v in loaded.items()
                    if isinstance(v, dict)
                }
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:  # a damaged ledger costs at most one repeated desired value each
            log.warning("kubeedge: ignoring %s: %s", path, exc)

    def taken(self, device: str, prop: str) -> str | None:
        return self._taken.get(device, {}).get(prop)

    def take(self, device: str, prop: str, text: str) -> None:
        self._taken.setdefault(device, {})[prop] = text
        self._save()

    def forget(self, device: str) -> None:
        if self._taken.pop(device, None) is not None:
            self._save()

    def size(self) -> int:
        return len(self._taken)

    def keep(self, devices: set[str]) -> None:
        """Forgets every device but ``devices``."""
        if set(self._taken) - devices:
            self._taken = {k: v for k, v in self._taken.items() if k in devices}
            self._save()

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self._taken, sort_keys=True).encode())
        except OSError as exc:
            log.warning("kubeedge: cannot keep %s: %s", self.path, exc)


class _Pace:
    """A token bucket: ``rate`` calls per second, ``BURST`` at once (edgecore refuses faster callers)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = float(BURST)
        self.at = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self.tokens = min(float(BURST), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            await asyncio.sleep((1.0 - self.tokens) / self.rate)
            self.tokens, self.at = 1.0, time.monotonic()
        self.tokens -= 1.0


class KubeEdgeMapper(BackgroundService):
    name = "kubeedge mapper"

    def __init__(self, config: KubeEdgeConfig, data_dir: Path, twins: TwinAccess) -> None:
        self.config = config
        self.socket = config.socket or data_dir / "kubeedge" / "drsdtp.sock"
        for key, path in (
            ("kubeedge.socket", self.socket),
            ("kubeedge.edgecore_socket", config.edgecore_socket),
        ):
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:
                raise ConfigError(key, f"{path} is longer than a UNIX socket path may be ({MAX_SOCKET_PATH})")
        self.twins = twins
        self.book = DeviceBook(config.max_devices)
        self.ledger = DesiredLedger(data_dir / "kubeedge" / "desired.json")
        self.stats = MapperStats()
        self._reported: dict[
            str, dict[str, tuple[str, str]]
        ] = {}  # device -> property -> (reported, desired)
        self._states: dict[str, str] = {}
        self._refused_desired: dict[
            tuple[str, str], str
        ] = {}  # not tried again until the cloud's value changes
        self._due: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._pace = _Pace(config.reports_per_s)
        self._server: grpc.aio.Server | None = None
        self.supervisor: Supervisor[grpc.aio.Channel] = Supervisor(
            "kubeedge", self._edgecore, self._session, Backoff(initial_s=0.2, max_s=config.max_backoff_s)
        )

    # --- lifecycle: the DMI server first (edgecore calls it as soon as we register) ---------------------

    async def __aenter__(self) -> Self:
        from drsdtp.kubeedge.service import MapperService

        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a socket an earlier run left
        server = grpc.aio.server(maximum_concurrent_rpcs=16)
        dmi_grpc.add_DeviceMapperServiceServicer_to_server(MapperService(self), server)
        if server.add_insecure_port(f"unix:{self.socket}") == 0:
            raise DrsdtpError(f"kubeedge: cannot serve DMI on {self.socket}")
        await server.start()
        self._server = server
        log.info("kubeedge: mapper %r serving DMI on %s", self.config.name, self.socket)
        return await super().__aenter__()

    async def run(self) -> None:
        await self.supervisor.run()

    async def stopped(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        with contextlib.suppress(OSError):
            self.socket.unlink()

    # --- the session with edgecore ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _edgecore(self) -> AsyncIterator[grpc.aio.Channel]:
        async with grpc.aio.insecure_channel(f"unix:{self.config.edgecore_socket}") as channel:
            yield channel

    async def _session(self, channel: grpc.aio.Channel) -> None:
        c = self.config
        edgecore = dmi_grpc.DeviceManagerServiceStub(channel)
        info = dmi.MapperInfo(
            name=c.name,
            version=__version__,
            api_version=API_VERSION,
            protocol=c.protocol,
            address=os.fsencode(self.socket),
            state="running",
        )
        try:
            reply = await edgecore.MapperRegister(
                dmi.MapperRegisterRequest(withData=True, mapper=info), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            raise AdapterError(
                f"kubeedge: cannot register with edgecore at {c.edgecore_socket}: {_rpc(exc)}"
            ) from exc
        await self.load(reply)
        self.stats.registrations += 1
        self.stats.registered = True
        log.info(
            "kubeedge: registered with edgecore: %d devices, %d models", len(self.book), len(reply.modelList)
        )
        # Not a TaskGroup: on 3.11 a failing child leaves the session's task cancelled for good, and the
        # supervisor would stop registering again (see drsdtp.gossip.grpc_transport._take_back_group_cancel).
        tasks = [
            asyncio.ensure_future(self._report_loop(edgecore)),
            asyncio.ensure_future(self._connection(channel)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stats.registered = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the failure that ended the session

    async def _connection(self, channel: grpc.aio.Channel) -> None:
        """Returns (by raising) when the connection to edgecore drops: a restarted edgecore is registered
        with again, and lists the devices anew."""
        state = channel.get_state()
        while state == grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(state)
            state = channel.get_state()
        raise AdapterError(f"kubeedge: lost edgecore at {self.config.edgecore_socket} ({state.name})")

    async def load(self, reply: dmi.MapperRegisterResponse) -> None:
        """The devices and models edgecore listed, in place of those held; their desired values applied."""
        models: dict[str, dict[str, str]] = {}
        for model in reply.modelList:
            try:
                key, types = parse_model(model)
            except DrsdtpError as exc:
                self.refuse("invalid_model", exc)
                continue
            models[key] = types
        devices = []
        for device in reply.deviceList:
            try:
                devices.append(parse_device(device, self.config.protocol))
            except DrsdtpError as exc:
                self.refuse("invalid_device", exc)
        self.book.replace(devices, models)
        self._reported.clear()
        self._states.clear()
        self._due.clear()
        held = {d.key for d in self.book}
        self._refused_desired = {k: v for k, v in self._refused_desired.items() if k[0] in held}
        # Devices edgecore no longer lists are forgotten only past the bound: an edgecore that lists none for
        # a while must not make the cloud's old values enter again over newer local intents.
        if self.ledger.size() > self.config.max_devices:
            self.ledger.keep(held)
        for d in self.book:
            await self.apply_desired(d)
        self._wake.set()

    async def _report_loop(self, edgecore: dmi_grpc.DeviceManagerServiceStub) -> None:
        while True:
            now = time.monotonic()
            for device in self.book:
                if self._due.get(device.key, 0.0) <= now:
                    self._due[device.key] = now + self.cycle_s(device)
                    await self.report(edgecore, device)
            self._wake.clear()
            wait = min([*self._due.values(), now + self.config.report_interval_s]) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await self._wake.wait()

    def cycle_s(self, device: MappedDevice) -> float:
        cycles = [p.report_cycle_ms for p in device.properties if p.report_cycle_ms > 0]
        chosen = min(cycles) / 1000 if cycles else self.config.report_interval_s
        return max(self.config.min_report_interval_s, chosen)

    async def report(self, edgecore: dmi_grpc.DeviceManagerServiceStub, device: MappedDevice) -> None:
        """The device's changed twins and, when it changed, its state."""
        twin = await self.read(device)
        state = "unknown" if twin is None else "online"
        if twin is not None:
            await self.apply_desired(device)  # a value that waited for the twin to exist
            changed, twins = self.changed_twins(device, twin)
            if twins:
                request = dmi.ReportDeviceStatusRequest(
                    deviceName=device.name,
                    deviceNamespace=device.namespace,
                    reportedDevice=dmi.DeviceStatus(twins=twins, reportToCloud=True),
                )
                if await self._call(edgecore.ReportDeviceStatus, request, device):
                    self.stats.status_reports += 1
                    self.stats.twins_reported += len(twins)
                    if self._held(device):  # a RemoveDevice during the call leaves nothing behind
                        self._reported.setdefault(device.key, {}).update(changed)
        if self._states.get(device.key) != state:
            request_state = dmi.ReportDeviceStatesRequest(
                deviceName=device.name, deviceNamespace=device.namespace, state=state
            )
            if await self._call(edgecore.ReportDeviceStates, request_state, device):
                self.stats.state_reports += 1
                if self._held(device):
                    self._states[device.key] = state

    def _held(self, device: MappedDevice) -> bool:
        return self.book.get(device.namespace, device.name) is not None

    async def _call(
        self, method: Callable[..., Awaitable[object]], request: object, device: MappedDevice
    ) -> bool:
        await self._pace.take()
        try:
            await method(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise AdapterError(
                    f"kubeedge: edgecore at {self.config.edgecore_socket}: {_rpc(exc)}"
                ) from exc
            self.refuse(
                "report_refused", DrsdtpError(f"device {device.key}: edgecore refused a report: {_rpc(exc)}")
            )
            return False
        return True

    async def read(self, device: MappedDevice) -> api_pb2.Twin | None:
        names = [f for p in device.properties for f in (p.field, p.field + DESIRED_SUFFIX)]
        try:
            return await self.twins.get_twin(api_pb2.GetTwinRequest(twin_id=device.twin, fields=names))
        except UnknownTwinError:
            return None

    def changed_twins(
        self, device: MappedDevice, twin: api_pb2.Twin
    ) -> tuple[dict[str, tuple[str, str]], list[dmi.Twin]]:
        values = {f.name: f for f in twin.fields}
        last = self._reported.get(device.key, {})
        now_ms = int(time.time() * 1000)
        changed: dict[str, tuple[str, str]] = {}
        twins = []
        for p in device.properties:
            if not p.report_to_cloud:
                continue
            reported = _property(values.get(p.field), now_ms)
            desired = _property(values.get(p.field + DESIRED_SUFFIX), now_ms)
            if reported is None and desired is None:
                continue
            # Both always set: edgecore reads each of them without checking.
            reported, desired = reported or dmi.TwinProperty(), desired or dmi.TwinProperty()
            seen = (reported.value, desired.value)
            if last.get(p.name) == seen:
                continue
            changed[p.name] = seen
            twins.append(dmi.Twin(propertyName=p.name, reported=reported, observedDesired=desired))
        return changed, twins

    # --- the cloud's desired values -----------------------------------------------------------------------

    async def apply_desired(self, device: MappedDevice) -> list[DrsdtpError]:
        """Writes each desired value the cloud states for ``device`` and the twin has not taken yet."""
        errors: list[DrsdtpError] = []
        for i, p in enumerate(device.properties):
            if not p.desired or self.ledger.taken(device.key, p.name) == p.desired:
                continue
            if self._refused_desired.get((device.key, p.name)) == p.desired:
                continue
            where = f"device {device.key}: spec.properties[{i}].desired.value"
            reason = "invalid_desired"
            try:
                value = desired_value(p.desired, self.book.property_type(device, p.name), where)
                reason = "desired_refused"
                await self._write_desired(device, p.field, value)
            except UnknownTwinError:
                continue  # the twin is not here yet: tried again at the device's next report
            except DrsdtpError as exc:
                refused = exc if reason == "invalid_desired" else InvalidValueError(f"{where}: {exc}")
                self._refused_desired[(device.key, p.name)] = p.desired
                self.refuse(reason, refused)
                errors.append(refused)
                continue
            self.ledger.take(device.key, p.name, p.desired)
            self.stats.desired_applied += 1
        return errors

    async def _write_desired(self, device: MappedDevice, field: str, value: api_pb2.FieldValue) -> None:
        request = api_pb2.WriteRequest(
            twins=[api_pb2.TwinWrite(twin_id=device.twin, ops=[api_pb2.FieldOp(field=field, desire=value)])],
            reason=f"KubeEdge Device {device.key}",
        )
        token = set_caller(CALLER)
        try:
            await self.twins.write(request)
        finally:
            token.var.reset(token)

    # --- what DeviceMapperService changes (drsdtp.kubeedge.service) ----------------------------------------

    def forget(self, device: MappedDevice) -> None:
        for book in (self._reported, self._states, self._due):
            book.pop(device.key, None)
        for key in [k for k in self._refused_desired if k[0] == device.key]:
            del self._refused_desired[key]
        self.ledger.forget(device.key)

    def changed(self, device: MappedDevice) -> None:
        """``device`` is new or was updated: report it in full at once."""
        self._reported.pop(device.key, None)
        self._due.pop(device.key, None)
        self._wake.set()

    def refuse(self, reason: str, exc: DrsdtpError) -> None:
        self.stats.refused[reason] += 1
        log.warning("kubeedge: %s", exc)


def _property(value: api_pb2.FieldValue | None, now_ms: int) -> dmi.TwinProperty | None:
    return None if value is None else property_of(value, now_ms)


def _rpc(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def add_mapper_metrics(metrics: NodeMetrics, mapper: KubeEdgeMapper) -> None:
    st = mapper.stats
    metrics.add_gauge(
        "drsdtp_kubeedge_registered",
        "1 while registered with edgecore as a DMI mapper.",
        lambda: float(st.registered),
    )
    metrics.add_gauge(
        "drsdtp_kubeedge_devices", "KubeEdge devices this mapper serves.", lambda: len(mapper.book)
    )
    metrics.add_counter(
        "drsdtp_kubeedge_registrations", "MapperRegister calls edgecore took.", lambda: st.registrations
    )
    metrics.add_counter(
        "drsdtp_kubeedge_status_reports", "ReportDeviceStatus calls edgecore took.", lambda: st.status_reports
    )
    metrics.add_counter(
        "drsdtp_kubeedge_twins_reported", "Device twins reported to edgecore.", lambda: st.twins_reported
    )
    metrics.add_counter(
        "drsdtp_kubeedge_state_reports", "Device states reported to edgecore.", lambda: st.state_reports
    )
    metrics.add_counter(
        "drsdtp_kubeedge_desired_applied",
        "Cloud desired values written into twins.",
        lambda: st.desired_applied,
    )
    metrics.add_labelled_counter(
        "drsdtp_kubeedge_refused",
        "What the mapper refused or edgecore refused, by reason.",
        ("reason",),
        lambda: {(reason,): n for reason, n in st.refused.items()},
    )
