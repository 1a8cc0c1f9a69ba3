"""Reading a token endpoint's answer (RFC 6749 5.1 and 5.2): a grant or a classified error.

Pure functions over status, headers and body text, so every odd shape a provider or a
proxy in front of it can produce is tested without a network.
"""

from __future__ import annotations

import email.utils
import math
import re
import urllib.parse
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from tokend import clock
from tokend.providers import result

MAX_RETRY_AFTER_SECONDS = 3600.0
# Longer than any access token lives; a bigger expires_in is a bug on their side.
MAX_EXPIRES_IN_SECONDS = 10 * 365 * 86400.0
DESCRIPTION_LIMIT = 300

# Which way each RFC 6749 error code sends the refresher. Any other code the provider
# sends is kept as it is and treated as `config` (4xx or 2xx) or `transient` (5xx).
CODE_KINDS = {
    result.INVALID_GRANT: result.REAUTH,
    result.INVALID_CLIENT: result.PROVIDER,
    result.UNAUTHORIZED_CLIENT: result.PROVIDER,
    result.INVALID_SCOPE: result.CONFIG,
    result.INVALID_REQUEST: result.CONFIG,
    result.UNSUPPORTED_GRANT_TYPE: result.CONFIG,
    result.SERVER_ERROR: result.TRANSIENT,
    "temporarily_unavailable": result.TRANSIENT,
    "slow_down": result.TRANSIENT,
}
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FORM_START = re.compile(r"^[A-Za-z0-9_.-]+=")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Error(NamedTuple):
    code: str
    description: str
    kind: str


