"""MQTT adapter (aiomqtt 2.5, MQTT 5 or 3.1.1).

Settings::

    [[adapters]]
    type = "mqtt"
    name = "site-broker"
    host = "broker.local"
    port = 8883                  # default 1883, or 8883 with [adapters.tls]
    protocol = "5"               # or "3.1.1"
    client_id = "drsdtp-node-1"  # stable id: required for the persistent session
    persistent_session = true    # the broker keeps our subscriptions and queues QoS 1 while we are away
    session_expiry_s = 86400     # MQTT 5: how long the broker keeps that session
    receive_maximum = 1000       # MQTT 5: unacknowledged QoS 1 messages the broker may send us
    username = "node1"
    password_file = "/etc/drsdtp/mqtt.pass"
    keepalive_s = 30
    max_batch_messages = 5000    # messages drained into one batch
    max_queued_qos0 = 100000     # QoS 0 messages queued in the client before new ones are dropped (counted)
    max_unacked = 100000         # QoS 1 messages held unacknowledged before the session is reset (see _Inbox)
    max_payload_bytes = 1048576  # limits checked before a payload is parsed (drsdtp.adapters.payloads)
    max_depth = 32
    max_number_digits = 64
    [adapters.tls]
    ca_file = "/etc/drsdtp/ca.pem"
    cert_file = "/etc/drsdtp/node.pem"   # client certificate (optional)
    key_file = "/etc/drsdtp/node.key"
    insecure = false                     # true skips host-name verification (lab only)
    [[adapters.topics]]
    template = "site/{twin}/{field}"     # subscribed as site/+/+
    qos = 1
    payload = "number"                   # or json / json_batch, see drsdtp.adapters.payloads

Writes (:class:`drsdtp.adapters.write.Writer`), published on the session's client::

    [actuators.write]
    topic = "site/{twin}/set/{field}"    # {twin} {action} {field} {id} are filled in
    payload = "json"                     # {"id", "twin", "action", "value", "args"} (default), or a template:
                                         # "{value}" ({value} {id} {twin} {action} {field} {args} filled in)
    qos = 1                              # 0 or 1: a QoS 1 publish returns once the broker's PUBACK came
    retain = false
    ack_topic = "site/{twin}/ack"        # optional: the device answers {"id": "<command id>", "ok": true,
                                         # "detail": "..."}; without it the reported echo confirms

or, with a ``payload = "sparkplug_b"`` topic rule, a Sparkplug DCMD/NCMD typed as the device's birth declared
the metric (:mod:`drsdtp.adapters.sparkplug_write`)::

    [actuators.write]
    payload = "sparkplug_b"
    metric = "Setpoint"                  # default: the actuator's field

The adapter subscribes to every ack topic (``+`` for the placeholders) with its own topics; an ack message
never becomes a reading or a dead letter. ``ok: false`` rejects with the device's ``detail``; no ack within
the actuator's ``ack_timeout_s`` is an attempt that failed (retried; the command id lets the device drop a
repeat).

Acknowledgement: QoS 1 messages are acknowledged (PUBACK) only after the pipeline's sink has applied their
readings. aiomqtt 2.5.1 has no manual-ack option, so the adapter switches its paho client
(``aiomqtt.Client._client``, paho-mqtt 2.x) to ``manual_ack_set(True)`` and calls ``ack(mid, 1)`` from the
pipeline, in arrival order (MQTT requires PUBACKs in PUBLISH order): a batch's PUBACKs go out as one write
(:func:`drsdtp.adapters.mqtt_wire.send_pubacks`). Until the ack, the broker holds the
message and redelivers it on reconnect (persistent session); ``receive_maximum`` bounds how many it sends
ahead, which is also the end-to-end backpressure. If a future aiomqtt hides the paho client, the adapter
logs a warning and falls back to paho's automatic ack; the loss window is then the readings in flight
between receive and apply: at most the pipeline buffer (``ingest.buffer_readings``) plus one batch.

Receiving: once connected, the adapter reads the socket itself (:mod:`drsdtp.adapters.mqtt_wire`): PUBLISH
packets are framed in bulk into the inbox, one event-loop step per read of up to 64 KiB instead of one per
message, and paho gets every other packet to run the session with. Should paho or aiomqtt no longer expose
what that needs, the adapter logs a warning and lets aiomqtt read, message by message.

A message that cannot be decoded (whatever the decoder raised) or routed is that message's problem only: it
travels in its batch as a :class:`~drsdtp.adapters.base.Rejected` (a dead letter, stored by the pipeline)
and is acknowledged with the batch, in PUBLISH order, once stored; it is never redelivered in a loop and the
session goes on. Every message carries its own receive time, stamped when it enters the client's inbox;
it is the reading's time when the payload has none. QoS 0 messages still queued when a session ends are
lost (the broker does not resend them): they are counted in ``qos0_lost``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import TYPE_CHECKING, Any, cast

from drsdtp.adapters.base import AdapterStats, Rejected, SourceBatch
from drsdtp.adapters.common import CommonSettings, SharedSettings, parse_common, require_module
from drsdtp.adapters.mqtt_wire import Arrival, PublishReader, send_pubacks, take_partial_packet
from drsdtp.adapters.payloads import (
    DEFAULT_LIMITS,
    PayloadDecoder,
    PayloadError,
    PayloadLimits,
    parse_payload,
    parse_payload_limits,
    reason_of,
)
from drsdtp.adapters.settings import Table
from drsdtp.adapters.topics import TopicTemplate
from drsdtp.adapters.write import NotConnectedError, WriteOutcome, WriteRequest, WriteStatus, WriteTarget
from drsdtp.errors import AdapterError, ConfigError
from drsdtp.ingest.pipeline import wall_ms
from drsdtp.ingest.ratelog import RateLimitedLog

if TYPE_CHECKING:
    import aiomqtt

    # Sparkplug B (its decoder, commands and protobuf): imported only for a sparkplug_b topic rule or write.
    from drsdtp.adapters.sparkplug import SparkplugDecoder
    from drsdtp.adapters.sparkplug_write import SparkplugWriteTarget

__all__ = ["Arrival", "MqttAdapter", "MqttSettings", "MqttStats", "TlsSettings", "TopicRule", "build"]

_log = logging.getLogger(__name__)
_ROUTE_CACHE_MAX = 65536
PENDING_PUBLISHES_QUIET = 1000  # aiomqtt warns past this many publishes awaiting their ack (its default: 10)


@dataclass(frozen=True, slots=True)
class TopicRule:
    template: TopicTemplate
    qos: int
    decoder: PayloadDecoder
    twin: str | None  # fixed names, used when the template does not capture them
    field: str | None


@dataclass(slots=True)
class MqttStats(AdapterStats):
    qos0_lost: int = 0  # QoS 0 messages still queued in the client when a session ended


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    insecure: bool

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True, slots=True)
class MqttSettings:
    common: CommonSettings
    host: str
    port: int
    protocol: str  # "5" | "3.1.1"
    client_id: str | None
    persistent_session: bool
    session_expiry_s: int
    receive_maximum: int
    keepalive_s: int
    connect_timeout_s: float
    username: str | None
    password: str | None = dc_field(default=None, repr=False)
    tls: TlsSettings | None = None
    max_batch_messages: int = 5000
    max_queued_qos0: int = 100_000
    max_unacked: int = 100_000
    topics: tuple[TopicRule, ...] = ()
    limits: PayloadLimits = DEFAULT_LIMITS


def _parse_topic(t: Table, limits: PayloadLimits) -> TopicRule:
    template = TopicTemplate.parse(t.get_str("template"), t.path("template"))
    qos = t.get_int("qos", 1, lo=0, hi=2)
    if qos == 2:
        raise t.error("qos", "QoS 2 is not supported: use 1 (readings are idempotent, duplicates harmless)")
    twin = t.opt_str("twin")
    field = t.opt_str("field")
    if twin is not None and template.twin_at is not None:
        raise t.error("twin", "the template already captures {twin}")
    if field is not None and template.field_at is not None:
        raise t.error("field", "the template already captures {field}")
    decoder = parse_payload(t, limits)
    t.done()
    return TopicRule(template, qos, decoder, twin, field)


def parse_settings(raw: Mapping[str, Any], key: str) -> MqttSettings:
    t = Table(raw, key)
    require_module(t, "aiomqtt", "mqtt")
    common = parse_common(t)
    host = t.get_str("host")
    tls_t = t.table("tls")
    tls = None
    if tls_t is not None:
        tls = TlsSettings(
            tls_t.readable_file("ca_file", None),
            tls_t.readable_file("cert_file", None),
            tls_t.readable_file("key_file", None),
            tls_t.get_bool("insecure", False),
        )
        if tls.key_file and not tls.cert_file:
            raise tls_t.error("key_file", "needs cert_file")
        tls_t.done()
    port = t.get_int("port", 8883 if tls else 1883, lo=1, hi=65535)
    protocol = t.choice("protocol", ("5", "3.1.1"), "5")
    persistent = t.get_bool("persistent_session", True)
    client_id = t.opt_str("client_id")
    if persistent and client_id is None:
        raise t.error(
            "client_id",
            "is required with persistent_session = true (the broker finds the session by client id)",
        )
    username = t.opt_str("username")
    password = t.secret("password")
    if password is not None and username is None:
        raise t.error("username", "is required when a password is set")
    limits = parse_payload_limits(t)
    topics = tuple(_parse_topic(tt, limits) for tt in t.tables("topics", required=True))
    settings = MqttSettings(
        common=common,
        host=host,
        port=port,
        protocol=protocol,
        client_id=client_id,
        persistent_session=persistent,
        session_expiry_s=t.get_int("session_expiry_s", 86400, lo=0, hi=0xFFFFFFFF),
        receive_maximum=t.get_int("receive_maximum", 1000, lo=1, hi=65535),
        keepalive_s=t.get_int("keepalive_s", 30, lo=5, hi=65535),
        connect_timeout_s=t.get_float("connect_timeout_s", 10.0, lo=0.1),
        username=username,
        password=password,
        tls=tls,
        max_batch_messages=t.get_int("max_batch_messages", 5000, lo=1),
        max_queued_qos0=t.get_int("max_queued_qos0", 100_000, lo=1),
        max_unacked=t.get_int("max_unacked", 100_000, lo=1),
        topics=topics,
        limits=limits,
    )
    t.done()
    return settings


def build(raw: Mapping[str, Any], key: str) -> MqttAdapter:
    return MqttAdapter(parse_settings(raw, key))


Route = tuple[TopicRule, str | None, str | None]

_PLACEHOLDERS = ("{twin}", "{action}", "{field}", "{id}")


@dataclass(frozen=True, slots=True)
class MqttWriteTarget:
    topic: str  # a template of _PLACEHOLDERS
    payload: str  # "json" or a template
    qos: int
    retain: bool
    ack_topic: str | None

    @property
    def label(self) -> str:
        return f"topic {self.topic}"

    @property
    def ack_filter(self) -> str | None:
        if self.ack_topic is None:
            return None
        return "/".join("+" if seg in _PLACEHOLDERS else seg for seg in self.ack_topic.split("/"))


def parse_write_target(raw: Mapping[str, Any], key: str) -> MqttWriteTarget:
    t = Table(raw, key)
    target = MqttWriteTarget(
        topic=t.get_str("topic"),
        payload=t.get_str("payload", "json"),
        qos=t.get_int("qos", 1, lo=0, hi=1),
        retain=t.get_bool("retain", False),
        ack_topic=t.opt_str("ack_topic"),
    )
    for name, topic in (("topic", target.topic), ("ack_topic", target.ack_topic)):
        if topic is not None and ("+" in topic or "#" in topic or "\x00" in topic):
            raise t.error(name, "a topic to publish to has no wildcards (+, #)")
    t.done()
    return target


def _fill(template: str, request: WriteRequest, value_text: str) -> str:
    out = template
    for name, text in (("{twin}", request.twin), ("{action}", request.action), ("{field}", request.field),
                       ("{id}", request.command), ("{value}", value_text),
                       ("{args}", json.dumps(list(request.args), separators=(",", ":")))):  # fmt: skip
        out = out.replace(name, text)
    return out


def write_payload(target: MqttWriteTarget, request: WriteRequest) -> bytes:
    value = request.value.hex() if isinstance(request.value, bytes) else request.value
    if target.payload == "json":
        doc = {"id": request.command, "twin": request.twin, "action": request.action, "value": value,
               "args": list(request.args)}  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode()
    text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
    return _fill(target.payload, request, text).encode()


class MqttAdapter(SharedSettings):
    kind = "mqtt"

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self.common = settings.common
        self._stats = MqttStats()
        self._inbox: _Inbox | None = None  # the session's, while one is open
        self._routes: dict[str, Route | None] = {}
        self._unknown_log = RateLimitedLog(_log, f"{settings.common.name}: unroutable messages")
        self._malformed_log = RateLimitedLog(_log, f"{settings.common.name}: malformed payloads")
        self._drop_log = RateLimitedLog(_log, f"{settings.common.name}: client queue full")
        self._client_now: Any = None  # the session's aiomqtt client, while one is open: writes publish on it
        self._ack_filters: set[str] = set()  # subscribed with the session's topics
        self._acks: dict[str, asyncio.Future[tuple[bool, str]]] = {}  # command id -> its ack
        self._reader: PublishReader | None = None  # the session's, when it reads the socket in bulk
        self._framed_before = 0  # messages earlier sessions' readers framed

    @property
    def stats(self) -> MqttStats:
        return self._stats

    @property
    def framed_messages(self) -> int:
        """Messages framed in bulk off the socket (:mod:`drsdtp.adapters.mqtt_wire`), not by paho."""
        return self._framed_before + (self._reader.packets if self._reader is not None else 0)

    @property
    def queued_messages(self) -> int:
        """Messages received and not yet decoded (in the client's inbox)."""
        return self._inbox.qsize() if self._inbox is not None else 0

    # ---- decoding (pure; unit-tested without a broker) --------------------------------------------------

    def route(self, topic: str) -> Route | None:
        try:
            return self._routes[topic]
        except KeyError:
            pass
        found: Route | None = None
        for rule in self.settings.topics:
            m = rule.template.match(topic)
            if m is not None:
                twin = m[0] if m[0] is not None else rule.twin
                found = (rule, twin, m[1] if m[1] is not None else rule.field)
                break
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()  # topics are unbounded input; the cache must not be
        self._routes[topic] = found
        return found

    def decode(self, messages: Sequence[Arrival]) -> SourceBatch:
        """Readings of the messages that decode; the others as rejects. Never raises for a payload."""
        out = SourceBatch(messages[0].received_ms if messages else wall_ms())
        st = self._stats
        st.messages += len(messages)
        route = self.route
        acks = bool(self._ack_filters)
        for m in messages:
            if acks and self._take_ack(m):
                continue
            r = route(m.topic)
            if r is None:
                self._unknown_log.warn("topic", "no topic rule matches %r", m.topic)
                out.reject(Rejected(m.topic, m.received_ms, "no topic rule", "", m.payload, m.dup))
                continue
            rule, twin, field = r
            before = len(out)
            try:
                by_topic = getattr(rule.decoder, "decode_message", None)  # a TopicDecoder
                if by_topic is not None:
                    bad = by_topic(m.topic, m.payload, m.received_ms, out)
                else:
                    bad = rule.decoder.decode(m.payload, twin, field, m.received_ms, out)
            except Exception as exc:  # any exception is this payload's: it must not end the session
                out.truncate(before)  # a message is taken whole or not at all
                reason, detail = reason_of(exc)
                self._malformed_log.warn(reason, "topic %r: %s: %s", m.topic, reason, detail)
                out.reject(Rejected(m.topic, m.received_ms, reason, detail, m.payload, m.dup))
                continue
            if bad:
                st.malformed += bad
                self._malformed_log.warn("items", "topic %r: %d unusable items in a payload", m.topic, bad)
        return out

    def redecode(self, source: str, payload: bytes, received_ms: int) -> SourceBatch:
        """A dead letter decoded again with the current settings (replay); raises its error if it still
        fails."""
        batch = self.decode([Arrival(source, payload, received_ms)])
        self._stats.messages -= 1  # a replay is no new message from the broker
        if batch.rejects:
            bad = batch.rejects[0]
            raise PayloadError(bad.reason, bad.detail)
        return batch

    # ---- writes ---------------------------------------------------------------------------------------

    def write_target(self, raw: Mapping[str, Any], key: str) -> MqttWriteTarget | SparkplugWriteTarget:
        if isinstance(raw, Mapping) and raw.get("payload") == "sparkplug_b":
            if not self._sparkplug_decoders():
                raise ConfigError(
                    f"{key}.payload",
                    f'adapter {self.name!r} has no topic rule with payload = "sparkplug_b" to learn the '
                    "devices' births from",
                )
            from drsdtp.adapters.sparkplug_write import parse_target as parse_sparkplug_target

            return parse_sparkplug_target(raw, key)
        target = parse_write_target(raw, key)
        if target.ack_filter is not None:
            self._ack_filters.add(target.ack_filter)
        return target

    async def write(self, target: WriteTarget, request: WriteRequest) -> WriteOutcome:
        import aiomqtt

        client = self._client_now
        if client is None:
            raise NotConnectedError(f"{self.name}: no session with {self.settings.host}:{self.settings.port}")
        if not isinstance(target, MqttWriteTarget):
            from drsdtp.adapters.sparkplug_write import SparkplugWriteTarget

            assert isinstance(target, SparkplugWriteTarget)
            return await self._write_sparkplug(aiomqtt, client, target, request)
        topic = _fill(target.topic, request, "")
        payload = write_payload(target, request)
        ack: asyncio.Future[tuple[bool, str]] | None = None
        if target.ack_topic is not None:
            ack = self._acks[request.command] = asyncio.get_running_loop().create_future()
        try:
            try:
                await client.publish(
                    topic, payload, qos=target.qos, retain=target.retain, timeout=request.timeout_s
                )
            except aiomqtt.MqttError as exc:
                raise AdapterError(f"{self.name}: publish to {topic!r} failed: {exc}") from exc
            if ack is None:
                return WriteOutcome(WriteStatus.SENT, f"published to {topic}")
            async with asyncio.timeout(request.timeout_s):
                ok, detail = await ack
        finally:
            if ack is not None and self._acks.get(request.command) is ack:
                del self._acks[request.command]
        if not ok:
            return WriteOutcome(WriteStatus.REJECTED, f"{target.ack_topic}: {detail or 'not ok'}")
        return WriteOutcome(WriteStatus.ACKNOWLEDGED, detail or f"acknowledged on {target.ack_topic}")

    def _sparkplug_decoders(self) -> list[SparkplugDecoder]:
        from drsdtp.adapters.sparkplug import SparkplugDecoder  # only on a Sparkplug write's path

        return [r.decoder for r in self.settings.topics if isinstance(r.decoder, SparkplugDecoder)]

    async def _write_sparkplug(
        self, aiomqtt: Any, client: Any, target: SparkplugWriteTarget, request: WriteRequest
    ) -> WriteOutcome:
        """A DCMD/NCMD typed as the twin's birth declared the metric (drsdtp.adapters.sparkplug_write)."""
        from drsdtp.adapters.sparkplug_write import CommandRefused, command_message

        decoders = self._sparkplug_decoders()
        decoder = next((d for d in decoders if d.knows(request.twin)), decoders[0])
        metric = target.metric or request.field
        try:
            if not metric:
                raise CommandRefused("no metric to write: set write.metric for an action without a field")
            topic, payload = command_message(
                request.twin, metric, decoder.declared(request.twin, metric), request.value
            )
        except CommandRefused as exc:
            return WriteOutcome(WriteStatus.REJECTED, str(exc))
        try:
            await client.publish(topic, payload, qos=target.qos, timeout=request.timeout_s)
        except aiomqtt.MqttError as exc:
            raise AdapterError(f"{self.name}: publish to {topic!r} failed: {exc}") from exc
        return WriteOutcome(WriteStatus.SENT, f"{metric} published to {topic}")

    def _take_ack(self, message: Arrival) -> bool:
        """An ack to a command this adapter wrote (consumed, never a reading); False for other topics."""
        from paho.mqtt.client import topic_matches_sub

        if not any(topic_matches_sub(f, message.topic) for f in self._ack_filters):
            return False
        try:
            doc = json.loads(message.payload)
            command, ok, detail = str(doc["id"]), doc.get("ok", True), str(doc.get("detail", ""))[:500]
        except (ValueError, TypeError, KeyError, AttributeError):
            self._malformed_log.warn("ack", 'ack on %r is not {"id": ..., "ok": ...}', message.topic)
            self._stats.malformed += 1
            return True
        waiter = self._acks.get(command)
        if waiter is not None and not waiter.done():
            waiter.set_result((ok is True, detail))
        return True

    # ---- connection ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncIterator[SourceBatch]]:
        import aiomqtt

        client = self._client(aiomqtt)
        # Two aiomqtt 2.5 internals: the queue it built from our queue_type (drained without an await per
        # message) and the paho client (manual acks). Both are checked, not assumed.
        inbox = getattr(client, "_queue", None)
        if not isinstance(inbox, _Inbox):
            raise TypeError(f"aiomqtt {aiomqtt.__version__} no longer keeps its queue in Client._queue")
        paho: Any = getattr(client, "_client", None)
        manual_ack = hasattr(paho, "manual_ack_set") and hasattr(paho, "ack")
        if manual_ack:
            paho.manual_ack_set(True)
        else:
            _log.warning(
                "%s: this aiomqtt does not expose its paho client; QoS 1 is acknowledged on receipt",
                self.name,
            )
        if paho is not None and callable(getattr(paho, "on_message", None)):
            inbox.watch_dup_flags(paho)  # without it every message counts as a first delivery
        s = self.settings
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise AdapterError(f"{self.name}: cannot connect to {s.host}:{s.port}: {exc}") from exc
        self._inbox = inbox
        try:
            if paho is not None:
                _no_delay(paho)
                self._read_publishes(client, paho, inbox)
            await self._subscribe(aiomqtt, client)
            self._client_now = client
            _log.info(
                "%s: connected to %s:%d (MQTT %s), %d topic rules",
                self.name,
                s.host,
                s.port,
                s.protocol,
                len(s.topics),
            )
            yield self._batches(aiomqtt, client, inbox, paho if manual_ack else None)
        finally:
            self._inbox = None
            self._client_now = None
            if self._reader is not None:
                self._framed_before += self._reader.packets
                self._reader = None
            lost = inbox.discard()
            if lost:
                self._stats.qos0_lost += lost
                _log.warning("%s: session ended with %d QoS 0 messages unread: lost", self.name, lost)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                # A broken connection cannot be closed politely; the exception that got us here matters.
                async with asyncio.timeout(2.0):
                    await client.__aexit__(None, None, None)

    def _read_publishes(self, client: Any, paho: Any, inbox: _Inbox) -> None:
        """Take over the connected socket's read side (:mod:`drsdtp.adapters.mqtt_wire`): PUBLISH packets
        framed in bulk into the inbox, the rest to paho. Without the paho internals it needs (a future
        paho), aiomqtt keeps reading, message by message."""
        sock = getattr(paho, "_sock", None)
        loop = getattr(client, "_loop", None)
        disconnected = getattr(client, "_disconnected", None)
        if sock is None or not hasattr(sock, "recv") or loop is None or disconnected is None:
            _log.warning("%s: this paho/aiomqtt hides its socket; reading message by message", self.name)
            return
        prefix = take_partial_packet(paho)
        if prefix is None:
            _log.warning(
                "%s: this paho keeps its read state differently; reading message by message", self.name
            )
            return

        def on_error(exc: Exception) -> None:
            if not disconnected.done():  # once: the socket stays readable until the session is torn down
                _log.warning("%s: reading from the broker failed: %s", self.name, exc)
                disconnected.set_exception(exc)

        reader = self._reader = PublishReader(
            paho, sock, inbox, self.settings.protocol == "5", prefix, on_error
        )
        paho._sock = reader.feed  # paho reads control packets from it; sends go to the socket
        loop.add_reader(sock.fileno(), reader.on_readable)  # replaces aiomqtt's reader of this socket
        reader.start()

    def _client(self, aiomqtt: Any) -> aiomqtt.Client:
        from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        s = self.settings
        v5 = s.protocol == "5"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s if s.persistent_session else 0
            props.ReceiveMaximum = s.receive_maximum
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=s.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else not s.persistent_session,
            # paho refuses clean_start on 3.1.1 unless it is left at its default.
            clean_start=not s.persistent_session if v5 else MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,
            tls_context=s.tls.context() if s.tls else None,
            tls_insecure=s.tls.insecure if s.tls else None,
            queue_type=functools.partial(
                _Inbox, self._stats, s.max_queued_qos0, s.max_unacked, self._drop_log
            ),
        )
        # Commands to many actuators publish at once (one each, bounded by the actuators): not a warning.
        client.pending_calls_threshold = PENDING_PUBLISHES_QUIET
        return client  # type: ignore[no-any-return]

    async def _subscribe(self, aiomqtt: Any, client: aiomqtt.Client) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        s = self.settings
        if s.protocol == "5":
            # Resubscribing to a kept session must not replay every retained message each time.
            new_only = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
            topics: list[tuple[str, Any]] = [
                (r.template.filter, SubscribeOptions(qos=r.qos, retainHandling=new_only)) for r in s.topics
            ]
            topics += [
                (f, SubscribeOptions(qos=1, retainHandling=new_only)) for f in sorted(self._ack_filters)
            ]
        else:
            topics = [(r.template.filter, r.qos) for r in s.topics]
            topics += [(f, 1) for f in sorted(self._ack_filters)]
        try:
            granted = await client.subscribe(topics)
        except aiomqtt.MqttError as exc:
            raise AdapterError(f"{self.name}: subscribe failed: {exc}") from exc
        for (flt, _), code in zip(topics, granted, strict=False):
            value = code if isinstance(code, int) else int(getattr(code, "value", 0))
            if value >= 0x80:
                _log.error("%s: broker refused subscription %r (reason %s)", self.name, flt, code)

    async def _batches(
        self, aiomqtt: Any, client: aiomqtt.Client, inbox: _Inbox, paho: Any
    ) -> AsyncIterator[SourceBatch]:
        messages = client.messages
        limit = self.settings.max_batch_messages
        pending = _PendingAcks()
        while True:
            if inbox.overflowed and inbox.empty():
                # Some QoS 1 messages were refused by the full inbox. Acknowledge everything we did take (so
                # each session makes progress), then reset: the broker redelivers only what is still unacked.
                await pending.settled()
                raise AdapterError(
                    f"{self.name}: more than {self.settings.max_unacked} unacknowledged QoS 1 messages; "
                    "resetting the session so the broker redelivers the ones refused"
                )
            try:
                first = cast(Arrival, await anext(messages))  # our inbox holds Arrivals, not Messages
            except aiomqtt.MqttError as exc:
                raise AdapterError(f"{self.name}: connection lost: {exc.__cause__ or exc}") from exc
            # Drain what is already queued without an await per message: one batch, one core call.
            msgs: list[Arrival] = [first]
            inbox.take(msgs, limit)
            batch = self.decode(msgs)
            await self._send_requests(aiomqtt, client)
            if paho is not None:
                mids = [m.mid for m in msgs if m.qos == 1]
                if mids:
                    batch.ack = pending.acker(paho, mids, self._stats)
            yield batch

    async def _send_requests(self, aiomqtt: Any, client: aiomqtt.Client) -> None:
        """Messages decoders ask the adapter to publish (Sparkplug B rebirth requests), QoS 0."""
        for rule in self.settings.topics:
            take = getattr(rule.decoder, "take_rebirths", None)
            if take is None:
                continue
            for topic, payload in take():
                try:
                    await client.publish(topic, payload, qos=0)
                except aiomqtt.MqttError as exc:
                    raise AdapterError(f"{self.name}: publishing {topic!r} failed: {exc}") from exc


