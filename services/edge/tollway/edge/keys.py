"""API keys: ``tw-`` plus 256 bits of randomness, shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "tw-"


def new_key() -> str:
    """A fresh secret API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    """The part of a key safe to show in lists (``tw-AbCd…``)."""
    return key[:7]
