"""The protocol core, deterministically: acks and gaps, no echo, redundancy, catch-up rules, bounds, joins,
chunked repairs, scope filtering and the handshake checks."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from drsdtp.core import Store, decode_state, join, replica_id
from drsdtp.gossip.errors import HandshakeRefused, Refusal
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.protocol import AntiEntropy, Inbound, PeerLink, _Receiver
from drsdtp.gossip.scopes import ScopeFilter
from drsdtp.wire.v1.peer_pb2 import DeltaBatch, Digest, PeerMessage, Probe, Reject

from .support import hello

LIMITS = GossipLimits(repair_interval_s=1e9, retransmit_after_s=5.0)


class Node:
    def __init__(
        self,
        name: str,
        limits: GossipLimits = LIMITS,
        scopes: tuple[str, ...] = ("default",),
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.store = Store(replica_id(name))
        self.core = AntiEntropy(self.store, name, scopes, limits, incarnation=replica_id(name), wall=wall)
        self.persisted: list[bytes] = []

    def write(self, twin: str, field: str, value: float | str) -> bytes:
        delta = self.store.set(twin, field, value)
        self.core.local_delta(delta, 0.0)
        return delta


def connect(a: Node, b: Node, now: float = 0.0) -> tuple[PeerLink, PeerLink]:
    la = a.core.open(a.core.check_hello(b.core.hello(), expected=b.name), now)
    lb = b.core.open(b.core.check_hello(a.core.hello(), expected=a.name), now)
    return la, lb


def deliver(dst: Node, link: PeerLink, messages: list[PeerMessage], now: float = 0.0) -> list[PeerMessage]:
    """Deliver ``messages`` to ``dst``; returns what it sends back (replies, chunks, ack)."""
    back: list[PeerMessage] = []
    for m in messages:
        result: Inbound = dst.core.receive(link, PeerMessage.FromString(m.SerializeToString()), now)
        dst.persisted += result.persist
        back += result.replies + result.after_sync + ([result.ack] if result.ack else [])
    return back


def settle(pairs: list[tuple[Node, PeerLink, Node, PeerLink]], now: float = 0.0, rounds: int = 50) -> None:
    """Lossless exchange until nobody has anything to send."""
    for _ in range(rounds):
        moved = False
        for a, la, b, lb in pairs:
            out = a.core.outgoing(la, now)
            while out:
                moved = True
                out = deliver(a, la, deliver(b, lb, out, now), now)
        if not moved:
            return
    raise AssertionError("no quiescence")


def kinds(messages: list[PeerMessage]) -> list[str]:
    return [str(m.WhichOneof("kind")) for m in messages]


@pytest.fixture
def pair() -> tuple[Node, PeerLink, Node, PeerLink]:
    a, b = Node("a"), Node("b")
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])  # the first-session repairs
    return a, la, b, lb


# --- the receiver's frontier ------------------------------------------------------------------------------


def test_receiver_acks_only_its_contiguous_frontier() -> None:
    r = _Receiver()
    r.advance(0, 5, 9)  # ahead of a gap: merged, not acknowledged
    assert (r.frontier, r.pending) == (0, {5: 9})
    r.advance(0, 0, 5)  # the gap fills: the pending interval joins the frontier
    assert (r.frontier, r.pending) == (9, {})
    r.advance(20, 20, 25)  # the sender says everything up to 20 is covered (acked, or a catch-up)
    assert r.frontier == 25


def test_deltas_are_acknowledged_cumulatively_and_collected(
    pair: tuple[Node, PeerLink, Node, PeerLink],
) -> None:
    a, la, b, lb = pair
    for i in range(5):
        a.write("pump", f"f{i}", float(i))
    out = a.core.outgoing(la, 0.0)
    assert kinds(out) == ["deltas"]
    assert (out[0].deltas.from_seq, out[0].deltas.to_seq, len(out[0].deltas.deltas)) == (0, 5, 5)
    back = deliver(b, lb, out)
    assert kinds(back) == ["ack"] and back[0].ack.seq == 5
    assert len(b.persisted) == 5  # acknowledged only with its deltas handed over for persistence
    assert len(a.core.log) == 5
    deliver(a, la, back)
    assert (la.acked, len(a.core.log)) == (5, 0)  # acknowledged by every link: collected


def test_a_lost_batch_is_sent_again_after_the_retransmit_timeout(
    pair: tuple[Node, PeerLink, Node, PeerLink],
) -> None:
    a, la, b, lb = pair
    a.write("pump", "rpm", 1.0)
    assert kinds(a.core.outgoing(la, 0.0)) == ["deltas"]  # lost on the way
    assert a.core.outgoing(la, 1.0) == []  # not yet
    again = a.core.outgoing(la, LIMITS.retransmit_after_s + 0.1)
    assert kinds(again) == ["deltas"] and again[0].deltas.from_seq == 0
    deliver(a, la, deliver(b, lb, again))
    assert b.store.get("pump", "rpm") == 1.0 and la.acked == 1 and la.stats.retransmits == 1


def test_reconnecting_resends_everything_unacknowledged_as_one_join() -> None:
    a, b = Node("a"), Node("b")
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])
    for i in range(3):
        a.write("pump", "rpm", float(i))  # overwrites: their join collapses them
    a.core.outgoing(la, 0.0)  # sent, never acknowledged: the stream broke
    a.core.close(la)
    b.core.close(lb)
    la, lb = connect(a, b)
    out = [m for m in a.core.outgoing(la, 0.0) if m.HasField("deltas")]
    assert len(out) == 1 and len(out[0].deltas.deltas) == 1  # one join of the three
    assert decode_state(out[0].deltas.deltas[0]) == {"pump": {"rpm": 2.0}}


def mesh(*nodes: Node) -> list[tuple[Node, PeerLink, Node, PeerLink]]:
    """Connect every pair and settle (first repairs, Links); returns both directions of each link."""
    pairs = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            la, lb = connect(a, b)
            pairs += [(a, la, b, lb), (b, lb, a, la)]
    settle(pairs)
    return pairs


def link_of(pairs: list[tuple[Node, PeerLink, Node, PeerLink]], src: Node, dst: Node) -> PeerLink:
    return next(la for a, la, b, _ in pairs if a is src and b is dst)


def test_relays_around_a_missing_link_but_never_back_to_the_sender() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    pairs = mesh(a, b) + mesh(b, c)  # a and c have no stream: b must relay
    delta = a.write("pump", "rpm", 7.0)
    deliver(b, link_of(pairs, b, a), a.core.outgoing(link_of(pairs, a, b), 0.0))
    assert b.core.log.get(b.core.log.head).source == "a"
    back = [m for m in b.core.outgoing(link_of(pairs, b, a), 0.0) if m.HasField("deltas")]
    assert all(not m.deltas.deltas for m in back)  # nothing back to where it came from
    onward = b.core.outgoing(link_of(pairs, b, c), 0.0)
    assert [d for m in onward for d in m.deltas.deltas] == [delta]


def test_in_a_full_mesh_each_delta_crosses_each_link_once() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    pairs = mesh(a, b, c)
    assert link_of(pairs, b, a).peer_links == {"c"}  # a told b it has a live stream with c
    a.write("pump", "rpm", 7.0)
    deliver(b, link_of(pairs, b, a), a.core.outgoing(link_of(pairs, a, b), 0.0))
    onward = b.core.outgoing(link_of(pairs, b, c), 0.0)
    assert all(not m.deltas.deltas for m in onward if m.HasField("deltas"))  # a delivers to c itself
    deliver(c, link_of(pairs, c, a), a.core.outgoing(link_of(pairs, a, c), 0.0))
    assert c.store.get("pump", "rpm") == 7.0


def test_a_delta_held_back_for_a_link_that_then_drops_is_repaired_at_once() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    pairs = mesh(a, b, c)
    a.write("pump", "rpm", 7.0)
    deliver(b, link_of(pairs, b, a), a.core.outgoing(link_of(pairs, a, b), 0.0))  # b holds it back from c
    a.core.close(link_of(pairs, a, c))  # a's stream to c drops before the delta got there
    c.core.close(link_of(pairs, c, a))
    deliver(b, link_of(pairs, b, a), a.core.outgoing(link_of(pairs, a, b), 0.0))  # a's Links tell b
    bc, cb = link_of(pairs, b, c), link_of(pairs, c, b)
    assert bc.repair_wanted  # not left to the periodic repair
    settle([(b, bc, c, cb), (c, cb, b, bc)])
    assert c.store.get("pump", "rpm") == 7.0


def test_a_redundant_delta_is_neither_persisted_nor_relayed() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    pairs = mesh(a, b, c)
    delta = a.write("pump", "rpm", 7.0)
    deliver(c, link_of(pairs, c, a), a.core.outgoing(link_of(pairs, a, c), 0.0))
    head, persisted = c.core.log.head, len(c.persisted)
    # The same delta again, relayed by b before it heard of the a-c stream.
    deliver(c, link_of(pairs, c, b), [PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=1, deltas=[delta]))])
    assert (c.core.log.head, len(c.persisted)) == (head, persisted)


def test_a_batch_of_deltas_already_held_asks_for_a_sync_before_its_ack() -> None:
    """A delta merged from one stream may not be durable yet when a copy arrives on another: the second
    stream's ack must wait for a sync (the TLA+ model found the ack promised it durable too early)."""
    a, b, c = Node("a"), Node("b"), Node("c")
    pairs = mesh(a, b, c)
    delta = a.write("pump", "rpm", 7.0)
    first = c.core.receive(
        link_of(pairs, c, a), PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=1, deltas=[delta])), 0.0
    )
    again = c.core.receive(
        link_of(pairs, c, b), PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=1, deltas=[delta])), 0.0
    )
    assert (first.held, bool(first.persist)) == (False, True)
    assert (again.held, again.persist, again.ack is not None) == (True, [], True)


