"""Unique, time-sortable identifiers (UUIDv7 layout, RFC 9562).

Event ids sort by creation time, so a journal ordered by id reads in producer order, and the
random tail keeps ids from two producers in the same millisecond apart.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def new_id(prefix: str = "") -> str:
    """Return a new UUIDv7 as text, optionally prefixed (``req_…``, ``hold_…``)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 68) << 64 & (0xFFF << 64)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    text = str(uuid.UUID(int=value))
    return f"{prefix}{text}" if prefix else text


def derived_id(cause_id: str, salt: str) -> str:
    """A deterministic id for an event caused by ``cause_id``.

    Consumers that emit events derive their ids from the input event, so a replay of the same
    log emits byte-identical events; the cause's timestamp bits are kept so ids still sort by
    time.
    """
    digest = int.from_bytes(hashlib.sha256(f"{cause_id}|{salt}".encode()).digest()[:16], "big")
    try:
        millis = uuid.UUID(cause_id.rsplit("_", 1)[-1]).int >> 80
    except ValueError:
        millis = 0
    value = (millis << 80) | (0x7 << 76) | (digest & ((1 << 76) - 1) & ~(0b11 << 62)) | (0b10 << 62)
    return str(uuid.UUID(int=value))
