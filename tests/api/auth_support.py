"""A local OpenID Connect issuer for the authorization tests: RSA keys made here, its discovery document and
key set (JWKS) served over HTTP or HTTPS on loopback from a thread, and JWTs signed with them. No network
beyond 127.0.0.1."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://id.plant.test/realms/edge"
AUDIENCE = "drsdtp"


DISCOVERY = "/.well-known/openid-configuration"


class Issuer:
    """``url``: its key set; ``base``: where it serves; ``name``: the ``iss`` of its tokens (ISSUER, or
    ``discovered()``: its own URL, which discovery checks the document against)."""

    def __init__(self) -> None:
        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.fetches = 0
        self.discoveries = 0
        self.url = ""
        self.base = ""
        self.name = ISSUER
        self.document: dict[str, Any] | None = None  # the discovery document served (None: the true one)

    def discovered(self) -> str:
        """Makes its tokens name the URL it serves from, as discovery needs; returns that issuer."""
        self.name = self.base + "/realms/edge"
        return self.name

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": out}

    def token(
        self,
        subject: str = "alice",
        *,
        role: str | None = "operator",
        kid: str = "k1",
        key: rsa.RSAPrivateKey | None = None,
        expires_in: float = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"sub": subject, "iss": self.name, "aud": AUDIENCE, "iat": now}
        body["exp"] = now + int(expires_in)
        if role is not None:
            body["drsdtp_role"] = role
        body.update(claims)
        signer = key if key is not None else self.keys[kid]
        return jwt.encode(body, signer, algorithm="RS256", headers={"kid": kid})


@contextmanager
def serve_issuer(tls: tuple[Path, Path] | None = None) -> Iterator[Issuer]:
    """``tls``: (certificate, key) to serve HTTPS with."""
    issuer = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith(DISCOVERY):
                issuer.discoveries += 1
                doc = issuer.document or {"issuer": issuer.name, "jwks_uri": issuer.base + "/jwks.json"}
                body = json.dumps(doc).encode()
                found = self.path == issuer.name.removeprefix(issuer.base) + DISCOVERY
            else:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                found = self.path == "/jwks.json"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    issuer.base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    issuer.url = issuer.base + "/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
