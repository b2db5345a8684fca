"""OIDC JWTs verified against a local issuer's key set (served from this test): the claims make the
caller, and an expired, foreign, tampered or unsigned token is refused, naming why. The key set is found
through the issuer's discovery document (over HTTPS with a CA of the test's), or read from a static file;
an issuer that cannot be reached leaves its tokens refused with the reason, counted, at a bounded rate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from drsdtp.api.auth import Authority, Credentials, Decision
from drsdtp.api.auth.jwks import RETRY_S
from drsdtp.api.caller import Caller
from drsdtp.config import ApiConfig, ApiOidcConfig, parse_config
from drsdtp.errors import ConfigError
from tests.api.auth_support import AUDIENCE, ISSUER, Issuer, serve_issuer
from tests.gossip.pki import issue, make_ca
from tests.ingest.support import free_port


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
        auth.oidc.keys._fetched -= 60  # type: ignore[union-attr]  # as if the last fetch were a minute ago
        assert isinstance(await identify(auth, issuer.token(kid="k2")), Caller)
    finally:
        del issuer.keys["k2"]


async def test_a_verified_jwt_is_remembered_so_its_signature_is_checked_once(issuer: Issuer) -> None:
    auth = authority(issuer)
    assert auth.oidc is not None
    token = issuer.token("dave")
    assert isinstance(await identify(auth, token), Caller)
    auth.oidc.keys.fetched.clear()  # no keys now, and no refetch for a while
    auth.oidc.keys._fetched = time.monotonic()
    assert await identify(auth, token) == Caller("jwt:dave", True, "operator", ("*",))
    assert isinstance(await identify(auth, issuer.token("erin")), Decision)  # a new token needs the keys


def discovering(issuer: str, **settings: object) -> Authority:
    return Authority(ApiConfig(oidc=ApiOidcConfig(issuer=issuer, audience=AUDIENCE, **settings)))  # type: ignore[arg-type]


async def test_the_key_set_is_found_through_discovery_over_https(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "issuer-ca")
    served = issue(ca, tmp_path, "id.plant.test")
    with serve_issuer(tls=(served.cert, served.key)) as issuer:
        name = issuer.discovered()
        assert name.startswith("https://127.0.0.1:")
        untrusted = await identify(discovering(name), issuer.token("alice"))  # the system CAs only
        assert isinstance(untrusted, Decision) and untrusted.kind == "issuer"
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.reason, untrusted.reason
        auth = discovering(name, ca_file=served.ca)
        assert await identify(auth, issuer.token("alice")) == Caller("jwt:alice", True, "operator", ("*",))
        assert (issuer.discoveries, issuer.fetches) == (1, 1)  # the untrusted one got no answer
        await identify(auth, issuer.token("bob"))
        assert (issuer.discoveries, issuer.fetches) == (1, 1)  # cached: neither is fetched again


async def test_a_discovery_document_for_another_issuer_is_refused() -> None:
    with serve_issuer() as issuer:
        name = issuer.discovered()
        issuer.document = {"issuer": "https://evil.test", "jwks_uri": issuer.url}
        auth = discovering(name)
        refused = await identify(auth, issuer.token())
        assert isinstance(refused, Decision) and refused.kind == "issuer"
        assert f"names the issuer 'https://evil.test', not {name!r}" in refused.reason
        assert auth.oidc is not None and auth.oidc.keys.errors[("discovery",)] == 1
        issuer.document = {"issuer": name, "jwks_uri": "http://keys.example.com/jwks.json"}
        auth = discovering(name)
        refused = await identify(auth, issuer.token())
        assert isinstance(refused, Decision) and "jwks_uri: 'http://keys.example.com/jwks.json' is plain" in (
            refused.reason
        )


async def test_an_unreachable_issuer_refuses_its_tokens_with_the_reason_at_a_bounded_rate() -> None:
    with serve_issuer() as issuer:  # only to sign tokens: the node is pointed at a closed port
        issuer.name = f"http://127.0.0.1:{free_port()}/realms/edge"
        auth = discovering(issuer.name)
        assert auth.oidc is not None
        refused = await identify(auth, issuer.token())
        assert isinstance(refused, Decision) and refused.status == "unauthenticated"
        assert refused.kind == "issuer"
        assert "the issuer's key set could not be fetched (cannot fetch" in refused.reason
        assert "/.well-known/openid-configuration" in refused.reason and "refused" in refused.reason
        for _ in range(20):  # within RETRY_S of the failure: no new attempt
            again = await identify(auth, issuer.token())
            assert isinstance(again, Decision) and again.kind == "issuer"
        assert auth.oidc.keys.errors[("discovery",)] == 1 and auth.oidc.keys.fetches == 1
        auth.oidc.keys._fetched -= RETRY_S  # as if the retry interval had passed
        await identify(auth, issuer.token())
        assert auth.oidc.keys.fetches == 2


async def test_a_static_key_set_verifies_with_or_without_the_issuer(tmp_path: Path) -> None:
    with serve_issuer() as issuer:
        keys = tmp_path / "jwks.json"
        keys.write_text(json.dumps(issuer.jwks()))
        static = Authority(ApiConfig(oidc=ApiOidcConfig(ISSUER, AUDIENCE, discovery=False, jwks_file=keys)))
        assert isinstance(await identify(static, issuer.token("alice")), Caller)
        assert issuer.fetches == issuer.discoveries == 0  # nothing fetched
        # Discovery on, the issuer unreachable: the static keys still verify, a key not in them is refused.
        down = f"http://127.0.0.1:{free_port()}/realms/edge"
        issuer.name = down
        both = discovering(down, jwks_file=keys)
        assert isinstance(await identify(both, issuer.token("alice")), Caller)
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        refused = await identify(both, issuer.token(kid="k2", key=other))
        assert isinstance(refused, Decision) and "could not be fetched" in refused.reason


def test_oidc_config_is_checked(tmp_path: Path) -> None:
    base = {"node_id": "n", "data_dir": str(tmp_path)}
    oidc = {"issuer": "https://id.plant.test/realms/edge", "audience": "drsdtp"}
    assert parse_config({**base, "api": {"oidc": oidc}}).api.oidc is not None  # discovery from the issuer
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": []}')
    for settings, key, says in (
        ({"issuer": "id.plant.test"}, "api.oidc.issuer", "is not an https:// URL"),
        ({"issuer": "http://id.plant.test"}, "api.oidc.issuer", "plain http to id.plant.test"),
        ({"jwks_url": "http://10.0.0.9/jwks"}, "api.oidc.jwks_url", "use https (http only on loopback)"),
        ({"discovery": False}, "api.oidc", "no key set to verify JWTs with"),
        ({"jwks_file": str(bad)}, "api.oidc.jwks_file", "non-empty 'keys' list"),
        ({"jwks_file": str(tmp_path / "none.json")}, "api.oidc.jwks_file", "cannot read a key set"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "api": {"oidc": {**oidc, **settings}}})
        assert info.value.key == key and says in info.value.reason, info.value
