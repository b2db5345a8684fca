"""What the API serves of rules and alarms: a narrow, wire-free Protocol that
:class:`drsdtp.rules.alerting.Alerting` implements (the API never sees the rule service or the store)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from drsdtp.alarms.record import AlarmRecord

__all__ = ["AlertingOps", "RuleView", "RulesSummary"]


@dataclass(frozen=True, slots=True)
class RuleView:
    name: str
    twins: tuple[str, ...]
    when: str
    for_s: float
    clear_when: str
    deadband: float
    severity: str
    alarm: bool
    enabled: bool
    actions: tuple[str, ...]
    matched: int
    active: int
    fired: int
    cleared: int
    errors: int
    last_error: str
    suspended_until_ms: int


@dataclass(frozen=True, slots=True)
class RulesSummary:
    rules: Sequence[RuleView]
    passes: int
    last_pass_s: float
    period_s: float


class AlertingOps(Protocol):
    def alarms(
        self, *, active: bool, twin: str, rule: str, limit: int, where: Callable[[str], bool] | None = None
    ) -> tuple[list[AlarmRecord], int]:
        """The matching alarms (newest raise first, at most ``limit``) and how many matched; ``where``: only
        alarms of twins it holds for (the API caller's scopes)."""
        ...

    def alarm(self, alarm: str) -> AlarmRecord | None: ...
    def is_alarm_twin(self, twin: str) -> str | None:
        """The alarm id of an internal twin ``_alarm/<id>``, else None."""
        ...

    async def acknowledge(self, alarm: str, actor: str, reason: str) -> AlarmRecord: ...
    def rules(self) -> RulesSummary: ...
