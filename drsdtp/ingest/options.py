"""Per-adapter pipeline settings: validation policy, timestamp sanity, buffering, per-field rules.

TOML (all optional)::

    [adapters.ingest]
    invalid = "drop"          # or "bad": keep an invalid reading as a BAD-quality reading without value
    max_future_s = 0.5        # further ahead of our clock is absurd (invalid); the core's clock gate is 0.5 s
    max_age_s = 604800.0      # older than this is absurd (a device clock at 1970): invalid
    stale_after_s = 60.0      # older than this at ingest: counted late, flagged stale
    buffer_readings = 100000  # readings queued between adapter and core before the adapter is paused
    max_batch = 20000         # readings per core call (several source batches are merged up to this)
    max_keys = 100000         # (twin, field) pairs whose deadband/period state this adapter keeps in memory;
                              # past it the table is cleared and rebuilt (the store's own caps are
                              # limits.max_twins and limits.max_fields)

    [[adapters.ingest.fields]]  # first match wins; pattern is fnmatch on "twin/field"
    match = "*/temperature"
    min = -40.0
    max = 125.0
    deadband = 0.2            # report by exception: forward only changes of at least this much
    deadband_percent = 1.0    # ... or this percent of (max - min)
    heartbeat_s = 300.0       # ... but at least one reading per heartbeat even if unchanged
    expected_period_s = 10.0  # a field silent for 2 periods is overdue (health input)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from drsdtp.adapters.settings import Table

__all__ = ["FieldRule", "IngestOptions", "parse_ingest_options"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    match: str
    min: float | None = None
    max: float | None = None
    deadband: float = 0.0  # absolute; a percent deadband is resolved against (max - min) at parse time
    heartbeat_s: float | None = None
    expected_period_s: float | None = None


@dataclass(frozen=True, slots=True)
class IngestOptions:
    invalid: str = "drop"  # "drop" | "bad"
    max_future_s: float = 0.5
    max_age_s: float = 7 * 86400.0
    stale_after_s: float = 60.0
    buffer_readings: int = 100_000
    max_batch: int = 20_000
    max_keys: int = 100_000
    fields: tuple[FieldRule, ...] = ()

    def rule_for(self, twin: str, field: str) -> FieldRule | None:
        key = f"{twin}/{field}"
        for rule in self.fields:
            if fnmatch.fnmatchcase(key, rule.match):
                return rule
        return None


def _parse_rule(t: Table) -> FieldRule:
    match = t.get_str("match")
    lo = t.opt_float("min")
    hi = t.opt_float("max")
    if lo is not None and hi is not None and lo > hi:
        raise t.error("max", f"must be >= min ({lo})")
    deadband = t.get_float("deadband", 0.0, lo=0.0)
    percent = t.opt_float("deadband_percent", lo=0.0, hi=100.0)
    if percent is not None:
        if deadband:
            raise t.error("deadband_percent", "set either deadband or deadband_percent, not both")
        if lo is None or hi is None:
            raise t.error("deadband_percent", "needs min and max (the percent is of max - min)")
        deadband = (hi - lo) * percent / 100.0
    heartbeat = t.opt_float("heartbeat_s", lo=0.0, lo_exclusive=True)
    period = t.opt_float("expected_period_s", lo=0.0, lo_exclusive=True)
    t.done()
    return FieldRule(match, lo, hi, deadband, heartbeat, period)


def parse_ingest_options(parent: Table) -> IngestOptions:
    """Read ``parent.ingest`` (a sub-table of an adapter table)."""
    t = parent.table("ingest")
    if t is None:
        return IngestOptions()
    d = IngestOptions()
    opts = IngestOptions(
        invalid=t.choice("invalid", ("drop", "bad"), d.invalid),
        max_future_s=t.get_float("max_future_s", d.max_future_s, lo=0.0),
        max_age_s=t.get_float("max_age_s", d.max_age_s, lo=0.0, lo_exclusive=True),
        stale_after_s=t.get_float("stale_after_s", d.stale_after_s, lo=0.0, lo_exclusive=True),
        buffer_readings=t.get_int("buffer_readings", d.buffer_readings, lo=1),
        max_batch=t.get_int("max_batch", d.max_batch, lo=1),
        max_keys=t.get_int("max_keys", d.max_keys, lo=1),
        fields=tuple(_parse_rule(r) for r in t.tables("fields")),
    )
    if opts.stale_after_s > opts.max_age_s:
        raise t.error("stale_after_s", f"must be <= max_age_s ({opts.max_age_s})")
    t.done()
    return opts
