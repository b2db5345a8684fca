"""The Replicator in one process: several nodes on loopback replicate every CRDT type, find each other
through replicated membership, keep one stream per pair, prune removed members, persist before acking,
honour scopes, and report to the metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import pytest

from drsdtp.clock import ClockOffset
from drsdtp.core import Store, replica_id
from drsdtp.gossip import membership
from drsdtp.metrics import NodeMetrics

from .procs import Proxy
from .support import FAST, eventually, running, same_state

pytestmark = pytest.mark.timeout(120)


def write_every_type(store: Store, node: str) -> list[bytes]:
    return [
        store.set("press-1", f"temp-{node}", 21.5),
        store.set_many("press-1", {"mode": node, "ok": True}),
        store.increment("press-1", "cycles", 3),
        store.add("press-1", "alarms", f"{node}-overheat"),
        store.remove("press-1", "alarms", "none"),
    ]


async def test_three_nodes_replicate_every_type_and_persist_before_acking() -> None:
    persisted: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
    syncs: dict[str, int] = {"a": 0, "b": 0, "c": 0}

    def persist_to(name: str) -> Callable[[bytes], Awaitable[None]]:
        async def persist(delta: bytes) -> None:
            persisted[name].append(delta)

        return persist

    def sync_of(name: str) -> Callable[[], Awaitable[None]]:
        async def sync() -> None:
            syncs[name] += 1

        return sync

    async with (
        running("a", persist=persist_to("a"), sync=sync_of("a")) as a,
        running("b", peers=[("a", a.port)], persist=persist_to("b"), sync=sync_of("b")) as b,
        running("c", peers=[("a", a.port)], persist=persist_to("c"), sync=sync_of("c")) as c,
    ):
        for r in (a, b, c):
            for delta in write_every_type(r.store, r.node_id):
                r.on_local_delta(delta)
        await eventually(lambda: same_state(a.store, b.store, c.store), what="convergence")
        assert a.store.get("press-1", "cycles") == 9
        assert a.store.get("press-1", "alarms") == frozenset({"a-overheat", "b-overheat", "c-overheat"})
        # Received deltas were handed to persist (the node's WAL), and repairs waited for a barrier.
        for name in "abc":
            replayed = Store(replica_id(f"{name}-replay"))
            for delta in persisted[name]:
                replayed.merge(delta)
            assert replayed.get("press-1", "cycles") is not None
            assert syncs[name] >= 1


async def test_a_received_delta_is_acknowledged_only_after_persist_returns() -> None:
    gate = asyncio.Event()
    gate.set()

    async def persist(delta: bytes) -> None:
        await gate.wait()  # a slow disk

    async with running("a") as a, running("slow", peers=[("a", a.port)], persist=persist) as slow:
        await slow.wait_for_peers(["a"], 30)
        await eventually(lambda: a.peer_stats()["slow"].acked_seq == a.core.log.head, what="settled")
        base, received = a.core.log.head, slow.peer_stats()["a"].deltas_received
        gate.clear()
        a.on_local_delta(a.store.set("press-1", "rpm", 900))
        await eventually(lambda: slow.peer_stats()["a"].deltas_received > received, what="delivery")
        await asyncio.sleep(0.3)  # time for an ack to arrive, were one sent
        assert a.peer_stats()["slow"].acked_seq == base
        gate.set()
        await eventually(lambda: a.peer_stats()["slow"].acked_seq > base, what="the ack after persist")


async def test_a_durable_local_delta_is_pushed_at_once_not_at_a_timer() -> None:
    # Every timer an hour away: a delta that arrived by a tick, a retransmission or a periodic repair would
    # not arrive within the test's timeout. It travels as a delta batch, not as catch-up state.
    hour = dataclasses.replace(FAST, tick_s=3600.0, repair_interval_s=3600.0, retransmit_after_s=3600.0)
    async with running("a", limits=hour) as a, running("b", peers=[("a", a.port)], limits=hour) as b:
        await b.wait_for_peers(["a"], 30)
        await a.wait_for_peers(["b"], 30)
        await eventually(lambda: same_state(a.store, b.store) and a.core.idle(a.core.links["b"]), what="idle")
        sent, catchups = a.peer_stats()["b"].deltas_sent, a.peer_stats()["b"].catchups
        a.on_local_delta(a.store.set("press-1", "rpm", 900))
        await eventually(lambda: b.store.get("press-1", "rpm") == 900, timeout_s=60, what="the push")
        assert a.peer_stats()["b"].deltas_sent == sent + 1
        assert a.peer_stats()["b"].catchups == catchups


async def test_members_discovered_through_replicated_membership_connect_directly() -> None:
    async with (
        running("a") as a,
        running("b", peers=[("a", a.port)]) as b,
        running("c", peers=[("a", a.port)]) as c,
    ):
        # b and c were only told about a; they learn each other's address from the _members twin.
        await eventually(lambda: "c" in b.connected_peers() and "b" in c.connected_peers(), what="b-c stream")
        # The stream may be c's dial, accepted by b before c's membership entry reached b: wait for it.
        await eventually(
            lambda: membership.members(b.store).get("c") == f"127.0.0.1:{c.port}", what="b holds c's address"
        )
        assert set(membership.members(a.store)) == {"a", "b", "c"}


async def test_two_nodes_dialling_each_other_keep_one_stream() -> None:
    async with running("a") as a, running("b", peers=[("a", a.port)]) as b:
        await b.wait_for_peers(["a"], 30)
        await eventually(lambda: "b" in a._dialers, what="a dials b too")
        sessions_before = a.peer_stats()["b"].sessions
        await asyncio.sleep(1.0)  # a dialler waits while the stream is up: no flapping
        assert a.connected_peers() == ["b"] and b.connected_peers() == ["a"]
        assert a.peer_stats()["b"].sessions == sessions_before


async def test_a_removed_member_is_pruned_everywhere() -> None:
    metrics = NodeMetrics("a")
    async with running("a", stats=metrics) as a, running("b", peers=[("a", a.port)]) as b:
        async with running("c", peers=[("a", a.port)]):
            await eventually(lambda: set(a.connected_peers()) == {"b", "c"}, what="full mesh")
        # c left for good.
        await a.remove_member("c")
        await eventually(lambda: "c" not in membership.members(b.store), what="removal replicated")
        await eventually(lambda: "c" not in b.peer_stats() and "c" not in a.peer_stats(), what="pruned")
        assert "c" not in a.core.links and "c" not in b.core.links
        assert 'peer="c"' not in metrics.render()[0].decode()
        assert a.store.get(membership.MEMBERS_TWIN, membership.ADDRESS_PREFIX + "c") == ""


async def test_a_node_removed_before_this_node_saw_it_join_is_still_pruned() -> None:
    # b holds state about c from c's own stream, but c's membership reaches b only together with its
    # removal: the cleared address marks c as departed, so b drops it anyway.
    async with running("a") as a, running("b", peers=[("a", a.port)]) as b:
        await b.wait_for_peers(["a"], 30)
        b._ensure_peer("c")  # what an inbound stream from c leaves behind
        await a.remove_member("c")
        await eventually(lambda: "c" in membership.departed(b.store), what="departure replicated")
        await eventually(lambda: "c" not in b.peer_stats(), what="pruned without ever being a member")


async def test_a_restarted_node_catches_up_from_its_peer() -> None:
    b_store = Store(replica_id("b"))
    async with running("a") as a:
        async with running("b", peers=[("a", a.port)], store=b_store) as b:
            await b.wait_for_peers(["a"], 30)
        for i in range(50):
            a.on_local_delta(a.store.set(f"pump-{i}", "rpm", float(i)))
        async with running("b", peers=[("a", a.port)], store=b_store) as b:
            b.on_local_delta(b_store.set("pump-0", "owner", "b"))
            await eventually(lambda: same_state(a.store, b_store), what="catch-up after restart")


async def test_a_receive_limit_slows_a_flooding_peer_and_still_converges() -> None:
    # 64 KiB/s into "slow"; the flood is about 3x its one-message burst, so reading has to pause.
    limited = dataclasses.replace(
        FAST, max_message_bytes=64 * 1024, window_bytes=64 * 1024, receive_bytes_per_s=65_536
    )
    async with (
        running("slow", limits=limited) as slow,
        running("flood", peers=[("slow", slow.port)], limits=limited) as flood,
    ):
        await flood.wait_for_peers(["slow"], 30)
        blob = bytes(range(256)) * 40  # 10 KiB
        for i in range(40):
            flood.on_local_delta(flood.store.set(f"camera-{i}", "frame", blob))
        await eventually(lambda: same_state(slow.store, flood.store), 60, "convergence under the limit")
        assert slow.peer_stats()["flood"].throttled_s > 0
        assert flood.peer_stats()["slow"].throttled_s == 0  # acks are small: the sender was never held


async def test_a_twin_larger_than_one_message_catches_up_in_parts() -> None:
    # 400 KiB in one twin, 64 KiB messages: the catch-up splits the twin, its context in the last part.
    small = dataclasses.replace(FAST, max_message_bytes=64 * 1024, window_bytes=64 * 1024)
    async with running("big", limits=small) as big:
        blob = bytes(range(256)) * 40  # 10 KiB
        for i in range(40):
            big.on_local_delta(big.store.set("camera", f"frame-{i}", blob))
        async with running("late", peers=[("big", big.port)], limits=small) as late:
            await eventually(lambda: same_state(big.store, late.store), 60, "the big twin replicated")
            assert late.peer_stats()["big"].catchup_bytes_received > 400 * 1024
            assert late.peer_stats()["big"].refused_oversized == 0


async def test_scopes_limit_what_a_node_receives() -> None:
    async with (
        running("hub", scopes=("line-1", "line-2")) as hub,
        running("edge", peers=[("hub", hub.port)], scopes=("line-1",)) as edge,
    ):
        for twin, scope in (("press-1", "line-1"), ("press-2", "line-2")):
            hub.on_local_delta(hub.store.set_many(twin, {"_scope": scope, "rpm": 100.0}))
        edge.on_local_delta(edge.store.set_many("press-3", {"_scope": "line-1", "rpm": 7.0}))
        await eventually(lambda: "press-1" in edge.store and "press-3" in hub.store, what="line-1 twins")
        await asyncio.sleep(0.5)
        assert "press-2" not in edge.store


async def test_metrics_changes_and_clock_offsets_are_reported() -> None:
    metrics = NodeMetrics("a")
    changes: list[set[str]] = []
    offset = ClockOffset(offset_s=0.25, server="ntp.test", measured_at=time.time())
    async with (
        running("a", stats=metrics, on_change=changes.append) as a,
        running("b", peers=[("a", a.port)], clock_offset=lambda: offset) as b,
    ):
        b.on_local_delta(b.store.set("pump", "rpm", 5.0))
        await eventually(lambda: a.store.get("pump", "rpm") == 5.0, what="replicated")
        assert any("pump" in c for c in changes)
        assert a.peer_stats()["b"].clock_offset_s == 0.25
        body = metrics.render()[0].decode()
        assert 'drsdtp_peer_up{peer="b"} 1.0' in body
        assert 'drsdtp_peer_messages_received_total{peer="b"}' in body


async def test_shutdown_is_bounded_while_a_peer_is_unreachable() -> None:
    async with asyncio.timeout(20):
        async with running("a", peers=[("ghost", 1)]) as a:
            a.on_local_delta(a.store.set("pump", "rpm", 1.0))
            await eventually(lambda: a.peer_stats()["ghost"].dial_failures >= 2, what="dial failures")


async def test_a_dialler_reconnects_after_its_stream_failed_again_and_again() -> None:
    """Only b can dial (a cannot reach b's advertised address); b's stream to a is reset three times and
    b must come back each time. (On Python 3.11 a failed session used to leave the dialler's task marked
    as cancelled, so its supervisor stopped for good after the first failure.)"""
    a_store = Store(replica_id("a"))
    async with running("a", store=a_store) as a:
        proxy = Proxy(a.port)
        await proxy.start()
        try:
            async with running("b", peers=[("a", proxy.port)], advertise="127.0.0.1:1") as b:
                for i in range(3):
                    await b.wait_for_peers(["a"], 30)
                    proxy.block()  # resets the stream: the session fails with an error
                    await eventually(lambda: not b.connected_peers(), what=f"b sees the reset {i}")
                    proxy.unblock()
                b.on_local_delta(b.store.set("t", "after", 1))
                await eventually(lambda: a_store.get("t", "after") == 1, what="b reconnected and replicated")
        finally:
            await proxy.close()
