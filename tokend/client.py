"""A small client for apps: ask tokend for an account's access token.

    async with client.TokendClient("http://127.0.0.1:8765", consumer_token) as tokend:
        token = await tokend.access_token("acct-1", min_valid_seconds=600)

A token is reused while it stays valid for the asked number of seconds.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

import aiohttp

DEFAULT_TIMEOUT_SECONDS = 30.0  # covers a refresh on demand behind the answer


class TokendError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"tokend answered {status}: {message}")
        self.status, self.message = status, message


class TokendClient:
    def __init__(
        self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._cache: dict[str, tuple[str, datetime]] = {}

    def __repr__(self) -> str:
        return f"TokendClient({self.base_url!r})"

    async def access_token(self, account_id: str, min_valid_seconds: int = 300) -> str:
        cached = self._cache.get(account_id)
        if cached and (cached[1] - datetime.now(UTC)).total_seconds() >= min_valid_seconds:
            return cached[0]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = (f"{self.base_url}/api/accounts/{urllib.parse.quote(account_id, safe='')}"
               "/access-token")
        async with self._session.get(
            url, params={"min_valid_seconds": str(min_valid_seconds)}, timeout=self._timeout,
            headers={"Authorization": f"Bearer {self._token}"},
        ) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            if response.status != 200 or not isinstance(body, dict):
                message = body.get("error") if isinstance(body, dict) else None
                raise TokendError(response.status, message or response.reason or "error")
        token, expires_at = body["access_token"], datetime.fromisoformat(body["expires_at"])
        self._cache[account_id] = (token, expires_at)
        return token

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> TokendClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
