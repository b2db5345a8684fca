"""The in-process command interface: issue, status, de-duplication, limits, cancel and wait."""

from __future__ import annotations

import asyncio

import pytest

from drsdtp.actions.actuators import parse_actuators
from drsdtp.actions.book import CommandLimits, CommandRequest
from drsdtp.actions.record import Mark, State, read_record, record_twin, transition_fields
from drsdtp.actions.waiters import CommandWaiters
from drsdtp.api.feed import Subscription
from drsdtp.core import intents
from drsdtp.errors import ConfigError, InvalidValueError, LimitError, PreconditionError, UnknownTwinError

from .support import Replica, actuator, replicas


async def test_a_command_is_a_pending_record_with_its_request() -> None:
    (a,) = replicas("a")
    command = await a.book.issue_command("pump-1", "valve", 0.4, actor="op", reason="open a bit")
    record = a.book.get(command)
    assert record is not None
    assert (record.twin, record.action, record.field, record.value) == ("pump-1", "valve", "valve", 0.4)
    assert (record.state, record.actor, record.reason) == (State.PENDING, "op", "open a bit")
    assert record.executor == "a"
    assert record.deadline_ms - record.issued_ms == 60_000
    assert a.store.get(record_twin(command), "_scope") == "default"
    assert [r.id for r in a.book.list("pump-1")] == [command]
    assert a.book.list("pump-2") == []


async def test_bad_commands_are_refused_naming_what_is_wrong() -> None:
    reset = actuator(action="reset", field="", value="none", min=None, max=None)
    (a,) = replicas("a", tables=[actuator(), reset])
    with pytest.raises(UnknownTwinError, match=r"no actuator 'speed' for twin 'pump-1'.*reset, valve"):
        await a.book.issue_command("pump-1", "speed", 1.0)
    with pytest.raises(InvalidValueError, match=r"1\.5 is above its maximum 1"):
        await a.book.issue_command("pump-1", "valve", 1.5)
    with pytest.raises(InvalidValueError, match="takes a number"):
        await a.book.issue_command("pump-1", "valve", "open")
    with pytest.raises(InvalidValueError, match="without a value"):
        await a.book.issue_command("pump-1", "reset", 1.0)
    with pytest.raises(InvalidValueError, match="deadline_s"):
        await a.book.issue_command("pump-1", "valve", 0.5, deadline_s=-1)
    assert a.book.list() == []
    assert await a.book.issue_command("pump-1", "reset", args=[3, "hard"])


async def test_an_idempotency_key_names_one_command_on_every_replica() -> None:
    a, b = replicas("a", "b")
    first = await a.book.issue_command("pump-1", "valve", 0.4, key="k1")
    assert await a.book.issue_command("pump-1", "valve", 0.4, key="k1") == first
    assert a.book.repeats == 1
    with pytest.raises(InvalidValueError, match="already names command"):
        await a.book.issue_command("pump-1", "valve", 0.5, key="k1")
    # The same key taken on the other side of a partition: one record after the heal.
    assert await b.book.issue_command("pump-1", "valve", 0.4, key="k1") == first
    a.deliver_to(b)
    b.deliver_to(a)
    assert [r.id for r in a.book.list()] == [r.id for r in b.book.list()] == [first]
    assert a.store.encode_state() == b.store.encode_state()


async def test_the_record_cap_refuses_new_commands_and_holds_across_a_reopen() -> None:
    actuators = parse_actuators([actuator()])
    a = Replica("a", actuators, CommandLimits(max_records=3))
    for i in range(3):
        await a.book.issue_command("pump-1", "valve", 0.1 * i)
    with pytest.raises(LimitError, match=r"commands.max_records \(3\)"):
        await a.book.issue_command("pump-1", "valve", 0.5)
    assert a.book.refused_over_cap == 1
    again = Replica("a", actuators, CommandLimits(max_records=3))
    for delta in a.deltas:
        again.store.merge(delta)
    with pytest.raises(LimitError):
        await again.book.issue_command("pump-1", "valve", 0.5)


