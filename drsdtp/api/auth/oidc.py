"""JWTs of an OpenID Connect issuer, verified with PyJWT against the issuer's keys (:mod:`.jwks`: a static
key set, and the one the issuer publishes, found through its discovery document or ``jwks_url``).

Signature, ``iss``, ``aud``, ``exp`` (required) and ``nbf`` are checked, with ``leeway_s`` for clock skew;
only the configured algorithms are accepted (never ``none`` or HMAC: the algorithm is the config's choice,
not the token's). A verified token is remembered (at most :data:`CACHE_TOKENS` of them) until it expires
or for :data:`CACHE_S`, whichever is sooner, so a client calling with the same token pays the signature
check once (~0.3 ms with RS256), not on every call."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

from drsdtp.api.auth.jwks import MIN_REFETCH_S, KeySetError, KeySource
from drsdtp.config import ApiOidcConfig, ApiRole, scope_problem

__all__ = ["MIN_REFETCH_S", "JwtClaims", "JwtRefused", "OidcVerifier", "looks_like_jwt"]

CACHE_TOKENS = 1024
CACHE_S = 60.0
_ROLES: tuple[ApiRole, ...] = ("viewer", "operator", "engineer", "admin")


class JwtRefused(Exception):
    """The token is not accepted; the message says why (for the caller, never the token itself).
    ``unavailable``: refused because the issuer's key set could not be fetched, not for the token."""

    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.unavailable = unavailable


@dataclass(frozen=True, slots=True)
class JwtClaims:
    subject: str
    role: ApiRole
    scopes: tuple[str, ...]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class OidcVerifier:
    def __init__(self, config: ApiOidcConfig) -> None:
        """Raises :class:`~drsdtp.api.auth.jwks.KeySetError` for a static key set it cannot use."""
        self.config = config
        self.keys = KeySource(config)
        # token -> (claims, monotonic time until which they hold)
        self._verified: collections.OrderedDict[str, tuple[JwtClaims, float]] = collections.OrderedDict()

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
        import jwt  # here, not above: PyJWT and cryptography cost a node without api.oidc ~9 MB

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
        try:
            key = await self.keys.key(kid)
        except KeySetError as exc:
            raise JwtRefused(str(exc), unavailable=exc.unavailable) from None
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
