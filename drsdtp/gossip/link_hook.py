"""Test-only slow and lossy peer links; inert unless ``DRSDTP_TEST_LINK`` is set.

``DRSDTP_TEST_LINK="delay_ms=50,jitter_ms=20,loss=0.05[,seed=7]"`` (read once when the replicator starts,
logged as a warning, never set by any config) makes every peer stream of the node a bad link for what it
sends. The chaos tests (``tests/chaos/``) use it where the kernel has no netem.

* Delay: each outgoing message leaves ``delay_ms`` ± ``jitter_ms`` after it was written, in write order (a
  TCP stream never reorders). The session's writer is not held up: it is latency, not a throughput cap.
* Loss, as the protocol experiences it: gRPC runs over TCP, which retransmits lost packets, so a message is
  never lost inside a live stream; a lossy network instead kills connections (keepalive timeouts, resets),
  and everything in flight dies with them. So a lost message resets the stream: the write fails, the session
  ends on both sides, the dialer reconnects, and the protocol resends what was unacknowledged and repairs.
  (Withholding one message inside a live stream would test a failure gRPC never has.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from drsdtp.gossip.errors import PeerError

__all__ = ["ENV", "LinkFaults", "ShapedStream"]

log = logging.getLogger(__name__)

ENV: Final = "DRSDTP_TEST_LINK"
_MAX_QUEUED: Final = 1024  # messages held back per stream before the writer waits (a bound, like a socket's)


class _Stream(Protocol):
    async def read(self) -> bytes | None: ...
    async def write(self, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkFaults:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # probability that a message resets its stream
    seed: int | None = None

    @classmethod
    def parse(cls, text: str) -> LinkFaults:
        """``key=value`` pairs separated by commas; ValueError names what is wrong."""
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in ("delay_ms", "jitter_ms", "loss", "seed"):
                raise ValueError(f"{ENV}: {item!r}: expected delay_ms=, jitter_ms=, loss= or seed=")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"{ENV}: {key}: {raw.strip()!r} is not a number") from None
        delay, jitter, loss = (values.get(k, 0.0) for k in ("delay_ms", "jitter_ms", "loss"))
        if not 0 <= jitter <= delay <= 60_000:
            raise ValueError(f"{ENV}: need 0 <= jitter_ms <= delay_ms <= 60000")
        if not 0 <= loss < 1:
            raise ValueError(f"{ENV}: loss must be in [0, 1)")
        seed = values.get("seed")
        return cls(delay, jitter, loss, None if seed is None else int(seed))

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> LinkFaults | None:
        text = (os.environ if env is None else env).get(ENV)
        if not text:
            return None
        faults = cls.parse(text)
        log.warning("TEST HOOK %s=%r: every peer stream of this node is a slow, lossy link", ENV, text)
        return faults

    def wrap(self, stream: _Stream, rng: random.Random) -> ShapedStream:
        return ShapedStream(stream, self, rng)


class ShapedStream:
    """A session's stream seen through :class:`LinkFaults`. With a delay, :meth:`pump` must run alongside
    the session (the session starts it); it sends each message when it is due."""

    def __init__(self, inner: _Stream, faults: LinkFaults, rng: random.Random) -> None:
        self.inner = inner
        self.faults = faults
        self.rng = rng
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._last_due = 0.0

    @property
    def delayed(self) -> bool:
        return self.faults.delay_ms > 0

    async def read(self) -> bytes | None:
        return await self.inner.read()

    async def write(self, data: bytes) -> None:
        f = self.faults
        if f.loss and self.rng.random() < f.loss:
            log.info("TEST HOOK %s: a message is lost: resetting the stream", ENV)
            raise PeerError(f"{ENV}: message lost, stream reset")
        if not self.delayed:
            await self.inner.write(data)
            return
        while len(self._queue) >= _MAX_QUEUED:
            self._room.clear()
            await self._room.wait()
        loop = asyncio.get_running_loop()
        delay_s = (f.delay_ms + self.rng.uniform(-f.jitter_ms, f.jitter_ms)) / 1000
        self._last_due = max(self._last_due, loop.time() + delay_s)  # in order, as TCP delivers
        self._queue.append((self._last_due, data))
        self._queued.set()

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            due, data = self._queue[0]
            await asyncio.sleep(max(0.0, due - loop.time()))
            self._queue.popleft()
            self._room.set()
            await self.inner.write(data)
