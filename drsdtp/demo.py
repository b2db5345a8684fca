"""The in-process replication demo (``python -m drsdtp.demo``; ``drsdtp demo`` runs whole node processes):
three replicas of the real engine take concurrent writes of every CRDT
type, exchange their deltas through a network that shuffles, duplicates and drops them, then catch up
through digests and converge. It narrates each step, and returns whether the replicas converged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drsdtp.core import BatchWriter, Store, replica_id

NODES = ("edge-a", "edge-b", "edge-c")
ROOMS = ("room-1", "room-2", "room-3")


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    dropped: int = 0
    catch_up_bytes: int = 0


def _format_twin(store: Store, twin: str) -> str:
    parts = []
    for name, value in sorted(store.fields(twin).items()):
        if isinstance(value, float):
            parts.append(f"{name}={value:.2f}")
        elif isinstance(value, frozenset):
            parts.append(f"{name}={{{','.join(sorted(value))}}}")
        else:
            parts.append(f"{name}={value!r}")
    return " ".join(parts)


def run(
    seed: int = 7, rounds: int = 6, drop: float = 0.2, dup: float = 0.1, say: Callable[[str], None] = print
) -> bool:
    """Runs the demo; `say` receives each line. Returns True when all replicas converged."""
    rng = random.Random(seed)
    stores = {n: Store(replica_id(n)) for n in NODES}
    writers = {n: BatchWriter(s) for n, s in stores.items()}
    net = NetworkStats()
    in_flight: list[tuple[str, bytes]] = []

    def broadcast(origin: str, delta: bytes) -> None:
        for dest in NODES:
            if dest != origin:
                in_flight.append((dest, delta))
                net.sent += 1

    say(f"three replicas {', '.join(NODES)}; network drops {drop:.0%}, duplicates {dup:.0%}, reorders all")
    for r in range(1, rounds + 1):
        for node, store in stores.items():
            # Sensors: one batch of readings per node per round (numpy in, one native call).
            temps = 20 + np.asarray([rng.gauss(0, 0.5) for _ in ROOMS])
            broadcast(node, writers[node].write(ROOMS, ["temp"] * len(ROOMS), temps))
            # Concurrent writes of every type to shared twins.
            room = rng.choice(ROOMS)
            broadcast(node, store.set(room, "mode", rng.choice(["auto", "eco", "boost"])))
            broadcast(node, store.increment(room, "door_opens", rng.randint(1, 3)))
            tag = rng.choice(["inspected", "noisy", "draft"])
            if rng.random() < 0.7:
                broadcast(node, store.add(room, "tags", tag))
            else:
                broadcast(node, store.remove(room, "tags", tag))
        rng.shuffle(in_flight)
        delivered_now = 0
        for dest, delta in in_flight:
            if rng.random() < drop:
                net.dropped += 1
                continue
            copies = 2 if rng.random() < dup else 1
            net.duplicated += copies - 1
            for _ in range(copies):
                stores[dest].merge(delta)
                net.delivered += 1
                delivered_now += 1
        in_flight.clear()
        digests = {n: s.digest() for n, s in stores.items()}
        agree = len(set(digests.values())) == 1
        say(
            f"round {r}: {delivered_now} deltas delivered, {net.dropped} dropped so far; "
            f"replicas {'agree' if agree else 'differ'}"
        )

    say("partition heals: anti-entropy through digests and catch-up deltas")
    for a in NODES:
        for b in NODES:
            if a == b:
                continue
            differ = stores[a].differing_twins(stores[b].digest())
            if not differ:
                continue
            chunks = stores[a].catch_up(stores[b].version(differ), only_listed=True, max_bytes=16 << 10)
            size = sum(map(len, chunks))
            net.catch_up_bytes += size
            for chunk in chunks:
                stores[b].merge(chunk)
            say(f"  {a} -> {b}: {len(differ)} twin(s) differed, {len(chunks)} message(s), {size} bytes")

    states = {s.encode_state() for s in stores.values()}
    converged = len(states) == 1
    say(
        f"network: {net.sent} sent, {net.delivered} delivered, {net.duplicated} duplicated, "
        f"{net.dropped} dropped; catch-up {net.catch_up_bytes} bytes"
    )
    for room in ROOMS:
        say(f"  {room}: {_format_twin(stores[NODES[0]], room)}")
    say("converged: every replica holds identical state" if converged else "NOT converged")
    return converged


if __name__ == "__main__":
    raise SystemExit(0 if run() else 1)
