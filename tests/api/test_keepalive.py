"""The node's API server and the SDK agree on keepalive: the server accepts the pings the SDK sends."""

from __future__ import annotations

from drsdtp.api.server import MIN_CLIENT_PING_MS
from drsdtp.client.channel import _OPTIONS, KEEPALIVE_TIME_MS


def test_the_node_accepts_the_sdks_keepalive_pings() -> None:
    """The SDK pings an idle connection every ``KEEPALIVE_TIME_MS``; a server that accepts pings less often
    counts each as a strike and closes the connection (GOAWAY ``too_many_pings``), dropping idle watches."""
    assert dict(_OPTIONS)["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS
    assert MIN_CLIENT_PING_MS < KEEPALIVE_TIME_MS
