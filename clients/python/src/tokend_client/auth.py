"""`httpx.Auth` that puts an account's token from tokend on each request to the provider's
API, and when the provider refuses it, reports it and retries once with a fresh one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator

import httpx

from tokend_client import _async, _common, _sync

Refused = Callable[[int, bytes], bool]


class TokendAuth(httpx.Auth):
    """`TokendAuth(tokend, "acct-1")` with a `Tokend` for `httpx.Client`, or an
    `AsyncTokend` for `httpx.AsyncClient`. `refused(status, body)` says whether an answer
    means the token was refused (default: 401, and eBay's 403 errorId 1100)."""

    def __init__(
        self, tokend: _sync.Tokend | _async.AsyncTokend, account_id: str, *,
        min_valid_seconds: float = _common.DEFAULT_MIN_VALID_SECONDS,
        refused: Refused = _common.refused,
    ) -> None:
        self.tokend, self.account_id = tokend, account_id
        self.min_valid_seconds, self.refused = min_valid_seconds, refused

    def sync_auth_flow(
        self, request: httpx.Request,
    ) -> Generator[httpx.Request, httpx.Response, None]:
        tokend = self.tokend
        if not isinstance(tokend, _sync.Tokend):
            raise TypeError("a sync httpx.Client needs TokendAuth(Tokend(...), ...)")
        token = tokend.access_token(self.account_id, self.min_valid_seconds)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code in (401, 403) and self.refused(response.status_code,
                                                               response.read()):
            fresh = tokend.renewed(self.account_id, token, self.min_valid_seconds)
            if fresh is not None:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request

    async def async_auth_flow(
        self, request: httpx.Request,
    ) -> AsyncGenerator[httpx.Request, httpx.Response, None]:
        tokend = self.tokend
        if not isinstance(tokend, _async.AsyncTokend):
            raise TypeError("an httpx.AsyncClient needs TokendAuth(AsyncTokend(...), ...)")
        token = await tokend.access_token(self.account_id, self.min_valid_seconds)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code in (401, 403) and self.refused(response.status_code,
                                                               await response.aread()):
            fresh = await tokend.renewed(self.account_id, token, self.min_valid_seconds)
            if fresh is not None:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request
