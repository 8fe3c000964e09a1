"""Channel secrets at rest: AES-256-GCM under operator keys from the environment.

``TOLLWAY_SECRET_KEYS`` is a comma-separated list of ``key_id:base64-key`` (16, 24 or 32 bytes).
The first key seals; every listed key opens. A sealed value is ``tw1:<key_id>:<base64>`` of the
12-byte nonce followed by the ciphertext and tag, so it names the key that opens it, and a
rotation (a new key first, every stored value re-sealed, then the old key dropped) never needs
to guess. The associated data binds a value to the row it belongs to (``channel:<id>``): a
ciphertext copied onto another channel does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV = "TOLLWAY_SECRET_KEYS"
PREFIX = "tw1"
NONCE_BYTES = 12
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEY_SIZES = frozenset({16, 24, 32})


class SecretKeyError(RuntimeError):
    """A key is missing, malformed, or does not open a value."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Ordered keys: ``keys[0]`` seals, any of them opens."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Read ``id:base64,id:base64``; raise :class:`SecretKeyError` naming what is wrong."""
        keys: list[tuple[str, bytes]] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key_id, sep, encoded = part.partition(":")
            if not sep or not KEY_ID.match(key_id):
                raise SecretKeyError(f"{ENV}: each entry is key_id:base64 (bad id {key_id!r})")
            try:
                # Either alphabet (standard or URL-safe), padding optional.
                std = encoded.strip().rstrip("=").replace("-", "+").replace("_", "/")
                key = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise SecretKeyError(f"{ENV}: key {key_id!r} is not base64") from None
            if len(key) not in KEY_SIZES:
                raise SecretKeyError(f"{ENV}: key {key_id!r} must be 16, 24 or 32 bytes")
            if any(k == key_id for k, _ in keys):
                raise SecretKeyError(f"{ENV}: key id {key_id!r} is listed twice")
            keys.append((key_id, key))
        if not keys:
            raise SecretKeyError(f"{ENV} lists no key")
        return cls(tuple(keys))

    @classmethod
    def optional(cls, text: str) -> KeyRing | None:
        """The ring ``text`` lists, or None when it is empty (no key configured)."""
        return cls.parse(text) if text.strip() else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyRing | None:
        """The ring from ``TOLLWAY_SECRET_KEYS``, or None when it is unset or empty."""
        return cls.optional((os.environ if env is None else env).get(ENV, ""))

    @property
    def current_id(self) -> str:
        """The id of the key that seals."""
        return self.keys[0][0]

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt ``plaintext`` under the first key, bound to ``context``."""
        key_id, key = self.keys[0]
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}:{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        """Decrypt a sealed value; raise :class:`SecretKeyError` if no listed key opens it."""
        key_id = key_id_of(value)
        if key_id is None:
            raise SecretKeyError("the value is not sealed")
        key = dict(self.keys).get(key_id)
        if key is None:
            raise SecretKeyError(f"sealed under key {key_id!r}, which {ENV} does not list")
        raw = base64.urlsafe_b64decode(value.split(":", 2)[2])
        try:
            plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SecretKeyError(f"key {key_id!r} does not open the value for {context}") from None
        return plain.decode()

    def needs_reseal(self, value: str) -> bool:
        """Whether ``value`` is in clear or sealed under a key other than the first."""
        return key_id_of(value) != self.current_id


def key_id_of(value: str) -> str | None:
    """The key id a sealed value names, or None for a value in clear."""
    prefix, sep, rest = value.partition(":")
    if prefix != PREFIX or not sep:
        return None
    key_id, sep, _ = rest.partition(":")
    return key_id if sep else None


def new_key_entry(key_id: str) -> str:
    """A fresh ``key_id:base64`` entry of a random 256-bit key (for dev stacks and rotation)."""
    if not KEY_ID.match(key_id):
        raise SecretKeyError(f"bad key id {key_id!r}")
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}"
