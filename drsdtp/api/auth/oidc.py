"""JWTs of an OpenID Connect issuer, verified with PyJWT against the issuer's key set (JWKS).

The key set is fetched from ``api.oidc.jwks_url`` in a worker thread (never on the event loop), kept for
``jwks_refresh_s``, and fetched again early when a token names a key id the set lacks (the issuer rotated
its keys), at most once every :data:`MIN_REFETCH_S` so tokens with made-up key ids cannot make the node
hammer the issuer. Signature, ``iss``, ``aud``, ``exp`` (required) and ``nbf`` are checked, with
``leeway_s`` for clock skew; only the configured algorithms are accepted (never ``none`` or HMAC: the
algorithm is the config's choice, not the token's). A verified token is remembered (at most
:data:`CACHE_TOKENS` of them) until it expires or for :data:`CACHE_S`, whichever is sooner, so a client
calling with the same token pays the signature check once (~0.3 ms with RS256), not on every call."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drsdtp.config import ApiOidcConfig, ApiRole, scope_problem

if TYPE_CHECKING:
    import jwt

__all__ = ["MIN_REFETCH_S", "JwtClaims", "JwtRefused", "OidcVerifier", "looks_like_jwt"]

MIN_REFETCH_S = 30.0
CACHE_TOKENS = 1024
CACHE_S = 60.0
MAX_JWKS_BYTES = 1 << 20
_ROLES: tuple[ApiRole, ...] = ("viewer", "operator", "engineer", "admin")


class JwtRefused(Exception):
    """The token is not accepted; the message says why (for the caller, never the token itself)."""


@dataclass(frozen=True, slots=True)
class JwtClaims:
    subject: str
    role: ApiRole
    scopes: tuple[str, ...]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def _fetch(url: str, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:  # the config's URL
        body = reply.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the key set is not a JSON object")
    return data


class OidcVerifier:
    def __init__(self, config: ApiOidcConfig) -> None:
        self.config = config
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -float("inf")  # monotonic time of the last fetch attempt
        self._loaded = -float("inf")  # ... of the last successful one
        self._lock = asyncio.Lock()
        self.fetch_errors = 0
        # token -> (claims, monotonic time until which they hold)
        self._verified: collections.OrderedDict[str, tuple[JwtClaims, float]] = collections.OrderedDict()

    async def _key(self, kid: str) -> jwt.PyJWK:
        now = time.monotonic()
        due = kid not in self._keys or now - self._loaded > self.config.jwks_refresh_s
        # Without keys (the first call, an issuer that was down) the fetch is retried sooner.
        if due and now - self._fetched >= (MIN_REFETCH_S if self._keys else 1.0):
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            known = ", ".join(sorted(self._keys)) or "none: the key set could not be fetched"
            raise JwtRefused(f"the JWT's key id {kid!r} is not in the issuer's key set (keys: {known})")
        return key

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched < 1.0:
                return  # another call fetched it while this one waited
            self._fetched = time.monotonic()
            import jwt  # here, not above: PyJWT and cryptography cost a node without api.oidc ~9 MB

            try:
                data = await asyncio.to_thread(_fetch, self.config.jwks_url, self.config.jwks_timeout_s)
                keys = jwt.PyJWKSet.from_dict(data).keys
            except Exception as exc:  # keep the keys we had: an issuer outage must not lock everyone out
                self.fetch_errors += 1
                if not self._keys:
                    raise JwtRefused(
                        f"cannot fetch the issuer's key set from {self.config.jwks_url}: {exc}"
                    ) from None
                return
            self._keys = {k.key_id: k for k in keys if k.key_id}
            self._loaded = time.monotonic()

    async def verify(self, token: str) -> JwtClaims:
        known = self._verified.get(token)
        if known is not None and time.monotonic() < known[1]:
            return known[0]
        claims, expires = await self._verify(token)
        self._verified.pop(token, None)
        self._verified[token] = claims, time.monotonic() + min(CACHE_S, max(0.0, expires - time.time()))
        while len(self._verified) > CACHE_TOKENS:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> tuple[JwtClaims, float]:
        """The claims and the token's expiry (epoch seconds)."""
        import jwt  # see _refresh

        cfg = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtRefused(f"the bearer is not a well-formed JWT ({exc})") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in cfg.algorithms:
            raise JwtRefused(
                f"the JWT is signed with {alg!r}; api.oidc.algorithms allows {list(cfg.algorithms)}"
            )
        if not isinstance(kid, str):
            raise JwtRefused("the JWT names no key id (kid)")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise JwtRefused("the JWT has expired") from None
        except jwt.InvalidIssuerError:
            raise JwtRefused(f"the JWT's issuer is not {cfg.issuer!r} (api.oidc.issuer)") from None
        except jwt.InvalidAudienceError:
            raise JwtRefused(
                f"the JWT is not for the audience {cfg.audience!r} (api.oidc.audience)"
            ) from None
        except jwt.PyJWTError as exc:
            raise JwtRefused(f"the JWT is not valid: {exc}") from None
        return self._claims(claims), float(claims["exp"])

    def _claims(self, claims: dict[str, Any]) -> JwtClaims:
        cfg = self.config
        subject = claims.get(cfg.identity_claim)
        if not isinstance(subject, str) or not subject:
            raise JwtRefused(f"the JWT has no {cfg.identity_claim!r} claim (api.oidc.identity_claim)")
        raw_role = claims.get(cfg.role_claim)
        names = [raw_role] if isinstance(raw_role, str) else raw_role if isinstance(raw_role, list) else []
        roles = [r for r in _ROLES if r in names]
        role = roles[-1] if roles else cfg.default_role
        if role is None:
            raise JwtRefused(
                f"the JWT carries no role in its {cfg.role_claim!r} claim (one of {', '.join(_ROLES)}; "
                "api.oidc.role_claim)"
            )
        raw_scopes = claims.get(cfg.scopes_claim, ["*"])
        scopes = raw_scopes.split() if isinstance(raw_scopes, str) else raw_scopes
        if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
            raise JwtRefused(f"the JWT's {cfg.scopes_claim!r} claim is not a list of twin scopes")
        for glob in scopes:
            problem = scope_problem(glob)
            if problem:
                raise JwtRefused(f"the JWT's {cfg.scopes_claim!r} claim: {problem}")
        return JwtClaims(subject, role, tuple(scopes))
