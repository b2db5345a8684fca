"""The MQTT adapter's receive path: PUBLISH packets framed straight off the socket, in bulk.

paho-mqtt reads a packet with three ``recv`` calls (one byte, the length bytes, the rest), builds an
``MQTTMessage`` and aiomqtt a ``Message`` (its topic validated) for every message, and reads one packet per
event-loop step: profiles of the node draining a backlog put about 70 % of its time there. This module takes
over the socket's read side once the session is connected: one ``recv`` of up to :data:`READ_BYTES` per
readiness event, PUBLISH packets (QoS 0 and 1) split out here into :class:`Arrival` tuples and queued as a
whole; every other packet (CONNACK, SUBACK, PINGRESP, PUBACK of our own writes, QoS 2 flows) is handed to
paho unchanged through :class:`ControlFeed`, so paho still runs the session: keepalive, acks we send,
subscriptions, publishes and disconnects.

Incoming QoS 1 needs no state on our side: paho (manual acks) keeps none for it either; the adapter sends
each PUBACK with ``paho.ack(mid, 1)`` once the readings are durable, as before.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from drsdtp.ingest.pipeline import wall_ms

if TYPE_CHECKING:
    import numpy as np
else:
    from drsdtp.lazy import numpy as np  # on the first message: an idle adapter loads no numpy (issue 13)

__all__ = ["READ_BYTES", "Arrival", "ControlFeed", "PublishReader", "send_pubacks", "split_packets"]

_log = logging.getLogger(__name__)

READ_BYTES = 65536  # per readiness event: a few thousand small messages, then the consumers get a turn
_PUBLISH = 3
_PUBACK = 0x40
# paho's partial-packet state (paho-mqtt 2.x ``Client._in_packet``): checked before we take the socket over.
_PAHO_IN_PACKET_KEYS = frozenset(("command", "have_remaining", "remaining_count", "packet", "to_process"))


class Arrival(NamedTuple):
    """One message as the client's inbox took it, stamped with its own receive time (wall-clock ms)."""

    topic: str
    payload: bytes
    received_ms: int
    qos: int = 0
    mid: int = 0
    dup: bool = False  # the broker says it may have sent this message before (a redelivery)


class Sink(Protocol):
    def offer_many(self, arrivals: list[Arrival]) -> None: ...


class MalformedPacketError(ValueError):
    """The broker sent bytes that are not MQTT: the session cannot go on."""


def split_packets(
    buf: bytearray, v5: bool, received_ms: int, arrivals: list[Arrival], control: bytearray
) -> int:
    """Frame the complete packets at the start of ``buf``: PUBLISH at QoS 0/1 into ``arrivals``, every other
    packet's bytes appended to ``control`` (in order). Returns the bytes consumed (a partial packet stays)."""
    n = len(buf)
    i = 0
    append = arrivals.append
    while i + 2 <= n:
        b0 = buf[i]
        # Remaining length: 1-4 bytes, 7 bits each, least significant first.
        j = i + 1
        length = 0
        shift = 0
        while True:
            if j >= n:
                return i
            byte = buf[j]
            j += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 21:
                raise MalformedPacketError("remaining length longer than 4 bytes")
        end = j + length
        if end > n:
            return i
        qos = (b0 >> 1) & 3
        if b0 >> 4 != _PUBLISH or qos == 2:
            control += buf[i:end]
            i = end
            continue
        if length < 2:
            raise MalformedPacketError("PUBLISH without a topic")
        k = j + 2 + ((buf[j] << 8) | buf[j + 1])
        if k > end:
            raise MalformedPacketError("PUBLISH topic longer than the packet")
        topic = buf[j + 2 : k].decode("utf-8", "replace")
        mid = 0
        if qos:
            if k + 2 > end:
                raise MalformedPacketError("PUBLISH at QoS 1 without its packet id")
            mid = (buf[k] << 8) | buf[k + 1]
            k += 2
        if v5:  # properties: a length, then that many bytes (none we need: no topic aliases are granted)
            plen = 0
            shift = 0
            while True:  # within the packet: past its end are the next packet's bytes, or none yet
                if k >= end or shift > 21:
                    raise MalformedPacketError("PUBLISH properties length past the packet")
                byte = buf[k]
                k += 1
                plen |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
            k += plen
        if k > end:
            raise MalformedPacketError("PUBLISH header longer than the packet")
        append(Arrival(topic, bytes(buf[k:end]), received_ms, qos, mid, bool(b0 & 8)))
        i = end
    return i


