"""Opaque bearer tokens: 32 random bytes, stored in the config only as their SHA-256.

A slow password hash (argon2, scrypt) protects secrets a person chose and an attacker can guess; these are
256 random bits, which no one guesses from their hash, so SHA-256 is as safe and costs a microsecond per call
instead of tens of milliseconds (the API's goal is a 2 ms write round trip)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from drsdtp.config import ApiTokenConfig

__all__ = ["TOKEN_PREFIX", "TokenBook", "hash_token", "new_token"]

TOKEN_PREFIX = "drsdtp_"  # so a leaked token is recognisable (secret scanners, logs)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What ``[[api.tokens]] hash`` holds for ``token``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """The configured tokens by hash."""

    def __init__(self, tokens: Iterable[ApiTokenConfig]) -> None:
        self._by_hash = {t.hash: t for t in tokens}

    def __len__(self) -> int:
        return len(self._by_hash)

    def find(self, token: str) -> ApiTokenConfig | None:
        digest = hash_token(token)
        found = self._by_hash.get(digest)
        # The lookup compares hashes, not the token, so its timing tells nothing about the token; the
        # constant-time compare keeps it so should the table ever be keyed otherwise.
        return found if found is not None and hmac.compare_digest(found.hash, digest) else None
