"""Sensor fault, process change or model drift: the verdict on each field with a finding, and its evidence.

Any model gets one, from what it declares. Per field, the first rule that applies decides:

1. the sensor's own data is impossible or absent (flat line, out of range, silent, lost) -> ``sensor``;
2. it drifts against its redundant peers, or the divergence monitor names it among sensors that otherwise
   agree with the kernel -> ``sensor``;
3. its own series changed (a spike, step, trend or variance change, a level shift): if its redundant peers
   moved with it, or (without peers) a field it depends on or that depends on it moved at the same time,
   the quantity really changed -> ``process``; if the peers stayed put -> ``sensor``; if the related
   fields stayed put for ``settle`` readings (they may lag: a winding warms after the current rose)
   -> ``sensor``. Related fields moving is no alibi when the kernel, which predicts the field from them
   (a pump's flow from its speed by the affinity laws), is off for this field -> ``sensor``: a machine
   whose speed program never rests would otherwise excuse every fault of its sensors. A counter "moves"
   when its rate does. While the kernel is off for every sensor of the
   variable, only an abrupt change counts here (a gradual one is how a wrong model shows in the readings,
   and rule 4 decides);
4. only the kernel residual is off: every sensor of the variable agrees with the others but not with the
   kernel, or several unrelated variables are off together, each from its own sensor -> ``model``. A
   field off the kernel with every field that depends on it off too -> ``sensor``: a tracking kernel
   predicts a field from the readings of what it depends on (a pump's head and power from its measured
   flow), so a wrong model of this field alone would leave them right, and a wrong reading throws them
   all off (those dependents get no verdict of their own). One lone sensor against the kernel otherwise
   stays undecided: a drifting sensor looks the same as a drifting model.

Related twins that measure the same field (:mod:`drsdtp.relations.corroborate`) judge logged anomaly events
at the node; this verdict uses what one twin holds. Vectorised over every field row, one pass at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from drsdtp.intelligence.detect import TESTS, Findings
from drsdtp.intelligence.divergence import KIND_MODEL_DRIFT, KIND_SENSOR_FAULT, KIND_UNRESOLVED
from drsdtp.intelligence.drift import AGAINST_MODEL, AGAINST_PEERS
from drsdtp.intelligence.health import HealthArrays, Reason
from drsdtp.intelligence.linefit import FloatArray
from drsdtp.intelligence.table import FieldTable
from drsdtp.intelligence.windows import RecentBlock

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from drsdtp.lazy import numpy as np

__all__ = [
    "CAUSES",
    "EVIDENCE",
    "E_KERNEL_DEPENDENTS",
    "E_KERNEL_SEVERAL",
    "CauseArrays",
    "ChangeTracker",
    "Changes",
    "Relations",
    "explain",
    "judge",
]

BoolArray: TypeAlias = "npt.NDArray[np.bool_]"
IntArray: TypeAlias = "npt.NDArray[np.int64]"
Codes: TypeAlias = "npt.NDArray[np.int8]"

#: Verdict codes: index into this tuple.
CAUSES: Final[tuple[str, ...]] = ("", "sensor", "process", "model")
NONE, SENSOR, PROCESS, MODEL = 0, 1, 2, 3

#: Evidence codes (what decided the verdict): index into this tuple.
EVIDENCE: Final[tuple[str, ...]] = (
    "",
    "own data",  # flat line, out of range, silent or lost readings
    "peers disagree",  # drift against the redundant peers, or the divergence monitor names this sensor
    "peers moved too",  # the change is seen by the redundant peers as well
    "peers steady",  # the change is seen by this sensor only
    "related moved too",  # a field it depends on (or that depends on it) changed at the same time
    "related steady",  # the fields it depends on and that depend on it did not change
    "kernel only",  # the sensors agree with each other, only the kernel is off
    "kernel, several variables",  # several variables off the kernel together, each from its own sensor
    "kernel, lone sensor",  # one sensor off the kernel: sensor drift and model drift look alike
    "nothing to compare",  # a change on a field with no peers and no declared relationships
    "related moved, kernel off",  # related fields moved, but not as the kernel says this one should follow
    "kernel, dependents off",  # off the kernel, and so is every field the kernel predicts from its reading
)
(
    E_NONE,
    E_OWN,
    E_PEERS_DISAGREE,
    E_PEERS_MOVED,
    E_PEERS_STEADY,
    E_RELATED_MOVED,
    E_RELATED_STEADY,
    E_KERNEL,
    E_KERNEL_SEVERAL,
    E_KERNEL_LONE,
    E_NOTHING,
    E_RELATED_KERNEL,
    E_KERNEL_DEPENDENTS,
) = range(len(EVIDENCE))

_OWN: Final = Reason.STUCK | Reason.OUT_OF_RANGE | Reason.STALE | Reason.DROPOUT | Reason.LOSS
_CHANGE_TESTS: Final = tuple(
    TESTS.index(t) for t in ("spike", "spike_back", "shift", "trend", "drift", "variance")
)
_ABRUPT_TESTS: Final = tuple(TESTS.index(t) for t in ("spike", "spike_back", "shift"))


class Relations:
    """Pairs of rows of one twin related by ``depends_on`` (both directions), grown as twins are added."""

    def __init__(self) -> None:
        self.src = np.zeros(0, np.int64)
        self.dst = np.zeros(0, np.int64)
        self.dependent = np.zeros(0, np.int64)  # directed: ``dependent[i]`` depends on ``dependency[i]``
        self.dependency = np.zeros(0, np.int64)

    def add(self, pairs: list[tuple[int, int]]) -> None:
        """``pairs``: (row, a row it depends on)."""
        if pairs:
            a = np.asarray(pairs, np.int64)
            self.src = np.r_[self.src, a[:, 0], a[:, 1]]
            self.dst = np.r_[self.dst, a[:, 1], a[:, 0]]
            self.dependent = np.r_[self.dependent, a[:, 0]]
            self.dependency = np.r_[self.dependency, a[:, 1]]

    def dependents_of(self, flag: BoolArray, n: int) -> tuple[IntArray, IntArray]:
        """Per row: how many rows depend on it, and how many of those have ``flag`` set."""
        total = np.zeros(n, np.int64)
        hits = np.zeros(n, np.int64)
        keep = (self.dependent < n) & (self.dependency < n)
        dep, on = self.dependent[keep], self.dependency[keep]
        np.add.at(total, on, 1)
        np.add.at(hits, on, flag[dep].astype(np.int64))
        return total, hits

    def depends_on_any(self, flag: BoolArray, n: int) -> BoolArray:
        """Per row: whether a row it depends on has ``flag`` set."""
        out = np.zeros(n, bool)
        keep = (self.dependent < n) & (self.dependency < n)
        dep, on = self.dependent[keep], self.dependency[keep]
        np.logical_or.at(out, dep, flag[on])
        return out

    def count_of(self, flag: BoolArray, n: int) -> tuple[BoolArray, IntArray]:
        """Per row: whether it has related rows, and how many of them have ``flag`` set."""
        has = np.zeros(n, bool)
        hits = np.zeros(n, np.int64)
        keep = (self.src < n) & (self.dst < n)
        src, dst = self.src[keep], self.dst[keep]
        has[src] = True
        np.add.at(hits, src, flag[dst].astype(np.int64))
        return has, hits


@dataclass(frozen=True, slots=True)
class CauseArrays:
    """Per row: the verdict code (:data:`CAUSES`) and the evidence code (:data:`EVIDENCE`); the view names
    the fields behind the evidence (peers, related fields, the kernel variable's fields) when asked."""

    cause: Codes
    evidence: Codes
    change: BoolArray  # the field's own series changed (held like the detector's findings)
    recent: BoolArray  # ... or did within the last ``ChangeTracker.recent`` periods


def _rate_changed(block: RecentBlock, resolution: FloatArray, n: int) -> BoolArray:
    """A counter's rate over its last three readings against its rate over the readings before them: a
    quarter apart, and more than four quanta over the three readings' span."""
    v, t = block.values[:n], block.t_s[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        recent = (v[:, -1] - v[:, -4]) / (t[:, -1] - t[:, -4])
        before = (v[:, -4] - v[:, 0]) / (t[:, -4] - t[:, 0])
        gap = np.abs(recent - before)
        out: BoolArray = (gap > 0.25 * np.abs(before)) & (gap * (t[:, -1] - t[:, -4]) > 4.0 * resolution)
    return out


@dataclass(frozen=True, slots=True)
class Changes:
    """Per row: its series changed (``now``), abruptly, for ``settle`` periods already (related fields that
    lag behind had time to follow), or within the last ``recent`` periods (evidence for related fields)."""

    now: BoolArray
    abrupt: BoolArray
    settled: BoolArray
    recent: BoolArray


class ChangeTracker:
    """Keeps when each row's change began and when it was last seen, pass to pass."""

    def __init__(self, settle: float = 12.0, recent: float = 30.0) -> None:
        self.settle, self.recent = settle, recent
        self.since = np.zeros(0)
        self.last = np.zeros(0)

    def update(
        self,
        health: HealthArrays,
        table: FieldTable,
        counter: BoolArray,
        block: RecentBlock | None,
        now_s: float,
    ) -> Changes:
        """``block``: the newest readings of every field (needed only when some rows are counters)."""
        n = health.quality.shape[0]
        sc = health.screen
        fixed = sc.spike_recent[:n] | sc.level_shift[:n]
        change, abrupt = fixed.copy(), fixed.copy()
        found: Findings | None = sc.found
        if found is not None:
            test, active = found.test[:n], found.active[:n]
            change |= active & np.isin(test, _CHANGE_TESTS)
            abrupt |= active & np.isin(test, _ABRUPT_TESTS)
        if block is not None:
            change |= counter[:n] & _rate_changed(block, table.resolution[:n], n)
        if self.since.shape[0] < n:
            grow = np.full(n - self.since.shape[0], np.nan)
            self.since, self.last = np.r_[self.since, grow], np.r_[self.last, grow]
        since = np.where(change, np.where(np.isnan(self.since[:n]), now_s, self.since[:n]), np.nan)
        self.since[:n] = since
        self.last[:n] = np.where(change, now_s, self.last[:n])
        period = table.period[:n]
        with np.errstate(invalid="ignore"):
            settled = change & (now_s - since >= self.settle * period)
            recent = change | (now_s - self.last[:n] <= self.recent * period)
        return Changes(now=change, abrupt=abrupt, settled=settled, recent=recent)


def judge(
    health: HealthArrays,
    table: FieldTable,
    relations: Relations,
    kernel_kind: Codes,
    kernel_suspect: BoolArray,
    kernel_twin: IntArray,
    changes: Changes,
    kernel_off: BoolArray | None = None,
) -> CauseArrays:
    """The verdict per row (module docstring). ``kernel_kind``: per row, the divergence class of the kernel
    variable it is bound to (0 = none); ``kernel_suspect``: rows the divergence monitor names;
    ``kernel_twin``: per row, an id of its twin (rows of one twin share it) for rule 4's count;
    ``changes``: whose series (a counter: its rate) changed, and how (:class:`Changes`); ``kernel_off``:
    rows whose kernel residual is off now (its prediction accounts for the fields it depends on)."""
    n = health.quality.shape[0]
    reasons = health.reasons[:n].astype(np.int64)
    drift = health.drift
    change, abrupt, settled = changes.now[:n], changes.abrupt[:n], changes.settled[:n]
    kind = kernel_kind[:n]
    model_off = kind == KIND_MODEL_DRIFT
    lone_off = (kind == KIND_UNRESOLVED) | (drift.flagged[:n] & (drift.against[:n] == AGAINST_MODEL))

    # Redundant peers: did another member of the group change (abruptly, for an abrupt change)?
    group = table.group[:n]
    in_group = group >= 0
    n_groups = int(group.max()) + 1 if n and in_group.any() else 0
    gi = np.maximum(group, 0)

    def others(flag: BoolArray) -> BoolArray:
        if not n_groups:
            return np.zeros(n, bool)
        count = np.bincount(group[in_group & flag], minlength=n_groups)
        out: BoolArray = in_group & (count[gi] - flag.astype(np.int64) > 0)
        return out

    others_changed = np.where(abrupt, others(abrupt), others(change))
    has_peers = table.group_size[:n] >= 2
    has_related, related_changes = relations.count_of(changes.recent[:n], n)
    related_changed = related_changes > 0

    # Unrelated lone variables off the kernel together, each from its own sensor: the model, not them all.
    twin = kernel_twin[:n]
    off_per_twin = np.bincount(twin[lone_off], minlength=int(twin.max(initial=-1)) + 1)
    _, related_off = relations.count_of(lone_off, n)
    several = (
        lone_off & (off_per_twin[twin] - 1 - related_off >= 1) if off_per_twin.size else np.zeros(n, bool)
    )

    cause = np.zeros(n, np.int8)
    evidence = np.zeros(n, np.int8)
    open_ = np.ones(n, bool)

    def decide(mask: BoolArray, c: int, e: int) -> None:
        nonlocal open_
        take = open_ & mask
        cause[take], evidence[take] = c, e
        open_ = open_ & ~take

    decide((reasons & int(_OWN)) != 0, SENSOR, E_OWN)
    peer_drift = drift.flagged[:n] & (drift.against[:n] == AGAINST_PEERS)
    decide(peer_drift | ((kind == KIND_SENSOR_FAULT) & kernel_suspect[:n]), SENSOR, E_PEERS_DISAGREE)
    judged = change & (abrupt | ~model_off)
    decide(judged & has_peers & others_changed, PROCESS, E_PEERS_MOVED)
    decide(judged & has_peers, SENSOR, E_PEERS_STEADY)
    # The kernel's prediction already followed the related fields: still off for this row, it is the sensor.
    off = np.zeros(n, bool) if kernel_off is None else kernel_off[:n]
    decide(judged & has_related & related_changed & off, SENSOR, E_RELATED_KERNEL)
    decide(judged & has_related & related_changed, PROCESS, E_RELATED_MOVED)
    decide(judged & has_related & settled, SENSOR, E_RELATED_STEADY)
    decide(judged & has_related, NONE, E_NONE)  # the related fields may still follow: wait
    decide(model_off, MODEL, E_KERNEL)
    dependents, dependents_off = relations.dependents_of(lone_off, n)
    wrong_input = lone_off & (dependents > 0) & (dependents_off == dependents)
    decide(wrong_input, SENSOR, E_KERNEL_DEPENDENTS)
    decide(lone_off & relations.depends_on_any(wrong_input, n), NONE, E_KERNEL_LONE)
    decide(several, MODEL, E_KERNEL_SEVERAL)
    decide(lone_off, NONE, E_KERNEL_LONE)
    decide(judged & ~has_related, NONE, E_NOTHING)
    # Only fields with a finding get a verdict (an actuator's step is evidence for others, not a finding).
    finding = (reasons != 0) | (kind != 0) | (change & table.analog[:n])
    cause[~finding], evidence[~finding] = NONE, E_NONE
    return CauseArrays(cause=cause, evidence=evidence, change=change, recent=changes.recent[:n])


def explain(
    evidence: int,
    *,
    reasons: tuple[str, ...],
    peers: tuple[str, ...],
    peers_moved: tuple[str, ...],
    related: tuple[str, ...],
    related_moved: tuple[str, ...],
    kernel: str,
    kernel_fields: tuple[str, ...],
    kernel_off: tuple[str, ...],
) -> tuple[tuple[str, ...], str]:
    """The names that gave the evidence (fields, or the kernel) and one sentence saying what they showed."""
    if evidence == E_OWN:
        return (), f"its own data: {', '.join(r for r in reasons if Reason[r] & _OWN)}"
    if evidence == E_PEERS_DISAGREE:
        return peers, f"it disagrees with {', '.join(peers)}, which measure the same quantity"
    if evidence == E_PEERS_MOVED:
        return peers_moved, f"{', '.join(peers_moved)}, measuring the same quantity, moved with it"
    if evidence == E_PEERS_STEADY:
        return peers, f"{', '.join(peers)}, measuring the same quantity, did not move"
    if evidence == E_RELATED_MOVED:
        return related_moved, f"{', '.join(related_moved)}, related by depends_on, moved at the same time"
    if evidence == E_RELATED_STEADY:
        return related, f"{', '.join(related)}, related by depends_on, did not move"
    if evidence == E_KERNEL:
        return (kernel,), f"{', '.join(kernel_fields)} agree with each other but not with kernel {kernel}"
    if evidence == E_KERNEL_SEVERAL:
        return (kernel,), f"{', '.join(kernel_off)}, each from its own sensor, are all off kernel {kernel}"
    if evidence == E_KERNEL_LONE:
        return (kernel,), (
            f"only its residual against kernel {kernel} is off: one sensor, so sensor drift and model "
            "drift look alike"
        )
    if evidence == E_RELATED_KERNEL:
        return (kernel, *related_moved), (
            f"{', '.join(related_moved)} moved too, but kernel {kernel} does not expect this field to follow "
            "them so: only its residual is off"
        )
    if evidence == E_KERNEL_DEPENDENTS:
        return (kernel, *kernel_off), (
            f"off kernel {kernel}, and so are {', '.join(kernel_off)}, which it predicts from this reading"
        )
    if evidence == E_NOTHING:
        return (), "no redundant sensor or related field to compare with"
    return (), ""
