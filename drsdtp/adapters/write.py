"""The write half of an adapter: what an actuator's command does to the device.

An adapter that can act on its devices also satisfies :class:`Writer` (a small Protocol beside
:class:`~drsdtp.adapters.base.Adapter`, which stays read-only). The executor
(:mod:`drsdtp.actions.executor`) uses it in two steps:

* at start, :meth:`Writer.write_target` validates an actuator's ``[actuators.write]`` table into the
  adapter's own frozen target (a ``ConfigError`` names the key, e.g. ``actuators[2].write.address``);
* per attempt, :meth:`Writer.write` sends the command and returns a :class:`WriteOutcome`:

  - ``ACKNOWLEDGED``: the device confirmed it (a Modbus write response, an OPC UA Good status or method
    result, a message on the MQTT ack topic, a firmware ack line);
  - ``SENT``: it left us and reached the device's side (the broker's PUBACK) but the device's only
    confirmation is its reported value (the echo): the executor waits for the reported field to converge;
  - ``REJECTED``: the device refused it (an exception code, a Bad status, a negative ack): final, never
    retried, ``detail`` says why.

  A write that did not reach the device (connection lost, no answer within ``request.timeout_s``) raises
  :class:`~drsdtp.errors.AdapterError` (or ``TimeoutError``/``OSError``): the executor retries it with
  backoff within the command's deadline. A write refused before anything was sent because the adapter has
  no session (yet) raises :class:`NotConnectedError`: the executor waits for the session (within the
  deadline) without spending a retry.

Writes go over the adapter's own connection (the one its supervised read session holds) whenever the
protocol allows, so a write never opens a second session to a device that accepts one; while that session is
down, ``write`` raises ``AdapterError`` and the supervisor's reconnect brings it back for both halves.
``write`` may be called concurrently with the read session; each adapter serialises what its protocol needs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from drsdtp.errors import AdapterError

__all__ = [
    "NotConnectedError",
    "WriteOutcome",
    "WriteRequest",
    "WriteStatus",
    "WriteTarget",
    "Writer",
    "writer_of",
]

Value = float | int | bool | str | bytes


class NotConnectedError(AdapterError):
    """Nothing was sent: the adapter has no session with the device now (the supervisor is reconnecting)."""


class WriteStatus(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"
    SENT = "sent"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    status: WriteStatus
    detail: str = ""  # what the device answered (a method's result, an ack's text, an exception code)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One attempt at one command. ``command`` is the command id (the MQTT/firmware correlation id: a
    device that remembers it can drop a repeat); ``attempt`` counts from 1."""

    command: str
    twin: str
    action: str
    field: str  # the reported field it drives ("" for an action)
    value: Value | None
    args: tuple[Value, ...]
    attempt: int
    timeout_s: float  # how long to wait for the device's acknowledgement


class WriteTarget(Protocol):
    """An adapter's validated ``[actuators.write]`` table (each adapter defines its own frozen class)."""

    @property
    def label(self) -> str:
        """Where the write goes, for log lines and reasons (``holding 40 on unit 1``, a topic, a node id)."""
        ...


@runtime_checkable
class Writer(Protocol):
    def write_target(self, raw: Mapping[str, Any], key: str) -> WriteTarget:
        """Validates one ``[actuators.write]`` table (``key`` is its path, for errors)."""
        ...

    async def write(self, target: WriteTarget, request: WriteRequest) -> WriteOutcome:
        """Sends one attempt; raises ``AdapterError``/``TimeoutError``/``OSError`` if it did not arrive."""
        ...


def writer_of(adapter: object) -> Writer | None:
    """The adapter's write half, None for a read-only adapter."""
    return adapter if isinstance(adapter, Writer) else None
