"""A local OpenID Connect issuer for the authorization tests: RSA keys made here, the key set (JWKS) served
over HTTP on loopback from a thread, and JWTs signed with them. No network beyond 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://id.plant.test/realms/edge"
AUDIENCE = "drsdtp"


class Issuer:
    def __init__(self) -> None:
        self.keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.fetches = 0
        self.url = ""

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
        body: dict[str, Any] = {"sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now}
        body["exp"] = now + int(expires_in)
        if role is not None:
            body["drsdtp_role"] = role
        body.update(claims)
        signer = key if key is not None else self.keys[kid]
        return jwt.encode(body, signer, algorithm="RS256", headers={"kid": kid})


@contextmanager
def serve_issuer() -> Iterator[Issuer]:
    issuer = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200 if self.path == "/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
