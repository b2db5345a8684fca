"""Auto-correction: the seed's policy for a twin whose reported state drifts from its desired state.

On the node that executes an actuator, for a numeric field driven by desired values, the reported value is
compared with the latest desired value; a gap beyond ``tolerance`` is a divergence. Once it has lasted
``after_s``:

* a **minor** divergence (within ``minor_within``) is corrected: a command re-issuing the desired value,
  ``origin = "correction"``, actor ``autocorrect``, its reason naming the reported value it replaces. It is an
  ordinary command: the executor checks limits and interlocks, writes it, follows it to ``applied``, and every
  event is in the audit trail; rolling it back is an ordinary desired write (or command) of that old value;
* a **critical** one (beyond ``minor_within``) needs a person: an alarm (rule ``autocorrect:<action>``) is
  raised and nothing is written. It clears once the field is back within tolerance.

**Verdicts** start the same policy without waiting ``after_s`` (the verdict already judged the divergence
lasting): a rule with a ``correct`` action firing (its alarm, replicated, reaches the executing node
whichever node raised it), and with ``on_divergence``, the twin intelligence's model/kernel divergence alert
on the field. A verdict blaming the sensor (``SENSOR_FAULT``) blocks the correction instead: a faulty reading
is not what to correct towards. With ``auto = false`` only verdicts correct. A verdict counts once per
episode (a rule's alarm episode, a divergence alert while it lasts).

Never acts blind (the same policy as a command's interlock): no correction while the reported field's quality
(the node's health view) is below ``min_quality`` or unknown, or while one of the actuator's interlocks
blocks (a stuck precondition sensor), nor while a command of the actuator is under way (its own write must
settle first: no loop between an echo and a correction), nor beyond ``max_per_hour``: counted from the
durable command records at start, so a restart does not reset it. What a divergence came to (corrected,
critical, blocked and why ...) is :meth:`Corrector.status`, and logged once per episode.

Settings::

    [actuators.correct]
    tolerance = 0.5        # |reported - desired| beyond this is a divergence (default: the actuator's)
    minor_within = 5.0     # a divergence up to this is minor (corrected); beyond it is critical (alarm)
    relative = false       # true: tolerance and minor_within are fractions of |desired|
    after_s = 10.0         # how long a divergence must last before anything is done
    max_per_hour = 6       # corrections of this actuator in any hour; beyond, counted and left alone
    min_quality = 0.5      # the reported field's health must be at least this
    severity = "critical"  # of the alarm a critical divergence raises
    auto = true            # a divergence lasting after_s is corrected by itself (false: only on a verdict)
    on_divergence = false  # a model/kernel divergence alert on the field is a verdict
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from drsdtp.adapters.settings import Table
from drsdtp.core import DESIRED_SUFFIX, intents
from drsdtp.errors import DrsdtpError

if TYPE_CHECKING:
    from drsdtp._core import Store
    from drsdtp.actions.actuators import ActuatorSpec
    from drsdtp.actions.executor import HealthView

__all__ = ["CORRECTION", "CorrectSpec", "Corrector", "CorrectorStats", "Verdict", "parse_correct"]

log = logging.getLogger(__name__)

POLL_S = 0.25  # divergences are looked at this often (and on every change of an actuated twin)
HOUR_S = 3600.0
ACTOR = "autocorrect"
CORRECTION = "correction"  # the origin of a correction's command


@dataclass(frozen=True, slots=True)
class CorrectSpec:
    tolerance: float | None  # None: the actuator's tolerance
    minor_within: float
    relative: bool
    after_s: float
    max_per_hour: int
    min_quality: float
    severity: str
    auto: bool = True
    on_divergence: bool = False


def parse_correct(t: Table) -> CorrectSpec:
    spec = CorrectSpec(
        tolerance=t.opt_float("tolerance", lo=0.0),
        minor_within=t.get_float("minor_within", lo=0.0, lo_exclusive=True),
        relative=t.get_bool("relative", False),
        after_s=t.get_float("after_s", 10.0, lo=0.0),
        max_per_hour=t.get_int("max_per_hour", 6, lo=1, hi=3600),
        min_quality=t.get_float("min_quality", 0.5, lo=0.0, hi=1.0),
        severity=t.choice("severity", ("info", "warning", "critical"), "critical"),
        auto=t.get_bool("auto", True),
        on_divergence=t.get_bool("on_divergence", False),
    )
    if spec.tolerance is not None and spec.tolerance >= spec.minor_within:
        raise t.error("minor_within", f"must be above tolerance ({spec.tolerance:g}): else nothing is minor")
    t.done()
    return spec


class Issuer(Protocol):
    """The command book's ``issue_command`` (narrowed to what a correction passes)."""

    async def issue_command(
        self,
        twin: str,
        action: str,
        value: float | None = None,
        *,
        actor: str = "anonymous",
        reason: str = "",
        origin: str = "api",
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judgement that the actuator's field diverges (a rule fired, a model's divergence alert)."""

    episode: str  # names the episode: a verdict counts once per episode
    what: str  # for the command's reason and the log
    blames_sensor: bool = False  # the reading, not the actuator, is wrong: never correct towards it


Verdicts = Callable[["ActuatorSpec"], Sequence[Verdict]]
# (twin, action, since wall ms) -> when each correction command of the actuator was issued (wall ms).
History = Callable[[str, str, int], Sequence[int]]


class Alarms(Protocol):
    async def raise_alarm(self, rule: str, twin: str, severity: str, message: str) -> object: ...

    async def clear_alarm(self, rule: str, twin: str, reason: str = "") -> object: ...


@dataclass(slots=True)
class CorrectorStats:
    corrections: int = 0  # commands issued
    critical: int = 0  # divergences beyond minor_within (an alarm each, nothing written)
    blocked: int = 0  # divergences not corrected: the reported field's quality was low or unknown
    over_rate: int = 0  # divergences not corrected: max_per_hour reached
    errors: int = 0  # corrections the command book refused
    verdicts: int = 0  # verdicts taken (rules fired, divergence alerts), once per episode


@dataclass(slots=True)
class _Watch:
    """One actuator's divergence episode (in memory: after a restart a divergence waits ``after_s`` again)."""

    spec: ActuatorSpec
    correct: CorrectSpec
    since: float | None = None  # when the current divergence was first seen
    outcome: str = ""  # what this episode came to (corrected, critical, blocked ...): counted once
    why: str = ""  # and why, for status()
    alarm: bool = False
    issued: collections.deque[float] = field(default_factory=collections.deque)  # <= max_per_hour
    verdict: Verdict | None = None  # the verdict this divergence is being settled on
    episodes: frozenset[str] = frozenset()  # verdict episodes seen (present now): each counts once


