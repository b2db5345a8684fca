"""The alarm record: replicated, durable state in the twin store, one internal twin per (rule, twin).

An alarm lives in the twin ``_alarm/<id>``, its id derived from the rule's name and the twin's
(:func:`alarm_id`), so every node that raises the same alarm writes the same record and two raises
de-duplicate by construction. Its fields (LWW registers):

* what it is about, the same from every writer: ``rule``, ``twin``, ``severity``, ``message``, ``_scope``
  (the twin's: the record replicates where the twin does);
* ``episode``: how many times it was raised (its count); a raise of an alarm that is not active writes
  ``episode + 1`` with ``raised_ms`` and ``raised_by``. Two nodes raising it at once both write the number
  after the one they share, so the raise is one episode, not two. ``first_ms`` is written by the first raise;
  ``last_ms`` by every raise and clear (when the condition was last seen);
* ``acked`` and ``cleared``: a :class:`Mark` of the episode they belong to, so an acknowledgement or a
  clear of an earlier episode never applies to a newer one.

The state of an alarm is its current episode's: ``cleared`` when that episode has a clear, else
``acknowledged`` when it has an acknowledgement, else ``active`` (active, unacknowledged).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from drsdtp._core import Store

__all__ = [
    "ALARM_PREFIX",
    "AlarmRecord",
    "AlarmState",
    "Mark",
    "alarm_id",
    "alarm_twin",
    "read_alarm",
    "record_from_fields",
]

ALARM_PREFIX: Final = "_alarm/"


class AlarmState(enum.StrEnum):
    ACTIVE = "active"  # active, not acknowledged
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


def alarm_id(rule: str, twin: str) -> str:
    """The same on every node: the de-duplication of alarms rests on it."""
    return hashlib.blake2b(f"{rule}\0{twin}".encode(), digest_size=8).hexdigest()


def alarm_twin(alarm: str) -> str:
    return ALARM_PREFIX + alarm


@dataclass(frozen=True, slots=True)
class Mark:
    episode: int
    ms: int
    who: str  # the acknowledging actor, or the clearing node
    reason: str = ""

    def to_text(self) -> str:
        return json.dumps({"e": self.episode, "ms": self.ms, "who": self.who, "reason": self.reason})

    @classmethod
    def from_text(cls, text: object) -> Mark | None:
        if not isinstance(text, str) or not text:
            return None
        try:
            raw = json.loads(text)
            return cls(int(raw["e"]), int(raw["ms"]), str(raw["who"]), str(raw.get("reason", "")))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    id: str
    rule: str
    twin: str
    severity: str
    message: str
    state: AlarmState
    count: int  # episodes: times raised
    first_ms: int
    raised_ms: int  # this episode's raise
    last_ms: int
    raised_by: str
    acked: Mark | None  # this episode's acknowledgement
    cleared: Mark | None  # this episode's clear

    @property
    def active(self) -> bool:
        return self.state is not AlarmState.CLEARED


def _int(fields: Mapping[str, object], name: str) -> int:
    value = fields.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(fields: Mapping[str, object], name: str) -> str:
    value = fields.get(name)
    return value if isinstance(value, str) else ""


def record_from_fields(alarm: str, fields: Mapping[str, object]) -> AlarmRecord | None:
    episode = _int(fields, "episode")
    if episode <= 0 or "rule" not in fields:
        return None
    acked = Mark.from_text(fields.get("acked"))
    cleared = Mark.from_text(fields.get("cleared"))
    acked = acked if acked is not None and acked.episode == episode else None
    cleared = cleared if cleared is not None and cleared.episode == episode else None
    if cleared is not None:
        state = AlarmState.CLEARED
    elif acked is not None:
        state = AlarmState.ACKNOWLEDGED
    else:
        state = AlarmState.ACTIVE
    return AlarmRecord(
        id=alarm,
        rule=_text(fields, "rule"),
        twin=_text(fields, "twin"),
        severity=_text(fields, "severity"),
        message=_text(fields, "message"),
        state=state,
        count=episode,
        first_ms=_int(fields, "first_ms"),
        raised_ms=_int(fields, "raised_ms"),
        last_ms=_int(fields, "last_ms"),
        raised_by=_text(fields, "raised_by"),
        acked=acked,
        cleared=cleared,
    )


def read_alarm(store: Store, alarm: str) -> AlarmRecord | None:
    twin = alarm_twin(alarm)
    if twin not in store:
        return None
    return record_from_fields(alarm, store.fields(twin))
