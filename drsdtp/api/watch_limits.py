"""Admission of Watch streams: at most ``limits.api_max_watchers`` open on the node and
``limits.api_max_watchers_per_caller`` per caller, counted for the metrics.

A caller is the identity authorization proved (a token, a JWT, a client certificate: so one operator cannot
get around the cap by opening more connections), else its address without the port (a port is per
connection). A slot is
held until gRPC has finished the call, not only until the handler returns: a stream cut off for not reading
keeps its slot until its client reads the status or its connection closes, so a caller cannot pile up
streams it never reads.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping

import grpc
import grpc.aio

from drsdtp.api.caller import current_caller
from drsdtp.config import LimitsConfig
from drsdtp.gossip.tls import peer_names

__all__ = ["WatchGate", "WatchLimits", "WatchRefused", "caller_of"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WatchLimits:
    max_watchers: int = 64
    max_per_caller: int = 8
    stall_s: float = 10.0

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> WatchLimits:
        return cls(limits.api_max_watchers, limits.api_max_watchers_per_caller, limits.api_watch_stall_s)


class WatchRefused(Exception):
    """A Watch stream over a cap; ``reason`` is "node" or "caller"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def admit_stream(gate: WatchGate, context: grpc.aio.ServicerContext) -> None:
    """A stream slot for the calling peer (:func:`caller_of`), given back when the RPC ends; over a cap the
    RPC is aborted with RESOURCE_EXHAUSTED and the cap named. The one admission of the streams that are not
    Watch itself (alarms, anomalies, commands followed)."""
    try:
        release = gate.admit(caller_of(context.peer(), context.auth_context()))
    except WatchRefused as exc:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.detail)
        raise  # not reached: abort raises
    context.add_done_callback(lambda _: release())


def caller_of(peer: str, auth_context: Mapping[str, Iterable[bytes]]) -> str:
    """Who is calling: the identity authorization proved for this call (``token:mes``, ``jwt:alice``: the
    caller the guard set, see :mod:`drsdtp.api.caller`), else ``tls:<certificate names>`` with a client
    certificate, else the peer address without its port (``ipv4:10.0.0.7``, ``ipv6:[::1]``)."""
    proven = current_caller()
    if proven.authenticated:
        return proven.identity
    names = peer_names(auth_context)
    if names:
        return "tls:" + ",".join(sorted(names))
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        rest = rest.rsplit(":", 1)[0]
    return f"{kind}:{rest}" if rest else peer


class WatchGate:
    """Open Watch slots, by caller, and what was refused or cut off."""

    def __init__(self, limits: WatchLimits) -> None:
        self.limits = limits
        self._open: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()  # by reason: node, caller
        self.cut_off = 0  # streams ended because the client did not read

    @property
    def open(self) -> int:
        return self._open.total()

    def admit(self, caller: str) -> Callable[[], None]:
        """Takes a slot for ``caller``; returns the function that gives it back (call it once). Raises
        :class:`WatchRefused` over a cap."""
        if self.open >= self.limits.max_watchers:
            self.refused["node"] += 1
            raise WatchRefused(
                "node",
                f"too many Watch streams on this node ({self.open} open, "
                f"limits.api_max_watchers = {self.limits.max_watchers}); try again later",
            )
        if self._open[caller] >= self.limits.max_per_caller:
            self.refused["caller"] += 1
            raise WatchRefused(
                "caller",
                f"too many Watch streams from {caller} ({self._open[caller]} open, "
                f"limits.api_max_watchers_per_caller = {self.limits.max_per_caller})",
            )
        self._open[caller] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[caller] -= 1
                if self._open[caller] <= 0:
                    del self._open[caller]

        return release