def test_a_batch_merged_in_one_call_answers_for_each_of_its_deltas() -> None:
    """One native call merges a whole batch; each delta still stands alone: a malformed or oversized one
    is refused by name and counted, a redundant one only marks the batch as held, the others are merged,
    persisted and relayed, and the twins they changed are reported once."""
    limits = dataclasses.replace(LIMITS, max_message_bytes=64 * 1024, window_bytes=64 * 1024)
    a, b, c = Node("a", limits), Node("b", limits), Node("c", limits)
    pairs = mesh(a, b, c)
    first, second = a.write("pump", "rpm", 7.0), a.write("fan", "rpm", 3.0)
    c.store.merge(second)  # c holds it already
    oversized = a.store.set("big", "blob", "x" * (64 * 1024))
    batch = [first, b"\x08\x01\x12\xff garbage", oversized, second]
    link = link_of(pairs, c, a)
    result = c.core.receive(link, PeerMessage(deltas=DeltaBatch(from_seq=0, to_seq=4, deltas=batch)), 0.0)
    assert result.persist == [first]
    assert result.changed == {"pump"}
    assert (result.held, result.relayed, result.ack is not None) == (True, True, True)
    rejects = [r.reject.reason for r in result.replies if r.HasField("reject")]
    assert rejects == [Reject.REASON_MALFORMED, Reject.REASON_OVERSIZED]
    assert (link.stats.refused_malformed, link.stats.refused_oversized) == (1, 1)
    assert link.stats.deltas_received == 4
    assert c.store.get("pump", "rpm") == 7.0 and "big" not in c.store


