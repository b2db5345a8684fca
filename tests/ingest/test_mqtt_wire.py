"""The MQTT adapter's bulk receive path: framing PUBLISH packets off the socket, PUBACKs in one write, and a
real broker session read that way (QoS 1 in order, control packets still paho's)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiomqtt
import pytest

from drsdtp.adapters import build_adapter
from drsdtp.adapters.mqtt import MqttAdapter
from drsdtp.adapters.mqtt_wire import (
    Arrival,
    ControlFeed,
    MalformedPacketError,
    pubacks,
    split_packets,
    take_partial_packet,
)
from drsdtp.ingest.runner import AdapterRunner

from .support import FAST, DictInterner, Mosquitto, RecordingSink, serving, wait_until

MS = 1_700_000_000_000
# MQTT 3.1.1 PUBLISH, QoS 1, topic "a/b", packet id 10, payload "hi" (spec section 3.3).
PUBLISH_Q1 = bytes([0x32, 9, 0, 3]) + b"a/b" + bytes([0, 10]) + b"hi"
PINGRESP = bytes([0xD0, 0])
SUBACK = bytes([0x90, 3, 0, 1, 1])


def publish(topic: bytes, payload: bytes, qos: int = 0, mid: int = 0, props: bytes | None = None,
            dup: bool = False) -> bytes:  # fmt: skip
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if props is not None:  # MQTT 5: property length (one byte here), properties
        body += bytes([len(props)]) + props
    body += payload
    n, length = len(body), bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | (qos << 1) | (8 if dup else 0)]) + bytes(length) + body


def frame(data: bytes, v5: bool = False) -> tuple[list[Arrival], bytes, int]:
    arrivals: list[Arrival] = []
    control = bytearray()
    used = split_packets(bytearray(data), v5, MS, arrivals, control)
    return arrivals, bytes(control), used


def test_a_spec_publish_is_framed_into_an_arrival() -> None:
    arrivals, control, used = frame(PUBLISH_Q1)
    assert arrivals == [Arrival("a/b", b"hi", MS, 1, 10, False)]
    assert (control, used) == (b"", len(PUBLISH_Q1))


def test_mqtt5_properties_are_skipped_and_the_dup_flag_kept() -> None:
    pkt = publish(b"s/t", b"21.5", qos=1, mid=65535, props=bytes([0x01, 0x01]), dup=True)
    assert frame(pkt, v5=True)[0] == [Arrival("s/t", b"21.5", MS, 1, 65535, True)]
    assert frame(publish(b"s/t", b"1", props=b""), v5=True)[0] == [Arrival("s/t", b"1", MS, 0, 0, False)]


def test_control_packets_go_to_paho_in_order_and_a_partial_packet_waits() -> None:
    big = publish(b"x/y", b"7" * 300)  # a two-byte remaining length
    stream = SUBACK + PUBLISH_Q1 + PINGRESP + big
    arrivals, control, used = frame(stream)
    assert [a.payload for a in arrivals] == [b"hi", b"7" * 300]
    assert control == SUBACK + PINGRESP
    assert used == len(stream)
    for cut in range(len(stream)):  # a packet split anywhere is taken once it is whole, never misread
        head = frame(stream[:cut])
        assert head[2] <= cut
        assert [a.payload for a in head[0]] == [a.payload for a in arrivals][: len(head[0])]


def test_qos2_publishes_are_left_to_paho() -> None:
    pkt = publish(b"q/2", b"1", qos=2, mid=5)
    assert frame(pkt) == ([], pkt, len(pkt))


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (bytes([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), "longer than 4 bytes"),
        (bytes([0x30, 4, 0, 9]) + b"ab", "topic longer than the packet"),
        (bytes([0x30, 1, 0]), "without a topic"),
        # the header's fields past the packet's end, whether other bytes follow it or not
        (bytes([0x32, 3, 0, 1]) + b"a", "without its packet id"),
        (bytes([0x32, 3, 0, 1]) + b"a" + bytes([0x30, 3, 0, 1]) + b"b", "without its packet id"),
        (bytes([0x30, 3, 0, 1]) + b"a", "properties length past the packet"),
        (bytes([0x30, 4, 0, 1]) + b"a" + bytes([0x80]), "properties length past the packet"),
    ],
)
def test_bytes_that_are_not_mqtt_are_refused_with_the_reason(data: bytes, what: str) -> None:
    with pytest.raises(MalformedPacketError, match=what):
        frame(data, v5=True)


def test_pubacks_are_one_buffer_of_four_byte_packets_in_order() -> None:
    assert pubacks([1, 258, 65535]) == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2, 0x40, 2, 255, 255])


def test_a_packet_paho_started_reading_is_handed_back_whole() -> None:
    class Paho:
        def __init__(self) -> None:
            self._in_packet: dict[str, Any] = {
                "command": 0x32, "have_remaining": 1, "remaining_count": [9], "remaining_mult": 128,
                "remaining_length": 9, "packet": bytearray(b"\x00\x03a/"), "to_process": 4, "pos": 0,
            }  # fmt: skip

    paho = Paho()
    prefix = take_partial_packet(paho)
    assert prefix is not None and prefix + PUBLISH_Q1[len(prefix) :] == PUBLISH_Q1
    assert paho._in_packet["command"] == 0
    assert take_partial_packet(paho) == b""
    assert take_partial_packet(object()) is None  # another paho: the fast path stays off


def test_the_control_feed_serves_paho_then_reports_the_end() -> None:
    feed = ControlFeed(sock=None)
    feed.feed(PINGRESP)
    assert feed.recv(1) + feed.recv(10) == PINGRESP
    with pytest.raises(BlockingIOError):
        feed.recv(1)
    feed.end(None)
    assert feed.recv(1) == b""


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_burst_is_framed_in_bulk_applied_in_order_and_acknowledged(
    broker: Mosquitto, sink: RecordingSink, interner: DictInterner, protocol: str
) -> None:
    n = 3000
    cfg = {
        "type": "mqtt",
        "name": "site",
        "host": "127.0.0.1",
        "port": broker.port,
        "protocol": protocol,
        "client_id": f"drsdtp-wire-{time.monotonic_ns()}",
        "topics": [{"template": "site/{twin}/{field}", "qos": 1, "payload": "number"}],
    }
    a = build_adapter(cfg, "adapters[0]")
    assert isinstance(a, MqttAdapter)
    runner = AdapterRunner(a, sink, interner, FAST)
    async with serving(runner):
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
            for i in range(n):
                await pub.publish(f"site/d{i % 7}/seq", str(i), qos=1)
        await wait_until(lambda: a.stats.acked == n, 20, "every message applied and acknowledged")
    assert [int(r.value) for r in sink.rows] == list(range(n))  # in order
    assert a.framed_messages == n  # none went through paho's message path
    assert runner.pipeline.stats.batches < n  # many messages per core call


async def test_a_broker_sending_bytes_that_are_not_mqtt_fails_the_session_not_the_node(
    sink: RecordingSink, interner: DictInterner
) -> None:
    """A stand-in broker answers CONNECT and SUBSCRIBE, sends one good PUBLISH, then garbage: the reading is
    applied, the session fails naming the damage, and the adapter reconnects (and gets the same again)."""
    sessions = 0

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sessions
        sessions += 1
        await reader.read(1024)  # CONNECT
        writer.write(bytes([0x20, 2, 0, 0]))  # CONNACK, MQTT 3.1.1, accepted
        subscribe = await reader.read(1024)
        writer.write(bytes([0x90, 3, subscribe[2], subscribe[3], 1]))  # SUBACK, QoS 1 granted
        writer.write(publish(b"site/a/t", b"1.5") + bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
        await writer.drain()
        await reader.read(1024)  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = {
        "type": "mqtt",
        "name": "site",
        "host": "127.0.0.1",
        "port": port,
        "protocol": "3.1.1",
        "client_id": "drsdtp-wire-garbage",
        "topics": [{"template": "site/{twin}/{field}", "qos": 1, "payload": "number"}],
    }
    runner = AdapterRunner(build_adapter(cfg, "adapters[0]"), sink, interner, FAST)
    async with server, serving(runner):
        await wait_until(lambda: runner.supervisor.stats.failures >= 2, 20, "two sessions failed, retried")
        error = runner.supervisor.stats.last_error  # before the block's end stops the runner
    assert sink.values("a", "t")[0] == 1.5
    assert "connection lost: remaining length longer than 4 bytes" in error
    assert sessions >= 2
