"""The HTTP/JSON face of the application API: the gRPC methods' own implementations over HTTP with JSON
bodies, server-sent events for Watch and an OpenAPI document (:mod:`.server`)."""

from drsdtp.api.http.face import http_face
from drsdtp.api.http.server import HttpApiServer

__all__ = ["HttpApiServer", "http_face"]
