"""Identify a caller from what the transport proved, authorize its call, and account for refusals (see the
package docstring for the interface the faces use)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from drsdtp.api.auth.access import Access, RecordTwins, access_of
from drsdtp.api.auth.decision import Decision, Refusal
from drsdtp.api.auth.jwks import KeySetError
from drsdtp.api.auth.oidc import JwtRefused, OidcVerifier, looks_like_jwt
from drsdtp.api.auth.ratelimit import AuditBudget, RateLimiter
from drsdtp.api.auth.roles import at_least, required_role
from drsdtp.api.auth.scopes import covers_twin
from drsdtp.api.auth.tokens import TokenBook
from drsdtp.api.caller import Caller
from drsdtp.api.watch_limits import caller_of
from drsdtp.config import ApiConfig, ApiRole
from drsdtp.errors import ConfigError

__all__ = ["AUDIT_BURST", "Authority", "Credentials", "RefusalSink", "bearer_of"]

log = logging.getLogger(__name__)

# Refusals of one caller written to the audit trail one by one: this many at once, then one a second; the
# rest are counted into its next record (a client refused in a loop cannot fill the disk).
AUDIT_BURST = 20
AUDIT_PER_S = 1.0

# (actor, method, twin, reason): appends one ``refused`` record to the audit trail.
RefusalSink = Callable[[str, str, str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the transport proved or carried: the peer address (gRPC's ``ipv4:10.0.0.5:51234`` form), the
    names of a client certificate it verified, and the ``authorization`` header/metadata as sent."""

    peer: str
    cert_names: frozenset[str] = frozenset()
    authorization: str | None = None


def bearer_of(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>`` (the scheme in any case), None for no header; raises ValueError for
    a header of another form."""
    if authorization is None or authorization == "":
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ValueError("the authorization metadata is not of the form 'Bearer <token>'")
    return token.strip()


_SPELLED = {"Write.create": "a Write that creates twins", "Write.delete": "a Write that deletes twins"}


def _unauthenticated(reason: str, kind: Refusal = "credentials") -> Decision:
    return Decision("unauthenticated", reason, kind)


class Authority:
    def __init__(
        self, config: ApiConfig, *, audit: RefusalSink | None = None, records: RecordTwins | None = None
    ) -> None:
        self.config = config
        self.records = records  # the twin of an alarm or a command a request names
        self.tokens = TokenBook(config.tokens)
        try:
            self.oidc = OidcVerifier(config.oidc) if config.oidc is not None else None
        except KeySetError as exc:
            raise ConfigError("api.oidc.jwks_file", str(exc)) from None
        self.certificates = {c.name: c for c in reversed(config.certificates)}  # the first listed wins
        anonymous = config.anonymous_role
        if anonymous == "auto":
            anonymous = "none" if config.tokens or config.oidc is not None else "admin"
        self.anonymous_role: ApiRole | None = None if anonymous == "none" else anonymous
        self.limiter = RateLimiter(config.rate_per_s, config.rate_burst or config.rate_per_s)
        self.refusals: collections.Counter[tuple[str, ...]] = collections.Counter()  # (kind,)
        self._audit = audit
        self.audit_budget = AuditBudget(AUDIT_PER_S, AUDIT_BURST)  # shared with the command batches

    # ----- who ---------------------------------------------------------------------------------------------
    async def identify(self, creds: Credentials) -> Caller | Decision:
        try:
            bearer = bearer_of(creds.authorization)
        except ValueError as exc:
            return _unauthenticated(str(exc))
        if bearer is not None:
            return await self._bearer(bearer)
        if creds.cert_names:
            names = sorted(creds.cert_names)
            identity = "tls:" + ",".join(names)
            for name in names:
                mapped = self.certificates.get(name)
                if mapped is not None:
                    return Caller(identity, True, mapped.role, mapped.scopes)
            return Caller(identity, True, self.config.certificate_role)
        if self.anonymous_role is None:
            return _unauthenticated(
                "no credentials: send 'authorization: Bearer <token>' (api.tokens or an api.oidc JWT)"
            )
        return Caller(caller_of(creds.peer, {}), False, self.anonymous_role)

    async def _bearer(self, bearer: str) -> Caller | Decision:
        if self.oidc is not None and looks_like_jwt(bearer):
            try:
                claims = await self.oidc.verify(bearer)
            except JwtRefused as exc:
                return _unauthenticated(str(exc), "issuer" if exc.unavailable else "credentials")
            return Caller(f"jwt:{claims.subject}", True, claims.role, claims.scopes)
        token = self.tokens.find(bearer)
        if token is None:
            return _unauthenticated("the bearer token is not one of this node's api.tokens")
        return Caller(f"token:{token.name}", True, token.role, token.scopes, token.rate_per_s)

    # ----- may it ------------------------------------------------------------------------------------------
    def access(self, method: str, request: object) -> Access:
        """What ``request`` touches (:func:`access_of`), the twins of the records it names included."""
        return access_of(method, request, self.records)

    def authorize(self, caller: Caller, method: str, twins: Iterable[str] = ()) -> Decision:
        """Role for ``method``, scopes for ``twins``, then the caller's rate limit."""
        return self.check(caller, Access((method,), tuple(twins)))

    def check(self, caller: Caller, access: Access) -> Decision:
        for method in access.methods:
            needed = required_role(method)
            if not at_least(caller.role, needed):
                what = _SPELLED.get(method, method)
                return Decision(
                    "permission_denied",
                    f"{caller.identity} (role {caller.role}) may not call {what}: it needs the role {needed}",
                    "method",
                )
        if caller.scopes != ("*",):
            for twin in access.twins:
                if not covers_twin(caller.scopes, twin):
                    return self._out_of_scope(caller, twin)
        wait = self.limiter.take(caller.identity, caller.rate_per_s)
        if wait > 0:
            rate = self.limiter.rate if caller.rate_per_s is None else caller.rate_per_s
            return Decision(
                "resource_exhausted",
                f"{caller.identity} is over its rate limit ({rate:g} requests/s); retry in {wait:.2f} s",
                "rate",
            )
        return Decision.OK

    @staticmethod
    def _out_of_scope(caller: Caller, twin: str) -> Decision:
        return Decision(
            "permission_denied",
            f"the twin {twin!r} is outside the scopes of {caller.identity} ({', '.join(caller.scopes)})",
            "scope",
            twin,
        )

    # ----- tell --------------------------------------------------------------------------------------------
    async def refused(self, actor: str, method: str, decision: Decision, twins: Iterable[str] = ()) -> None:
        """Counts a refusal and appends it to the audit trail (at a bounded rate per caller)."""
        self.refusals[(decision.kind,)] += 1
        if self._audit is None:
            return
        earlier = self.audit_budget.admit(actor)
        if earlier is None:
            return
        reason = f"refused {method} ({decision.status}): {decision.reason}{earlier}"
        twin = decision.twin or next(iter(twins), "")
        try:
            await self._audit(actor, method, twin, reason)
        except Exception as exc:  # the refusal stands; the audit trail's own errors are logged there
            log.warning("cannot audit a refused %s call: %s", method, exc)
