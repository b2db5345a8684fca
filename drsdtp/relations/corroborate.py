"""A failing sensor or a real process change: what related twins measuring the same thing say.

For an anomaly of field ``f`` of twin ``T``, the *peers* are the twins related to ``T`` (either direction,
any relation, and its siblings in the ``located_in`` tree) that also have a field ``f``. If a peer had an
anomaly of ``f`` within ``window_s`` of this one (before or after: events are judged together, a pass at a
time), the change is seen by more than one sensor: ``process``. If peers measure ``f`` and none saw
anything: ``sensor`` (only this sensor moved: suspect it). No peer measuring ``f``: no verdict (``""``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from drsdtp.intelligence.results import AnomalyEvent

__all__ = ["PROCESS", "SENSOR", "Verdict", "corroborate"]

PROCESS: Final = "process"
SENSOR: Final = "sensor"


@dataclass(frozen=True, slots=True)
class Verdict:
    cause: str  # PROCESS, SENSOR or ""
    evidence: tuple[str, ...]  # the peers that saw it (PROCESS) or that did not (SENSOR)


def corroborate(
    events: Sequence[AnomalyEvent],
    peers_of: Callable[[str], Iterable[str]],
    measures: Callable[[str, str], bool],
    earlier: Callable[[str, str], Iterable[float]],
    window_s: float,
) -> list[Verdict]:
    """One verdict per event. ``peers_of(twin)``: related twins; ``measures(twin, field)``: whether a twin
    has that field; ``earlier(twin, field)``: times of that field's anomalies already logged."""
    batch: dict[tuple[str, str], list[float]] = {}
    for e in events:
        batch.setdefault((e.twin, e.field), []).append(e.t_s)
    out: list[Verdict] = []
    for e in events:
        peers = [p for p in peers_of(e.twin) if p != e.twin and measures(p, e.field)]
        if not peers:
            out.append(Verdict("", ()))
            continue
        saw = tuple(
            p
            for p in peers
            if any(abs(t - e.t_s) <= window_s for t in (*batch.get((p, e.field), ()), *earlier(p, e.field)))
        )
        out.append(Verdict(PROCESS, saw) if saw else Verdict(SENSOR, tuple(peers)))
    return out
