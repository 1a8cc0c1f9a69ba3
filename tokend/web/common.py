"""What every route shares: the application keys and JSON answers and errors."""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import orjson
from aiohttp import web

from tokend import (
    apptokens,
    config,
    connect,
    loop,
    metrics,
    model,
    probes,
    recorder,
    refresher,
    reload,
    store,
    stream,
    vending,
)
from tokend.ebay import notifications, signing

CONFIG = web.AppKey("config", config.Config)
SECRETS = web.AppKey("secrets", reload.Secrets)  # the tokens, as last reloaded
STORE = web.AppKey("store", store.Store)
# The same store, for handlers that only read (gauges, reports, backlogs).
INSIGHTS = web.AppKey("insights", store.Insights)
HUB = web.AppKey("hub", stream.Hub)
REFRESHER = web.AppKey("refresher", refresher.Refresher)
VENDOR = web.AppKey("vendor", vending.Vendor)
APP_TOKENS = web.AppKey("app_tokens", apptokens.AppTokens)
EBAY_RECEIVER = web.AppKey("ebay_receiver", notifications.Receiver)  # absent: not configured
SIGNER = web.AppKey("signer", signing.Signer)
LOOP = web.AppKey("loop", loop.Loop)
METRICS = web.AppKey("metrics", metrics.Metrics)
INSTANCE = web.AppKey("instance", str)
READINESS = web.AppKey("readiness", probes.Readiness)
CONNECT = web.AppKey("connect", connect.Service)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
SERVER_LOG = web.AppKey("server_log", Any)  # tokend.web.app.ServerLog: aiohttp's logger

JSON = "application/json"


def entries(request: web.Request) -> recorder.Recorder:
    """Where a handler records a log entry (stored, then on the live stream)."""
    return recorder.Recorder(request.app[STORE], request.app[HUB])


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(type(value).__name__)


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def json_response(
    data: Any, *, status: int = 200, content_type: str = JSON,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type=content_type,
                        headers=headers)


class ApiError(Exception):
    """A 4xx/5xx answer `{"error": message, ...}`; `errors.json_errors` renders it."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra

    def response(self) -> web.Response:
        return json_response({"error": self.message, **self.extra}, status=self.status,
                             headers=self.headers)


# -- what handlers parse ----------------------------------------------------------------


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def int_param(query: Mapping[str, str], name: str, default: int | None, low: int,
              high: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise bad(f"{name} must be between {low} and {high}" if high is not None
                  else f"{name} must be at least {low}")
    return value


def json_object(body: bytes, fields: Collection[str]) -> dict[str, Any]:
    """A request body that must be a JSON object with no field but `fields`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad("malformed JSON body") from None
    if not isinstance(data, dict):
        raise bad("body must be a JSON object")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}")
    return data


class Viewer(Protocol):
    """Who asks (`auth.Principal`): an org token sees its own org's accounts only."""

    def sees(self, org: str) -> bool: ...


async def visible_account(request: web.Request, principal: Viewer,
                          account_id: str) -> model.Account:
    """Another org's account answers exactly like a missing one."""
    account = await request.app[STORE].get_account(account_id)
    if account is None or not principal.sees(account.org):
        raise ApiError(404, "unknown account")
    return account
