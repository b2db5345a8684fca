"""Log a recurring problem once, then at most once per interval with a count of what was suppressed.

A sensor publishing garbage at 100 Hz must show up in the log clearly, but must not flood it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        prefix: str,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._prefix = prefix
        self._interval = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> None:
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._next[key] = now + self._interval
        skipped = self._suppressed.pop(key, 0)
        suffix = f" [{skipped} similar messages suppressed]" if skipped else ""
        self._logger.warning("%s: " + msg + "%s", self._prefix, *args, suffix)