def test_catch_up_chunks_are_applied_but_never_forwarded() -> None:
    a, b, c = Node("a"), Node("b"), Node("c")
    a.store.set("pump", "rpm", 1.0)  # written before any link: travels by catch-up only
    ab, ba = connect(a, b)
    bc, cb = connect(b, c)
    settle([(a, ab, b, ba), (b, ba, a, ab)])
    assert b.store.get("pump", "rpm") == 1.0
    assert b.core.log.head == 0  # nothing for c in b's log
    assert all(not m.deltas.deltas for m in b.core.outgoing(bc, 0.0) if m.HasField("deltas"))
    settle([(b, bc, c, cb), (c, cb, b, bc)])  # c gets it from its own catch-up with b
    assert c.store.get("pump", "rpm") == 1.0


def test_a_full_buffer_sheds_and_the_peer_catches_up_from_a_digest() -> None:
    limits = dataclasses.replace(LIMITS, buffer_entries=4)
    a, b = Node("a", limits), Node("b", limits)
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])
    a.core.close(la)  # b is away while a writes ten deltas
    for i in range(10):
        a.write("pump", f"f{i}", float(i))
    assert len(a.core.log) == 4 and la.stats.truncations >= 1 and la.repair_wanted
    la, lb = connect(a, b)
    out = a.core.outgoing(la, 0.0)
    assert "digest" in kinds(out)
    deliver(a, la, deliver(b, lb, deliver(a, la, deliver(b, lb, out))))
    settle([(a, la, b, lb), (b, lb, a, la)])
    assert b.store.encode_state() == a.store.encode_state()


