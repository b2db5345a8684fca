"""The command record's lifecycle is a join-semilattice in the real engine: replicas that write states
concurrently and exchange deltas in any order converge to the join of everything written, and no replica's
state ever moves back."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drsdtp.actions.record import (
    TERMINAL,
    Mark,
    State,
    intent_command_id,
    join,
    order,
    read_record,
    record_twin,
    request_fields,
    state_of,
    transition_fields,
)
from drsdtp.core import Store, replica_id

STATES = list(State)
CMD = "c0ffee"


def test_join_is_a_semilattice_over_every_state() -> None:
    for a, b, c in itertools.product(STATES, repeat=3):
        assert join(a, a) == a
        assert join(a, b) == join(b, a)
        assert join(join(a, b), c) == join(a, join(b, c))
        assert order(join(a, b)) >= max(order(a), order(b))
    assert all(order(t) > order(State.ACKNOWLEDGED) for t in TERMINAL)
    assert join(State.TIMED_OUT, State.APPLIED) == State.APPLIED


def test_a_terminal_state_is_final_for_its_writer() -> None:
    mark = Mark(1, "n", "why")
    assert transition_fields(State.APPLIED, State.CANCELLED, mark) is None
    assert transition_fields(State.TIMED_OUT, State.APPLIED, mark) is None
    assert transition_fields(State.ACKNOWLEDGED, State.SENT, mark) is None
    assert transition_fields(State.PENDING, State.SENT, mark) == {"s.sent": mark.to_text()}


def _create(store: Store) -> bytes:
    fields = request_fields(
        twin="pump-1", action="valve", field_name="valve", value=0.4, args=(), origin="api", key="",
        issued_ms=1, deadline_ms=2, executor="a", issuer="a", scope="default", actor="op", reason="r",
    )  # fmt: skip
    return store.set_many(record_twin(CMD), fields)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("to"), st.integers(0, 2), st.sampled_from(STATES[1:])),
        st.tuples(st.just("merge"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("attempt"), st.integers(0, 2), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_replicas_converge_to_the_join_and_never_go_back(script: list[tuple[str, int, object]]) -> None:
    replicas = [Store(replica_id(f"n{i}")) for i in range(3)]
    created = _create(replicas[0])
    for r in replicas[1:]:
        r.merge(created)
    deltas: list[list[bytes]] = [[] for _ in replicas]  # everything each replica wrote or learnt
    written = State.PENDING
    seen = [State.PENDING] * 3
    for op, i, arg in script:
        store = replicas[i]
        if op == "to":
            assert isinstance(arg, State)
            current = state_of(store.fields(record_twin(CMD)))
            fields = transition_fields(current, arg, Mark(len(deltas[i]), f"n{i}", str(arg)))
            if fields is not None:
                deltas[i].append(store.set_many(record_twin(CMD), fields))
                written = join(written, arg)
        elif op == "attempt":
            deltas[i].append(store.increment(record_twin(CMD), "attempts", 1))
        else:
            assert isinstance(arg, int)
            for delta in deltas[i]:
                replicas[arg].merge(delta)
            deltas[arg].extend(deltas[i])
        for j, r in enumerate(replicas):
            now = state_of(r.fields(record_twin(CMD)))
            assert order(now) >= order(seen[j]), f"replica {j} went back from {seen[j]} to {now}"
            seen[j] = now
    for a, b in itertools.permutations(range(3), 2):
        replicas[b].merge(replicas[a].encode_state())
    states = {state_of(r.fields(record_twin(CMD))) for r in replicas}
    assert states == {written}
    assert len({r.encode_state() for r in replicas}) == 1
    record = read_record(replicas[0], CMD)
    assert record is not None and record.state == written
    assert record.attempts == sum(op == "attempt" for op, _, _ in script)


def test_an_intent_names_one_command_wherever_it_is_computed() -> None:
    a = intent_command_id("pump-1", "valve", 0x1234, 7)
    assert a == intent_command_id("pump-1", "valve", 0x1234, 7)
    assert a != intent_command_id("pump-1", "valve", 0x1234, 8)
    assert a != intent_command_id("pump-2", "valve", 0x1234, 7)


@pytest.mark.parametrize(
    "mark",
    [
        Mark(1, "a", "b"),
        Mark(1_733_000_000_000, 'nöde "x"', "a \\ b\nc \u2028 \U0001f600 \x00"),
        Mark(-5, "", ""),
    ],
)
def test_a_mark_s_text_is_json_dumps_with_sorted_keys_and_reads_back(mark: Mark) -> None:
    text = mark.to_text()
    assert text == json.dumps({"ms": mark.ms, "node": mark.node, "reason": mark.reason}, sort_keys=True)
    assert Mark.from_text(text) == mark
