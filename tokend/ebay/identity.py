"""eBay's Identity API `getUser`: the seller's immutable `userId` and `username`.

One bounded GET with the seller's fresh access token; what is kept of the exchange for the
HTTP log is masked (the Authorization header) like every other exchange.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from tokend import masking
from tokend.providers import client


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    """One getUser exchange: the user, or why not; `request`/`response` are masked."""

    user: User | None
    error: str | None
    request: Mapping[str, Any]
    response: Mapping[str, Any] | None
    duration_ms: float


async def get_user(
    session: aiohttp.ClientSession, url: str, access_token: str, *, timeout_seconds: float,
) -> Lookup:
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    request = {"method": "GET", "url": url, "headers": masking.mask_headers(headers)}
    started = time.monotonic()

    def done(user: User | None, error: str | None,
             response: Mapping[str, Any] | None) -> Lookup:
        return Lookup(user=user, error=error, request=request, response=response,
                      duration_ms=round((time.monotonic() - started) * 1000.0, 1))

    try:
        async with session.get(url, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as answer:
            raw, too_big = await client.read_limited(answer.content, answer.content_length)
            status = answer.status
            content_type = answer.headers.get("Content-Type")
    except TimeoutError:
        return done(None, f"no answer within {timeout_seconds:g} s", None)
    except (aiohttp.ClientError, OSError) as exc:
        return done(None, f"{type(exc).__name__}: cannot reach the Identity API", None)
    text = "" if too_big else raw.decode("utf-8", errors="replace").replace(access_token, "")
    response = {"status": status, "body": masking.mask_body(text, content_type)}
    if too_big:
        return done(None, "the Identity API answered more than 1 MiB", response)
    if status != 200:
        return done(None, f"the Identity API answered HTTP {status}", response)
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return done(None, "the Identity API answered something other than JSON", response)
    user_id = data.get("userId") if isinstance(data, dict) else None
    if not isinstance(user_id, str) or not user_id:
        return done(None, "the Identity API answered without a userId", response)
    username = data.get("username")
    return done(User(user_id, username if isinstance(username, str) else None), None, response)
