"""Every redaction rule, by field name, in one place: stdout, tables, stream, API and CLI.

A masked secret keeps enough to tell `v^` from `ENC:` and one token from another, and
never more than 8 of its characters, nor more than half of them.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson

SECRET_FIELDS = frozenset({
    "refresh_token", "access_token", "client_secret", "code", "id_token", "token",
    "admin_token", "password", "code_verifier", "privatekey", "private_key",
})
BODY_LIMIT = 4096
# Text we could not parse (HTML, broken JSON) still must not show a token: these fields
# are masked where they appear as `name: value` or `name=value` in the raw text.
_FIELD_IN_TEXT = re.compile(
    r"""(?P<key>["']?(?:access_token|refresh_token|id_token|client_secret)["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>[^"'&\s,}]+)""",
    re.IGNORECASE,
)
_ALREADY_MASKED = re.compile(r".{0,4}\.\.\.(?:.{4})?")


def mask_secret(value: str) -> str:
    if len(value) >= 24:
        return f"{value[:4]}...{value[-4:]}"
    if len(value) >= 8:
        return f"{value[:4]}..."
    if len(value) >= 4:
        return f"{value[:2]}..."
    return "..." if value else ""


def mask_authorization(value: str) -> str:
    scheme, _, credentials = value.partition(" ")
    return f"{scheme} ****" if credentials else "****"


def _mask_field(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered == "authorization" and isinstance(value, str):
        return mask_authorization(value)
    if lowered in SECRET_FIELDS and isinstance(value, str):
        return mask_secret(value)
    return mask(value)


def mask(obj: Any) -> Any:
    """A deep copy of `obj` with every secret field's value masked."""
    if isinstance(obj, Mapping):
        return {key: _mask_field(str(key), value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask(item) for item in obj]
    return obj


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {key: _mask_field(key, value) for key, value in headers.items()}


def mask_form(body: str) -> str:
    pairs = urllib.parse.parse_qsl(body, keep_blank_values=True)
    return "&".join(
        f"{urllib.parse.quote(key)}="
        + (mask_secret(value) if key.lower() in SECRET_FIELDS
           else urllib.parse.quote(value, safe=""))
        for key, value in pairs
    )


def mask_text(text: str) -> str:
    """Free text with every token-shaped field's value masked."""
    def mask_value(match: re.Match[str]) -> str:
        value = match.group("value")
        if _ALREADY_MASKED.fullmatch(value):
            return match.group(0)
        return match.group("key") + mask_secret(value)

    return _FIELD_IN_TEXT.sub(mask_value, text)


def mask_body(body: str, content_type: str | None) -> Any:
    """JSON becomes a masked object, a form a masked form string, the rest masked cut text."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return mask_form(body)
    if kind.endswith("json") or body[:1] in ("{", "["):
        try:
            return mask(orjson.loads(body))
        except orjson.JSONDecodeError:
            pass
    body = mask_text(body)
    if len(body) > BODY_LIMIT:
        return body[:BODY_LIMIT] + f"... ({len(body) - BODY_LIMIT} more characters)"
    return body


def structlog_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict:
    """structlog processor: mask every secret field of every log line."""
    return {key: _mask_field(key, value) for key, value in event_dict.items()}
