"""The keys an OpenID Connect issuer signs JWTs with: a static key set from a file (``api.oidc.jwks_file``),
and the issuer's published one, fetched from ``api.oidc.jwks_url`` or, without it, from the ``jwks_uri`` of
its discovery document (``<issuer>/.well-known/openid-configuration``, OpenID Connect Discovery 1.0).

Fetches run in a worker thread (never on the event loop), one at a time, each bounded in time
(``jwks_timeout_s``) and size (:data:`MAX_DOCUMENT_BYTES`, :data:`MAX_KEYS`). The fetched set is kept for
``jwks_refresh_s`` and fetched again early when a token names a key id the node lacks (the issuer rotated
its keys), at most once every :data:`MIN_REFETCH_S` so tokens with made-up key ids cannot make the node
hammer the issuer; while no set could be fetched yet, at most once every :data:`RETRY_S`. A failed fetch
keeps the keys the node had (an issuer outage must not lock everyone out), is counted by stage
(``discovery``, ``jwks``: ``drsdtp_api_oidc_fetch_errors``), and its reason is what a token refused for
want of a key is told. The discovered ``jwks_uri`` is kept until a fetch from it fails."""

from __future__ import annotations

import asyncio
import collections
import json
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from drsdtp.config import ApiOidcConfig, url_problem

if TYPE_CHECKING:
    import jwt

__all__ = [
    "DISCOVERY_PATH",
    "MAX_DOCUMENT_BYTES",
    "MAX_KEYS",
    "MIN_REFETCH_S",
    "RETRY_S",
    "KeySetError",
    "KeySource",
    "url_problem",
]

DISCOVERY_PATH = "/.well-known/openid-configuration"
MIN_REFETCH_S = 30.0
RETRY_S = 1.0
MAX_DOCUMENT_BYTES = 1 << 20
MAX_KEYS = 100
Stage = Literal["discovery", "jwks"]


class KeySetError(Exception):
    """A key set (or discovery document) that cannot be had or used; the message says which and why.
    ``unavailable``: no fetched key set to check a token against (the issuer could not be reached)."""

    def __init__(self, reason: str, *, unavailable: bool = False) -> None:
        super().__init__(reason)
        self.unavailable = unavailable


class _FetchFailed(Exception):
    def __init__(self, stage: Stage, reason: str) -> None:
        super().__init__(reason)
        self.stage: Stage = stage


def _parse_keys(data: object, where: str) -> dict[str, jwt.PyJWK]:
    import jwt  # here, not above: PyJWT and cryptography cost a node without api.oidc ~9 MB

    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeySetError(f"{where} is not a key set (a JSON object with a 'keys' list)")
    if len(data["keys"]) > MAX_KEYS:
        raise KeySetError(f"{where} holds {len(data['keys'])} keys, more than {MAX_KEYS}")
    try:
        keys = jwt.PyJWKSet.from_dict(data).keys
    except jwt.PyJWTError as exc:
        raise KeySetError(f"{where}: {exc}") from None
    return {k.key_id: k for k in keys if k.key_id}


def load_static(path: Path) -> dict[str, jwt.PyJWK]:
    """The key set in ``path`` (a JWKS document), by key id; raises KeySetError naming the file."""
    try:
        data = json.loads(path.read_bytes()[: MAX_DOCUMENT_BYTES + 1])
    except (OSError, ValueError) as exc:
        raise KeySetError(f"cannot read the key set {path}: {exc}") from None
    return _parse_keys(data, f"the key set {path}")


class KeySource:
    def __init__(self, config: ApiOidcConfig) -> None:
        self.config = config
        self.static = load_static(config.jwks_file) if config.jwks_file is not None else {}
        self.fetched: dict[str, jwt.PyJWK] = {}
        self.errors: collections.Counter[tuple[str, ...]] = collections.Counter()  # (stage,)
        self.last_error = ""  # why the last fetch failed ("" after one that did not)
        self.fetches = 0
        self._jwks_url = config.jwks_url  # discovered when not configured
        self._fetched = -float("inf")  # monotonic time of the last fetch attempt
        self._loaded = -float("inf")  # ... of the last successful one
        self._generation = 0  # fetch attempts made: a caller that waited for one need not repeat it
        self._lock = asyncio.Lock()
        self._tls = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file is not None else None
        )

    @property
    def fetching(self) -> bool:
        """Whether the node fetches a key set at all (else only the static one counts)."""
        return bool(self.config.jwks_url) or self.config.discovery

    def __len__(self) -> int:
        return len(self.static) + len(self.fetched)

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key ``kid`` names; raises KeySetError saying why there is none."""
        key = self.static.get(kid)
        if key is not None:
            return key
        if self.fetching:
            now = time.monotonic()
            due = kid not in self.fetched or now - self._loaded > self.config.jwks_refresh_s
            if due and now - self._fetched >= (MIN_REFETCH_S if self.fetched else RETRY_S):
                await self._refresh()
        key = self.fetched.get(kid)
        if key is not None:
            return key
        known = ", ".join(sorted({*self.static, *self.fetched})) or "none"
        if self.last_error and not self.fetched:
            raise KeySetError(
                f"the issuer's key set could not be fetched ({self.last_error}); keys: {known}",
                unavailable=True,
            )
        raise KeySetError(f"the JWT's key id {kid!r} is not in the issuer's key set (keys: {known})")

    async def _refresh(self) -> None:
        seen = self._generation
        async with self._lock:
            if self._generation != seen:
                return  # another call fetched while this one waited
            self._generation += 1
            self._fetched = time.monotonic()
            self.fetches += 1
            try:
                url = self._jwks_url or await self._discover()
                try:
                    keys = _parse_keys(await self._get(url, "jwks"), f"the key set at {url}")
                except KeySetError as exc:
                    raise _FetchFailed("jwks", str(exc)) from None
            except _FetchFailed as exc:
                self.errors[(exc.stage,)] += 1
                self.last_error = str(exc)
                if exc.stage == "jwks" and not self.config.jwks_url:
                    self._jwks_url = ""  # discover again: the issuer may have moved its keys
                return
            finally:
                self._fetched = time.monotonic()  # the next retry counts from the end of a slow fetch
            self.fetched, self.last_error = keys, ""
            self._loaded = time.monotonic()

    async def _discover(self) -> str:
        issuer = self.config.issuer
        url = issuer.rstrip("/") + DISCOVERY_PATH
        doc = await self._get(url, "discovery")
        if doc.get("issuer") != issuer:
            raise _FetchFailed(
                "discovery",
                f"the discovery document at {url} names the issuer {doc.get('issuer')!r}, not {issuer!r} "
                "(api.oidc.issuer)",
            )
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise _FetchFailed("discovery", f"the discovery document at {url} has no jwks_uri")
        problem = url_problem(jwks_uri)
        if problem is not None:
            raise _FetchFailed("discovery", f"the discovery document's jwks_uri: {problem}")
        self._jwks_url = jwks_uri
        return jwks_uri

    async def _get(self, url: str, stage: Stage) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(_fetch_json, url, self.config.jwks_timeout_s, self._tls)
        except Exception as exc:  # any failure to fetch or parse is this stage's, named with the URL
            raise _FetchFailed(stage, f"cannot fetch {url}: {exc}") from None


def _fetch_json(url: str, timeout_s: float, tls: ssl.SSLContext) -> dict[str, Any]:
    import urllib.request  # with http.client and email: only for a node whose OIDC fetches key sets

    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s, context=tls) as reply:  # the config's URL
        body = reply.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the document is not a JSON object")
    return data
