"""How late the node's event loop runs a timer: the stalls every peer stream, API call and intake wait out.

One task sleeps ``interval_s`` again and again and records how much later than asked it woke
(``drsdtp_event_loop_lag_seconds``). A loop step that holds the loop for longer than the interval always shows
(its lag is at least its length minus the interval); a shorter one shows when a wake-up fell due during it.
It is how a stall of the node was found (issue 13: the first intelligence pass imported its engine on the
loop, 0.1-0.2 s, the whole replication latency tail), and the replication bench reads it to say where the
tail goes. The cost: one wake-up per interval (20 a second by default, a few microseconds each).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from drsdtp.lifecycle import BackgroundService
from drsdtp.stats import LatencyHistogram

__all__ = ["LOOP_LAG_INTERVAL_S", "LoopLag"]

LOOP_LAG_INTERVAL_S: Final = 0.05


class LoopLag(BackgroundService):
    """Samples the event loop's lag into :attr:`lag`, a histogram."""

    name = "loop lag"

    def __init__(self, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError(f"the loop lag interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.lag = LatencyHistogram()

    async def run(self) -> None:
        while True:
            due = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lag.observe(max(0.0, time.monotonic() - due))
