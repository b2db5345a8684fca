"""Stage timestamps of one call through the node, for the benches' breakdown of a durable write's round trip
(``benches/bench_sdk.py --breakdown``): where a request's time goes between gRPC, the write's plan and apply,
the log's group commit and its worker thread, and the reply.

Off unless the node runs with ``DRSDTP_STAGES=1`` in its environment, and then only for a call that asks
(gRPC metadata :data:`HEADER`); the stamps go back in the call's trailing metadata. The stamps are
``time.monotonic_ns()``: one clock for every process on the machine, so the client's own send and receive
times line up with the node's. Everything here is a no-op (one context variable read) for other calls.
"""

from __future__ import annotations

import contextvars
import os
import time
from typing import Final

__all__ = ["ENABLED", "HEADER", "begin", "encode", "mark", "mark_at", "parse", "taken"]

#: The gRPC metadata key a call asks for its stages with, and the trailing metadata key they come back in.
HEADER: Final = "drsdtp-stages"
ENABLED: Final = os.environ.get("DRSDTP_STAGES") == "1"
#: Stages kept per call at most (a bound: a call that loops marks no more).
MAX_STAGES: Final = 64

_stages: contextvars.ContextVar[list[tuple[str, int]] | None] = contextvars.ContextVar(
    "drsdtp_stages", default=None
)


def begin() -> list[tuple[str, int]]:
    """Starts recording this call's stages (in this task and the tasks it creates from here on)."""
    stages: list[tuple[str, int]] = []
    _stages.set(stages)
    return stages


def mark(stage: str) -> None:
    """Stamps ``stage`` now, when this call records its stages."""
    stages = _stages.get()
    if stages is not None and len(stages) < MAX_STAGES:
        stages.append((stage, time.monotonic_ns()))


def mark_at(stage: str, ns: int) -> None:
    """Stamps ``stage`` at ``ns`` (``time.monotonic_ns()`` taken elsewhere, e.g. in a worker thread)."""
    stages = _stages.get()
    if stages is not None and len(stages) < MAX_STAGES:
        stages.append((stage, ns))


def taken() -> list[tuple[str, int]]:
    """This call's stages so far (empty when it does not record them)."""
    return _stages.get() or []


def encode(stages: list[tuple[str, int]]) -> str:
    return ",".join(f"{name}={ns}" for name, ns in stages)


def parse(text: str) -> list[tuple[str, int]]:
    """:func:`encode`'s text back as (stage, ns) pairs; ``ValueError`` naming a malformed item."""
    out = []
    for item in filter(None, text.split(",")):
        name, sep, ns = item.partition("=")
        if not sep or not ns.isdigit():
            raise ValueError(f"stages: {item!r} is not stage=nanoseconds")
        out.append((name, int(ns)))
    return out