async def test_cancel_and_wait() -> None:
    a, b = replicas("a", "b")
    command = await b.book.issue_command("pump-1", "valve", 0.4)
    waiting = asyncio.create_task(a.book.wait(command, timeout_s=30))
    b.deliver_to(a)
    record = await b.book.cancel(command, "op", "wrong pump")
    assert record.cancel is not None and record.cancel.node == "op" and record.state == State.PENDING
    with pytest.raises(InvalidValueError, match="needs a reason"):
        await b.book.cancel(command, "op", " ")
    # The executor (a) honours it: the waiter on a returns at the terminal state.
    b.deliver_to(a)
    fields = transition_fields(State.PENDING, State.CANCELLED, Mark(1, "a", "cancelled by op: wrong pump"))
    assert fields is not None
    await a.commit(a.store.set_many(record_twin(command), fields), [record_twin(command)], "local")
    done = await asyncio.wait_for(waiting, 10)
    assert done is not None and done.state == State.CANCELLED and done.why == "cancelled by op: wrong pump"
    with pytest.raises(PreconditionError, match="already cancelled"):
        await a.book.cancel(command, "op", "again")
    # A wait that runs out returns the record as it is.
    other = await a.book.issue_command("pump-1", "valve", 0.2)
    late = await a.book.wait(other, timeout_s=0.05)
    assert late is not None and late.state == State.PENDING


async def test_waiters_share_one_subscription_and_each_gets_its_own_outcome() -> None:
    (a,) = replicas("a")
    subscribed = 0
    subscribe = a.feed.subscribe

    def counting(after: int | None = None) -> Subscription:
        nonlocal subscribed
        subscribed += 1
        return subscribe(after)

    a.feed.subscribe = counting  # type: ignore[method-assign]
    commands = [await a.book.issue_command("pump-1", "valve", 0.1 * i) for i in range(8)]
    done = [asyncio.create_task(a.book.wait(c, timeout_s=30)) for c in commands]
    # Two waiters on one command with other predicates: each is answered when its own holds.
    cancelled = asyncio.create_task(a.book.wait(commands[0], 30, until=lambda r: r.cancel is not None))
    await asyncio.sleep(0)
    assert len(a.book.waiters) == 9
    await a.book.cancel(commands[0], "op", "wrong pump")
    asked = await asyncio.wait_for(cancelled, 10)
    assert asked is not None and asked.cancel is not None and asked.state == State.PENDING
    assert not done[0].done()
    for i, command in enumerate(commands):
        state = State.APPLIED if i % 2 else State.FAILED
        fields = transition_fields(State.PENDING, state, Mark(1, "a", f"outcome {i}"))
        assert fields is not None
        await a.commit(a.store.set_many(record_twin(command), fields), [record_twin(command)], "local")
    records = await asyncio.wait_for(asyncio.gather(*done), 10)
    assert [(r.id, r.why) for r in records if r is not None] == [
        (c, f"outcome {i}") for i, c in enumerate(commands)
    ]
    assert subscribed == 1  # one subscription served all nine waiters
    assert len(a.book.waiters) == 0 and a.book.waiters.resolved == 9
    # The shared task outlives its last waiter: the next wait needs no new subscription.
    assert a.book.waiters.running
    late = await a.book.wait(commands[1], timeout_s=0.01, until=lambda r: False)
    assert late is not None and late.state == State.APPLIED and subscribed == 1
    # Closed, it stops at once, and with the last waiter from then on; a wait still starts it.
    a.book.waiters.close()
    assert not a.book.waiters.running
    late = await a.book.wait(commands[1], timeout_s=0.01, until=lambda r: False)
    assert late is not None and subscribed == 2 and not a.book.waiters.running


async def test_the_waiters_task_stops_at_a_change_once_idle_for_its_linger() -> None:
    (a,) = replicas("a")
    waiters = CommandWaiters(a.feed, a.book.get, linger_s=0.05)
    command = await a.book.issue_command("pump-1", "valve", 0.3)
    twin = record_twin(command)
    assert await waiters.wait(command, 0.01, until=lambda r: False) is not None
    assert waiters.running  # no change came since the last waiter left: it waits for one
    await asyncio.sleep(0.1)
    await a.commit(a.store.set(twin, "held", ""), [twin], "local")  # the first change after the linger
    for _ in range(100):
        if not waiters.running:
            break
        await asyncio.sleep(0.01)
    assert not waiters.running


async def test_a_desired_value_is_one_command_wherever_it_is_noted() -> None:
    a, b = replicas("a", "b")
    spec = a.book.actuators.get("pump-1", "valve")
    b.store.desire("pump-1", "valve.desired", 0.7)
    (intent,) = intents(b.store, "pump-1", "valve.desired")
    from_b = await b.book.desired(spec, intent, actor="op", reason="more flow")
    a.store.merge(b.store.encode_state())
    assert await a.book.desired(spec, intent) == from_b  # a saw it already: nothing new
    fresh_a = replicas("a")[0]
    fresh_a.store.merge(b.store.encode_state(["pump-1"]))
    assert await fresh_a.book.desired(spec, intent) == from_b  # computed on a alone: the same id
    b.deliver_to(fresh_a)
    assert from_b is not None
    record = read_record(fresh_a.store, from_b)
    assert record is not None and (record.origin, record.value, record.actor) == ("desired", 0.7, "op")
    too_far = b.store.desire("pump-1", "valve.desired", 3.0)
    assert too_far
    (intent2,) = intents(b.store, "pump-1", "valve.desired")
    assert await b.book.desired(spec, intent2) is None  # out of the actuator's range: not actuated