def _no_delay(paho: Any) -> None:
    """Nagle off on the session's socket: paho leaves it on, so a small packet written after another (a
    PUBACK then a command's PUBLISH) waits for the broker's delayed ACK, ~40 ms on Linux, per hop."""
    sock = getattr(paho, "_sock", None)
    if sock is None or not hasattr(sock, "setsockopt"):
        return
    with contextlib.suppress(OSError):  # not TCP (a unix socket): nothing to turn off
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PendingAcks:
    """Counts batches handed to the pipeline whose PUBACKs are not sent yet."""

    def __init__(self) -> None:
        self._open = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    def acker(self, paho: Any, mids: list[int], stats: AdapterStats) -> Callable[[], None]:
        self._open += 1
        self._none_open.clear()

        def ack() -> None:
            # On a dropped connection this queues into a dead client: harmless, the broker redelivers.
            send_pubacks(paho, mids)
            stats.acked += len(mids)
            self._open -= 1
            if not self._open:
                self._none_open.set()

        return ack

    async def settled(self) -> None:
        await self._none_open.wait()


class _Inbox(asyncio.Queue[Any]):
    """The client's incoming queue (aiomqtt's ``queue_type``): holds each message as an :class:`Arrival`
    stamped with its receive time.

    QoS 0 is bounded: beyond ``qos0_limit`` new messages are dropped and counted. QoS 1 is never dropped
    silently: an unacknowledged message the broker believes delivered only comes back after a reconnect. The
    broker bounds it (MQTT 5 receive maximum; for 3.1.1 its ``max_inflight_messages``, mosquitto's default
    20); should a broker exceed ``qos1_limit`` anyway, the inbox marks itself overflowed and the session is
    reset, so the broker redelivers everything still unacknowledged.
    """

    def __init__(
        self,
        stats: AdapterStats,
        qos0_limit: int,
        qos1_limit: int,
        drop_log: RateLimitedLog,
        maxsize: int = 0,
    ) -> None:
        super().__init__(0)
        self.overflowed = False
        self._stats = stats
        self._qos0_limit = qos0_limit
        self._qos1_limit = qos1_limit
        self._drop_log = drop_log
        self._dup = False  # the DUP flag of the message being put (aiomqtt's Message drops it)

    def watch_dup_flags(self, paho: Any) -> None:
        """Note each message's DUP flag from paho's callback, which calls aiomqtt's (and so put_nowait)."""
        inner = paho.on_message

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            self._dup = bool(getattr(message, "dup", False))
            inner(client, userdata, message)

        paho.on_message = on_message

    def put_nowait(self, item: Any) -> None:
        """aiomqtt's path (messages paho read before the adapter took the socket over)."""
        payload = item.payload if isinstance(item.payload, bytes) else str(item.payload).encode()
        self.offer_many([Arrival(item.topic.value, payload, wall_ms(), item.qos, item.mid, self._dup)])

    def offer_many(self, arrivals: list[Arrival]) -> None:
        """Queue arrivals in order, within the bounds: all but the last straight into the storage, the last
        through ``put_nowait``, which wakes the waiting consumer (``task_done``/``join`` are not used)."""
        size = self.qsize()
        if size + len(arrivals) > min(self._qos0_limit, self._qos1_limit):
            arrivals = self._within_bounds(arrivals, size)
        if not arrivals:
            return
        self._items.extend(arrivals[:-1])
        super().put_nowait(arrivals[-1])

    # asyncio.Queue's storage hooks, over a deque of our own that offer_many and take use in bulk.
    def _init(self, maxsize: int) -> None:
        self._items: collections.deque[Arrival] = collections.deque()

    def _put(self, item: Arrival) -> None:
        self._items.append(item)

    def _get(self) -> Arrival:
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def _within_bounds(self, arrivals: list[Arrival], size: int) -> list[Arrival]:
        kept: list[Arrival] = []
        for a in arrivals:
            if a.qos == 0 and size >= self._qos0_limit:
                self._stats.dropped += 1
                self._drop_log.warn("qos0", "dropping QoS 0 messages: %d queued", size)
            elif a.qos > 0 and size >= self._qos1_limit:
                self.overflowed = True
            else:
                kept.append(a)
                size += 1
        return kept

    def take(self, into: list[Arrival], limit: int) -> None:
        """Move queued arrivals into ``into`` until it holds ``limit`` (no await, no wakeups: unbounded)."""
        items = self._items
        into.extend(items.popleft() for _ in range(min(limit - len(into), len(items))))

    def discard(self) -> int:
        """Empty the queue (its session ended); returns how many QoS 0 messages were in it (lost: QoS 1
        ones come back from the broker)."""
        lost = 0
        while not self.empty():
            lost += self.get_nowait().qos == 0
        return lost
