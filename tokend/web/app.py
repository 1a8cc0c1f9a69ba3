"""The aiohttp application: wiring, the JSON error middleware, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import weakref
from typing import Any

import structlog
from aiohttp import WSCloseCode, http_exceptions, web

from tokend import (
    apptokens,
    config,
    connect,
    loop,
    metrics,
    probes,
    refresher,
    reload,
    store,
    stream,
    throttle,
    vending,
)
from tokend.ebay import notifications, signing
from tokend.web import api, auth, common, console, ebay, openapi, routes, websocket
from tokend.web import connect as connect_routes
from tokend.web import signing as signing_routes

log = structlog.get_logger("tokend.web")

MAX_BODY_BYTES = 64 * 1024  # admin requests are tiny JSON objects
WS_CLOSE_TIMEOUT_SECONDS = 2.0
# What aiohttp raises for bytes that are not the HTTP they claim to be: while parsing, and
# from a body read (a Content-Encoding the body does not match).
MALFORMED = (http_exceptions.HttpProcessingError, web.RequestPayloadError)


class ServerLog:
    """aiohttp's own log (the runner's `logger`). A message that is not HTTP, or a body that
    contradicts its Content-Encoding, is the client's doing, and anyone who reaches the port
    can send one: counted in `tokend_http_malformed_requests_total` and logged at a bounded
    rate, without a stack or the message (it may quote a header). Anything else aiohttp
    reports stays an error with its stack."""

    def __init__(self, stats: metrics.Metrics) -> None:
        self.stats = stats
        self.refusals = throttle.refusals()
        self._logger = logging.getLogger("aiohttp.server")

    def debug(self, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(*args, **kwargs)

    def exception(self, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, MALFORMED):
            self.malformed(exc)
        else:
            self._logger.exception(*args, exc_info=exc_info, **kwargs)

    def malformed(self, exc: BaseException) -> None:
        self.stats.malformed_requests.inc()
        left_out = self.refusals.take()
        if left_out is not None:
            log.warning("http_malformed_request", error=type(exc).__name__,
                        refusals_not_logged=left_out)


@web.middleware
async def json_errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Every failure is a JSON `{"error": ...}`; an unexpected one is logged, never shown."""
    try:
        if request.path.startswith("/api/") and _holds_nul(request):
            # PostgreSQL cannot hold NUL in text and no name or filter of tokend's has one.
            raise common.ApiError(400, "the path and query must not contain NUL characters")
        return await handler(request)
    except common.ApiError as exc:
        return exc.response()
    except MALFORMED as exc:  # a body that is not what it says
        request.app[common.SERVER_LOG].malformed(exc)
        return common.json_response({"error": "malformed request body"}, status=400)
    except store.StoreError as exc:
        log.warning("http_database_unavailable", path=request.path, error=str(exc))
        return common.json_response({"error": "database unavailable"}, status=503)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in (
            "content-type", "content-length")}
        return common.json_response({"error": (exc.reason or "error").lower()},
                                    status=exc.status, headers=headers)
    except ConnectionResetError:
        raise  # the client went away; nobody to answer
    except Exception:
        log.exception("http_request_failed", method=request.method, path=request.path)
        return common.json_response({"error": "internal error"}, status=500)


def _holds_nul(request: web.Request) -> bool:
    return "\x00" in request.path or (bool(request.query_string) and any(
        "\x00" in key or "\x00" in value for key, value in request.query.items()))


async def _close_websockets(app: web.Application) -> None:
    """Say goodbye to every stream client at once; a peer that stopped reading gets cut."""

    async def close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WS_CLOSE_TIMEOUT_SECONDS):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    await asyncio.gather(*(close(ws) for ws in tuple(app[common.WEBSOCKETS])))


def create_app(
    *, config: config.Config, store: store.Store, hub: stream.Hub,
    refresher: refresher.Refresher, vendor: vending.Vendor, loop: loop.Loop,
    metrics: metrics.Metrics, instance: str, readiness: probes.Readiness,
    app_tokens: apptokens.AppTokens, connector: connect.Service, secrets: reload.Secrets,
    ebay_receiver: notifications.Receiver | None = None, signer: signing.Signer | None = None,
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[common.CONFIG] = config
    app[common.SECRETS] = secrets
    app[auth.BEARERS] = auth.Bearers(secrets)
    app[common.STORE] = store
    app[common.INSIGHTS] = store
    app[common.HUB] = hub
    app[common.REFRESHER] = refresher
    app[common.VENDOR] = vendor
    app[common.LOOP] = loop
    app[common.METRICS] = metrics
    app[common.SERVER_LOG] = ServerLog(metrics)
    app[common.INSTANCE] = instance
    app[common.READINESS] = readiness
    app[common.APP_TOKENS] = app_tokens
    if ebay_receiver is not None:
        app[common.EBAY_RECEIVER] = ebay_receiver
    app[common.CONNECT] = connector
    if signer is not None:
        app[common.SIGNER] = signer
    app[common.WEBSOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(_close_websockets)
    routes.setup(app)
    api.setup(app)
    console.setup(app)
    websocket.setup(app)
    ebay.setup(app)
    connect_routes.setup(app)
    signing_routes.setup(app)
    openapi.setup(app)
    return app
