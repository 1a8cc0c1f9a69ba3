"""The operator routes without a token: health, probes, loop status, metrics, the
vocabulary, the console and the terminal page (the pages ask for a token themselves)."""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from pathlib import Path
from typing import Any

import prometheus_client as prom
import structlog
from aiohttp import web

from tokend import clock, gauges, model, probes, status, vocabulary
from tokend.web import common, errors

log = structlog.get_logger("tokend.web")

DB_TIMEOUT_SECONDS = 2.0
HEALTH_JSON = "application/health+json"
STATIC_DIR = Path(__file__).parent / "static"
# The pages' modules and style sheets; the HTML is served by `console` and `terminal` only.
# Their types are fixed here: the host's MIME table says `application/javascript` on one
# machine and `text/javascript` (RFC 9239) on the next.
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}
ASSETS = frozenset(p.name for p in STATIC_DIR.iterdir() if p.suffix in ASSET_TYPES)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PROBE_HEADERS = {"Content-Type": "text/plain; charset=utf-8",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


async def health(request: web.Request) -> web.Response:
    """IETF health-check draft format. Only the loop can fail it: its clock is in memory."""
    now = clock.now()
    refresh_loop = request.app[common.LOOP]
    loop_ok = refresh_loop.healthy(now)
    last = refresh_loop.last_finished_at
    loop_check: dict[str, Any] = {
        "componentType": "component", "status": "pass" if loop_ok else "fail",
        "observedValue": round((now - last).total_seconds(), 3) if last else None,
        "observedUnit": "s", "time": now.isoformat(),
    }
    if not loop_ok:
        limit = model.STALE_AFTER_INTERVALS * refresh_loop.interval_seconds
        loop_check["output"] = f"no finished refresh cycle within {limit:g} s"
    db_check = await _database_check(request.app[common.READINESS], now)
    status = "fail" if not loop_ok else db_check["status"]
    body = {"status": status, "serviceId": request.app[common.INSTANCE],
            "checks": {"loop:freshness": [loop_check], "database:reachability": [db_check]}}
    return common.json_response(body, status=503 if status == "fail" else 200,
                                content_type=HEALTH_JSON)


async def _database_check(readiness: probes.Readiness, now: datetime) -> dict[str, Any]:
    """/readyz's database ping, bounded there and not cached, in the health-check format."""
    ping = await readiness.ping(fresh=True)
    check: dict[str, Any] = {"componentType": "datastore", "status": "pass",
                             "time": now.isoformat()}
    if ping.reason:
        check.update(status="warn", output=ping.reason)
    else:
        check.update(observedValue=ping.duration_ms, observedUnit="ms")
    return check


def _probe_answer(request: web.Request, name: str, checks: list[probes.Check]) -> web.Response:
    """Kubernetes' own format: "ok", or with `?verbose` one `[+]check ok` line per check;
    a failure always lists the checks and is a 503."""
    lines = "".join(f"[+]{c.name} ok\n" if c.ok else f"[-]{c.name} failed: {c.reason}\n"
                    for c in checks)
    failed = not all(c.ok for c in checks)
    if failed:
        text = f"{lines}{name} check failed\n"
    elif "verbose" in request.query:
        text = f"{lines}{name} check passed\n"
    else:
        text = "ok"
    return web.Response(text=text, status=503 if failed else 200, headers=PROBE_HEADERS)


async def livez(request: web.Request) -> web.Response:
    return _probe_answer(request, "livez", probes.liveness(request.app[common.LOOP], clock.now()))


async def readyz(request: web.Request) -> web.Response:
    return _probe_answer(request, "readyz", await request.app[common.READINESS].checks())


async def loop_status(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            body = await status.report(request.app[common.INSIGHTS], request.app[common.CONFIG],
                                        clock.now())
    except Exception as exc:
        log.warning("loop_status_unavailable", error=type(exc).__name__)
        raise common.ApiError(503, "database unavailable") from None
    return common.json_response({**body, "instance": request.app[common.INSTANCE]})


async def _probe_gauges(app: web.Application) -> None:
    """What /livez and /readyz would answer, so alerts can ask it of every replica at once."""
    stats, refresh_loop = app[common.METRICS], app[common.LOOP]
    reference = refresh_loop.last_turned_at or refresh_loop.started_at
    stats.loop_last_cycle.set(reference.timestamp())
    (alive,) = probes.liveness(refresh_loop, clock.now())
    stats.loop_stale.set(0 if alive.ok else 1)
    for check in await app[common.READINESS].checks():
        stats.ready.labels(check.name).set(1 if check.ok else 0)


async def metrics(request: web.Request) -> web.Response:
    """The gauges that need the database are refreshed here, bounded; an outage keeps the
    last values and the counters still answer. The probe gauges are set first, whatever
    the database does (the readiness ping is bounded by itself)."""
    await _probe_gauges(request.app)
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            app = request.app
            await gauges.refresh(app[common.INSIGHTS], app[common.METRICS], app[common.CONFIG],
                                 clock.now())
    except Exception as exc:
        log.warning("metrics_gauges_stale", error=type(exc).__name__)
    return web.Response(body=request.app[common.METRICS].render(),
                        headers={"Content-Type": prom.CONTENT_TYPE_LATEST})


async def vocabulary_json(_request: web.Request) -> web.Response:
    """The entry vocabulary for pages and other clients; public, like the page itself."""
    return common.json_response(vocabulary.served())


@functools.cache
def _page(name: str) -> str:
    """A page with the login dialog both pages share put in its place."""
    login = (STATIC_DIR / "login.html").read_text()
    return (STATIC_DIR / name).read_text().replace("__LOGIN__\n", login)


async def terminal(request: web.Request) -> web.Response:
    max_entries = request.app[common.CONFIG].server.terminal_max_entries
    page = _page("terminal.html").replace("__MAX_ENTRIES__", str(int(max_entries)))
    return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)


async def console(_request: web.Request) -> web.Response:
    return web.Response(text=_page("console.html"), content_type="text/html",
                        headers=PAGE_HEADERS)


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise common.ApiError(404, "not found")
    path = STATIC_DIR / name
    return web.FileResponse(path, headers={
        **PAGE_HEADERS, "Content-Type": f"{ASSET_TYPES[path.suffix]}; charset=utf-8"})


def setup(routes: errors.Routes) -> None:
    routes.get("/", console)
    routes.get("/health", health)
    routes.get("/livez", livez)
    routes.get("/readyz", readyz)
    routes.get("/loop-status", loop_status)
    routes.get("/metrics", metrics)
    routes.get("/api/vocabulary", vocabulary_json)
    routes.get("/terminal", terminal)
    routes.get("/terminal/{name}", asset)
    routes.get("/console/{name}", asset)