def test_actuator_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"actuators\[1\].action: 'pump-1 valve' is already actuators\[0\]"):
        parse_actuators([actuator(), actuator()])
    with pytest.raises(ConfigError, match=r"actuators\[0\].write: is required"):
        parse_actuators([{k: v for k, v in actuator().items() if k != "write"}])
    with pytest.raises(ConfigError, match=r"actuators\[0\].min: is above max"):
        parse_actuators([actuator(min=2.0)])
    with pytest.raises(ConfigError, match=r"actuators\[0\].desired: needs a field"):
        parse_actuators([actuator(field="", action="reset", value="none", desired=True, min=None, max=None)])
    with pytest.raises(ConfigError, match=r"interlocks\[0\].policy"):
        parse_actuators([actuator(interlocks=[{"field": "flow", "policy": "maybe"}])])
    with pytest.raises(ConfigError, match=r"actuators\[0\].tolerence: unknown key \(did you mean 'toler"):
        parse_actuators([actuator(tolerence=0.1)])


async def test_a_batch_s_new_records_are_one_delta_and_one_append() -> None:
    tables = [actuator(), actuator(field="speed", write={"input": "speed"})]
    a, b = replicas("a", "b", tables=tables)
    requests = [
        CommandRequest("pump-1", "valve", 0.2, key="k1"),
        CommandRequest("pump-1", "speed", 0.3),
        CommandRequest("pump-1", "valve", 0.2, key="k1"),  # the first's key again: that command
        CommandRequest("pump-1", "valve", 7.0),  # above max: refused on its own
        CommandRequest("pump-1", "valve", 0.9, key="k1"),  # the key with another request: refused
    ]
    issued = await a.book.issue_many(requests)
    assert isinstance(issued[0], tuple) and isinstance(issued[1], tuple)
    assert issued[2] == (issued[0][0], True)
    assert isinstance(issued[3], InvalidValueError) and isinstance(issued[4], InvalidValueError)
    assert len(a.deltas) == 1  # both new records in one delta, appended once
    a.deliver_to(b)
    for command in (issued[0][0], issued[1][0]):
        record = b.book.get(command)
        assert record is not None and record == a.book.get(command)
    assert a.book.issued == 2 and a.book.repeats == 1
    # A later batch repeating the key finds the written record.
    (again,) = await a.book.issue_many([requests[0]])
    assert again == (issued[0][0], True) and len(a.deltas) == 1


async def test_following_commands_answers_each_as_it_finishes_then_the_rest_at_the_timeout() -> None:
    """``follow`` (FollowCommands' core): one answer per position, each command as soon as it reached an
    outcome (in the order they did, an unknown command and one already finished at once), the rest at
    the timeout as they are; nothing is left waiting after it, nor after a follower that stopped early."""
    (a,) = replicas("a")
    first, second, stays = [await a.book.issue_command("pump-1", "valve", 0.1 * i) for i in (1, 2, 3)]
    done = transition_fields(State.PENDING, State.APPLIED, Mark(1, "a", "done before"))
    assert done is not None
    await a.commit(a.store.set_many(record_twin(stays), done), [record_twin(stays)], "local")
    followed = a.book.follow(["nope", first, second, stays, second], 3.0)

    async def answers(n: int) -> list[tuple[int, State | None]]:
        got = [await anext(followed) for _ in range(n)]
        return sorted((i, None if r is None else r.state) for i, r in got)

    assert await answers(2) == [(0, None), (3, State.APPLIED)]  # at once: unknown, already finished
    fields = transition_fields(State.PENDING, State.FAILED, Mark(2, "a", "second fails"))
    assert fields is not None
    await a.commit(a.store.set_many(record_twin(second), fields), [record_twin(second)], "local")
    assert await answers(2) == [(2, State.FAILED), (4, State.FAILED)]  # both places of the command
    assert await answers(1) == [(1, State.PENDING)]  # the timeout: as it is
    with pytest.raises(StopAsyncIteration):  # one answer per place, then the end
        await anext(followed)
    assert len(a.book.waiters) == 0
    stopped = a.book.follow([stays, first], 30)
    async for i, _ in stopped:  # the finished one, at once; the other still waited for
        assert i == 0 and len(a.book.waiters) == 1
        break
    await stopped.aclose()
    assert len(a.book.waiters) == 0
