"""Every failure is a JSON `{"error": ...}`. Each handler is wrapped as it is registered
(`Routes`), and a request that no route takes reaches the last one, `unrouted`, which
answers 404, or 405 with `Allow` when other methods have a route there.

A middleware would do the same for every request at the cost of two more coroutines
each, on a route that apps may call before every call they make.
"""

from __future__ import annotations

import functools
from typing import Any

import structlog
from aiohttp import http_exceptions, web

from tokend import store
from tokend.web import common

log = structlog.get_logger("tokend.web")

# What aiohttp raises for bytes that are not the HTTP they claim to be: while parsing, and
# from a body read (a Content-Encoding the body does not match).
MALFORMED = (http_exceptions.HttpProcessingError, web.RequestPayloadError)
UNROUTED = "unrouted"  # the name of the last route, which takes what no other route does


class Routes:
    """Where the route modules register their handlers, each wrapped in `json_errors`."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def get(self, path: str, handler: web.Handler, **kwargs: Any) -> None:
        self.app.router.add_get(path, json_errors(handler), **kwargs)

    def post(self, path: str, handler: web.Handler) -> None:
        self.app.router.add_post(path, json_errors(handler))

    def close(self) -> None:
        """Register the last route: after it, no request is left to aiohttp's text 404."""
        self.app.router.add_route("*", r"/{path:[\s\S]*}", json_errors(unrouted),
                                  name=UNROUTED)


def json_errors(handler: web.Handler) -> web.Handler:
    """`handler` with its failures answered as JSON; an unexpected one is logged, never
    shown."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
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

    return answer


async def unrouted(request: web.Request) -> web.StreamResponse:
    """No other route took the request: 405 when its path has routes for other methods."""
    last = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not last:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def _holds_nul(request: web.Request) -> bool:
    return "\x00" in request.path or (bool(request.query_string) and any(
        "\x00" in key or "\x00" in value for key, value in request.query.items()))
