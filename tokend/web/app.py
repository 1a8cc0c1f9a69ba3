"""The aiohttp application: wiring, aiohttp's own log, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import weakref
from typing import Any

import structlog
from aiohttp import WSCloseCode, web

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
from tokend.web import api, auth, common, console, ebay, errors, openapi, routes, websocket
from tokend.web import connect as connect_routes
from tokend.web import signing as signing_routes

log = structlog.get_logger("tokend.web")

MAX_BODY_BYTES = 64 * 1024  # admin requests are tiny JSON objects
WS_CLOSE_TIMEOUT_SECONDS = 2.0


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
        if isinstance(exc, errors.MALFORMED):
            self.malformed(exc)
        else:
            self._logger.exception(*args, exc_info=exc_info, **kwargs)

    def malformed(self, exc: BaseException) -> None:
        self.stats.malformed_requests.inc()
        left_out = self.refusals.take()
        if left_out is not None:
            log.warning("http_malformed_request", error=type(exc).__name__,
                        refusals_not_logged=left_out)


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
    app = web.Application(client_max_size=MAX_BODY_BYTES)
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
    table = errors.Routes(app)
    api.setup(table)  # the vend route first: a path is matched in registration order
    routes.setup(table)
    console.setup(table)
    websocket.setup(table)
    ebay.setup(table)
    connect_routes.setup(table)
    signing_routes.setup(table)
    openapi.setup(table)
    table.close()
    return app