class Corrector:
    def __init__(
        self,
        store: Store,
        *,
        specs: tuple[ActuatorSpec, ...],
        book: Issuer,
        health: HealthView,
        busy: Callable[[str, str], bool],
        interlocked: Callable[[ActuatorSpec], str],
        alarms: Callable[[], Alarms | None],
        verdicts: Verdicts | None = None,
        history: History | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.store = store
        self.stats = CorrectorStats()
        self._book = book
        self._health = health
        self._busy = busy
        self._interlocked = interlocked
        self._alarms = alarms
        self._verdicts = verdicts
        self._history = history
        self._clock = clock
        self._wall_ms = wall_ms
        self._watches = [_Watch(s, s.correct) for s in specs if s.correct is not None]
        self._twins = {w.spec.twin for w in self._watches}
        self._changed = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._watches)

    def status(self, twin: str, action: str) -> str:
        """What the actuator's current divergence came to and why ("" when there is none, or not yet)."""
        for w in self._watches:
            if (w.spec.twin, w.spec.action) == (twin, action):
                return f"{w.outcome}: {w.why}" if w.outcome else ""
        return ""

    def on_appended(self, twins: Sequence[str]) -> None:
        """A commit touched these twins (``Node.appended_hooks``): look again now rather than at the next
        poll."""
        if not self._twins.isdisjoint(twins):
            self._changed.set()

    def restore(self) -> None:
        """The corrections of the last hour, from the durable command records: ``max_per_hour`` holds
        across a restart."""
        if self._history is None:
            return
        wall, now = self._wall_ms(), self._clock()
        for w in self._watches:
            times = sorted(self._history(w.spec.twin, w.spec.action, wall - int(HOUR_S * 1000)))
            w.issued.clear()
            w.issued.extend(now - (wall - ms) / 1000 for ms in times[-w.correct.max_per_hour :])

    async def run(self) -> None:
        self.restore()
        while self._watches:
            for watch in self._watches:
                try:
                    await self._check(watch)
                except DrsdtpError as exc:  # the book refused (a cap, a limit): said, counted, next time
                    self.stats.errors += 1
                    log.warning("autocorrect %s: %s", watch.spec.label, exc)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._changed.wait()

    def _take_verdicts(self, w: _Watch) -> None:
        """A verdict of a new episode becomes the one this divergence is settled on."""
        if self._verdicts is None:
            return
        verdicts = self._verdicts(w.spec)
        fresh = [v for v in verdicts if v.episode not in w.episodes]
        w.episodes = frozenset(v.episode for v in verdicts)
        if fresh:
            self.stats.verdicts += len(fresh)
            # A sensor blamed outweighs a call to correct: never correct towards a faulty reading.
            w.verdict = next((v for v in fresh if v.blames_sensor), fresh[0])
            w.outcome = ""  # a new episode is judged (and counted) afresh
        elif w.verdict is not None and w.verdict.blames_sensor and w.verdict.episode not in w.episodes:
            w.verdict = None  # the sensor is no longer blamed (a call to correct outlives its episode)

    async def _check(self, w: _Watch) -> None:
        spec, c = w.spec, w.correct
        self._take_verdicts(w)
        values = intents(self.store, spec.twin, spec.field + DESIRED_SUFFIX)
        desired = values[-1].value if values else None
        entry = self.store.entry(spec.twin, spec.field) if spec.twin in self.store else None
        reported = None if entry is None else entry[0]
        if not (_number(desired) and _number(reported)) or self._busy(spec.twin, spec.action):
            w.since, w.outcome, w.why = None, "", ""  # nothing to compare, or a command settles it first
            if not self._busy(spec.twin, spec.action):
                w.verdict = None  # nothing a verdict could be about
            return
        assert isinstance(desired, int | float) and isinstance(reported, int | float)
        gap = abs(reported - desired)
        scale = abs(desired) if c.relative else 1.0
        tolerance = (c.tolerance if c.tolerance is not None else (spec.tolerance or 1e-9)) * scale
        rule = f"autocorrect:{spec.action}"
        if gap <= tolerance:
            if w.alarm and (alarms := self._alarms()) is not None:
                await alarms.clear_alarm(
                    rule, spec.twin, f"{spec.field} back within {tolerance:g} of desired"
                )
            w.since, w.outcome, w.why, w.alarm, w.verdict = None, "", "", False, None
            return
        now = self._clock()
        if w.since is None:
            w.since = now
        verdict = w.verdict
        if verdict is None and (not c.auto or now - w.since < c.after_s):
            return
        what = (
            f"reported {spec.field} {reported:g} diverged from desired {desired:g} by {gap:g} "
            f"for {now - w.since:.1f} s"
        )
        if verdict is not None:
            what += f" ({verdict.what})"
        if gap > c.minor_within * scale:
            if w.outcome != "critical":
                w.outcome, w.why = "critical", what
                self.stats.critical += 1
                log.warning("autocorrect %s: critical, needs a person: %s", spec.label, what)
            alarms = self._alarms()
            if not w.alarm and alarms is not None:
                message = f"{what}: beyond minor_within {c.minor_within * scale:g}, not corrected"
                await alarms.raise_alarm(rule, spec.twin, c.severity, message)
                w.alarm = True
            return
        blocked = self._blocked(spec, c)
        if verdict is not None and verdict.blames_sensor:
            blocked = "; ".join(filter(None, ["the verdict blames the sensor, not the actuator", blocked]))
        if blocked:
            if w.outcome != "blocked":
                w.outcome, w.why = "blocked", f"{blocked}; {what}"
                self.stats.blocked += 1
                log.warning("autocorrect %s: not corrected, %s: %s", spec.label, blocked, what)
            return
        while w.issued and now - w.issued[0] >= HOUR_S:
            w.issued.popleft()
        if len(w.issued) >= c.max_per_hour:
            if w.outcome != "over_rate":
                w.outcome, w.why = "over_rate", f"max_per_hour {c.max_per_hour} reached; {what}"
                self.stats.over_rate += 1
                log.warning("autocorrect %s: max_per_hour %d reached: %s", spec.label, c.max_per_hour, what)
            return
        w.issued.append(now)
        w.since, w.outcome, w.why, w.verdict = None, "", "", None
        self.stats.corrections += 1
        await self._book.issue_command(
            spec.twin,
            spec.action,
            desired,
            actor=ACTOR,
            reason=f"{what} (minor): back to desired; replaces {reported:g}",
            origin=CORRECTION,
        )

    def _blocked(self, spec: ActuatorSpec, c: CorrectSpec) -> str:
        """Why a correction must not act now: the reported field's quality, the actuator's interlocks."""
        why = []
        q = self._health.field_quality(spec.twin, spec.field)
        if q is None:
            why.append(f"no health known for {spec.field}")
        elif q.quality < c.min_quality:
            detail = f" ({', '.join(q.reasons)})" if q.reasons else ""
            why.append(f"{spec.field} quality {q.quality:.2f} < {c.min_quality:g}{detail}")
        if interlocked := self._interlocked(spec):
            why.append(interlocked)
        return "; ".join(why)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
