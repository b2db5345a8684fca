"""Builds the node's HTTP/JSON face from its gRPC server's method table (one implementation of each
method) and the ``[api.http]`` config."""

from __future__ import annotations

from drsdtp import __version__
from drsdtp.api.http.server import HttpApiServer
from drsdtp.api.server import ApiServer
from drsdtp.config import ApiHttpConfig, LimitsConfig
from drsdtp.dashboard import STATIC

__all__ = ["DASHBOARD_PREFIX", "http_face"]

DASHBOARD_PREFIX = "/dashboard"


def http_face(api: ApiServer, config: ApiHttpConfig, limits: LimitsConfig) -> HttpApiServer:
    assert config.listen is not None, "the HTTP face is off"
    return HttpApiServer(
        api.methods,
        api.watches,
        api.streams,
        config.listen,
        limits,
        version=__version__,
        authority=api.authority,  # the gRPC face's: one set of callers, counts and rate buckets
        static={DASHBOARD_PREFIX: STATIC} if config.dashboard else None,
    )
