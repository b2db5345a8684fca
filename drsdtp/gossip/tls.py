"""Mutual TLS between peers: credentials from the node's files, and the identity check.

Identity is the certificate: every node has a key and a certificate from the cluster CA whose DNS
subject-alternative name is its node id. A dialer verifies the server against the name of the peer it
dialled (gRPC's target-name override); a server takes the node id from the client's Hello and refuses it
unless the client's certificate names it. ``tls.allowed_names`` narrows who may connect at all.

Trust model: an authenticated member may forward deltas of other members (gossip is transitive), so a
certificate proves who sent a message, not who wrote every event in it. Per-origin signatures would be the
upgrade path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import grpc

from drsdtp.config import TlsConfig
from drsdtp.errors import ConfigError
from drsdtp.gossip.errors import HandshakeRefused, Refusal

__all__ = ["channel_credentials", "check_identity", "peer_names", "server_credentials"]


def _read(tls: TlsConfig) -> tuple[bytes, bytes, bytes]:
    try:
        return tls.ca.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes()
    except OSError as exc:
        raise ConfigError("tls", f"cannot read a TLS file: {exc}") from None


def server_credentials(tls: TlsConfig, *, require_client_auth: bool | None = None) -> grpc.ServerCredentials:
    ca, cert, key = _read(tls)
    required = tls.require_client_auth if require_client_auth is None else require_client_auth
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=required)


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    ca, cert, key = _read(tls)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def peer_names(auth_context: Mapping[str, Iterable[bytes]]) -> set[str]:
    """The DNS names and common name of the client certificate of a gRPC call."""
    names: set[str] = set()
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        names.update(v.decode(errors="replace") for v in auth_context.get(key, ()))
    return names


def check_identity(node_id: str, names: set[str], allowed: Sequence[str]) -> None:
    """Refuse a peer whose certificate does not name its node id, or that is not allowed."""
    if node_id not in names:
        shown = ", ".join(sorted(names)) or "none"
        raise HandshakeRefused(
            Refusal.IDENTITY, f"node id {node_id!r} is not a name of its certificate (names: {shown})"
        )
    if allowed and node_id not in allowed:
        raise HandshakeRefused(Refusal.IDENTITY, f"node {node_id!r} is not in tls.allowed_names")
