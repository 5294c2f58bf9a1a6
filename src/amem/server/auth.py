"""API keys: each key is bound to one user (a tenant) and can only read and write inside that scope."""

from __future__ import annotations

import hashlib
import hmac

from ..errors import ConfigError


def parse_keys(spec: str) -> dict[str, str]:
    """``"key1:alice,key2:bob"`` -> {key: user}. Keys are secrets: messages never repeat them."""
    keys: dict[str, str] = {}
    for n, item in enumerate(filter(None, (part.strip() for part in spec.split(","))), start=1):
        key, sep, user = item.rpartition(":")
        key, user = key.strip(), user.strip()
        if not sep or not key or not user:
            raise ConfigError(
                f"api_keys entry {n} is not KEY:USER; write AMEM_API_KEYS='key1:alice,key2:bob'"
            )
        if len(key) < 16:
            raise ConfigError(f"api_keys entry {n} (user {user!r}): the key is shorter than 16 characters")
        if key in keys:
            raise ConfigError(f"api_keys entry {n} (user {user!r}) repeats an earlier key")
        keys[key] = user
    return keys


class KeyRing:
    """Looks a presented key up in constant time: every known key is compared, by its SHA-256 digest, so
    neither the key's length nor how much of it matched shows in the timing."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._digests = [(hashlib.sha256(k.encode()).digest(), user) for k, user in keys.items()]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def user_for(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found: str | None = None
        for known, user in self._digests:
            if hmac.compare_digest(digest, known):
                found = user
        return found
