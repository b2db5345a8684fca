"""A seeded, deterministic simulation of peer replication in one process (the Yjs / FoundationDB way).

Replicas of the real engine run the real protocol class (:class:`drsdtp.gossip.protocol.AntiEntropy`, the
one the gRPC transport drives) and exchange real, serialized PeerMessages through a simulated network that
drops, duplicates and reorders messages, partitions and heals pairs of nodes, and crash-restarts replicas.

Each replica's durable log is the real write-ahead log (:class:`drsdtp._core.Wal`) in its own temp dir
(on tmpfs when there is one: the log's code is under test here, not the disk). A local write waits in the
replica's group until a "flush" step appends the group and commits it (group commit); a received delta
the protocol asks to persist is appended and committed at once, before its ack. Only committed writes are
acknowledged, and only they may leave the node. Some flushes also take a log snapshot.

A crash drops the store, the log and the protocol's buffers, and reopens the log, which recovers the
store. Half of the crashes with a group pending happen mid-commit: the group's first record reaches the
file only in part (a torn tail recovery must cut).

At the end the network heals and the protocol alone runs to quiescence (retransmission timers and periodic
digest repairs included). Then every replica must hold the same state, equal to an oracle fed every
acknowledged delta directly and to the sequential specification of the acknowledged operations.

Run many seeds: ``python -m tests.gossip.sim --seeds 5000`` (prints the failing seed; ``--seed N`` replays;
``--strict`` and ``--scopes`` select the variants the test suite also runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drsdtp._core import Wal
from drsdtp.core import BatchWriter, Store
from drsdtp.gossip.limits import GossipLimits
from drsdtp.gossip.protocol import AntiEntropy, PeerLink
from drsdtp.wire.v1 import state_pb2
from drsdtp.wire.v1.peer_pb2 import PeerMessage

if TYPE_CHECKING:
    from drsdtp._core import Value  # a typing-only alias of the stubs

T0_MS = 1_700_000_000_000
# The logs live on tmpfs when there is one: thousands of seeds commit hundreds of times each.
_TMPFS = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
TWINS = ("t0", "t1", "t2")
REGISTERS = ("r0", "r1", "r2")
COUNTERS = ("c0", "c1")
SETS = ("s0", "s1")
ELEMENTS = ("a", "b", "c", "d")

Dot = tuple[int, int]  # (writer replica id, counter) of one twin's event
RegKey = tuple[int, int, int]  # (stamp, writer, counter): the LWW order


@dataclass(frozen=True)
class SimSettings:
    replicas: int = 5
    steps: int = 300
    drop: float = 0.10
    duplicate: float = 0.05
    crash: float = 0.01
    partition: float = 0.02
    scopes: tuple[tuple[str, ...], ...] | None = None  # per replica; None: everyone replicates "default"
    durable_barrier: bool = True  # the protocol's catch-up waits for local writes to be durable
    # Strict variant: the network loses only DeltaBatches and Acks (repair messages are lost only with
    # their session), and after the heal no periodic repair runs. The delta path (acks, gaps,
    # retransmission, truncation) must then converge on its own.
    strict: bool = False
    # A broken disk: a crash also loses the last group the log committed (acknowledged, maybe shipped).
    lose_last_commit: bool = False


# --- the sequential specification ------------------------------------------------------------------------


@dataclass
class Op:
    node: str
    durable: bool = False
    registers: list[tuple[str, str, RegKey, Any]] = field(default_factory=list)
    counter: tuple[str, str, int] | None = None
    set_add: tuple[str, str, str, Dot] | None = None
    set_kills: list[tuple[str, str, str, Dot]] = field(default_factory=list)


class Spec:
    """What the acknowledged operations say each field must hold."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def expected(self) -> dict[tuple[str, str], Any]:
        durable = [op for op in self.ops if op.durable]
        out: dict[tuple[str, str], Any] = {}
        best: dict[tuple[str, str], RegKey] = {}
        for op in durable:
            for twin, reg, key, value in op.registers:
                if (twin, reg) not in best or key > best[(twin, reg)]:
                    best[(twin, reg)] = key
                    out[(twin, reg)] = value
            if op.counter is not None:
                twin, ctr, amount = op.counter
                out[(twin, ctr)] = out.get((twin, ctr), 0) + amount
        killed = {kill for op in durable for kill in op.set_kills}
        for op in durable:
            if op.set_add is not None:
                twin, name, element, _ = op.set_add
                out.setdefault((twin, name), frozenset())
        for op in durable:
            if op.set_add is not None and op.set_add not in killed:
                twin, name, element, _ = op.set_add
                out[(twin, name)] = out[(twin, name)] | {element}
        return out


