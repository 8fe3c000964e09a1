"""How alert webhooks are signed: the contract a receiver verifies.

Each POST carries ``X-Tollway-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 over ``"<t>." + body`` with the subscription's secret, and ``X-Tollway-Delivery``,
a delivery id that stays the same across retries (deduplicate on it: delivery is at least once).
A subscription's secret is derived from the deployment's signing key and the subscription id,
so no secret is stored anywhere; it is shown to the operator once, when the subscription is made.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "x-tollway-signature"
DELIVERY_HEADER = "x-tollway-delivery"
EVENT_HEADER = "x-tollway-event"
DEFAULT_TOLERANCE_SECONDS = 300


def subscription_secret(signing_key: str, subscription_id: str) -> str:
    """The secret of one subscription (``whsec_…``)."""
    digest = hmac.new(signing_key.encode(), subscription_id.encode(), hashlib.sha256).hexdigest()
    return f"whsec_{digest}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` s old."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(
        sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}"
    )
