"""Test-only clock jumps in a running node; inert unless ``DRSDTP_TEST_CLOCK_OFFSET_FILE`` is set.

The chaos tests (``tests/chaos/``) jump a node's clock forward and back while it runs. When the variable
names a file, the node reads it once before anything else (a whole number of milliseconds; missing or empty
means 0) and then polls it. The offset shifts the node's wall clock as the node sees it: the hybrid logical
clock's physical time (:meth:`Store.set_clock_offset_ms`) and the receive time ingest stamps readings with
(:func:`offset_ms`, read by ``drsdtp.ingest.pipeline.wall_ms``), as a real clock step would shift both. No
config sets it; the daemon logs a warning at startup and at every change.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from drsdtp._core import Store
from drsdtp.lifecycle import BackgroundService

__all__ = ["ENV", "ClockOffsetHook", "offset_ms"]

log = logging.getLogger(__name__)

ENV: Final = "DRSDTP_TEST_CLOCK_OFFSET_FILE"
_LIMIT_MS: Final = 10 * 365 * 86_400_000  # beyond ten years it is a typo, not a jump

_offset_ms = 0  # process-wide: the node's wall clock is one clock


def offset_ms() -> int:
    """The test offset of this process's wall clock in milliseconds (0 unless the hook is enabled)."""
    return _offset_ms


class ClockOffsetHook(BackgroundService):
    """Polls the offset file and applies each change to the store's clock and to :func:`offset_ms`."""

    name = "test-clock-offset"

    def __init__(self, path: Path, store: Store, *, interval_s: float = 0.05) -> None:
        self.path = path
        self.store = store
        self.interval_s = interval_s
        self.applied = 0
        self.bad_reads = 0  # unreadable or malformed file contents (the previous offset stays)

    @classmethod
    def from_environment(cls, store: Store, env: Mapping[str, str] | None = None) -> ClockOffsetHook | None:
        """The hook when the variable is set (its first offset already applied), else None."""
        path = (os.environ if env is None else env).get(ENV)
        if not path:
            return None
        log.warning("TEST HOOK %s=%s: this node's clock follows the offset in that file", ENV, path)
        hook = cls(Path(path), store)
        hook.poll()
        return hook

    def poll(self) -> None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            self._bad(f"cannot read it: {exc}")
            return
        try:
            value = int(text or "0")
        except ValueError:
            self._bad(f"{text[:40]!r} is not a whole number of milliseconds")
            return
        if abs(value) > _LIMIT_MS:
            self._bad(f"{value} ms is beyond the ±{_LIMIT_MS} ms this hook accepts")
            return
        if value != self.applied:
            global _offset_ms
            self.store.set_clock_offset_ms(value)
            _offset_ms = self.applied = value
            log.warning("TEST HOOK: clock offset now %+d ms", value)

    def _bad(self, why: str) -> None:
        self.bad_reads += 1
        log.error("TEST HOOK %s: %s: %s; the offset stays %+d ms", ENV, self.path, why, self.applied)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.poll()