# --- a replica -------------------------------------------------------------------------------------------


class Replica:
    def __init__(self, sim: Simulation, name: str, rid: int, scopes: tuple[str, ...]) -> None:
        self.sim = sim
        self.name = name
        self.rid = rid
        self.scopes = scopes
        self.dir = sim.dir / name  # its write-ahead log
        self.pending: list[tuple[bytes, Op]] = []  # applied to the store, not yet durable
        self.last_commit: tuple[Path, int] | None = None  # (file, size before), with lose_last_commit only
        self.skew_ms = sim.rng.randint(-100, 100)
        self.store = Store(self.rid)
        self.boot()

    def boot(self) -> None:
        # The node persists its clock's high-water mark, so a restart never stamps below it.
        high_water = self.store.clock_high_water()
        self.store = Store(self.rid)
        self.store.set_manual_time(self.sim.now_ms + T0_MS + self.skew_ms)
        self.wal, report = Wal.open(self.dir, self.store)
        self.sim.counts["torn_bytes_cut"] += report["truncated_bytes"]
        if high_water:
            self.store.restore_clock(high_water)
        self.writer = BatchWriter(self.store)
        self.core = AntiEntropy(
            self.store, self.name, self.scopes, self.sim.limits, incarnation=self.sim.rng.getrandbits(63) + 1
        )

    def set_time(self) -> None:
        self.store.set_manual_time(self.sim.now_ms + T0_MS + self.skew_ms)

    def crash(self, torn: bool) -> None:
        if self.sim.settings.lose_last_commit and self.last_commit is not None:
            os.truncate(*self.last_commit)
            self.last_commit = None
        elif torn and self.pending:
            self._tear(self.pending[0][0])
        for _, op in self.pending:
            self.sim.spec.ops.remove(op)  # never acknowledged, never shipped: as if it never happened
        self.pending.clear()
        self.boot()

    def _tear(self, delta: bytes) -> None:
        """The crash hits while the group commit writes: only part of the first record reaches the file.
        The file that grew and by how much tell where the record is (no knowledge of the framing)."""
        before = _sizes(self.dir)
        self.wal.append(delta)
        self.wal.commit()
        grown = [(path, size) for path, size in _sizes(self.dir).items() if size > before.get(path, 0)]
        assert len(grown) == 1, f"one commit grew {len(grown)} files"
        path, after = grown[0]
        start = before.get(path, 0)
        if after - start > 1:
            os.truncate(path, start + self.sim.rng.randint(1, after - start - 1))
            self.sim.counts["torn_commits"] += 1

    def _commit_log(self) -> None:
        if not self.sim.settings.lose_last_commit:
            self.wal.commit()
            return
        before = _sizes(self.dir)
        self.wal.commit()
        grown = [path for path, size in _sizes(self.dir).items() if size > before.get(path, 0)]
        if grown:
            self.last_commit = (grown[0], before.get(grown[0], 0))

    def flush(self, snapshot: bool = False) -> None:
        """Group commit: the pending writes become durable, then (and only then) replicate."""
        for delta, _ in self.pending:
            self.wal.append(delta)
        self._commit_log()
        if snapshot and not self.sim.settings.lose_last_commit:
            self.wal.snapshot(self.store)  # the store holds nothing that is not durable now
            self.sim.counts["snapshots"] += 1
        for delta, op in self.pending:
            op.durable = True
            self.sim.acknowledged.append(delta)
            self.core.local_delta(delta, self.sim.now_s)
        self.pending.clear()

    def persist(self, deltas: list[bytes]) -> None:
        """Received deltas, durable before their ack (a commit of their own: the local group stays
        pending)."""
        for delta in deltas:
            self.wal.append(delta)
        self._commit_log()

    # random writes of every CRDT type
    def random_write(self, rng: random.Random) -> None:
        twin = rng.choice(TWINS)
        op = Op(self.name)
        kind = rng.random()
        if self.sim.settings.scopes is not None:
            # A node writes twins of its own scopes only; a twin's name tells its scope.
            scope = rng.choice(self.scopes)
            twin = f"{scope}.{twin}"
        if self.sim.settings.scopes is not None and twin not in self.store:
            delta = self.store.set(twin, "_scope", scope)
            self._record_registers(op, twin, ["_scope"], delta)
            self._commit(delta, op)
            op = Op(self.name)
        if kind < 0.30:
            reg = rng.choice(REGISTERS)
            choices: list[Value] = [
                rng.uniform(-1e3, 1e3), rng.randint(-9, 9), rng.random() < 0.5, rng.choice(["x", ""]),
                rng.randbytes(2),
            ]  # fmt: skip
            value = rng.choice(choices)
            delta = self.store.set(twin, reg, value)
            self._record_registers(op, twin, [reg], delta)
        elif kind < 0.40:
            regs = rng.sample(REGISTERS, 2)
            delta = self.store.set_many(twin, {r: rng.randint(0, 99) for r in regs})
            self._record_registers(op, twin, regs, delta)
        elif kind < 0.55:
            n = rng.randint(1, 4)
            regs = [rng.choice(REGISTERS) for _ in range(n)]
            values = [round(rng.uniform(0, 100), 3) for _ in range(n)]
            late = rng.random() < 0.3  # source-stamped readings from the past may lose to newer values
            src = np.full(n, T0_MS + self.sim.now_ms - 5000 if late else 0, np.int64)
            delta = self.writer.write([twin] * n, regs, values, src)
            self._record_batch(op, delta)
        elif kind < 0.75:
            ctr = rng.choice(COUNTERS)
            amount = rng.randint(-5, 5)
            delta = self.store.increment(twin, ctr, amount)
            op.counter = (twin, ctr, amount)
        else:
            name, element = rng.choice(SETS), rng.choice(ELEMENTS)
            before = self._dots(twin, name, element)
            # An add or a remove supersedes every add of the element this replica has seen.
            op.set_kills = [(twin, name, element, d) for d in before]
            if rng.random() < 0.6:
                delta = self.store.add(twin, name, element)
                (new,) = self._dots(twin, name, element) - before
                op.set_add = (twin, name, element, new)
            else:
                delta = self.store.remove(twin, name, element)
        self._commit(delta, op)

    def _commit(self, delta: bytes, op: Op) -> None:
        self.sim.spec.ops.append(op)
        self.pending.append((delta, op))

    def _record_registers(self, op: Op, twin: str, regs: list[str], delta: bytes) -> None:
        for reg in regs:
            entry = self.store.entry(twin, reg)
            assert entry is not None
            value, stamp, writer, counter = entry
            op.registers.append((twin, reg, (stamp, writer, counter), value))

    def _record_batch(self, op: Op, delta: bytes) -> None:
        message = state_pb2.StateDelta.FromString(delta)
        for twin_state in message.twins:
            for group in twin_state.writes:
                offsets = list(group.stamp_offsets) or [0] * len(group.fields)
                for reg, value, offset in zip(group.fields, group.f64s, offsets, strict=True):
                    key = (group.stamp + offset, message.replicas[group.writer], group.counter)
                    op.registers.append((twin_state.twin, reg, key, value))

    def _dots(self, twin: str, name: str, element: str) -> set[Dot]:
        if twin not in self.store:
            return set()
        state = state_pb2.StateDelta.FromString(self.store.encode_state([twin]))
        out: set[Dot] = set()
        for twin_state in state.twins:
            for set_state in twin_state.sets:
                if set_state.field != name:
                    continue
                for e in set_state.elements:
                    if e.element == element:
                        out |= {(state.replicas[w], c) for w, c in zip(e.writers, e.counters, strict=True)}
        return out


