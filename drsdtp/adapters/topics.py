"""MQTT topic templates: ``site/{twin}/{field}`` is subscribed as ``site/+/+`` and maps segments to names.

A template is an MQTT topic filter where a whole segment may be ``{twin}`` or ``{field}`` (captured) besides
the usual ``+`` (any one segment, ignored) and a final ``#``.
"""

from __future__ import annotations

from dataclasses import dataclass

from drsdtp.errors import ConfigError

__all__ = ["TopicTemplate"]


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    segments: tuple[str, ...]
    twin_at: int | None
    field_at: int | None
    multi_level: bool  # ends with '#'

    @property
    def filter(self) -> str:
        return "/".join("+" if s in ("{twin}", "{field}") else s for s in self.segments)

    @classmethod
    def parse(cls, template: str, key: str) -> TopicTemplate:
        if not template or len(template.encode()) > 65535 or "\x00" in template:
            raise ConfigError(key, "must be a non-empty MQTT topic filter")
        segments = tuple(template.split("/"))
        twin_at = field_at = None
        for i, seg in enumerate(segments):
            if seg == "{twin}":
                if twin_at is not None:
                    raise ConfigError(key, "{twin} may appear only once")
                twin_at = i
            elif seg == "{field}":
                if field_at is not None:
                    raise ConfigError(key, "{field} may appear only once")
                field_at = i
            elif seg == "#":
                if i != len(segments) - 1:
                    raise ConfigError(key, "'#' must be the last segment")
            elif "{" in seg or "}" in seg:
                raise ConfigError(
                    key, f"segment {seg!r}: placeholders are {{twin}} and {{field}}, each a whole segment"
                )
            elif ("+" in seg or "#" in seg) and seg != "+":
                raise ConfigError(key, f"segment {seg!r}: '+' and '#' must be whole segments")
        return cls(segments, twin_at, field_at, segments[-1] == "#")

    def match(self, topic: str) -> tuple[str | None, str | None] | None:
        """``(twin, field)`` captured from ``topic`` (None where the template has no placeholder)."""
        parts = topic.split("/")
        segs = self.segments
        if self.multi_level:
            if len(parts) < len(segs) - 1:
                return None
        elif len(parts) != len(segs):
            return None
        if parts[0].startswith("$") and segs[0] in ("+", "#", "{twin}", "{field}"):
            return None  # MQTT: wildcards never match $SYS-style topics
        for seg, part in zip(segs, parts, strict=False):
            if seg == "#":
                break
            if seg in ("+", "{twin}", "{field}"):
                if not part and seg != "+":
                    return None  # an empty name is no name
                continue
            if seg != part:
                return None
        twin = parts[self.twin_at] if self.twin_at is not None else None
        field = parts[self.field_at] if self.field_at is not None else None
        return twin, field