def test_the_window_bounds_unacknowledged_bytes(pair: tuple[Node, PeerLink, Node, PeerLink]) -> None:
    limits = dataclasses.replace(LIMITS, window_bytes=LIMITS.max_message_bytes, batch_entries=1)
    a, b = Node("a", limits), Node("b", limits)
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])
    big = "x" * 1_000_000
    for i in range(10):
        a.write("blob", f"part{i}", big)
    first = a.core.outgoing(la, 0.0)
    assert 3 <= len(first) <= 5  # about 4 MiB in flight, then backpressure
    assert a.core.outgoing(la, 0.0) == []
    deliver(a, la, deliver(b, lb, first))
    assert len(a.core.outgoing(la, 0.0)) >= 3  # acks opened the window again


def test_big_batches_go_as_one_join_small_ones_as_a_list() -> None:
    limits = dataclasses.replace(LIMITS, join_min_entries=4)
    a, b = Node("a", limits), Node("b", limits)
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])
    a.write("pump", "rpm", 1.0)
    assert len(a.core.outgoing(la, 0.0)[0].deltas.deltas) == 1
    for i in range(6):
        a.write("pump", "rpm", float(i))
    (batch,) = a.core.outgoing(la, 0.0)
    assert len(batch.deltas.deltas) == 1 and batch.deltas.deltas[0] == join(
        [a.core.log.get(s).delta for s in range(2, 8)]
    )


def test_a_delta_too_big_for_a_delta_batch_travels_by_catch_up() -> None:
    limits = dataclasses.replace(LIMITS, max_message_bytes=64 * 1024)
    a, b = Node("a", limits), Node("b", limits)
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])
    for i in range(3):
        a.write(f"blob-{i}", "data", "y" * 30_000)
    # Within the receiver's limit, beyond a batch's payload room (the limit minus the envelope reserve).
    a.write("huge", "b", "z" * 62_000)
    out = a.core.outgoing(la, 0.0)
    assert all(len(d) < 64 * 1024 for m in out for d in m.deltas.deltas)
    assert la.repair_wanted
    settle([(a, la, b, lb), (b, lb, a, la)])
    assert b.store.get("huge", "b") == "z" * 62_000


def test_digests_and_versions_bigger_than_a_message_are_split_and_reassembled() -> None:
    limits = dataclasses.replace(LIMITS, max_message_bytes=64 * 1024)
    a, b = Node("a", limits), Node("b", limits)
    for i in range(6000):
        a.store.set(f"sensor-{i:05d}-with-a-long-name", "v", float(i))
    la, lb = connect(a, b)
    digests = [m for m in a.core.outgoing(la, 0.0) if m.HasField("digest")]
    assert len(digests) > 1
    settle([(a, la, b, lb), (b, lb, a, la)])
    assert b.store.encode_state() == a.store.encode_state()


def test_a_bad_part_number_is_rejected(pair: tuple[Node, PeerLink, Node, PeerLink]) -> None:
    _, _, b, lb = pair
    back = deliver(b, lb, [PeerMessage(digest=Digest(round=1, part=3, parts=2, data=b""))])
    assert kinds(back) == ["reject"] and back[0].reject.reason == Reject.REASON_PROTOCOL
    assert lb.stats.refused_protocol == 1


def test_an_out_of_order_interval_is_refused(pair: tuple[Node, PeerLink, Node, PeerLink]) -> None:
    _, _, b, lb = pair
    back = deliver(b, lb, [PeerMessage(deltas=DeltaBatch(from_seq=5, to_seq=2))])
    assert kinds(back) == ["reject"]