def _sizes(directory: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in directory.iterdir() if path.is_file()}


# --- the network -----------------------------------------------------------------------------------------


@dataclass
class Session:
    number: int
    links: dict[str, PeerLink]  # node name -> its link to the other node
    other: dict[str, str]  # node name -> the other node's name


@dataclass
class Packet:
    session: int
    src: str
    dst: str
    data: bytes


class Simulation:
    def __init__(self, seed: int, settings: SimSettings) -> None:
        self.seed = seed
        self.settings = settings
        self.rng = random.Random(seed)
        self.now_ms = 0
        # Small limits so that truncation, windows, splitting and joins all happen within a few hundred steps.
        self.limits = GossipLimits(
            max_message_bytes=64 * 1024,
            buffer_entries=self.rng.choice([4, 16, 1000]),
            window_bytes=64 * 1024,
            batch_entries=self.rng.choice([1, 3, 50]),
            join_min_entries=self.rng.choice([2, 4, 64]),
            relay=self.rng.random() < 0.8,
            repair_interval_s=2.0,
            retransmit_after_s=0.5,
        )
        self.spec = Spec()
        self.acknowledged: list[bytes] = []
        self.counts = dict.fromkeys(
            ("delivered", "dropped", "duplicated", "crashes", "partitions", "snapshots", "torn_commits",
             "torn_bytes_cut"),
            0,
        )  # fmt: skip
        self.dir = Path(tempfile.mkdtemp(prefix=f"drsdtp-sim-{seed}-", dir=_TMPFS))
        names = [f"n{i}" for i in range(settings.replicas)]
        self.replicas = {
            name: Replica(self, name, 1000 + 7 * i, settings.scopes[i] if settings.scopes else ("default",))
            for i, name in enumerate(names)
        }
        self.sessions: dict[frozenset[str], Session] = {}
        self.session_numbers = 0
        self.blocked: set[frozenset[str]] = set()
        self.in_flight: list[Packet] = []
        self.changed_at_ms = 0

    @property
    def now_s(self) -> float:
        return self.now_ms / 1000

    def advance(self, ms: int) -> None:
        self.now_ms += ms
        for r in self.replicas.values():
            r.set_time()

    # sessions: the handshake is modelled as reliable; a session dies with a partition or a crash
    def connect_all(self) -> None:
        names = sorted(self.replicas)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                pair = frozenset((a, b))
                if pair not in self.sessions and pair not in self.blocked:
                    self._connect(a, b)

    def _connect(self, a: str, b: str) -> None:
        ra, rb = self.replicas[a], self.replicas[b]
        hello_a = PeerMessage.FromString(ra.core.hello().SerializeToString())
        hello_b = PeerMessage.FromString(rb.core.hello().SerializeToString())
        ha = rb.core.check_hello(hello_a)
        hb = ra.core.check_hello(hello_b, expected=b)
        self.session_numbers += 1
        links = {a: ra.core.open(hb, self.now_s), b: rb.core.open(ha, self.now_s)}
        self.sessions[frozenset((a, b))] = Session(self.session_numbers, links, {a: b, b: a})

    def disconnect(self, pair: frozenset[str]) -> None:
        session = self.sessions.pop(pair, None)
        if session is None:
            return
        for name, link in session.links.items():
            self.replicas[name].core.close(link)
        self.in_flight = [p for p in self.in_flight if p.session != session.number]

    def crash(self, name: str) -> None:
        for pair in [p for p in self.sessions if name in p]:
            self.disconnect(pair)
        self.replicas[name].crash(torn=self.rng.random() < 0.5)
        self.counts["crashes"] += 1

    def send(self, session: Session, src: str, messages: list[PeerMessage]) -> None:
        dst = session.other[src]
        for m in messages:
            self.in_flight.append(Packet(session.number, src, dst, m.SerializeToString()))

    def poll(self) -> None:
        for session in list(self.sessions.values()):
            for name, link in session.links.items():
                self.send(session, name, self.replicas[name].core.outgoing(link, self.now_s))

    def deliver(self, index: int) -> None:
        packet = self.in_flight.pop(index)
        session = self.sessions.get(frozenset((packet.src, packet.dst)))
        if session is None or session.number != packet.session:
            return
        self.counts["delivered"] += 1
        dst = self.replicas[packet.dst]
        result = dst.core.receive(session.links[packet.dst], PeerMessage.FromString(packet.data), self.now_s)
        if result.persist:
            dst.persist(result.persist)
        if result.changed:
            self.changed_at_ms = self.now_ms
        self.send(session, packet.dst, result.replies)
        if result.ack is not None:
            self.send(session, packet.dst, [result.ack])
        if result.after_sync:
            if self.settings.durable_barrier:
                dst.flush()
            self.send(session, packet.dst, result.after_sync)

    @staticmethod
    def _droppable(packet: Packet) -> bool:
        kind = PeerMessage.FromString(packet.data).WhichOneof("kind")
        return kind in ("deltas", "ack")

    # the schedule
    def step(self) -> None:
        rng = self.rng
        s = self.settings
        roll = rng.random()
        alive = list(self.replicas)
        if roll < 0.40:
            self.replicas[rng.choice(alive)].random_write(rng)
        elif roll < 0.75 and self.in_flight:
            # The network moves a random share of what is in flight, in random order, each packet meeting
            # its fate: dropped, duplicated, or delivered.
            for _ in range(rng.randint(1, max(1, len(self.in_flight) // 2))):
                if not self.in_flight:
                    break
                i = rng.randrange(len(self.in_flight))
                fate = rng.random()
                if s.strict and not self._droppable(self.in_flight[i]):
                    fate = 1.0
                if fate < s.drop:
                    self.in_flight.pop(i)
                    self.counts["dropped"] += 1
                    continue
                if fate < s.drop + s.duplicate:
                    self.in_flight.append(self.in_flight[i])
                    self.counts["duplicated"] += 1
                self.deliver(i)
        elif roll < 0.85:
            self.replicas[rng.choice(alive)].flush(snapshot=rng.random() < 0.2)
        elif roll < 0.85 + s.partition:
            if self.blocked and rng.random() < 0.5:
                self.blocked.clear()
            else:
                a, b = rng.sample(alive, 2)
                self.blocked.add(frozenset((a, b)))
                self.disconnect(frozenset((a, b)))
                self.counts["partitions"] += 1
        elif roll < 0.85 + s.partition + s.crash:
            self.crash(rng.choice(alive))
        else:
            self.advance(rng.randint(1, 300))
            if rng.random() < 0.5:
                self.connect_all()
        self.poll()

    def run(self) -> None:
        try:
            self.connect_all()
            self.poll()
            for _ in range(self.settings.steps):
                self.step()
            self.quiesce()
            self.check()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)  # the stores stay in memory for the caller

    def quiesce(self, max_rounds: int = 5000) -> None:
        """Heal, flush, and let the protocol alone run until nothing changes for two repair periods."""
        self.blocked.clear()
        period_ms = int(self.limits.repair_interval_s * 1000)
        if self.settings.strict:
            self.limits = dataclasses.replace(self.limits, repair_interval_s=1e9)
            for r in self.replicas.values():
                r.core.limits = self.limits
                for link in r.core.links.values():
                    link.next_repair_at = math.inf
        for r in self.replicas.values():
            r.flush()
        self.connect_all()
        self.changed_at_ms = self.now_ms
        for _ in range(max_rounds):
            self.poll()
            while self.in_flight:
                while self.in_flight:
                    self.deliver(self.rng.randrange(len(self.in_flight)))
                self.poll()
            busy = any(
                not self.replicas[n].core.idle(link)
                for s in self.sessions.values()
                for n, link in s.links.items()
            )
            if not busy and self.now_ms - self.changed_at_ms > 2 * period_ms:
                return
            self.advance(100)
        raise AssertionError(f"no quiescence after {max_rounds} rounds")

    def check(self) -> None:
        states = {name: r.store.encode_state() for name, r in self.replicas.items()}
        if self.settings.scopes is None:
            assert len(set(states.values())) == 1, "replicas differ after quiescence"
            oracle = Store(1, max_offset_ms=1 << 40)
            shuffled = list(self.acknowledged)
            self.rng.shuffle(shuffled)
            for delta in shuffled:
                oracle.merge(delta)
            assert oracle.encode_state() == states["n0"], "replicas differ from the oracle fed every delta"
            self._check_spec(self.replicas["n0"].store)
        else:
            self._check_scopes()

    def _check_spec(self, store: Store) -> None:
        for (twin, name), want in self.spec.expected().items():
            got = store.get(twin, name)
            if isinstance(want, frozenset) and not want:
                assert got in (None, frozenset()), (twin, name, got, want)
            else:
                assert got == want and type(got) is type(want), (twin, name, got, want)

    def _check_scopes(self) -> None:
        """Each replica holds exactly the twins of its scopes, equal to the replica that holds them all."""
        full = self.replicas["n0"]  # configured with every scope
        for r in self.replicas.values():
            for twin in full.store.twins():
                scope = full.store.get(twin, "_scope")
                in_scope = twin.startswith("_") or scope in r.scopes
                if in_scope:
                    assert r.store.encode_state([twin]) == full.store.encode_state([twin]), (r.name, twin)
                else:
                    assert twin not in r.store, f"{r.name} holds {twin} of scope {scope!r}"
        self._check_spec(full.store)


# Partial replication: n0 replicates every scope, the others a subset each.
SCOPED = SimSettings(replicas=4, scopes=(("a", "b", "default"), ("a",), ("b",), ("a", "default")))


def run_seed(seed: int, settings: SimSettings | None = None) -> Simulation:
    sim = Simulation(seed, settings or SimSettings())
    try:
        sim.run()
    except BaseException:
        print(
            f"SIMULATION FAILED: SEED={seed} (replay: python -m tests.gossip.sim --seed {seed})",
            file=sys.stderr,
        )
        raise
    return sim


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--strict", action="store_true", help="the delta path alone must converge")
    parser.add_argument("--scopes", action="store_true", help="partial replication (four nodes)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the protocol's warnings (truncations) are expected here
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    settings = SCOPED if args.scopes else SimSettings(steps=args.steps, strict=args.strict)
    started = time.perf_counter()
    totals: dict[str, int] = {}
    for seed in seeds:
        sim = run_seed(seed, settings)
        for k, v in sim.counts.items():
            totals[k] = totals.get(k, 0) + v
    out(f"{len(seeds)} seeds passed in {time.perf_counter() - started:.1f} s; {totals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
