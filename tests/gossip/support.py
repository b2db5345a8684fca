"""Helpers for the gossip tests: replicators on free loopback ports, a raw peer for misbehaving, waits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from drsdtp.config import Address, PeerConfig, TlsConfig
from drsdtp.core import FORMAT_VERSION, Store, replica_id
from drsdtp.gossip.grpc_transport import METHOD
from drsdtp.gossip.handshake import PROTOCOL_VERSION
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.replicator import Replicator
from drsdtp.wire.v1.peer_pb2 import Hello, PeerMessage

LOOPBACK = Address("127.0.0.1", 0)

# Short timers so that tests see reconnects, retransmissions and repairs quickly on a loaded machine.
FAST = GossipLimits(
    repair_interval_s=3.0,
    retransmit_after_s=3.0,
    tick_s=0.2,
    reconnect_initial_s=0.05,
    reconnect_max_s=0.5,
    handshake_timeout_s=5.0,
)


@contextlib.asynccontextmanager
async def running(
    name: str,
    *,
    peers: Sequence[tuple[str, int]] = (),
    scopes: Sequence[str] = ("default",),
    tls: TlsConfig | None = None,
    limits: GossipLimits = FAST,
    store: Store | None = None,
    **kwargs: Any,
) -> AsyncIterator[Replicator]:
    """A replicator for node ``name`` on a free loopback port, seeded with ``(peer name, port)`` pairs."""
    store = store or Store(replica_id(name))
    seeds = [PeerConfig(p, Address("127.0.0.1", port)) for p, port in peers]
    async with Replicator(store, name, LOOPBACK, seeds, scopes, tls, limits, **kwargs) as replicator:
        yield replicator


async def eventually(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; a generous liveness cap, not a timing assertion."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():  # noqa: ASYNC110 - polls state owned by other tasks or processes
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}") from None


def same_state(*stores: Store) -> bool:
    return len({s.encode_state() for s in stores}) == 1


def hello(node_id: str, **overrides: Any) -> PeerMessage:
    """A well-formed Hello, with any field overridden."""
    fields: dict[str, Any] = {
        "protocol_version": PROTOCOL_VERSION,
        "state_format": FORMAT_VERSION,
        "node_id": node_id,
        "incarnation": 12345,
        "hlc": Store(1).now(),
        "scopes": ["default"],
        "max_message_bytes": 4 << 20,
    }
    fields.update(overrides)
    return PeerMessage(hello=Hello(**fields))


@dataclasses.dataclass
class RawPeer:
    """A hand-driven peer stream: sends whatever bytes a test wants."""

    call: Any
    channel: grpc.aio.Channel

    async def send(self, data: bytes | PeerMessage) -> None:
        await self.call.write(data.SerializeToString() if isinstance(data, PeerMessage) else data)

    async def recv(self, timeout_s: float = 10.0) -> PeerMessage | None:
        async with asyncio.timeout(timeout_s):
            data = await self.call.read()
        return None if data is grpc.aio.EOF else PeerMessage.FromString(data)

    async def recv_kind(self, kind: str, timeout_s: float = 10.0) -> PeerMessage:
        """The next message of ``kind``, skipping others (acks, repair traffic)."""
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.recv()
                if message is None:
                    raise AssertionError(f"stream ended while waiting for a {kind}")
                if message.WhichOneof("kind") == kind:
                    return message

    async def error(self) -> tuple[grpc.StatusCode, str]:
        """The status the server ended the stream with."""
        try:
            while await self.call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return await self.call.code(), await self.call.details()


@contextlib.asynccontextmanager
async def raw_peer(port: int, max_message_bytes: int = 64 << 20) -> AsyncIterator[RawPeer]:
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.stream_stream(METHOD)()
        try:
            yield RawPeer(call, channel)
        finally:
            call.cancel()


@contextlib.asynccontextmanager
async def pushing_peer(port: int, node_id: str) -> AsyncIterator[RawPeer]:
    """A raw peer that has said hello and only sends: what the node sends back is read and dropped (a
    stream nobody reads would stall the node's sender), never acknowledged."""
    async with raw_peer(port) as peer:
        await peer.send(hello(node_id))
        await peer.recv_kind("hello")

        async def drain() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                while await peer.call.read() is not grpc.aio.EOF:
                    pass

        reader = asyncio.create_task(drain())
        try:
            yield peer
        finally:
            reader.cancel()
