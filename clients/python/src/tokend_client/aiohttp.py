"""An aiohttp client middleware (aiohttp >= 3.12, the `aiohttp` extra): the account's token
from tokend on each request, and one retry with a fresh token when the provider refuses it.

    async with aiohttp.ClientSession(middlewares=(tokend_client.aiohttp.middleware(
            tokend, "acct-1"),)) as session:
        ...

or per request: `session.get(url, middlewares=(middleware(tokend, account_id),))`.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from tokend_client import _async, _common


def middleware(
    tokend: _async.AsyncTokend, account_id: str, *,
    min_valid_seconds: float = _common.DEFAULT_MIN_VALID_SECONDS,
    refused: Callable[[int, bytes], bool] = _common.refused,
) -> aiohttp.ClientMiddlewareType:
    async def tokend_auth(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        token = await tokend.access_token(account_id, min_valid_seconds)
        request.headers["Authorization"] = f"Bearer {token}"
        response = await handler(request)
        if response.status not in (401, 403) or not refused(response.status,
                                                            await response.read()):
            return response
        fresh = await tokend.renewed(account_id, token, min_valid_seconds)
        if fresh is None:
            return response
        response.release()
        request.headers["Authorization"] = f"Bearer {fresh}"
        return await handler(request)

    return tokend_auth
