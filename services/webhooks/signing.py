"""Standard Webhooks signatures (https://www.standardwebhooks.com): plain functions, no I/O.

    signed content = "<webhook-id>.<webhook-timestamp>.<body>"
    webhook-signature = "v1,<base64 HMAC-SHA256 of it>" (several, space-separated, during a rotation)

The secret is `whsec_` + base64 of its key bytes, as the `standardwebhooks` library expects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One `v1,` signature of the message with `secret`."""
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_in_use: Iterable[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three headers of an attempt: signed with every secret in use (the new one first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_in_use),
        "content-type": "application/json",
    }
