"""The in-process interface to alarms: raise, clear, acknowledge, read and list.

Rules raise and clear (:mod:`drsdtp.rules.service`); operators acknowledge over the API and the CLI.
Every change is one local write made durable and replicated like any twin's (``commit``). Bound:
``max_alarms`` records, counted from the store (so it holds across restarts); a raise beyond it is
refused and counted (the engine cannot delete a twin yet).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from drsdtp._core import Store
from drsdtp.alarms.record import (
    ALARM_PREFIX,
    AlarmRecord,
    AlarmState,
    Mark,
    alarm_id,
    alarm_twin,
    read_alarm,
)
from drsdtp.errors import InvalidValueError, LimitError, PreconditionError, UnknownTwinError
from drsdtp.gossip.scopes import SCOPE_FIELD, scope_of

__all__ = ["AlarmBook", "Transition"]

Value = float | int | bool | str | bytes  # what one register holds

Commit = Callable[[bytes, Sequence[str], str], Awaitable[None]]
Audit = Callable[[AlarmRecord, str, str, str], Awaitable[None]]  # record, event, actor, reason
COUNT_REFRESH_S: Final = 5.0
PAGE: Final = 4096


@dataclass(frozen=True, slots=True)
class Transition:
    record: AlarmRecord
    changed: bool  # False: the record already was in that state (another node got there first)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AlarmBook:
    def __init__(
        self,
        store: Store,
        commit: Commit,
        *,
        node_id: str,
        max_alarms: int = 100_000,
        audit: Audit | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self._commit = commit
        self.node_id = node_id
        self.max_alarms = max_alarms
        self._audit = audit
        self._clock_ms = clock_ms
        self._count = 0
        self._counted_at = -float("inf")
        self._active = 0
        self._active_at = -float("inf")
        self.refused_over_cap = 0
        self.raised = 0
        self.cleared = 0
        self.acknowledged = 0

    # ----- reads ------------------------------------------------------------------------------------------

    def get(self, alarm: str) -> AlarmRecord | None:
        return read_alarm(self.store, alarm)

    def find(self, rule: str, twin: str) -> AlarmRecord | None:
        return self.get(alarm_id(rule, twin))

    def ids(self) -> list[str]:
        out: list[str] = []
        after: str | None = None
        while True:
            page = self.store.twins_page(after, ALARM_PREFIX, PAGE)
            out.extend(t[len(ALARM_PREFIX) :] for t in page)
            if len(page) < PAGE:
                return out
            after = page[-1]

    def list(
        self, *, active: bool = False, twin: str = "", rule: str = "", limit: int = 1000
    ) -> list[AlarmRecord]:
        """Alarms (only those not cleared with ``active``), the most recently raised first."""
        out = []
        for alarm in self.ids():
            record = self.get(alarm)
            if record is None or (active and not record.active):
                continue
            if (twin and record.twin != twin) or (rule and record.rule != rule):
                continue
            out.append(record)
        out.sort(key=lambda r: (r.raised_ms, r.id), reverse=True)
        return out[:limit]

    def active_count(self) -> int:
        """Alarms not cleared (recounted at most every few seconds: a scrape must stay cheap)."""
        now = time.monotonic()
        if now - self._active_at >= COUNT_REFRESH_S:
            self._active, self._active_at = len(self.list(active=True, limit=1 << 62)), now
        return self._active

    def count(self) -> int:
        now = time.monotonic()
        if now - self._counted_at >= COUNT_REFRESH_S:
            self._count, self._counted_at = len(self.ids()), now
        return self._count

    # ----- writes -----------------------------------------------------------------------------------------

    async def raise_alarm(self, rule: str, twin: str, severity: str, message: str) -> Transition:
        """Raises the alarm of ``rule`` on ``twin``: a new episode unless it is active already."""
        alarm = alarm_id(rule, twin)
        record = self.get(alarm)
        now = self._clock_ms()
        if record is not None and record.active:
            return Transition(record, False)
        if record is None:
            self._check_cap()
        episode = (record.count if record is not None else 0) + 1
        fields: dict[str, Value] = {
            "rule": rule,
            "twin": twin,
            "severity": severity,
            "message": message,
            SCOPE_FIELD: scope_of(self.store, twin),
            "episode": episode,
            "raised_ms": now,
            "raised_by": self.node_id,
            "last_ms": now,
        }
        if record is None:
            fields["first_ms"] = now
        await self._write(alarm, fields)
        if record is None:
            self._count += 1
        self.raised += 1
        return Transition(self._read(alarm), True)

    async def clear_alarm(self, rule: str, twin: str, reason: str = "") -> Transition | None:
        """Clears the alarm of ``rule`` on ``twin``; None when there is none."""
        alarm = alarm_id(rule, twin)
        record = self.get(alarm)
        if record is None:
            return None
        if not record.active:
            return Transition(record, False)
        now = self._clock_ms()
        mark = Mark(record.count, now, self.node_id, reason)
        await self._write(alarm, {"cleared": mark.to_text(), "last_ms": now})
        self.cleared += 1
        return Transition(self._read(alarm), True)

    async def acknowledge(self, alarm: str, actor: str, reason: str = "") -> AlarmRecord:
        """An operator's acknowledgement of the alarm's current episode (active or cleared)."""
        record = self.get(alarm)
        if record is None:
            raise UnknownTwinError(f"no alarm {alarm!r} on this node (drsdtp alarms lists them)")
        if record.acked is not None:
            raise PreconditionError(
                f"alarm {alarm} ({record.rule} on {record.twin}) is already acknowledged by "
                f"{record.acked.who}"
            )
        if len(reason) > 1000:
            raise InvalidValueError("reason: longer than 1000 characters")
        mark = Mark(record.count, self._clock_ms(), actor or "anonymous", reason)
        await self._write(alarm, {"acked": mark.to_text()})
        self.acknowledged += 1
        updated = self._read(alarm)
        if self._audit is not None:
            await self._audit(updated, "acknowledged", mark.who, reason)
        return updated

    # ----- helpers ----------------------------------------------------------------------------------------

    def _read(self, alarm: str) -> AlarmRecord:
        record = self.get(alarm)
        assert record is not None
        return record

    async def _write(self, alarm: str, fields: dict[str, Value]) -> None:
        twin = alarm_twin(alarm)
        await self._commit(self.store.set_many(twin, fields), [twin], "local")

    def _check_cap(self) -> None:
        if self.count() >= self.max_alarms:
            self._counted_at = -float("inf")
            if self.count() >= self.max_alarms:
                self.refused_over_cap += 1
                raise LimitError(
                    f"this node holds {self._count} alarms, the cap is rule_engine.max_alarms "
                    f"({self.max_alarms}); no new alarm is raised"
                )


__all__ += ["AlarmState"]
