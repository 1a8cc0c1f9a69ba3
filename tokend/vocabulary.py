"""The words every log entry is written in: its sources, its actions, the shape of its
`error`, and the stream's close codes. Written once here; the page reads them from
`GET /api/vocabulary`, so nothing the server emits has to be copied into a script."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Who asked for the exchange.
SCHEDULED = "scheduled"  # the refresh loop
MANUAL = "manual"  # `tokend refresh`, the admin API
DEBUG = "debug"  # a manual refresh that returns the whole exchange
ADMIN = "admin"  # other operator actions
VEND = "vend"  # a token vended to an app had to be fetched first (account or app token)
CONNECT = "connect"  # the authorization-code grant: authorize, code exchange, identity
EBAY = "ebay"  # notifications eBay sends us
SOURCES = (SCHEDULED, MANUAL, DEBUG, ADMIN, VEND, CONNECT, EBAY)

# What happened. (Event names, not secrets: S105 mistakes `TOKEN_*` for passwords.)
TOKEN_REFRESHED = "token_refreshed"  # noqa: S105
TOKEN_REFRESH_FAILED = "token_refresh_failed"  # noqa: S105
TOKEN_REFRESH_DEBUG = "token_refresh_debug"  # noqa: S105 (a debug refresh, either outcome)
WORKER_HEARTBEAT = "worker_heartbeat"  # a cycle that found nothing due
CYCLE_SUMMARY = "cycle_summary"  # a cycle that refreshed something
APP_TOKEN_ISSUED = "app_token_issued"  # noqa: S105 (a client_credentials grant)
APP_TOKEN_FAILED = "app_token_failed"  # noqa: S105
EBAY_PUBLIC_KEY_FETCHED = "ebay_public_key_fetched"  # getPublicKey, for a signature's key id
EBAY_NOTIFICATION = "ebay_notification"  # a verified notification, applied or a replay
EBAY_NOTIFICATION_REFUSED = "ebay_notification_refused"  # not verified: nothing changed
# The account lifecycle: connect links, and the refresh token's own expiry.
CONNECT_AUTHORIZE = "connect_authorize"  # a link opened: the browser goes to the consent page
CONNECT_EXCHANGE = "connect_exchange"  # the code exchanged at the token endpoint
CONNECT_IDENTITY = "connect_identity"  # who signed in (eBay's Identity API)
CONNECT_REFUSED = "connect_refused"  # a link or callback refused: nothing stored
ACCOUNT_CONNECTED_ACTION = "account_connected"  # an account created or reconnected
REFRESH_TOKEN_EXPIRING = "refresh_token_expiring"  # noqa: S105 (30, 7, 1 days left)
REFRESH_TOKEN_EXPIRED = "refresh_token_expired"  # noqa: S105 (-> reauth_required)
# eBay digital signatures: signing keys kept, and requests signed for apps.
SIGNING_KEY_CREATED = "signing_key_created"  # createSigningKey answered a key (or a renewal)
SIGNING_KEY_FAILED = "signing_key_failed"  # createSigningKey failed: no key was kept
SIGNING_KEY_IMPORTED = "signing_key_imported"  # an operator's own key kept
REQUEST_SIGNED = "request_signed"  # a request signed for an app
REQUEST_SIGNING_REFUSED = "request_signing_refused"  # asked to sign without a key
TOKEN_REJECTED = "token_rejected"  # noqa: S105 (an app says the provider refused a token)
ACTIONS = (TOKEN_REFRESHED, TOKEN_REFRESH_FAILED, TOKEN_REFRESH_DEBUG, WORKER_HEARTBEAT,
           CYCLE_SUMMARY, APP_TOKEN_ISSUED, APP_TOKEN_FAILED, EBAY_PUBLIC_KEY_FETCHED,
           EBAY_NOTIFICATION, EBAY_NOTIFICATION_REFUSED, CONNECT_AUTHORIZE, CONNECT_EXCHANGE,
           CONNECT_IDENTITY, CONNECT_REFUSED, ACCOUNT_CONNECTED_ACTION, REFRESH_TOKEN_EXPIRING,
           REFRESH_TOKEN_EXPIRED, SIGNING_KEY_CREATED, SIGNING_KEY_FAILED, SIGNING_KEY_IMPORTED,
           REQUEST_SIGNED, REQUEST_SIGNING_REFUSED, TOKEN_REJECTED)

# Outbound events (webhooks, SPEC 10.2): what changed, for the operator's own systems.
ACCOUNT_REAUTH_REQUIRED = "account.reauth_required"
ACCOUNT_RECOVERED = "account.recovered"  # a failing or reauth account refreshes again
ACCOUNT_REFRESH_TOKEN_EXPIRING = "account.refresh_token_expiring"  # noqa: S105 (30, 7, 1 days)
ACCOUNT_DELETED = "account.deleted"
ACCOUNT_CONNECTED = "account.connected"
PROVIDER_PAUSED = "provider.paused"
PROVIDER_RESUMED = "provider.resumed"
LOOP_STALE = "loop.stale"
LOOP_RECOVERED = "loop.recovered"
BUDGET_WARNING = "budget.warning"
EVENT_TYPES = (ACCOUNT_REAUTH_REQUIRED, ACCOUNT_RECOVERED, ACCOUNT_REFRESH_TOKEN_EXPIRING,
               ACCOUNT_DELETED, ACCOUNT_CONNECTED, PROVIDER_PAUSED, PROVIDER_RESUMED,
               LOOP_STALE, LOOP_RECOVERED, BUDGET_WARNING)

# An entry's `error`: what failed (`code`, snake_case), the provider's or our words for it
# (`description`), what tokend does about it (`kind`) and the wait the provider asked for.
ERROR_FIELDS = ("code", "description", "kind", "retry_after_seconds")

# WebSocket close codes of `/ws/logs` (4000-4999 is the application's range).
CLOSE_BAD_HELLO = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_CODES = {"bad_hello": CLOSE_BAD_HELLO, "unauthorized": CLOSE_UNAUTHORIZED,
               "hello_timeout": CLOSE_HELLO_TIMEOUT}


def error(code: str, description: str | None, *, kind: str | None = None,
          retry_after_seconds: float | None = None) -> dict[str, Any]:
    """An entry's `error` field; the one place that builds it."""
    return {"code": code, "description": description, "kind": kind,
            "retry_after_seconds": retry_after_seconds}


def error_text(value: Any) -> str:
    """`code: description`, the way every renderer shows an entry's error."""
    if not isinstance(value, Mapping):
        return str(value)
    description = value.get("description")
    return f"{value.get('code') or 'error'}: {description}" if description else str(
        value.get("code") or "error")


def failed(entry: Mapping[str, Any]) -> bool:
    """A failure: the entry carries an error, the provider answered 4xx/5xx, or a cycle
    counted failed accounts. The page's "failures only" uses the same rule."""
    response = entry.get("response") or {}
    status = response.get("status") if isinstance(response, Mapping) else None
    details = entry.get("details") or {}
    return (bool(entry.get("error")) or (isinstance(status, int) and status >= 400)
            or bool(isinstance(details, Mapping) and details.get("error_count")))


def served() -> dict[str, Any]:
    """What `GET /api/vocabulary` answers."""
    return {"sources": list(SOURCES), "actions": list(ACTIONS),
            "error_fields": list(ERROR_FIELDS), "close_codes": dict(CLOSE_CODES),
            "event_types": list(EVENT_TYPES)}
