"""Misbehaving peers: malformed, oversized and wrong-version messages and far-future stamps are refused with
a clear error and counted, while a well-behaved peer keeps replicating with the same node undisturbed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from drsdtp.core import Store, replica_id
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.replicator import Replicator
from drsdtp.wire.v1.peer_pb2 import DeltaBatch, PeerMessage, Reject

from .support import FAST, eventually, hello, raw_peer, running, same_state

pytestmark = pytest.mark.timeout(120)

SMALL = GossipLimits(**{**{f: getattr(FAST, f) for f in FAST.__slots__}, "max_message_bytes": 64 * 1024})


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Replicator, Replicator]]:
    """The node under attack ("victim", small message limit) and a good peer connected to it."""
    async with (
        running("victim", limits=SMALL) as victim,
        running("good", peers=[("victim", victim.port)]) as good,
    ):
        await good.wait_for_peers(["victim"], 30)
        yield victim, good


async def assert_undisturbed(victim: Replicator, good: Replicator, n: int) -> None:
    """The good peer and the victim still replicate both ways."""
    good.on_local_delta(good.store.set("pump-1", f"after-{n}", n))
    victim.on_local_delta(victim.store.set("pump-2", f"after-{n}", n))
    await eventually(lambda: same_state(victim.store, good.store), what="good peer converges")
    assert victim.connected_peers() == ["good"]


async def test_malformed_first_message_is_refused(pair: tuple[Replicator, Replicator]) -> None:
    victim, good = pair
    async with raw_peer(victim.port) as peer:
        await peer.send(b"\xff\xff\xff not a protobuf")
        code, details = await peer.error()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a PeerMessage" in details
    assert victim.stats.refused_handshakes["malformed"] == 1
    await assert_undisturbed(victim, good, 1)


async def test_a_delta_before_the_hello_is_refused(pair: tuple[Replicator, Replicator]) -> None:
    victim, good = pair
    async with raw_peer(victim.port) as peer:
        await peer.send(PeerMessage(deltas=DeltaBatch(to_seq=1, deltas=[Store(9).set("x", "y", 1)])))
        code, details = await peer.error()
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "expected a Hello first, got deltas")
    assert "x" not in victim.store
    await assert_undisturbed(victim, good, 2)


async def test_wrong_protocol_version_is_refused(pair: tuple[Replicator, Replicator]) -> None:
    victim, good = pair
    async with raw_peer(victim.port) as peer:
        await peer.send(hello("mallory", protocol_version=99))
        code, details = await peer.error()
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == "protocol version 99 is not supported (this node speaks 1)"
    assert victim.stats.refused_handshakes["version"] == 1
    await assert_undisturbed(victim, good, 3)


async def test_hello_with_a_far_future_clock_is_refused(
    pair: tuple[Replicator, Replicator], caplog: pytest.LogCaptureFixture
) -> None:
    victim, good = pair
    future_ms = victim.store.physical_now() + 60_000
    with caplog.at_level(logging.WARNING, logger="drsdtp.gossip"):
        async with raw_peer(victim.port) as peer:
            await peer.send(hello("mallory", hlc=future_ms << 16))
            code, details = await peer.error()
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "node 'mallory' has a clock" in details and "ahead of ours (max offset 500 ms)" in details
    assert victim.stats.refused_handshakes["clock_skew"] == 1
    assert any("mallory" in r.getMessage() for r in caplog.records)
    await assert_undisturbed(victim, good, 4)


async def test_far_future_deltas_are_refused_counted_and_logged_with_the_peer_id(
    pair: tuple[Replicator, Replicator], caplog: pytest.LogCaptureFixture
) -> None:
    victim, good = pair
    skewed = Store(replica_id("mallory"))
    skewed.set_clock_offset_ms(10 * 60_000)  # an application clock ten minutes fast
    bad = skewed.set("valve-9", "position", 99.0)
    fine = Store(replica_id("mallory-ok")).set("valve-8", "position", 1.0)
    with caplog.at_level(logging.WARNING, logger="drsdtp.gossip"):
        async with raw_peer(victim.port) as peer:
            await peer.send(hello("mallory"))
            assert (await peer.recv_kind("hello")).hello.node_id == "victim"
            await peer.send(PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=1, deltas=[bad])))
            reject = (await peer.recv_kind("reject")).reject
            assert (reject.reason, reject.seq) == (Reject.REASON_CLOCK_SKEW, 1)
            assert "ahead of the receiver's clock (max offset 500 ms)" in reject.detail
            # The stream stays up: the next, well-stamped delta is applied and acknowledged.
            await peer.send(PeerMessage(deltas=DeltaBatch(from_seq=1, to_seq=2, deltas=[fine])))
            while (await peer.recv_kind("ack")).ack.seq != 2:
                pass
    assert "valve-9" not in victim.store
    assert victim.store.get("valve-8", "position") == 1.0
    stats = victim.peer_stats()["mallory"]
    assert stats.refused_clock_skew == 1
    assert any("peer mallory" in r.getMessage() and "ahead" in r.getMessage() for r in caplog.records)
    await assert_undisturbed(victim, good, 5)
    assert "valve-9" not in good.store


async def test_malformed_payload_is_refused_and_counted(pair: tuple[Replicator, Replicator]) -> None:
    victim, good = pair
    async with raw_peer(victim.port) as peer:
        await peer.send(hello("mallory"))
        await peer.recv_kind("hello")
        await peer.send(
            PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=1, deltas=[b"\x08\x01\x12\xff garbage"]))
        )
        reject = (await peer.recv_kind("reject")).reject
        assert reject.reason == Reject.REASON_MALFORMED
        assert "decode error" in reject.detail
    assert victim.peer_stats()["mallory"].refused_malformed == 1
    await assert_undisturbed(victim, good, 6)


async def test_oversized_payload_is_refused_and_counted(pair: tuple[Replicator, Replicator]) -> None:
    victim, good = pair
    big = Store(replica_id("mallory")).set("blob", "data", b"x" * 80_000)  # over the 64 KiB limit
    async with raw_peer(victim.port) as peer:
        await peer.send(hello("mallory"))
        await peer.recv_kind("hello")
        await peer.send(PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=1, deltas=[big])))
        reject = (await peer.recv_kind("reject")).reject
        assert reject.reason == Reject.REASON_OVERSIZED
        assert "exceeds the limit of 65536" in reject.detail
    assert "blob" not in victim.store
    assert victim.peer_stats()["mallory"].refused_oversized == 1
    await assert_undisturbed(victim, good, 7)


async def test_oversized_message_ends_the_stream_with_a_reason(pair: tuple[Replicator, Replicator]) -> None:
    victim, good = pair
    async with raw_peer(victim.port) as peer:
        await peer.send(hello("mallory"))
        await peer.recv_kind("hello")
        await peer.send(PeerMessage(deltas=DeltaBatch(deltas=[b"x" * 200_000])))
        code, details = await peer.error()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == "message of 200008 bytes exceeds the limit of 131072 bytes"
    assert victim.stats.oversized_messages == 1
    assert victim.peer_stats()["mallory"].refused_oversized == 1
    await eventually(lambda: "mallory" not in victim.connected_peers(), what="stream closed")
    # Far beyond the limit gRPC itself refuses the message before it is read.
    async with raw_peer(victim.port) as peer:
        await peer.send(hello("mallory"))
        await peer.recv_kind("hello")
        await peer.send(PeerMessage(deltas=DeltaBatch(deltas=[b"x" * (1 << 20)])))
        code, details = await peer.error()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Received message larger than max" in details
    await assert_undisturbed(victim, good, 8)


async def test_malformed_envelope_mid_stream_closes_only_that_stream(
    pair: tuple[Replicator, Replicator],
) -> None:
    victim, good = pair
    async with raw_peer(victim.port) as peer:
        await peer.send(hello("mallory"))
        await peer.recv_kind("hello")
        await peer.send(b"\xff\xfe\xfd")
        code, details = await peer.error()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "malformed message (3 bytes) is not a PeerMessage"
    assert victim.stats.malformed_messages == 1
    assert victim.peer_stats()["mallory"].refused_malformed == 1
    await assert_undisturbed(victim, good, 9)


async def test_a_node_with_a_fast_clock_is_refused_and_its_writes_never_land() -> None:
    skewed_store = Store(replica_id("skewed"))
    skewed_store.set_clock_offset_ms(10 * 60_000)
    async with (
        running("victim") as victim,
        running("skewed", peers=[("victim", victim.port)], store=skewed_store) as skewed,
    ):
        skewed.on_local_delta(skewed_store.set("valve-1", "open", True))
        await eventually(lambda: victim.stats.refused_handshakes["clock_skew"] >= 2, what="repeated refusals")
        assert victim.connected_peers() == []
        assert "valve-1" not in victim.store
        await eventually(lambda: "clock" in skewed.peer_stats()["victim"].last_error, what="error reported")
        assert "FAILED_PRECONDITION" in skewed.peer_stats()["victim"].last_error
