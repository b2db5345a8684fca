"""OPC UA adapter (asyncua 2.1): one subscription, one monitored item per configured node.

Settings::

    [[adapters]]
    type = "opcua"
    name = "plc-1"
    url = "opc.tcp://plc1.local:4840/"
    security_policy = "Basic256Sha256"   # None (explicit opt-in), Basic256Sha256, Aes128Sha256RsaOaep, ...
    security_mode = "SignAndEncrypt"     # or Sign
    certificate = "/etc/drsdtp/opcua/client.der"
    private_key = "/etc/drsdtp/opcua/client.pem"
    server_certificate = "/etc/drsdtp/opcua/plc1.der"   # pin the server; without it, trust on first use
    application_uri = "urn:drsdtp:node-1"  # must equal the URI in the client certificate
    username = "ingest"
    password_file = "/etc/drsdtp/opcua.pass"
    publishing_interval_ms = 500
    timestamps = "source"                # or "server"
    twin = "plc-1"                       # default twin for nodes that do not name one
    sampling_interval_ms = 100           # defaults for every node ...
    queue_size = 10
    retry_failed_s = 30                  # re-create monitored items the server refused (BadNodeIdUnknown)
    [[adapters.nodes]]
    node_id = "ns=2;s=Boiler.Temperature"   # or
    browse_path = "0:Objects/2:Boiler/2:Temperature"
    field = "temperature"
    deadband = 0.5                       # deadband filter ...
    deadband_type = "absolute"           # ... or "percent" (of the node's EURange property)

Status codes map to quality by their severity bits (Good/Uncertain/Bad); a Bad value travels without a value.
A value of a type that is no number is counted in ``malformed``; a notification whose conversion raises
anything (a timestamp out of range, an odd structure) is a dead letter holding its ``repr``, and the publish
loop goes on.
On session loss (asyncua's watchdog fires ``connection_lost_callback``) the session context fails and the
supervisor builds a new client, session, subscription and monitored items. asyncua's own auto-reconnect is off
so there is exactly one reconnect loop.

Writes (:class:`drsdtp.adapters.write.Writer`), on the session's client::

    [actuators.write]
    node_id = "ns=2;s=Boiler.Setpoint"   # a variable: its Value is written ...
    type = "Double"                      # ... as this variant type (Double, Float, Int16 ... UInt64, Boolean,
                                         # String)
    # or a method call, with the command's value (if any) and args as its input arguments:
    object_id = "ns=2;s=Boiler"
    method_id = "ns=2;s=Boiler.Start"
    arg_types = ["Double"]               # one variant type per argument

A Good status (or the method's return) acknowledges; a Bad status rejects with its name (BadTypeMismatch,
BadUserAccessDenied, BadOutOfRange ...); a lost session raises AdapterError (the executor retries).

Deadbands are requested from the server (a DataChangeFilter). Percent deadbands are optional in the OPC UA
spec and many servers (asyncua's among them) pass every change through, so the adapter also applies them
itself: it reads the node's EURange when it creates the item and drops a change within ``deadband`` percent
of that range from the last value it reported. A node without an EURange is refused and marked BAD (as the
spec has the server do), and retried like any refused item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from drsdtp.adapters.base import AdapterStats, Quality, Rejected, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common, require_module
from drsdtp.adapters.payloads import reason_of
from drsdtp.adapters.settings import Table
from drsdtp.adapters.write import NotConnectedError, WriteOutcome, WriteRequest, WriteStatus, WriteTarget
from drsdtp.errors import AdapterError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.ingest.ratelog import RateLimitedLog
from drsdtp.supervisor import raise_if_cancelling

__all__ = ["NodeSpec", "OpcUaAdapter", "OpcUaSettings", "build"]

_log = logging.getLogger(__name__)

POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
_HANDLE_BASE = 1000  # client handles are 1000 + index into the node table


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: str | None
    browse_path: tuple[str, ...] | None
    twin: str
    field: str
    sampling_interval_ms: float
    queue_size: int
    deadband: float
    deadband_type: str  # "absolute" | "percent"

    @property
    def label(self) -> str:
        return self.node_id or "/".join(self.browse_path or ())


@dataclass(frozen=True, slots=True)
class OpcUaSettings:
    common: CommonSettings
    url: str
    security_policy: str
    security_mode: str
    certificate: str | None
    private_key: str | None
    server_certificate: str | None
    application_uri: str
    username: str | None
    password: str | None = dc_field(default=None, repr=False)
    publishing_interval_ms: float = 500.0
    timestamps: str = "source"
    request_timeout_s: float = 4.0
    watchdog_interval_s: float = 1.0
    session_timeout_s: float = 60.0
    retry_failed_s: float = 30.0
    nodes: tuple[NodeSpec, ...] = ()


def _parse_node(t: Table, twin_default: str | None, sampling_ms: float, queue_size: int) -> NodeSpec:
    from asyncua import ua
    from asyncua.ua.uaerrors import UaError

    node_id = t.opt_str("node_id")
    browse = t.opt_str("browse_path")
    if (node_id is None) == (browse is None):
        raise t.error("node_id", "set exactly one of node_id or browse_path")
    if node_id is not None:
        try:
            ua.NodeId.from_string(node_id)
        except (ValueError, UaError) as exc:
            hint = "e.g. 'ns=2;s=Boiler.Temp' or 'i=2258'"
            raise t.error("node_id", f"not an OPC UA NodeId ({exc}); {hint}") from None
    path = tuple(browse.strip("/").split("/")) if browse is not None else None
    parts = [seg.partition(":") for seg in path or ()]
    if not all(ns.isdigit() and name for ns, _, name in parts):
        raise t.error("browse_path", "segments are 'namespace:BrowseName', e.g. '0:Objects/2:Boiler/2:Temp'")
    twin = t.get_str("twin", twin_default) if twin_default is not None or t.has("twin") else None
    if twin is None:
        raise t.error("twin", "is required (or set twin on the adapter)")
    spec = NodeSpec(
        node_id=node_id,
        browse_path=path,
        twin=twin,
        field=t.get_str("field"),
        sampling_interval_ms=t.get_float("sampling_interval_ms", sampling_ms, lo=0.0),
        queue_size=t.get_int("queue_size", queue_size, lo=0, hi=65535),
        deadband=t.get_float("deadband", 0.0, lo=0.0),
        deadband_type=t.choice("deadband_type", ("absolute", "percent"), "absolute"),
    )
    if spec.deadband_type == "percent" and spec.deadband > 100:
        raise t.error("deadband", "a percent deadband is at most 100")
    t.done()
    return spec


def parse_settings(raw: Mapping[str, Any], key: str) -> OpcUaSettings:
    t = Table(raw, key)
    require_module(t, "asyncua", "opcua")
    common = parse_common(t)
    url = t.get_str("url")
    if not url.startswith("opc.tcp://"):
        raise t.error("url", "must start with opc.tcp://")
    policy = t.choice("security_policy", POLICIES)
    mode = t.choice("security_mode", ("Sign", "SignAndEncrypt"), "SignAndEncrypt")
    cert = t.readable_file("certificate", None)
    key_file = t.readable_file("private_key", None)
    server_cert = t.readable_file("server_certificate", None)
    if policy != "None" and (cert is None or key_file is None):
        raise t.error("certificate", f"security_policy {policy} needs certificate and private_key")
    if policy == "None" and t.has("security_mode"):
        raise t.error("security_mode", "security_policy None has no mode (OPC 10000-2 4.6)")
    username = t.opt_str("username")
    password = t.secret("password")
    if password is not None and username is None:
        raise t.error("username", "is required when a password is set")
    publishing = t.get_float("publishing_interval_ms", 500.0, lo=0.0, lo_exclusive=True)
    twin_default = t.opt_str("twin")
    sampling_ms = t.get_float("sampling_interval_ms", 0.0, lo=0.0)  # defaults for the nodes
    queue_size = t.get_int("queue_size", 1, lo=0, hi=65535)
    nodes = tuple(
        _parse_node(n, twin_default, sampling_ms, queue_size) for n in t.tables("nodes", required=True)
    )
    labels = [(n.twin, n.field) for n in nodes]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise t.error(f"nodes[{i}].field", f"twin {label[0]!r} field {label[1]!r} is mapped twice")
    settings = OpcUaSettings(
        common=common,
        url=url,
        security_policy=policy,
        security_mode=mode,
        certificate=cert,
        private_key=key_file,
        server_certificate=server_cert,
        application_uri=t.get_str("application_uri", "urn:drsdtp:client"),
        username=username,
        password=password,
        publishing_interval_ms=publishing,
        timestamps=t.choice("timestamps", ("source", "server"), "source"),
        request_timeout_s=t.get_float("request_timeout_s", 4.0, lo=0.1),
        watchdog_interval_s=t.get_float("watchdog_interval_s", 1.0, lo=0.1),
        session_timeout_s=t.get_float("session_timeout_s", 60.0, lo=1.0),
        retry_failed_s=t.get_float("retry_failed_s", 30.0, lo=0.1),
        nodes=nodes,
    )
    t.done()
    return settings


def build(raw: Mapping[str, Any], key: str) -> OpcUaAdapter:
    return OpcUaAdapter(parse_settings(raw, key))


VARIANT_TYPES = (
    "Double",
    "Float",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Boolean",
    "String",
)


@dataclass(frozen=True, slots=True)
class OpcUaWriteTarget:
    node_id: str  # the variable, or the method's object
    type: str  # the variable's variant type ("" for a method)
    method_id: str = ""
    arg_types: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"method {self.method_id}" if self.method_id else f"node {self.node_id}"


def parse_write_target(raw: Mapping[str, Any], key: str) -> OpcUaWriteTarget:
    t = Table(raw, key)
    if t.has("method_id"):
        target = OpcUaWriteTarget(
            node_id=t.get_str("object_id"),
            type="",
            method_id=t.get_str("method_id"),
            arg_types=tuple(t.str_list("arg_types", [])),
        )
        for i, name in enumerate(target.arg_types):
            if name not in VARIANT_TYPES:
                raise t.error(f"arg_types[{i}]", f"expected one of {', '.join(VARIANT_TYPES)}, got {name!r}")
    else:
        target = OpcUaWriteTarget(node_id=t.get_str("node_id"), type=t.choice("type", VARIANT_TYPES))
    t.done()
    return target


def variant(value: object, type_name: str) -> Any:
    """``value`` as a variant of ``type_name``; ValueError when it is not one."""
    from asyncua import ua

    vt = getattr(ua.VariantType, type_name)
    if type_name == "Boolean":
        if not isinstance(value, bool):
            raise ValueError(f"{type_name} takes true or false, got {value!r}")
    elif type_name == "String":
        if not isinstance(value, str):
            raise ValueError(f"{type_name} takes text, got {value!r}")
    elif type_name in ("Double", "Float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{type_name} takes a number, got {value!r}")
        value = float(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ValueError(f"{type_name} takes a whole number, got {value!r}")
        value = int(value)
    return ua.Variant(value, vt)


def quality_of(status: int) -> int:
    """OPC UA StatusCode severity (top two bits) -> Quality; 11 (reserved) counts as Bad."""
    severity = (status >> 30) & 0b11
    return Quality.GOOD if severity == 0 else Quality.UNCERTAIN if severity == 1 else Quality.BAD


@dataclass(frozen=True, slots=True)
class _ReadBack:
    """A read of a written variable, shaped as the monitored-item notification it stands for."""

    ClientHandle: int  # asyncua's names
    Value: Any


class OpcUaAdapter(SharedSettings):
    kind = "opcua"

    def __init__(self, settings: OpcUaSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self._stats = AdapterStats()
        self._pending = SourceBatch(0)
        self._wake = asyncio.Event()
        # Percent deadbands applied here: node index -> absolute band, and the last value reported.
        self._bands: dict[int, float] = {}
        self._reported: dict[int, tuple[float, int]] = {}  # node index -> (value, quality) last reported
        self._malformed_log = RateLimitedLog(_log, f"{settings.common.name}: unusable values")
        self._client: Any = None  # the session's, while one is open: writes go over it
        self._handle_of: dict[Any, int] | None = None

    def write_target(self, raw: Mapping[str, Any], key: str) -> OpcUaWriteTarget:
        return parse_write_target(raw, key)

    async def write(self, target: WriteTarget, request: WriteRequest) -> WriteOutcome:
        from asyncua import ua
        from asyncua.ua.uaerrors import UaError, UaStatusCodeError

        assert isinstance(target, OpcUaWriteTarget)
        client = self._client
        if client is None:
            raise NotConnectedError(f"{self.name}: no session with {self.settings.url}")
        try:
            if target.method_id:
                values = ([] if request.value is None else [request.value]) + list(request.args)
                if len(values) != len(target.arg_types):
                    return WriteOutcome(
                        WriteStatus.REJECTED,
                        f"{target.label} takes {len(target.arg_types)} arguments, got {len(values)}",
                    )
                inputs = [variant(v, t) for v, t in zip(values, target.arg_types, strict=True)]
            else:
                inputs = [variant(request.value, target.type)]
        except ValueError as exc:
            return WriteOutcome(WriteStatus.REJECTED, f"{target.label}: {exc}")
        try:
            async with asyncio.timeout(request.timeout_s):
                if target.method_id:
                    obj = client.get_node(ua.NodeId.from_string(target.node_id))
                    result = await obj.call_method(ua.NodeId.from_string(target.method_id), *inputs)
                    return WriteOutcome(WriteStatus.ACKNOWLEDGED, f"{target.label} returned {result!r}"[:500])
                node_id = ua.NodeId.from_string(target.node_id)
                node = client.get_node(node_id)
                await node.write_value(ua.DataValue(inputs[0]))
        except UaStatusCodeError as exc:
            return WriteOutcome(WriteStatus.REJECTED, f"{target.label}: {type(exc).__name__}")
        except UaError as exc:
            raise AdapterError(f"{self.name}: {target.label}: {exc!r}") from exc
        await self._read_back(node, node_id)
        return WriteOutcome(WriteStatus.ACKNOWLEDGED, f"{target.label} written")

    async def _read_back(self, node: Any, node_id: Any) -> None:
        """Reads a written variable that is also subscribed back at once, as a notification: the command's
        echo (the device's reported value) does not wait for the subscription's next publish. Best effort:
        the subscription reports it anyway."""
        from asyncua.ua.uaerrors import UaError

        handle = self._handles().get(node_id)
        if handle is None:
            return
        try:
            dv = await node.read_data_value()
        except (UaError, OSError, TimeoutError) as exc:
            _log.debug("%s: read-back of %s: %s", self.name, node_id, exc)
            return
        self.on_data_change([_ReadBack(handle, dv)])

    def _handles(self) -> dict[Any, int]:
        """Configured node id -> client handle (nodes named by browse path are left out)."""
        if self._handle_of is None:
            from asyncua import ua

            self._handle_of = {
                ua.NodeId.from_string(n.node_id): _HANDLE_BASE + i
                for i, n in enumerate(self.settings.nodes)
                if n.node_id is not None
            }
        return self._handle_of

    @property
    def stats(self) -> AdapterStats:
        return self._stats

    # ---- notifications (called by asyncua's publish loop; must never block or raise) ---------------------

    def on_data_change(self, items: list[Any]) -> None:
        now = wall_ms()
        out = self._pending
        if not len(out) and not out.rejects:
            out.received_ms = now
        st = self._stats
        st.messages += len(items)
        for item in items:
            try:
                self._convert(item, now, out)
            except Exception as exc:  # one strange value must not end the publish loop or the session
                reason, detail = reason_of(exc)
                label = str(getattr(item, "ClientHandle", "?"))
                self._malformed_log.warn(reason, "item %s: %s: %s", label, reason, detail)
                out.reject(Rejected(f"handle {label}", now, reason, detail, repr(item)[:4096].encode()))
        if len(out) or out.rejects:
            self._wake.set()

    def _convert(self, item: Any, now: int, out: SourceBatch) -> None:
        """One monitored-item notification -> a reading (or a count)."""
        nodes, st = self.settings.nodes, self._stats
        idx = int(item.ClientHandle) - _HANDLE_BASE
        if not 0 <= idx < len(nodes):
            st.unknown += 1
            return
        node = nodes[idx]
        dv = item.Value
        status = int(dv.StatusCode.value) if dv.StatusCode is not None else 0
        quality = quality_of(status)
        use_source = self.settings.timestamps == "source"
        first, second = (
            (dv.SourceTimestamp, dv.ServerTimestamp)
            if use_source
            else (dv.ServerTimestamp, dv.SourceTimestamp)
        )
        stamp = first or second
        ts = int(stamp.timestamp() * 1000.0) if stamp is not None else now
        raw = dv.Value.Value if dv.Value is not None else None
        if quality == Quality.BAD or raw is None:
            out.add(node.twin, node.field, math.nan, ts, Quality.BAD)
            self._reported.pop(idx, None)
            return
        if isinstance(raw, bool):
            value = 1.0 if raw else 0.0
        elif isinstance(raw, int | float):
            value = float(raw)
        else:
            st.malformed += 1
            self._malformed_log.warn(
                type(raw).__name__, "node %s: %s is not a number", node.label, type(raw).__name__
            )
            return
        band = self._bands.get(idx)
        if band is not None:
            last = self._reported.get(idx)
            # As the server's StatusValue trigger: a change of quality passes whatever the value did.
            if last is not None and last[1] == quality and abs(value - last[0]) <= band:
                st.filtered += 1
                return
            self._reported[idx] = (value, quality)
        out.add(node.twin, node.field, value, ts, quality)

    def _take(self) -> SourceBatch:
        batch, self._pending = self._pending, SourceBatch(0)
        self._wake.clear()
        return batch

    def _mark_bad(self, indices: list[int], reason: str) -> None:
        now = wall_ms()
        for i in indices:
            node = self.settings.nodes[i]
            _log.warning("%s: node %s (%s/%s): %s", self.name, node.label, node.twin, node.field, reason)
            if not len(self._pending):
                self._pending.received_ms = now
            self._pending.add(node.twin, node.field, math.nan, now, Quality.BAD)
            self._stats.bad_reads += 1
        if indices:
            self._wake.set()

    # ---- connection ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncIterator[SourceBatch]]:
        from asyncua import ua
        from asyncua.client.client import Client
        from asyncua.ua.uaerrors import UaError

        s = self.settings
        client = Client(s.url, timeout=s.request_timeout_s, watchdog_intervall=s.watchdog_interval_s)
        client.application_uri = s.application_uri
        client.session_timeout = int(s.session_timeout_s * 1000)
        if s.username is not None:
            client.set_user(s.username)
        if s.password is not None:
            client.set_password(s.password)
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            _log.warning("%s: OPC UA session lost: %r", self.name, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        self._pending = SourceBatch(0)
        self._reported.clear()  # a new session reports every node's first value again
        self._wake.clear()
        try:
            if s.security_policy != "None":
                from asyncua.crypto import security_policies

                await client.set_security(
                    getattr(security_policies, f"SecurityPolicy{s.security_policy}"),
                    s.certificate or "",
                    s.private_key or "",
                    server_certificate=s.server_certificate,
                    mode=getattr(ua.MessageSecurityMode, s.security_mode),
                )
            await client.connect()
        except (OSError, TimeoutError, UaError) as exc:
            raise AdapterError(f"{self.name}: cannot open a session with {s.url}: {exc!r}") from exc
        try:
            sub, failed = await self._subscribe(client, lost)
            self._client = client
            _log.info(
                "%s: session with %s, %d of %d nodes monitored",
                self.name,
                s.url,
                len(s.nodes) - len(failed),
                len(s.nodes),
            )
            yield self._batches(client, sub, failed, lost)
        except (OSError, TimeoutError, UaError) as exc:
            raise AdapterError(f"{self.name}: {exc!r}") from exc
        finally:
            self._client = None
            await self._close(client, lost.is_set())

    async def _close(self, client: Any, lost: bool) -> None:
        from asyncua.ua.uaerrors import UaError

        # A lost session cannot be closed politely; do not wait for the dead peer.
        with contextlib.suppress(OSError, TimeoutError, UaError):
            async with asyncio.timeout(0.5 if lost else 2.0):
                await client.disconnect()
        client.disconnect_socket()

    async def _subscribe(self, client: Any, lost: asyncio.Event) -> tuple[Any, list[int]]:
        from asyncua import ua
        from asyncua.common.subscription import Subscription

        adapter = self

        class Collector(Subscription):
            """Hands each publish response to the adapter as one batch, instead of one task per value."""

            async def publish_callback(self, publish_result: Any) -> None:
                data = publish_result.NotificationMessage.NotificationData or ()
                for notif in data:
                    if isinstance(notif, ua.DataChangeNotification):
                        adapter.on_data_change(notif.MonitoredItems)
                    elif isinstance(notif, ua.StatusChangeNotification):
                        # The server ended the subscription (e.g. BadTimeout): start over with a new session.
                        _log.warning("%s: subscription status %s", adapter.name, notif.Status)
                        lost.set()

        s = self.settings
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = s.publishing_interval_ms
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = client.get_keepalive_count(s.publishing_interval_ms)
        params.MaxNotificationsPerPublish = 10000
        params.PublishingEnabled = True
        params.Priority = 0
        sub = Collector(client.uaclient.session, params, handler=None, queue_maxsize=1)
        await sub.init()
        failed = await self._monitor(client, sub, list(range(len(s.nodes))))
        return sub, failed

    async def _monitor(self, client: Any, sub: Any, indices: list[int]) -> list[int]:
        """Create monitored items for ``indices``; returns the ones that failed (marked BAD)."""
        from asyncua import ua
        from asyncua.ua.uaerrors import UaStatusCodeError

        requests, wanted, failed = [], [], []
        for i in indices:
            node = self.settings.nodes[i]
            try:
                if node.node_id is not None:
                    nodeid = ua.NodeId.from_string(node.node_id)
                else:
                    nodeid = (await client.nodes.root.get_child(list(node.browse_path or ()))).nodeid
            except UaStatusCodeError as exc:
                failed.append(i)
                self._mark_bad([i], f"browse path not found ({exc})")
                continue
            if node.deadband > 0 and node.deadband_type == "percent":
                band = await self._percent_band(client, nodeid, node.deadband)
                if band is None:
                    failed.append(i)
                    self._mark_bad([i], "a percent deadband needs the node's EURange property; it has none")
                    continue
                self._bands[i] = band
            requests.append(self._request(ua, nodeid, i))
            wanted.append(i)
        if requests:
            results = await sub.create_monitored_items(requests)
            for i, result in zip(wanted, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    failed.append(i)
                    self._mark_bad([i], f"server refused the monitored item: {result.name}")
        return failed

    async def _percent_band(self, client: Any, nodeid: Any, percent: float) -> float | None:
        """``percent`` of the node's EURange as an absolute band; None when the node has no usable range."""
        from asyncua.ua.uaerrors import UaError

        try:
            eu_range = await (await client.get_node(nodeid).get_child("0:EURange")).read_value()
            low, high = float(eu_range.Low), float(eu_range.High)
        except (UaError, AttributeError, TypeError, ValueError):
            return None
        if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
            return None
        return percent / 100.0 * (high - low)

    def _request(self, ua: Any, nodeid: Any, index: int) -> Any:
        node = self.settings.nodes[index]
        rv = ua.ReadValueId()
        rv.NodeId = nodeid
        rv.AttributeId = ua.AttributeIds.Value
        mp = ua.MonitoringParameters()
        mp.ClientHandle = _HANDLE_BASE + index
        mp.SamplingInterval = node.sampling_interval_ms
        mp.QueueSize = node.queue_size
        mp.DiscardOldest = True
        if node.deadband > 0:
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = 1 if node.deadband_type == "absolute" else 2
            flt.DeadbandValue = node.deadband
            mp.Filter = flt
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = mp
        return req

    async def _batches(
        self, client: Any, sub: Any, failed: list[int], lost: asyncio.Event
    ) -> AsyncIterator[SourceBatch]:
        loop = asyncio.get_running_loop()
        retry_at = loop.time() + self.settings.retry_failed_s
        while True:
            raise_if_cancelling()
            if len(self._pending) or self._pending.rejects:
                yield self._take()
                continue
            if lost.is_set():
                raise AdapterError(f"{self.name}: OPC UA session lost")
            timeout = max(0.0, retry_at - loop.time()) if failed else None
            wake = asyncio.ensure_future(self._wake.wait())
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait((wake, gone), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
                gone.cancel()
            if failed and loop.time() >= retry_at:
                failed = await self._monitor(client, sub, failed)
                retry_at = loop.time() + self.settings.retry_failed_s
