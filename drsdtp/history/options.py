"""What the history store keeps and for how long: raw retention, downsampling tiers, file sizes.

Retention is an absolute age: a tier with ``retention_ms = 30 d`` holds buckets up to 30 days old, whatever
the finer levels hold. Each tier's interval must be a whole multiple of the previous one so that rolling
buckets up is exact (a 1 min bucket never straddles two 15 min buckets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drsdtp.config import HistoryConfig
from drsdtp.errors import ConfigError

__all__ = ["RAW", "HistoryOptions", "Tier", "resolution_label"]

RAW = "raw"
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000
_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Tier:
    """One downsampled level: buckets of ``interval_ms`` holding min/max/sum/count, kept ``retention_ms``."""

    interval_ms: int
    retention_ms: int

    @property
    def label(self) -> str:
        return resolution_label(self.interval_ms)


def _default_tiers() -> tuple[Tier, ...]:
    return (Tier(_MINUTE_MS, 30 * _DAY_MS), Tier(15 * _MINUTE_MS, 365 * _DAY_MS))


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    raw_retention_ms: int = _DAY_MS
    # Per field: beyond this many raw points the oldest are downsampled early (trimmed to 90 %).
    raw_max_points: int = 100_000
    tiers: tuple[Tier, ...] = field(default_factory=_default_tiers)
    # The write-ahead segment is sealed (and later turned into a sorted block) at this size or age.
    segment_bytes: int = 4 * _MIB
    segment_ms: int = 10 * _MINUTE_MS
    # Downsampled blocks are merged up to this size; a merged block spans at most 1/8 of its tier's
    # retention, so whole-block expiry keeps data at most 12.5 % longer than asked.
    merge_target_bytes: int = 8 * _MIB
    # Hard cap on the bytes of all blocks and segments (None: retention alone bounds the size).
    max_bytes: int | None = None
    # zlib (level 1) per series chunk in blocks; timestamps are delta-encoded first.
    compress: bool = True

    def __post_init__(self) -> None:
        _positive("raw_retention_ms", self.raw_retention_ms)
        _positive("raw_max_points", self.raw_max_points)
        _positive("segment_bytes", self.segment_bytes)
        _positive("segment_ms", self.segment_ms)
        _positive("merge_target_bytes", self.merge_target_bytes)
        if self.max_bytes is not None:
            _positive("max_bytes", self.max_bytes)
        previous_interval, previous_retention = 0, self.raw_retention_ms
        for i, tier in enumerate(self.tiers):
            key = f"history.tiers[{i}]"
            _positive(f"{key}.interval_ms", tier.interval_ms)
            if previous_interval and tier.interval_ms % previous_interval:
                raise ConfigError(
                    f"{key}.interval_ms",
                    f"{tier.interval_ms} ms is not a multiple of the previous tier's {previous_interval} ms",
                )
            if tier.interval_ms <= previous_interval:
                raise ConfigError(f"{key}.interval_ms", "intervals must increase from tier to tier")
            if tier.retention_ms <= previous_retention:
                raise ConfigError(f"{key}.retention_ms", "must be longer than the previous level's retention")
            previous_interval, previous_retention = tier.interval_ms, tier.retention_ms
        labels = [RAW, *(tier.label for tier in self.tiers)]
        if len(set(labels)) != len(labels):
            raise ConfigError("history.tiers", "two tiers have the same interval label")

    @classmethod
    def from_config(cls, config: HistoryConfig, *, max_bytes: int | None = None) -> HistoryOptions:
        """Options from the node's ``[history]`` table (seconds there, milliseconds here)."""
        tiers = tuple(Tier(t.interval_s * 1000, t.retention_s * 1000) for t in config.downsample)
        return cls(
            raw_retention_ms=config.raw_retention_s * 1000,
            raw_max_points=config.raw_max_points,
            tiers=tiers,
            max_bytes=max_bytes,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """Resolution labels by level: ``raw`` then one per tier (``1m``, ``15m``, ``1h`` ...)."""
        return (RAW, *(tier.label for tier in self.tiers))

    def level_retention_ms(self, level: int) -> int:
        return self.raw_retention_ms if level == 0 else self.tiers[level - 1].retention_ms


def resolution_label(interval_ms: int) -> str:
    """The shortest exact label of an interval: ``1m``, ``15m``, ``1h``, ``1d``, ``30s``, ``250ms``."""
    for unit, size in (("d", _DAY_MS), ("h", 3_600_000), ("m", _MINUTE_MS), ("s", 1000)):
        if interval_ms % size == 0:
            return f"{interval_ms // size}{unit}"
    return f"{interval_ms}ms"


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"history.{key}", f"must be positive, got {value}")
