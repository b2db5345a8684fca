"""Hypothesis state machine over the binding: random writes of every CRDT type on 3-5 replicas, deltas
delivered in random order with drops and duplicates; at the end anti-entropy heals the drops, every replica
must hold the same state, and that state must equal the sequential specification of all operations.

The specification is computed from the operations alone (riak_dt / AntidoteDB style): a register holds
the write with the greatest (stamp, writer, event), a counter the sum of all increments, a set element
is present iff some add of it was not observed by a remove or a later add of it at the replica that made
it (add wins over a concurrent remove), and a desired (multi-value) field holds the value of every write
that no later write or clear observed at the replica that made it, in write order: concurrent intents are
all kept, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from drsdtp.core import BatchWriter, Store
from drsdtp.wire.v1 import state_pb2

T0 = 1_700_000_000_000
TWINS = ["press-1", "press-2"]
REGS = ["temp", "mode"]
COUNTERS = ["cycles"]
SETS = ["alarms"]
DESIRED = ["setpoint", "valve"]
ELEMS = ["a", "b", "c"]
IDS = [50, 10, 40, 20, 30]


@dataclass
class Model:
    """What each replica has seen (op ids) and every operation's effect, for the spec."""

    seen: list[set[int]]
    registers: dict[tuple[str, str], list[tuple[tuple[int, int, int], object]]] = field(default_factory=dict)
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    adds: dict[tuple[str, str, str], set[int]] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)
    set_ops: dict[int, tuple[str, str]] = field(default_factory=dict)  # op -> (twin, set field)
    # op -> (twin, desired field); and each desired write's (stamp, writer, event) and value
    desire_ops: dict[int, tuple[str, str]] = field(default_factory=dict)
    desires: dict[int, tuple[tuple[int, int, int], object]] = field(default_factory=dict)
    ops: int = 0