def pubacks(mids: list[int]) -> bytes:
    """PUBACK packets for ``mids``, in order: 0x40, remaining length 2, the packet id (MQTT 3.1.1; in MQTT 5
    the same 4 bytes mean reason code 0, success, without properties)."""
    out = np.empty((len(mids), 4), dtype=np.uint8)
    ids = np.asarray(mids, dtype=np.uint16)
    out[:, 0] = _PUBACK
    out[:, 1] = 2
    out[:, 2] = ids >> 8
    out[:, 3] = ids & 0xFF
    return out.tobytes()


def send_pubacks(paho: Any, mids: list[int]) -> None:
    """Acknowledge a batch's QoS 1 messages, in order, as one write queued on paho's outgoing packets (its
    ``ack`` builds, logs and writes each PUBACK on its own: a syscall per message). On a paho without that
    queue, one ``ack`` per message."""
    queue = getattr(paho, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            paho.ack(mid, 1)
        return
    queue(_PUBACK, pubacks(mids), 0, 1)


class ControlFeed:
    """What paho sees as its socket once we read: ``recv`` serves the control packets we framed, sends and
    everything else go to the real socket. At the end of the stream ``recv`` gives b"" (or raises the
    error), which paho handles as a lost connection."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._end: OSError | None = None
        self._ended = False

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def end(self, error: OSError | None) -> None:
        self._ended, self._end = True, error

    @property
    def pending_control(self) -> bool:
        return bool(self._buf) or self._ended

    def recv(self, size: int) -> bytes:
        if self._buf:
            out = bytes(self._buf[:size])
            del self._buf[:size]
            return out
        if self._ended:
            if self._end is not None:
                raise self._end
            return b""
        raise BlockingIOError

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def take_partial_packet(paho: Any) -> bytes | None:
    """The bytes of a packet paho started reading (b"" if none); None if this paho keeps its state
    differently (then the fast path must not take over)."""
    state = getattr(paho, "_in_packet", None)
    if not isinstance(state, dict) or not state.keys() >= _PAHO_IN_PACKET_KEYS:
        return None
    if not state["command"]:
        return b""
    # Command byte, the length bytes read so far (complete or not), the body read so far: the stream's prefix.
    partial = bytes([state["command"]]) + bytes(state["remaining_count"]) + bytes(state["packet"])
    state.update(command=0, have_remaining=0, remaining_count=[], remaining_mult=1, remaining_length=0)
    state.update(packet=bytearray(), to_process=0, pos=0)
    return partial


class PublishReader:
    """Reads the session's socket on readiness: frames, queues PUBLISH arrivals, lets paho run the rest."""

    def __init__(
        self, paho: Any, sock: Any, sink: Sink, v5: bool, prefix: bytes, on_error: Callable[[Exception], None]
    ) -> None:
        self._paho = paho
        self._sock = sock
        self._sink = sink
        self._v5 = v5
        self._buf = bytearray(prefix)
        self._on_error = on_error
        self._ssl = isinstance(sock, ssl.SSLSocket)
        self.feed = ControlFeed(sock)
        self.packets = 0

    def on_readable(self) -> None:
        try:
            self._read()
        except Exception as exc:  # a broken stream ends the session, never the event loop
            self._on_error(exc)  # first: the session's error names the damage
            with contextlib.suppress(Exception):  # the session is failing already: nothing more to tell
                self._end(None)  # paho sees the end, closes the socket (and our reader with it)

    def _read(self) -> None:
        sock, buf = self._sock, self._buf
        try:
            data = sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            data = None
        except OSError as exc:
            self._end(exc)
            return
        if data is not None:
            if not data:
                self._end(None)
                return
            buf += data
            while self._ssl and sock.pending():  # decrypted bytes the socket's readiness will not announce
                buf += sock.recv(sock.pending())
        self._process()

    def _process(self) -> None:
        arrivals: list[Arrival] = []
        control = bytearray()
        damage: MalformedPacketError | None = None
        try:
            used = split_packets(self._buf, self._v5, wall_ms(), arrivals, control)
        except MalformedPacketError as exc:  # what was framed before the damage still counts
            used, damage = len(self._buf), exc
        if used:
            del self._buf[:used]
            self._paho._last_bytes_received = time.monotonic()  # keepalive: the broker is talking
        if control:
            self.feed.feed(control)
            self._run_paho()
        if arrivals:
            self.packets += len(arrivals)
            self._sink.offer_many(arrivals)
        if damage is not None:
            raise damage

    def _end(self, error: OSError | None) -> None:
        """The stream ended: paho reads what control bytes are left, then sees the end and disconnects."""
        self.feed.end(error)
        self._run_paho()

    def _run_paho(self) -> None:
        paho, feed = self._paho, self.feed
        while feed.pending_control and paho._sock is feed:
            if paho.loop_read():
                break

    def start(self) -> None:
        """Process what was already buffered when we took over (paho's partial packet, TLS bytes)."""
        if self._buf or (self._ssl and self._sock.pending()):
            self.on_readable()
