"""A channel and stub for a node's API, and the Python value of a field as the API sends it."""

from __future__ import annotations

import grpc
import grpc.aio

from drsdtp.config import Address, TlsConfig
from drsdtp.gossip.tls import ca_credentials, channel_credentials
from drsdtp.wire.v1 import api_pb2, api_pb2_grpc

__all__ = ["connect", "field_to_python"]


def field_to_python(f: api_pb2.FieldValue) -> object:
    """The Python value of an API field (a desired field: the tuple of its values)."""
    kind = f.WhichOneof("value")
    if kind is None:
        return None
    if kind == "set":
        return sorted(f.set.elements)
    if kind == "desired":
        return tuple(field_to_python(v) for v in f.desired.values)
    return getattr(f, kind)


def connect(
    address: Address, tls: TlsConfig | None = None, server_name: str | None = None
) -> tuple[grpc.aio.Channel, api_pb2_grpc.TwinApiStub]:
    """A client channel and stub for a node's API: TLS when ``tls.api`` is on, verifying the node's
    certificate against the CA under ``server_name`` (its node id); with "mutual", presenting ``tls``'s
    certificate (with "server" only the CA is read, so a client needs no access to the node's key)."""
    target = f"{address.host}:{address.port}"
    if tls is None or tls.api == "off":
        channel = grpc.aio.insecure_channel(target)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        creds = channel_credentials(tls) if tls.api == "mutual" else ca_credentials(tls)
        channel = grpc.aio.secure_channel(target, creds, options=options)
    return channel, api_pb2_grpc.TwinApiStub(channel)