# --- scopes -----------------------------------------------------------------------------------------------


def test_partial_links_split_deltas_by_twin_scope() -> None:
    store = Store(1)
    store.set("a.1", "_scope", "a")
    store.set("b.1", "_scope", "b")
    mixed = join([store.set("a.1", "x", 1.0), store.set("b.1", "x", 2.0), store.set("unscoped", "x", 3.0)])
    only_a = ScopeFilter(store, ["a", "b", "default"], ["a", "default"])
    assert not only_a.full
    kept = only_a.delta(mixed)
    assert kept is not None and set(decode_state(kept)) == {"a.1"}
    # An unscoped twin may be one whose _scope write has not arrived yet: it is withheld on partial links.
    assert only_a.delta(store.set("unscoped", "y", 1.0)) is None
    everything = ScopeFilter(store, ["a"], ["a", "b"])
    assert everything.full and everything.delta(mixed) is mixed


def test_system_twins_travel_on_every_link() -> None:
    store = Store(1)
    members = store.add("_members", "nodes", "n1")
    assert ScopeFilter(store, ["a", "b"], ["c"]).delta(members) == members


def test_command_records_travel_with_their_twins_scope() -> None:
    store = Store(1)
    record = store.set_many("_cmd/1", {"twin": "a.1", "_scope": "a"})
    assert ScopeFilter(store, ["a", "b"], ["a"]).delta(record) == record
    assert ScopeFilter(store, ["a", "b"], ["b"]).delta(record) is None


# --- handshake --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected", "reason", "detail"),
    [
        (hello("b", protocol_version=2), None, Refusal.VERSION, "protocol version 2 is not supported"),
        (hello("b", state_format=9), None, Refusal.VERSION, "state format 9 is not supported"),
        (hello("a"), None, Refusal.SELF, "the peer is this node"),
        (hello("c"), "b", Refusal.IDENTITY, "expected node 'b', the peer is 'c'"),
        (hello("bad name!"), None, Refusal.IDENTITY, "invalid node id"),
        (hello("b", max_message_bytes=10), None, Refusal.LIMIT, "below 64 KiB"),
        (PeerMessage(deltas=DeltaBatch()), None, Refusal.MALFORMED, "expected a Hello first"),
    ],
)
def test_handshake_refusals(message: PeerMessage, expected: str | None, reason: Refusal, detail: str) -> None:
    a = Node("a")
    with pytest.raises(HandshakeRefused) as info:
        a.core.check_hello(message, expected)
    assert info.value.reason is reason and detail in info.value.detail


def test_a_hello_within_the_clock_offset_is_accepted() -> None:
    a = Node("a")
    now_ms = a.store.physical_now()
    assert a.core.check_hello(hello("b", hlc=(now_ms + 400) << 16)).node_id == "b"
    with pytest.raises(HandshakeRefused, match=r"clock (999|1000) ms ahead"):
        a.core.check_hello(hello("b", hlc=(now_ms + 1000) << 16))


def test_a_delta_refused_for_clock_skew_is_repaired_once_the_clock_caught_up() -> None:
    """b's clock runs 2 s ahead: a refuses its delta (counted, acknowledged all the same) and, about
    2 s - max offset later, starts a repair that brings it; not only at the next periodic repair."""
    t0 = 1_700_000_000_000
    a, b = Node("a"), Node("b")
    a.store.set_manual_time(t0)
    b.store.set_manual_time(t0)
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)])
    b.store.set_manual_time(t0 + 2000)
    b.write("press", "temp", 90.0)
    acks = deliver(a, la, b.core.outgoing(lb, 0.0))
    assert la.stats.refused_clock_skew == 1 and a.store.get("press", "temp") is None
    assert kinds(acks) == ["reject", "ack"]
    deliver(b, lb, acks)
    assert lb.acked == b.core.log.head  # b will not send it again
    assert not kinds(a.core.outgoing(la, 1.0))  # a's clock has not caught up yet: no repair
    a.store.set_manual_time(t0 + 1600)  # now within the 500 ms gate
    out = a.core.outgoing(la, 1.6)
    assert "digest" in kinds(out)  # a repair (LIMITS has no periodic one at all)
    while out:
        out = deliver(a, la, deliver(b, lb, out, 1.6), 1.6)
    assert a.store.get("press", "temp") == 90.0


