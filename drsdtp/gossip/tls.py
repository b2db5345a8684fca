"""Mutual TLS between peers: credentials from the node's files, and the identity check.

Identity is the certificate: every node has a key and a certificate from the cluster CA whose DNS
subject-alternative name is its node id. A dialer verifies the server against the name of the peer it
dialled (gRPC's target-name override); a server takes the node id from the client's Hello and refuses it
unless the client's certificate names it. ``tls.allowed_names`` narrows who may connect at all.

Rotation: :class:`NodeCertificates` re-reads the files when they change, so renewed certificates (and a new
CA bundle) take effect for the next connection in either direction, without a restart.

Trust model: an authenticated member may forward deltas of other members (gossip is transitive), so a
certificate proves who sent a message, not who wrote every event in it. Per-origin signatures would be the
upgrade path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence

import grpc

from drsdtp.config import TlsConfig
from drsdtp.errors import ConfigError
from drsdtp.gossip.errors import HandshakeRefused, Refusal

__all__ = ["NodeCertificates", "ca_credentials", "channel_credentials", "check_identity", "peer_names"]

log = logging.getLogger(__name__)


def _read(tls: TlsConfig) -> tuple[bytes, bytes, bytes]:
    try:
        return tls.ca.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes()
    except OSError as exc:
        raise ConfigError("tls", f"cannot read a TLS file: {exc}") from None


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    """One-off client credentials from the files as they are now (the CLI)."""
    ca, cert, key = _read(tls)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def ca_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    """Client credentials that verify the server against the CA and present no certificate."""
    try:
        ca = tls.ca.read_bytes()
    except OSError as exc:
        raise ConfigError("tls.ca", f"cannot read a TLS file: {exc}") from None
    return grpc.ssl_channel_credentials(root_certificates=ca)


class NodeCertificates:
    """The node's CA, certificate and key, re-read when their files change.

    Certificate managers rotate these files in place (a Kubernetes Secret swaps a symlink; cert-manager
    renews before expiry). Every new connection, accepted or dialled, then uses the new files without a
    restart; established connections keep theirs until they reconnect. Files that cannot be read during a
    rotation (half-written, briefly missing) are logged and the previous material stays in use.
    """

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()  # gRPC calls the server fetcher from its own threads
        self._stamp = self._file_stamp()
        self._material = _read(config)  # unreadable at start: a ConfigError, the node does not start
        self.version = 0  # bumped on every reload
        self._channel: tuple[int, grpc.ChannelCredentials] | None = None

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [path.stat() for path in (self.config.ca, self.config.cert, self.config.key)]
        except OSError:
            return None
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in stats)

    def current(self) -> tuple[int, tuple[bytes, bytes, bytes]]:
        """(version, (ca, cert, key)), reloading first if a file changed since the last look."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                try:
                    self._material = _read(self.config)
                except ConfigError as exc:
                    log.warning("TLS files changed but cannot be read (keeping the previous ones): %s", exc)
                else:
                    self._stamp = stamp
                    self.version += 1
                    log.info("TLS certificate files reloaded (%s)", self.config.cert)
            return self.version, self._material

    def server_credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        """Credentials whose certificate gRPC fetches again at each new handshake."""

        def configuration(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

        version, material = self.current()
        served = [version]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            latest, now = self.current()
            if latest == served[0]:
                return None  # unchanged: gRPC keeps what it has
            served[0] = latest
            return configuration(*now)

        return grpc.dynamic_ssl_server_credentials(
            configuration(*material), fetch, require_client_authentication=require_client_auth
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials for a new dial, rebuilt after a reload."""
        version, (ca, cert, key) = self.current()
        if self._channel is None or self._channel[0] != version:
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
            self._channel = (version, creds)
        return self._channel[1]


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
