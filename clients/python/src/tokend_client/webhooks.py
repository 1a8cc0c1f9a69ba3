"""Standard Webhooks verification for the receivers of tokend's webhooks: the signature is
`v1,` + base64 HMAC-SHA256 of "id.timestamp.body", keyed with the bytes after `whsec_`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_SECONDS = 300  # the Standard Webhooks default: refuse replays older than this


class WebhookVerificationError(Exception):
    """Not a delivery signed with this secret just now; the message says which check."""


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *,
    tolerance_seconds: float = TOLERANCE_SECONDS, now: float | None = None,
) -> dict[str, Any]:
    """The delivery's JSON `{"type", "timestamp", "data"}` once its signature, made with
    `secret` (`whsec_...`), and its timestamp check out."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get("webhook-id"), lower.get("webhook-timestamp"),
                                 lower.get("webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, -timestamp or -signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(
        key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()).decode()
    for signature in signatures.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookVerificationError("no signature matches")
