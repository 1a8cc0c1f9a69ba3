"""What the sync and async clients share: the routes, the cache rule, the answers' shapes,
and which provider answers mean "this token was refused"."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import httpx

DEFAULT_TIMEOUT_SECONDS = 30.0  # covers a refresh on demand behind the answer
DEFAULT_MIN_VALID_SECONDS = 300
# After tokend says it refreshed, another replica may serve the old token for up to a
# second (its cache); the fresh one is asked for again for at most this long.
FRESH_WAIT_SECONDS = 2.0
FRESH_POLL_SECONDS = 0.1
EBAY_TOKEN_EXPIRED = 1100  # eBay's RESTful APIs: 403 {"errors":[{"errorId":1100,...}]}


class TokendError(Exception):
    """tokend answered with an error (the message is tokend's, never a token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"tokend answered {status}: {message}")
        self.status, self.message = status, message


@dataclasses.dataclass(frozen=True, slots=True)
class AccessToken:
    token: str = dataclasses.field(repr=False)
    expires_at: datetime

    def valid_for(self, seconds: float) -> bool:
        return (self.expires_at - datetime.now(UTC)).total_seconds() >= seconds


class TokenCache:
    """The tokens each client last had, by account: reused while they stay valid long
    enough, dropped when the provider refused them."""

    def __init__(self) -> None:
        self._tokens: dict[str, AccessToken] = {}

    def valid(self, account_id: str, min_valid_seconds: float) -> str | None:
        cached = self._tokens.get(account_id)
        return cached.token if cached is not None and cached.valid_for(min_valid_seconds) \
            else None

    def other_than(self, account_id: str, token: str) -> str | None:
        """The cached token when it is not `token` (another caller renewed it meanwhile)."""
        cached = self._tokens.get(account_id)
        return cached.token if cached is not None and cached.token != token else None

    def put(self, account_id: str, got: AccessToken) -> AccessToken:
        self._tokens[account_id] = got
        return got

    def forget(self, account_id: str, token: str) -> None:
        cached = self._tokens.get(account_id)
        if cached is not None and cached.token == token:
            del self._tokens[account_id]


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """tokend's answer to a report. `refreshed`: asking for the token now gives a new one.
    `status` is 200 unless tokend declined to refresh (429: refreshed moments ago; 503:
    the provider is paused or the refresh failed)."""

    refreshed: bool
    expires_at: datetime | None
    status: int = 200


def sha256(token: str) -> str:
    """What a report carries instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_path(account_id: str) -> str:
    return f"/api/accounts/{urllib.parse.quote(account_id, safe='')}/access-token"


def headers(consumer_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {consumer_token}"}


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(response: httpx.Response, body: Any) -> TokendError:
    message = body.get("error") if isinstance(body, dict) else None
    return TokendError(response.status_code, message or response.reason_phrase or "error")


def access_token(response: httpx.Response) -> AccessToken:
    body = _body(response)
    if response.status_code != 200 or not isinstance(body, dict):
        raise _error(response, body)
    return AccessToken(body["access_token"], datetime.fromisoformat(body["expires_at"]))


def rejection(response: httpx.Response) -> Rejection:
    body = _body(response)
    if response.status_code in (429, 503):
        return Rejection(False, None, response.status_code)
    if response.status_code != 200 or not isinstance(body, dict):
        raise _error(response, body)
    expires_at = body.get("expires_at")
    return Rejection(bool(body.get("refreshed")),
                     datetime.fromisoformat(expires_at) if expires_at else None)


def refused(status: int, body: bytes) -> bool:
    """The provider refused the token: 401, or eBay's 403 with errorId 1100 ("Access
    denied: the access token is invalid or expired")."""
    if status == 401:
        return True
    if status != 403 or b"errorId" not in body:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    errors = data.get("errors") if isinstance(data, dict) else None
    return isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("errorId") == EBAY_TOKEN_EXPIRED for e in errors)
