"""Commands in the SDK (issue 12): what a command asks (:class:`CommandSpec`), the record a node answers
(:class:`Command`) and one command's answer in a batch (:class:`CommandOutcome`), with the requests the
client sends for them.

A batch (``issue_commands``) is one call for many commands: each keeps its own idempotency key, deadline
and checks, and is answered on its own (a refused command is an outcome with an error, never an exception
that loses the others)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drsdtp.client.types import field_to_python
from drsdtp.client.writes import new_idempotency_key, scalar_pb
from drsdtp.wire.v1 import api_pb2

__all__ = ["Command", "CommandOutcome", "CommandSpec", "batch_request", "issue_request"]

Arg = float | int | bool | str


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command to issue: an actuator's ``action`` on ``twin`` with a ``value`` (or ``args`` for an
    action); ``idempotency_key`` names it on every node (``None``: a fresh key, so a retried batch issues
    it once; ``""``: none); ``deadline_s`` 0: the actuator's."""

    twin: str
    action: str
    value: Arg | None = None
    args: tuple[Arg, ...] = ()
    idempotency_key: str | None = None
    deadline_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Command:
    """A command's record as the node holds it."""

    id: str
    twin: str
    action: str
    field: str
    value: object
    args: tuple[object, ...]
    state: str  # pending, sent, acknowledged, applied, rejected, failed, timed_out, superseded, cancelled
    why: str  # why it is in that state (a terminal state always says), or what holds it
    terminal: bool
    attempts: int
    held: str
    result: str
    idempotency_key: str
    issued_ms: int
    deadline_ms: int
    executor: str
    issuer: str
    actor: str
    reason: str
    origin: str
    marks: tuple[tuple[str, int], ...]  # (state, wall ms) of each state it went through

    @property
    def applied(self) -> bool:
        return self.state == "applied"

    @classmethod
    def from_pb(cls, m: api_pb2.Command) -> Command:
        return cls(
            m.command_id, m.twin_id, m.action, m.field,
            field_to_python(m.value) if m.HasField("value") else None,
            tuple(field_to_python(a) for a in m.args), m.state, m.why, m.terminal, m.attempts, m.held,
            m.result, m.idempotency_key, m.issued_ms, m.deadline_ms, m.executor, m.issuer, m.actor,
            m.reason, m.origin, tuple((k.state, k.ms) for k in m.marks),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """One command's answer in a batch: its record, or why it was refused (``error_code``: the gRPC status
    name a single call would have failed with, e.g. ``INVALID_ARGUMENT``, ``NOT_FOUND``)."""

    command: Command | None
    repeated: bool = False  # its idempotency key already named this command: nothing new was issued
    error_code: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.command is not None and not self.error_code

    @classmethod
    def from_pb(cls, m: api_pb2.CommandResult) -> CommandOutcome:
        command = Command.from_pb(m.command) if m.HasField("command") else None
        return cls(command, m.repeated, m.error_code, m.error)


def issue_request(spec: CommandSpec, actor: str, wait_s: float = 0.0) -> api_pb2.CommandIssueRequest:
    key = new_idempotency_key() if spec.idempotency_key is None else spec.idempotency_key
    where = f"{spec.twin} {spec.action}"  # names a value the API cannot carry (NaN, a list) before sending
    args = [scalar_pb(a, f"{where} args[{i}]") for i, a in enumerate(spec.args)]
    request = api_pb2.CommandIssueRequest(
        twin_id=spec.twin, action=spec.action, args=args,
        idempotency_key=key, deadline_s=spec.deadline_s, actor=actor, reason=spec.reason, wait_s=wait_s,
    )  # fmt: skip
    if spec.value is not None:
        request.value.CopyFrom(scalar_pb(spec.value, f"{where} value"))
    return request


def batch_request(specs: Sequence[CommandSpec], actor: str, wait_s: float) -> api_pb2.CommandIssueBatch:
    return api_pb2.CommandIssueBatch(commands=[issue_request(s, actor) for s in specs], wait_s=wait_s)
