"""OIDC JWTs verified against a local issuer's key set (served from this test): the claims make the
caller, and an expired, foreign, tampered or unsigned token is refused, naming why."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from drsdtp.api.auth import Authority, Credentials, Decision
from drsdtp.api.caller import Caller
from drsdtp.config import ApiConfig, ApiOidcConfig
from tests.api.auth_support import AUDIENCE, ISSUER, Issuer, serve_issuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as served:
        yield served


def authority(issuer: Issuer) -> Authority:
    return Authority(ApiConfig(oidc=ApiOidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=issuer.url)))


async def identify(auth: Authority, token: str) -> Caller | Decision:
    return await auth.identify(Credentials("ipv4:127.0.0.1:1", authorization=f"Bearer {token}"))


async def test_a_valid_jwt_makes_a_caller_from_its_claims(issuer: Issuer) -> None:
    auth = authority(issuer)
    caller = await identify(auth, issuer.token("alice", drsdtp_scopes="line1/* oven-7"))
    assert caller == Caller("jwt:alice", True, "operator", ("line1/*", "oven-7"))
    listed = await identify(auth, issuer.token("bob", role=None, drsdtp_role=["viewer", "engineer"]))
    assert isinstance(listed, Caller) and listed.role == "engineer"  # the highest of a list
    fetched = issuer.fetches
    await identify(auth, issuer.token("carol"))
    assert issuer.fetches == fetched  # the key set is cached


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("expired", "the JWT has expired"),
        ("issuer", f"the JWT's issuer is not {ISSUER!r}"),
        ("audience", f"the JWT is not for the audience {AUDIENCE!r}"),
        ("unknown key", "key id 'k9' is not in the issuer's key set (keys: k1)"),
        ("forged", "the JWT is not valid: Signature verification failed"),
        ("hmac", "signed with 'HS256'; api.oidc.algorithms allows ['RS256', 'ES256']"),
        ("no role", "the JWT carries no role in its 'drsdtp_role' claim"),
        ("bad scope", "'drsdtp_scopes' claim: 'a*b' is not a scope"),
        ("garbage", "not a well-formed JWT"),
    ],
)
async def test_a_jwt_that_does_not_hold_is_unauthenticated(issuer: Issuer, case: str, says: str) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    makers: dict[str, Callable[[], str]] = {
        "expired": lambda: issuer.token(expires_in=-3600),
        "issuer": lambda: issuer.token(iss="https://evil.test"),
        "audience": lambda: issuer.token(aud="someone-else"),
        "unknown key": lambda: issuer.token(kid="k9", key=stranger),
        "forged": lambda: issuer.token(key=stranger),
        "hmac": lambda: jwt.encode({"sub": "x"}, "secret-secret-secret-secret-32by", "HS256", {"kid": "k1"}),
        "no role": lambda: issuer.token(role=None),
        "bad scope": lambda: issuer.token(drsdtp_scopes=["a*b"]),
        "garbage": lambda: "eyJhbGciOi.not.valid",
    }
    token = makers[case]()
    refused = await identify(authority(issuer), token)
    assert isinstance(refused, Decision) and refused.status == "unauthenticated", refused
    assert says in refused.reason


async def test_a_rotated_key_is_fetched_when_a_token_names_it(issuer: Issuer) -> None:
    auth = authority(issuer)
    assert isinstance(await identify(auth, issuer.token()), Caller)
    issuer.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        # Just fetched: an unknown key id does not refetch at once (made-up ids cannot hammer the issuer).
        refused = await identify(auth, issuer.token(kid="k2"))
        assert isinstance(refused, Decision)
        auth.oidc._fetched -= 60  # type: ignore[union-attr]  # as if the last fetch were a minute ago
        assert isinstance(await identify(auth, issuer.token(kid="k2")), Caller)
    finally:
        del issuer.keys["k2"]


async def test_a_verified_jwt_is_remembered_so_its_signature_is_checked_once(issuer: Issuer) -> None:
    auth = authority(issuer)
    assert auth.oidc is not None
    token = issuer.token("dave")
    assert isinstance(await identify(auth, token), Caller)
    auth.oidc._keys.clear()  # no keys now, and no refetch for a while
    auth.oidc._fetched = time.monotonic()
    assert await identify(auth, token) == Caller("jwt:dave", True, "operator", ("*",))
    assert isinstance(await identify(auth, issuer.token("erin")), Decision)  # a new token needs the keys
