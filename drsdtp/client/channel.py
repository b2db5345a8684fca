"""How the SDK reaches a node: the channel (plaintext or TLS), the bearer token, and :func:`connect`, a raw
generated stub for code that wants the messages themselves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

import grpc
import grpc.aio

from drsdtp.client.types import field_to_python
from drsdtp.errors import ConfigError
from drsdtp.wire.v1 import api_pb2_grpc

__all__ = ["TOKEN_ENV", "Tls", "connect", "field_to_python", "metadata_for", "open_channel"]

#: The environment variable a client takes its bearer token from when not given one.
TOKEN_ENV: Final = "DRSDTP_TOKEN"

#: How often the SDK pings an idle connection: keepalive pings find a dead node under an idle watch. The
#: node accepts pings this often (``drsdtp.api.server.MIN_CLIENT_PING_MS``).
KEEPALIVE_TIME_MS: Final = 20_000

# A restarted node is reconnected to quickly.
_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


def _read(value: bytes | str | Path | None, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{what}", f"cannot read {value}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS to the node's API. ``ca``: the CA that signed the node's certificate (PEM bytes or a path; None:
    the system's roots). ``cert``/``key``: this client's certificate, for a node with ``tls.api = "mutual"``.
    ``server_name``: the name the node's certificate carries when it is not the host dialled (a drsdtp
    node's certificate names its node id)."""

    ca: bytes | str | Path | None = None
    cert: bytes | str | Path | None = None
    key: bytes | str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("tls", "give both cert and key (a client certificate), or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "ca"),
            private_key=_read(self.key, "key"),
            certificate_chain=_read(self.cert, "cert"),
        )


def metadata_for(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata: ``authorization: Bearer <token>`` (the token given, else ``$DRSDTP_TOKEN``)."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if not token:
        return ()
    if any(c in token for c in "\r\n"):
        raise ValueError("token: a line break is not allowed in a bearer token")
    return (("authorization", f"Bearer {token}"),)


def open_channel(
    target: str, tls: Tls | None = None, options: Sequence[tuple[str, object]] = ()
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (``host:port``): plaintext without ``tls``."""
    opts = [*_OPTIONS, *options]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=opts)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, tls.credentials(), options=opts)


class _Address(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class _TlsFiles(Protocol):
    """A node config's TLS section, as far as a client reads it (``drsdtp.config.TlsConfig``)."""

    @property
    def ca(self) -> Path: ...
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...
    @property
    def api(self) -> Literal["off", "server", "mutual"]: ...


def tls_from_config(tls: _TlsFiles | None, server_name: str | None = None) -> Tls | None:
    """The client TLS of a node config's ``[tls]``: None when its API is plaintext; with "mutual" it
    presents the config's certificate (with "server" only the CA is read, so a client needs no access to
    the node's key)."""
    if tls is None or tls.api == "off":
        return None
    if tls.api == "mutual":
        return Tls(ca=tls.ca, cert=tls.cert, key=tls.key, server_name=server_name)
    return Tls(ca=tls.ca, server_name=server_name)


def connect(
    address: _Address, tls: _TlsFiles | None = None, server_name: str | None = None
) -> tuple[grpc.aio.Channel, api_pb2_grpc.TwinApiStub]:
    """A raw channel and generated stub for a node's API (TLS as :func:`tls_from_config` says)."""
    host = f"[{address.host}]" if ":" in address.host else address.host
    channel = open_channel(f"{host}:{address.port}", tls_from_config(tls, server_name))
    return channel, api_pb2_grpc.TwinApiStub(channel)
