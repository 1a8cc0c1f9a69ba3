"""What every route shares: the application keys and JSON answers and errors."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from tokend import (
    apptokens,
    config,
    connect,
    loop,
    metrics,
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
    """A 4xx/5xx answer `{"error": message, ...}`; the error middleware renders it."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra

    def response(self) -> web.Response:
        return json_response({"error": self.message, **self.extra}, status=self.status,
                             headers=self.headers)
