"""The command record: replicated, durable state in the twin store, one internal twin per command.

A command lives in the twin ``_cmd/<id>``, so it is made durable, replicated and caught up like every other
twin; any node shows its status. Its fields:

* the request (LWW registers, written when the command is created; every writer writes the same values):
  ``twin``, ``action``, ``field`` (the reported field it drives, "" for an action), ``value`` (absent for
  an action without one), ``args`` (JSON list), ``origin`` (``api``, ``desired``, ``rule`` ...), ``key``
  (the idempotency key), ``issued_ms``, ``deadline_ms``, ``executor`` (the node that executes it),
  ``issuer`` (the node that created it), ``intent`` (``<writer>:<counter>`` of the desired value it
  carries out), ``_scope`` (the target twin's: the record replicates where the twin does);
* who asked (``actor``, ``reason``): written only by the node that took the request, so a desired value's
  command created by the executor before the issuing node's record arrives never overwrites the actor;
* the lifecycle: one LWW text field per reached state, ``s.<state>`` = ``{"ms", "node", "reason"}``, and
  ``held`` (why the executor holds it, "" once released), ``result`` (what the device answered);
* ``attempts``: a PN-counter, one more per write sent to the device, plus ``claimed``: 1 when the executor's
  node created the record with its first attempt (one set of fields, no counter delta to join), 0 once it
  took that attempt back (only that node writes it, so last-writer-wins is exact);
* ``cancel``: a request to cancel (``{"actor", "reason", "ms"}``), which any node may write.

The lifecycle is a join-semilattice. The state of a record is the *greatest* state among its ``s.*``
fields under the total order of :func:`order`: ``pending < sent < acknowledged <`` every terminal state,
terminal states ranked among themselves by :data:`TERMINAL_PRECEDENCE`. The set of ``s.*`` fields only
grows (a field, once written, is never cleared) and merging two records unions them, so concurrent updates
merge to the furthest state on every replica, in any order, and a replica's state never moves back (a
terminal state never goes back to an active one). Only the executor writes ``s.*`` fields, so two terminal
states meet only if two nodes executed one command (a misconfiguration): the precedence then makes every
replica agree, and ``applied`` (what the device was seen to do) wins.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from types import MappingProxyType
from typing import Any, Final

from drsdtp._core import Store
from drsdtp.gossip.scopes import SCOPE_FIELD

__all__ = [
    "CMD_PREFIX",
    "TERMINAL",
    "TERMINAL_PRECEDENCE",
    "CommandId",
    "CommandRecord",
    "Mark",
    "RecordReader",
    "State",
    "command_id",
    "intent_command_id",
    "join",
    "order",
    "read_record",
    "record_twin",
    "request_fields",
    "state_of",
    "transition_fields",
]

CMD_PREFIX: Final = "_cmd/"
STATE_PREFIX: Final = "s."
ATTEMPTS: Final = "attempts"
CLAIMED: Final = "claimed"
HELD: Final = "held"
RESULT: Final = "result"
CANCEL: Final = "cancel"

CommandId = str
Value = float | int | bool | str | bytes


class State(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    APPLIED = "applied"
    REJECTED = "rejected"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# Lowest first: when two terminal states meet, the later one in this list wins.
TERMINAL_PRECEDENCE: Final = (
    State.CANCELLED,
    State.SUPERSEDED,
    State.TIMED_OUT,
    State.FAILED,
    State.REJECTED,
    State.APPLIED,
)
TERMINAL: Final = frozenset(TERMINAL_PRECEDENCE)
_RANK: Final = {State.PENDING: 0, State.SENT: 1, State.ACKNOWLEDGED: 2}


_ORDER: Final = {s: ((_RANK[s], 0) if s in _RANK else (3, TERMINAL_PRECEDENCE.index(s))) for s in State}


def order(state: State) -> tuple[int, int]:
    """The state's place in the lattice's total order."""
    return _ORDER[state]


def join(a: State, b: State) -> State:
    """The least upper bound of two states (the greater one)."""
    return a if _ORDER[a] >= _ORDER[b] else b


_json_str: Final = json.encoder.encode_basestring_ascii  # how json.dumps writes a string (ensure_ascii)


@dataclass(frozen=True, slots=True)
class Mark:
    """When a state was reached, by which node, and why (a terminal state always says why)."""

    ms: int
    node: str
    reason: str

    def to_text(self) -> str:
        """``json.dumps`` of the mark with sorted keys, byte for byte, spelt out (a third of its cost)."""
        return f'{{"ms": {int(self.ms)}, "node": {_json_str(self.node)}, "reason": {_json_str(self.reason)}}}'

    @classmethod
    def from_text(cls, text: object) -> Mark:
        try:
            raw = json.loads(text) if isinstance(text, str) else {}
            return cls(int(raw.get("ms", 0)), str(raw.get("node", "")), str(raw.get("reason", "")))
        except (ValueError, TypeError, AttributeError):
            return cls(0, "", f"unreadable mark {str(text)[:80]!r}")


def record_twin(command: CommandId) -> str:
    return CMD_PREFIX + command


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=12).hexdigest()


def command_id(twin: str, key: str = "") -> CommandId:
    """With an idempotency key, the same id wherever and however often the key is used for the twin (so
    a retry, on any node, finds the first command); without one, a fresh random id."""
    return _digest("key", twin, key) if key else secrets.token_hex(12)


def intent_command_id(twin: str, field_name: str, writer: int, counter: int) -> CommandId:
    """The command carrying out one desired value: every node computes the same id from the value's write
    (its writer and that writer's counter), so a desired value is actuated by one command."""
    return _digest("intent", twin, field_name, f"{writer:x}", str(counter))


# A state field's name -> its state (a dict look-up: ``State(...)`` costs ~1 us, a record has several).
_STATE_OF_FIELD: Final = {STATE_PREFIX + str(s): s for s in State}


def state_of(fields: Mapping[str, object]) -> State:
    """The record's state: the join of every state it reached (pending when none). A state a newer node
    knows is ignored rather than misread."""
    state = State.PENDING
    for name in fields:
        reached = _STATE_OF_FIELD.get(name)
        if reached is not None:
            state = join(state, reached)
    return state


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command as a replica holds it (read from the store)."""

    id: CommandId
    twin: str
    action: str
    field: str
    value: Value | None
    args: tuple[Any, ...]
    origin: str
    key: str
    issued_ms: int
    deadline_ms: int
    executor: str
    issuer: str
    intent: str
    actor: str
    reason: str
    state: State
    marks: Mapping[State, Mark] = dc_field(default_factory=dict)
    attempts: int = 0
    held: str = ""
    result: str = ""
    cancel: Mark | None = None  # a cancel request: node = the actor who asked

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def why(self) -> str:
        """Why it is where it is: the reason of its state, or what holds it."""
        mark = self.marks.get(self.state)
        if mark is not None and mark.reason:
            return mark.reason
        return self.held

    @property
    def updated_ms(self) -> int:
        return max([self.issued_ms, *(m.ms for m in self.marks.values())])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "twin": self.twin, "action": self.action, "field": self.field,
            "value": self.value if not isinstance(self.value, bytes) else self.value.hex(),
            "args": list(self.args), "origin": self.origin, "key": self.key, "issued_ms": self.issued_ms,
            "deadline_ms": self.deadline_ms, "executor": self.executor, "issuer": self.issuer,
            "intent": self.intent, "actor": self.actor, "reason": self.reason, "state": str(self.state),
            "why": self.why, "attempts": self.attempts, "held": self.held, "result": self.result,
            "marks": {str(s): {"ms": m.ms, "node": m.node, "reason": m.reason}
                      for s, m in self.marks.items()},
            "cancel": None if self.cancel is None
            else {"actor": self.cancel.node, "reason": self.cancel.reason},
        }  # fmt: skip


def _text(fields: Mapping[str, object], name: str) -> str:
    value = fields.get(name)
    return value if isinstance(value, str) else ""


def _int(fields: Mapping[str, object], name: str) -> int:
    value = fields.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _args(text: str) -> tuple[Any, ...]:
    try:
        raw = json.loads(text) if text else []
    except ValueError:
        return ()
    return tuple(raw) if isinstance(raw, list) else ()


def read_record(store: Store, command: CommandId) -> CommandRecord | None:
    """The record of ``command`` as this replica holds it; None when it holds none (or only a part of one
    that has no request yet, e.g. a cancel that arrived first)."""
    twin = record_twin(command)
    if twin not in store:
        return None
    return record_from_fields(command, store.fields(twin))


class RecordReader:
    """:func:`read_record` with the parsed records kept by (command, the twin's causal-context digest):
    the executor and the waiters read a record a dozen times per command, and parsing it costs ~100x the
    digest. Within one store every write or merge to the record twin adds a dot, so a digest seen before
    names the same fields (across stores it need not: one per store). Bounded; the oldest entry goes."""

    def __init__(self, store: Store, max_entries: int = 4096) -> None:
        self.store = store
        self._max = max_entries
        self._parsed: OrderedDict[tuple[CommandId, int], CommandRecord | None] = OrderedDict()

    def __call__(self, command: CommandId) -> CommandRecord | None:
        twin = record_twin(command)
        digest = self.store.context_digest(twin)
        if digest is None:
            return None
        key = (command, digest)
        try:
            return self._parsed[key]
        except KeyError:
            pass
        record = record_from_fields(command, self.store.fields(twin))
        self._parsed[key] = record
        if len(self._parsed) > self._max:
            self._parsed.popitem(last=False)
        return record


def record_from_fields(command: CommandId, fields: Mapping[str, object]) -> CommandRecord | None:
    if "twin" not in fields or "action" not in fields:
        return None
    marks: dict[State, Mark] = {}
    state = State.PENDING
    for name, text in fields.items():
        reached = _STATE_OF_FIELD.get(name)
        if reached is not None:
            marks[reached] = Mark.from_text(text)
            state = join(state, reached)
    value = fields.get("value")
    cancel = fields.get(CANCEL)
    return CommandRecord(
        id=command,
        twin=_text(fields, "twin"),
        action=_text(fields, "action"),
        field=_text(fields, "field"),
        value=value if isinstance(value, float | int | bool | str | bytes) else None,
        args=_args(_text(fields, "args")),
        origin=_text(fields, "origin"),
        key=_text(fields, "key"),
        issued_ms=_int(fields, "issued_ms"),
        deadline_ms=_int(fields, "deadline_ms"),
        executor=_text(fields, "executor"),
        issuer=_text(fields, "issuer"),
        intent=_text(fields, "intent"),
        actor=_text(fields, "actor"),
        reason=_text(fields, "reason"),
        state=state,
        marks=MappingProxyType(marks),  # records are shared (read_record's cache): read-only
        attempts=_int(fields, ATTEMPTS) + _int(fields, CLAIMED),
        held=_text(fields, HELD),
        result=_text(fields, RESULT),
        cancel=Mark.from_text(cancel) if isinstance(cancel, str) and cancel else None,
    )


def request_fields(
    *,
    twin: str,
    action: str,
    field_name: str,
    value: Value | None,
    args: Sequence[Any],
    origin: str,
    key: str,
    issued_ms: int,
    deadline_ms: int,
    executor: str,
    issuer: str,
    scope: str,
    intent: str = "",
    actor: str | None = None,
    reason: str = "",
) -> dict[str, Value]:
    """The fields that create a record (``actor`` None: not the node that took the request)."""
    out: dict[str, Value] = {
        "twin": twin,
        "action": action,
        "field": field_name,
        "args": json.dumps(list(args), separators=(",", ":")) if args else "",
        "origin": origin,
        "key": key,
        "issued_ms": issued_ms,
        "deadline_ms": deadline_ms,
        "executor": executor,
        "issuer": issuer,
        "intent": intent,
        SCOPE_FIELD: scope,
    }
    if value is not None:
        out["value"] = value
    if actor is not None:
        out["actor"] = actor
        out["reason"] = reason
    return out


def transition_fields(current: State, to: State, mark: Mark) -> dict[str, Value] | None:
    """The field that moves a record from ``current`` to ``to``; None when it would not move it forward
    (the lattice never goes back, a state already passed is not written again, and a terminal state is
    final: only a merge of two executors' outcomes may meet two, and :func:`join` decides)."""
    if current.terminal or order(to) <= order(current):
        return None
    return {STATE_PREFIX + str(to): mark.to_text()}
