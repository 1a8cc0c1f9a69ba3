"""The aiohttp application: wiring, the JSON error middleware, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import weakref

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
    vending,
)
from tokend.ebay import notifications, signing
from tokend.web import api, common, console, ebay, openapi, routes, websocket
from tokend.web import connect as connect_routes
from tokend.web import signing as signing_routes

log = structlog.get_logger("tokend.web")

MAX_BODY_BYTES = 64 * 1024  # admin requests are tiny JSON objects
WS_CLOSE_TIMEOUT_SECONDS = 2.0


@web.middleware
async def json_errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Every failure is a JSON `{"error": ...}`; an unexpected one is logged, never shown."""
    try:
        return await handler(request)
    except common.ApiError as exc:
        return exc.response()
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
    app[common.STORE] = store
    app[common.HUB] = hub
    app[common.REFRESHER] = refresher
    app[common.VENDOR] = vendor
    app[common.LOOP] = loop
    app[common.METRICS] = metrics
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