class Replication(RuleBasedStateMachine):
    @initialize(n=st.integers(min_value=3, max_value=5))
    def start(self, n: int) -> None:
        self.stores = []
        for i in range(n):
            s = Store(IDS[i])
            s.set_manual_time(T0 + i)
            self.stores.append(s)
        self.writers = [BatchWriter(s) for s in self.stores]
        self.model = Model(seen=[set() for _ in range(n)])
        self.network: list[tuple[int, bytes, frozenset[int]]] = []
        self.delivered = self.dropped = self.duplicated = 0

    def _broadcast(self, origin: int, delta: bytes, ops: set[int]) -> None:
        self.model.seen[origin] |= ops
        for dest in range(len(self.stores)):
            if dest != origin:
                self.network.append((dest, delta, frozenset(ops)))

    def _new_op(self) -> int:
        self.model.ops += 1
        return self.model.ops

    replica = st.integers(min_value=0, max_value=4)

    @rule(
        r=replica,
        twin=st.sampled_from(TWINS),
        reg=st.sampled_from(REGS),
        value=st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False), st.integers(-9, 9), st.text(max_size=3), st.booleans()
        ),
    )
    def set_register(self, r: int, twin: str, reg: str, value: object) -> None:
        r %= len(self.stores)
        s = self.stores[r]
        delta = s.set(twin, reg, value)  # type: ignore[arg-type]
        entry = s.entry(twin, reg)
        assert entry is not None
        _, stamp, writer, counter = entry
        self.model.registers.setdefault((twin, reg), []).append(((stamp, writer, counter), value))
        self._broadcast(r, delta, {self._new_op()})

    @rule(
        r=replica,
        twin=st.sampled_from(TWINS),
        values=st.lists(st.floats(-100, 100), min_size=1, max_size=4),
        late=st.booleans(),
    )
    def batch(self, r: int, twin: str, values: list[float], late: bool) -> None:
        r %= len(self.stores)
        regs = [REGS[i % 2] for i in range(len(values))]
        # Source-stamped readings from the past: a late one may lose to a newer value already present.
        src = np.full(len(values), T0 - 1000 if late else 0, np.int64)
        delta = self.writers[r].write([twin] * len(values), regs, values, src)
        # The delta names the batch's event and carries, per field, the reading that won inside the batch.
        msg = state_pb2.StateDelta.FromString(delta)
        (group,) = msg.twins[0].writes
        offsets = list(group.stamp_offsets) or [0] * len(group.fields)
        for reg, value, off in zip(group.fields, group.f64s, offsets, strict=True):
            key = (group.stamp + off, msg.replicas[group.writer], group.counter)
            self.model.registers.setdefault((twin, reg), []).append((key, value))
        assert {reg: values[max(i for i, g in enumerate(regs) if g == reg)] for reg in set(regs)} == dict(
            zip(group.fields, group.f64s, strict=True)
        )
        self._broadcast(r, delta, {self._new_op()})

    @rule(r=replica, twin=st.sampled_from(TWINS), ctr=st.sampled_from(COUNTERS), n=st.integers(-5, 5))
    def increment(self, r: int, twin: str, ctr: str, n: int) -> None:
        r %= len(self.stores)
        delta = self.stores[r].increment(twin, ctr, n)
        self.model.counters[(twin, ctr)] = self.model.counters.get((twin, ctr), 0) + n
        self._broadcast(r, delta, {self._new_op()})

    @rule(
        r=replica,
        twin=st.sampled_from(TWINS),
        s=st.sampled_from(SETS),
        e=st.sampled_from(ELEMS),
        add=st.booleans(),
    )
    def set_op(self, r: int, twin: str, s: str, e: str, add: bool) -> None:
        r %= len(self.stores)
        store = self.stores[r]
        op = self._new_op()
        # Both an add and a remove supersede the adds of e this replica has seen and not yet lost.
        observed = {a for a in self.model.adds.get((twin, s, e), set()) if a in self.model.seen[r]}
        self.model.killed |= observed
        if add:
            delta = store.add(twin, s, e)
            self.model.adds.setdefault((twin, s, e), set()).add(op)
        else:
            delta = store.remove(twin, s, e)
        self.model.set_ops[op] = (twin, s)
        # A set delta carries the whole set: every op on it that this replica had seen travels with it.
        carried = {o for o in self.model.seen[r] if self.model.set_ops.get(o) == (twin, s)}
        self._broadcast(r, delta, {op} | carried)

    @rule(
        r=replica,
        twin=st.sampled_from(TWINS),
        name=st.sampled_from(DESIRED),
        value=st.one_of(
            st.none(),
            st.floats(-1e6, 1e6, allow_nan=False),
            st.integers(-9, 9),
            st.text(max_size=3),
            st.booleans(),
            st.binary(max_size=3),
        ),
    )
    def desire(self, r: int, twin: str, name: str, value: object) -> None:
        r %= len(self.stores)
        store = self.stores[r]
        op = self._new_op()
        # A write or clear replaces every desired value of the field this replica has seen.
        observed = {o for o in self.model.seen[r] if self.model.desire_ops.get(o) == (twin, name)}
        self.model.killed |= observed
        if value is None:
            delta = store.clear_desired(twin, name)
            assert store.get(twin, name) == ()
        else:
            delta = store.desire(twin, name, value)  # type: ignore[arg-type]
            (intent,) = store.desired(twin, name) or []
            assert intent[0] == value and type(intent[0]) is type(value)
            self.model.desires[op] = ((intent[1], intent[2], intent[3]), value)
        self.model.desire_ops[op] = (twin, name)
        # The delta carries the whole register, so every write to it this replica had seen travels with it.
        self._broadcast(r, delta, {op} | observed)

    @precondition(lambda self: bool(self.network))
    @rule(
        pick=st.integers(min_value=0), mode=st.sampled_from(["deliver", "deliver", "deliver", "drop", "dup"])
    )
    def network_step(self, pick: int, mode: str) -> None:
        i = pick % len(self.network)
        dest, delta, ops = self.network[i]
        if mode == "dup":
            self.network.append((dest, delta, ops))
            self.duplicated += 1
            return
        self.network.pop(i)
        if mode == "drop":
            self.dropped += 1
            return
        self.stores[dest].merge(delta)
        self.model.seen[dest] |= ops
        self.delivered += 1

    def teardown(self) -> None:
        if not hasattr(self, "stores"):
            return
        # Heal: deliver what is still in flight, then pairwise anti-entropy through digests and catch-up
        # repairs whatever the drops lost.
        for dest, delta, _ in self.network:
            self.stores[dest].merge(delta)
        for a in self.stores:
            for b in self.stores:
                if a is not b:
                    differ = a.differing_twins(b.digest())
                    for chunk in a.catch_up(b.version(differ), only_listed=True, max_bytes=512):
                        b.merge(chunk)
        states = {s.encode_state() for s in self.stores}
        assert len(states) == 1, "replicas did not converge"
        self._check_spec(self.stores[0])

    def _check_spec(self, s: Store) -> None:
        for (twin, reg), writes in self.model.registers.items():
            expected = max(writes, key=lambda w: w[0])[1]
            got = s.get(twin, reg)
            assert got == expected and type(got) is type(expected), (twin, reg, got, expected)
        for (twin, ctr), total in self.model.counters.items():
            assert s.get(twin, ctr) == total, (twin, ctr)
        for twin in TWINS:
            for name in SETS:
                touched = any(k[:2] == (twin, name) for k in self.model.adds)
                expected = frozenset(
                    e for e in ELEMS if self.model.adds.get((twin, name, e), set()) - self.model.killed
                )
                got = s.get(twin, name)
                if touched:
                    assert got == expected, (twin, name, got, expected)
            for name in DESIRED:
                ops = [o for o, key in self.model.desire_ops.items() if key == (twin, name)]
                alive = [d for o, d in self.model.desires.items() if o in ops and o not in self.model.killed]
                alive.sort(key=lambda d: d[0])
                intents = s.desired(twin, name)
                if not ops:
                    assert intents is None
                    continue
                assert intents is not None
                assert [((stamp, writer, n), v) for v, stamp, writer, n in intents] == alive, (twin, name)
                assert all(type(v) is type(d[1]) for (v, *_), d in zip(intents, alive, strict=True))
                assert s.get(twin, name) == tuple(d[1] for d in alive)


Replication.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestReplication = Replication.TestCase