def content_kind(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def parse_body(text: str, content_type: str | None) -> Any | None:
    """The body as JSON or a form (as a dict), or None when it is neither."""
    kind = content_kind(content_type)
    stripped = text.lstrip("\ufeff \t\r\n")
    if kind.endswith("json") or stripped[:1] in ("{", "["):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return None
    # Some providers answer with a form; some label it text/plain or not at all.
    if kind == "application/x-www-form-urlencoded" or (
        kind in ("", "text/plain") and _FORM_START.match(stripped)
        and ("access_token=" in stripped or "error=" in stripped)
    ):
        return dict(urllib.parse.parse_qsl(stripped.strip(), keep_blank_values=True))
    return None


def seconds(value: Any) -> float | None:
    """A positive, finite, sane number of seconds from a number or a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or number <= 0 or number > MAX_EXPIRES_IN_SECONDS:
        return None
    return number


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as delay-seconds or an HTTP-date, clamped to [0, one hour]."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        delay = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = (when - (now or clock.now())).total_seconds()
    if not math.isfinite(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER_SECONDS)


def _clean(text: str) -> str:
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > DESCRIPTION_LIMIT:
        return text[:DESCRIPTION_LIMIT - 3] + "..."
    return text


def _code(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    code = payload.get("error")
    if isinstance(code, str) and _CODE.match(code.strip()):
        return code.strip()
    return None


def _description(payload: Any) -> str | None:
    """error_description, or what eBay's `errors` array and others say instead."""
    if not isinstance(payload, dict):
        return None
    candidates = [payload.get("error_description"), payload.get("message")]
    error = payload.get("error")
    if isinstance(error, dict):
        candidates.insert(1, error.get("message"))
    errors = payload.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        candidates.insert(1, errors[0].get("longMessage") or errors[0].get("message"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return _clean(candidate)
    return None


def _http(status: int, reason: str | None, text: str, content_type: str | None) -> str:
    shape = f"{content_kind(content_type) or 'untyped'}, {len(text)} characters" if text \
        else "empty body"
    return _clean(f"HTTP {status} {reason or ''}".rstrip() + f" ({shape})")


def kind_of(code: str, reauth_codes: tuple[str, ...] = (result.INVALID_GRANT,)) -> str:
    """Where an error code sends the refresher; `reauth_codes` are the provider's own
    words for "sign in again" (they replace invalid_grant, not add to it)."""
    if code in reauth_codes:
        return result.REAUTH
    kind = CODE_KINDS.get(code, result.CONFIG)
    return result.CONFIG if kind == result.REAUTH else kind


def interpret(
    status: int, reason: str | None, text: str, content_type: str | None, *,
    default_expires_in_seconds: float,
    reauth_codes: tuple[str, ...] = (result.INVALID_GRANT,),
    token_types: tuple[str, ...] = ("bearer",),
) -> result.Grant | Error:
    """Classify one answer. Never raises: every shape ends as a grant or an Error."""
    payload = parse_body(text, content_type)
    code = _code(payload)
    has_error = isinstance(payload, dict) and payload.get("error") not in (None, "")
    description = _description(payload) or _http(status, reason, text, content_type)
    if status == 429:
        return Error(result.RATE_LIMITED, description, result.TRANSIENT)
    if status >= 500:
        # Keep the provider's own code, unless it would claim a lasting failure that a
        # server error cannot prove (a 503 saying invalid_grant must not cost a reauth).
        if code is None or (code in reauth_codes or CODE_KINDS.get(
                code, result.TRANSIENT) != result.TRANSIENT):
            code = result.SERVER_ERROR
        return Error(code, description, result.TRANSIENT)
    if 200 <= status < 300:
        if has_error:
            # An error dressed as success: believe the error.
            code = code or result.BAD_RESPONSE
            return Error(code, description, kind_of(code, reauth_codes))
        return _grant(payload, default_expires_in_seconds, token_types, status, reason, text,
                      content_type)
    if code is not None:
        return Error(code, description, kind_of(code, reauth_codes))
    if status == 401:  # RFC 6749 5.2: client authentication failed
        return Error(result.INVALID_CLIENT, description, result.PROVIDER)
    if status == 408:
        return Error(result.TIMEOUT, description, result.TRANSIENT)
    if 300 <= status < 500:
        # Redirects are not followed and 4xx is not retryable: the token URL or the
        # request is wrong, whatever page the server sent with it.
        return Error(result.INVALID_REQUEST, description, result.CONFIG)
    return Error(result.BAD_RESPONSE, description, result.TRANSIENT)


def _grant(
    payload: Any, default_expires_in_seconds: float, token_types: tuple[str, ...], status: int,
    reason: str | None, text: str, content_type: str | None,
) -> result.Grant | Error:
    def bad(problem: str) -> Error:
        shape = _http(status, reason, text, content_type)
        return Error(result.BAD_RESPONSE, _clean(f"{problem}: {shape}"), result.TRANSIENT)

    if payload is None:
        return bad("token response is neither JSON nor a form")
    if not isinstance(payload, dict):
        return bad("token response is not a JSON object")
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        return bad("token response has no access_token")
    token_type = payload.get("token_type")
    if token_type is not None and (not isinstance(token_type, str)
                                   or token_type.strip().lower() not in token_types):
        # A MAC or DPoP-bound token is useless to an app that sends it as a bearer.
        shown = _clean(token_type)[:40] if isinstance(token_type, str) else \
            type(token_type).__name__
        return Error(result.UNSUPPORTED_TOKEN_TYPE,
                     f"token_type {shown!r} is not one this provider's tokens are used as "
                     f"({', '.join(token_types)})", result.CONFIG)
    raw_expires = payload.get("expires_in")
    assumed = raw_expires is None or raw_expires == ""
    if assumed:
        expires_in = default_expires_in_seconds
    else:
        parsed = seconds(raw_expires)
        if parsed is None:
            return bad(f"expires_in is not a positive number of seconds "
                       f"(got a {type(raw_expires).__name__})")
        expires_in = parsed
    refresh_token = payload.get("refresh_token")
    if refresh_token == "":
        refresh_token = None
    if refresh_token is not None and not isinstance(refresh_token, str):
        return bad("refresh_token in the token response is not a string")
    refresh_expires = payload.get("refresh_token_expires_in", payload.get("refresh_expires_in"))
    scope = payload.get("scope")
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        scope = " ".join(scope)
    return result.Grant(
        access_token=access_token.strip(),
        expires_in=expires_in,
        refresh_token=refresh_token.strip() if refresh_token else None,
        refresh_token_expires_in=seconds(refresh_expires),
        scope=scope if isinstance(scope, str) and scope else None,
        expires_in_assumed=assumed,
    )