# --- probes: clock offset and convergence by state digest --------------------------------------------------


def test_probes_measure_the_peer_clock_offset_and_compare_state_digests() -> None:
    """b's wall clock is 5 s ahead of a's. An exchange with no delay measures +5 s; a later one delayed 10 ms
    out and 200 ms back is skewed by the asymmetry and loses to it (the shortest round trip wins). Digests are
    equal once both hold the same twins, and unequal while b holds a write a lacks."""
    clock = {"a": 1000.0}
    limits = dataclasses.replace(LIMITS, probe_interval_s=2.0)

    def wall_a() -> float:
        return clock["a"]

    def wall_b() -> float:
        return clock["a"] + 5.0

    a, b = Node("a", limits, wall=wall_a), Node("b", limits, wall=wall_b)
    la, lb = connect(a, b)
    a.write("pump", "flow", 1.0)
    settle([(a, la, b, lb), (b, lb, a, la)])  # the first probes went with the repairs, without delay
    assert (la.stats.peer_offset_s, la.stats.probe_round_trip_s) == (5.0, 0.0)

    def probe(now: float, out_s: float = 0.0, back_s: float = 0.0) -> None:
        (question,) = [m for m in a.core.outgoing(la, now) if m.WhichOneof("kind") == "probe"]
        clock["a"] += out_s
        (reply,) = deliver(b, lb, [question], now)
        assert reply.probe.answer
        clock["a"] += back_s
        assert deliver(a, la, [reply], now) == []

    probe(10.0, out_s=0.01, back_s=0.2)
    round_trip, offset = la.clock.samples[-1]
    assert round_trip == pytest.approx(0.21) and offset == pytest.approx(4.905)
    assert (la.stats.peer_offset_s, la.stats.probe_round_trip_s) == (5.0, 0.0)
    assert lb.stats.digest_equal and lb.stats.digest_equal_at == 10.0
    b.write("pump", "speed", 3.0)  # not sent yet: b's state is ahead of a's
    probe(20.0)
    assert not lb.stats.digest_equal and lb.stats.digest_checked_at == 20.0
    assert lb.stats.digest_equal_at == 10.0  # the age a dashboard shows grows from there
    settle([(a, la, b, lb), (b, lb, a, la)], now=20.0)
    probe(30.0)
    assert lb.stats.digest_equal and lb.stats.digest_equal_at == 30.0
    # An answer to no question of ours (a replay) is not a sample.
    before = la.stats.peer_offset_s
    stray = PeerMessage(probe=Probe(answer=True, origin_s=1.0, received_s=100.0, answered_s=100.0))
    assert deliver(a, la, [stray]) == []
    assert la.stats.peer_offset_s == before


def test_probes_asked_too_fast_are_answered_but_compared_once_a_second() -> None:
    limits = dataclasses.replace(LIMITS, probe_interval_s=2.0)
    a, b = Node("a", limits), Node("b", limits)
    la, lb = connect(a, b)
    settle([(a, la, b, lb), (b, lb, a, la)], now=5.0)
    checked = lb.stats.digest_checked_at
    flood = [PeerMessage(probe=Probe(origin_s=float(i), state_digest=i)) for i in range(50)]
    replies = deliver(b, lb, flood, now=5.5)
    assert [r.probe.origin_s for r in replies] == [float(i) for i in range(50)]  # every clock answered
    assert lb.stats.digest_checked_at == checked  # no digest computed for them
    deliver(b, lb, flood[:1], now=6.0)
    assert lb.stats.digest_checked_at == 6.0 and not lb.stats.digest_equal


def test_no_probe_to_a_peer_that_does_not_answer_them() -> None:
    limits = dataclasses.replace(LIMITS, probe_interval_s=1.0)
    a, b = Node("a", limits), Node("b", limits)
    old = b.core.hello()
    old.hello.probes = False  # a node from before probes: it would refuse them
    la = a.core.open(a.core.check_hello(old, expected="b"), 0.0)
    assert "probe" not in kinds(a.core.outgoing(la, 5.0))
