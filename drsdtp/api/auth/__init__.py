"""Authorization of the application API, transport-neutral: the gRPC guard (:mod:`drsdtp.api.guard`) and the
HTTP/JSON face call the same three steps, so both faces admit and refuse exactly alike.

1. **Who** — :meth:`Authority.identify` turns what the transport proved into a
   :class:`~drsdtp.api.caller.Caller` (identity, role, twin scopes)::

       creds = Credentials(peer="ipv4:10.0.0.5:51234", cert_names=frozenset({"scada-1"}),
                           bearer=bearer_of(header_value))      # header "authorization: Bearer <token>"
       who = await authority.identify(creds)                   # Caller, or a refusing Decision

   A bearer is an opaque token from ``[[api.tokens]]`` (stored as its SHA-256) or, with ``[api.oidc]``, a JWT
   verified against the issuer's keys (JWKS: found through its discovery document, or static; see
   :mod:`.jwks`). Else a client certificate's names (mutual TLS) map to a role
   (``[[api.certificates]]``, default ``api.certificate_role``); else the caller is anonymous and gets
   ``api.anonymous_role`` ("auto": admin while the node configures no tokens and no issuer, the API's
   behaviour before roles; refused with UNAUTHENTICATED once it does).

2. **May it** — :meth:`Authority.authorize` ``(caller, method, twins) -> Decision``, or
   :meth:`Authority.check` ``(caller, authority.access(method, request))``. ``method`` is the proto method
   name; a Write that creates or deletes twins is also checked as ``Write.create`` / ``Write.delete``.
   ``twins`` are every twin id the call names, directly or through a record (an alarm or command id, looked
   up by the ``records`` the authority was given): :func:`access_of` derives them from a request message
   (the HTTP face has the same messages after protobuf's JSON mapping). Roles form a ladder (:data:`ROLES`);
   each method needs the role named in :data:`METHOD_ROLES` (one table); a caller's scopes are twin id
   globs (``line1/*``, an exact id, ``*``), and a twin outside them is refused naming it. A call naming no
   twin (a listing, a stream without a twin filter) is checked by role only: the method answers with the
   caller's twins only (:mod:`drsdtp.api.visibility`). The per-caller rate limit (token bucket,
   ``api.rate_per_s``) is the last check.

3. **Tell** — a refused :class:`Decision` has ``status`` ``"unauthenticated"`` (401, UNAUTHENTICATED),
   ``"permission_denied"`` (403, PERMISSION_DENIED) or ``"resource_exhausted"`` (429, RESOURCE_EXHAUSTED),
   and a ``reason`` naming what was missing. The face answers with it and calls :meth:`Authority.refused`,
   which counts it (``drsdtp_api_auth_refusals{reason}``) and appends it to the audit trail with the identity
   (action ``refused``; a caller refused in a loop is recorded at a bounded rate, the rest summed into its
   next record).
"""

from drsdtp.api.auth.access import Access, access_of
from drsdtp.api.auth.authority import Authority, Credentials, bearer_of
from drsdtp.api.auth.decision import Decision
from drsdtp.api.auth.roles import METHOD_ROLES, ROLES, required_role

__all__ = [
    "METHOD_ROLES",
    "ROLES",
    "Access",
    "Authority",
    "Credentials",
    "Decision",
    "access_of",
    "bearer_of",
    "required_role",
]
