"""`/ws/logs`: the live log stream. A hello with a token, then the backlog, then live entries.

The subscription is opened before the backlog is read, and live entries the backlog
already covered are skipped, so a client misses nothing and sees nothing twice.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from tokend import model, store, stream, vocabulary
from tokend.web import auth, common, errors

log = structlog.get_logger("tokend.web")

HELLO_TIMEOUT_SECONDS = 10.0
HEARTBEAT_SECONDS = 20.0
MAX_MESSAGE_BYTES = 64 * 1024
CATCH_UP_PAGE = 500
# A sender with a backlog yields after this many frames, so 100 busy subscribers cannot hold
# the event loop (and the refresh loop's database calls) for a whole backlog each.
FRAMES_PER_TURN = 16
# Live entries ready within this long of each other go out as one `entries` frame: fewer
# frames, wake-ups and system calls per subscriber, for at most this much more latency.
BATCH_SECONDS = 0.005
BATCH_MAX = 256  # entries per frame
BATCHES_CACHED = 64  # recent batch frames kept for the subscribers that drain the same


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    principal: auth.Principal
    since: int | None
    sources: frozenset[str] | None
    account_id: str | None

    def wants(self, entry: model.Entry) -> bool:
        return (self.principal.sees(entry.org_id)
                and (self.sources is None or entry.source in self.sources)
                and (self.account_id is None or entry.account_id == self.account_id))


class BadHello(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def origin_allowed(request: web.Request) -> bool:
    """Browsers always send Origin; other clients do not and rely on the token alone."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = {f"{request.scheme}://{request.host}".lower(),
               *(o.rstrip("/").lower() for o in request.app[common.CONFIG].server.allowed_origins)}
    return origin.rstrip("/").lower() in allowed


def parse_hello(raw: str | bytes, bearers: auth.Bearers) -> Hello:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadHello(vocabulary.CLOSE_BAD_HELLO, "hello must be JSON") from None
    if not isinstance(data, dict) or data.get("type") != "hello":
        raise BadHello(vocabulary.CLOSE_BAD_HELLO, "first message must be a hello")
    token = data.get("token")
    principal = auth.match(token, bearers.admin()) if isinstance(token, str) else None
    if principal is None:
        raise BadHello(vocabulary.CLOSE_UNAUTHORIZED, "invalid token")
    since = data.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int)
                              or not 0 <= since <= store.MAX_ENTRY_ID):
        raise BadHello(vocabulary.CLOSE_BAD_HELLO, "since must be an entry id or null")
    sources = data.get("sources")
    if sources is not None:
        if not isinstance(sources, list) or any(s not in vocabulary.SOURCES for s in sources):
            raise BadHello(vocabulary.CLOSE_BAD_HELLO,
                           f"sources must be a list of {', '.join(vocabulary.SOURCES)}")
        sources = frozenset(sources) or None  # an empty list asks for no filter
    account_id = data.get("account_id")
    if account_id is not None and not isinstance(account_id, str):
        raise BadHello(vocabulary.CLOSE_BAD_HELLO, "account_id must be a string")
    return Hello(principal, since, sources, account_id)


class EntryFrames:
    """Live entries' messages, serialised once for all subscribers.

    Each entry's JSON is made once (the hub hands every subscription the same `Entry`
    object, so its identity is the key; holding the entry keeps that identity from being
    reused), and so is each batch frame: subscribers that wake together drain the same
    entries. Only the newest `size` are kept: a subscriber further behind serialises its
    own copy.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._bodies: collections.OrderedDict[int, tuple[model.Entry, bytes]] = (
            collections.OrderedDict())
        self._batches: collections.OrderedDict[tuple[int, ...], tuple[
            tuple[model.Entry, ...], bytes]] = collections.OrderedDict()

    def _body(self, entry: model.Entry) -> bytes:
        cached = self._bodies.get(id(entry))
        if cached is not None and cached[0] is entry:
            return cached[1]
        body = common.dumps(entry.to_dict())
        self._bodies[id(entry)] = (entry, body)
        if len(self._bodies) > self.size:
            self._bodies.popitem(last=False)
        return body

    def message(self, entries: Sequence[model.Entry]) -> bytes:
        """One `entry` frame, or one `entries` frame for several."""
        if len(entries) == 1:
            return b'{"type":"entry",' + self._body(entries[0])[1:]
        key = tuple(id(e) for e in entries)
        cached = self._batches.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], entries, strict=True)):
            return cached[1]
        frame = (b'{"type":"entries","entries":['
                 + b",".join(self._body(e) for e in entries) + b"]}")
        self._batches[key] = (tuple(entries), frame)
        if len(self._batches) > BATCHES_CACHED:
            self._batches.popitem(last=False)
        return frame


FRAMES = web.AppKey("entry_frames", EntryFrames)


def entry_message(entry: model.Entry) -> bytes:
    return common.dumps({"type": "entry", **entry.to_dict()})


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    await _send_text(ws, common.dumps(message))


async def _send_text(ws: web.WebSocketResponse, message: bytes) -> None:
    """A text frame from JSON bytes (UTF-8 already), without a str round trip."""
    await ws.send_frame(message, WSMsgType.TEXT)


async def _send_entry(ws: web.WebSocketResponse, entry: model.Entry) -> None:
    await _send_text(ws, entry_message(entry))


async def _send_backlog(ws: web.WebSocketResponse, db: store.Insights, hello: Hello,
                        backlog: int) -> int | None:
    """The entries after `since` (every page of them), or the newest `backlog`; oldest first.
    Returns the last id sent."""
    query = {"source": sorted(hello.sources) if hello.sources is not None else None,
             "account_id": hello.account_id, "org": hello.principal.org}
    last_id = hello.since
    if hello.since is None:
        entries = await db.list_entries(limit=backlog, **query) if backlog else []
        for entry in reversed(entries):
            await _send_entry(ws, entry)
            last_id = entry.id
        return last_id
    while True:
        page = await db.list_entries(after_id=last_id, limit=CATCH_UP_PAGE, **query)
        for entry in page:
            await _send_entry(ws, entry)
            last_id = entry.id
        if len(page) < CATCH_UP_PAGE:
            return last_id


async def _send_live(ws: web.WebSocketResponse, subscription: stream.Subscription,
                     backlog_last_id: int | None, frames: EntryFrames) -> None:
    """Live entries, those ready together in one frame: after the first one arrives the
    sender waits BATCH_SECONDS, then sends everything queued by then (up to BATCH_MAX)."""
    sent = 0
    async for first in subscription:
        if BATCH_SECONDS:
            await asyncio.sleep(BATCH_SECONDS)
        items: list[model.Entry | stream.Dropped] = [first]
        while len(items) < BATCH_MAX and (item := subscription.get_nowait()) is not None:
            items.append(item)
        batch: list[model.Entry] = []
        for item in items:
            if isinstance(item, stream.Dropped):
                if batch:
                    await _send_text(ws, frames.message(batch))
                    batch = []
                if (backlog_last_id is None or item.last_id is None
                        or item.last_id > backlog_last_id):
                    await _send(ws, {"type": "dropped", "count": item.count})
            elif backlog_last_id is None or item.id is None or item.id > backlog_last_id:
                batch.append(item)
        if batch:
            await _send_text(ws, frames.message(batch))
        sent += 1
        if sent % FRAMES_PER_TURN == 0:
            await asyncio.sleep(0)


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    """Process the peer's control frames; anything it says after the hello is ignored."""
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _stream(request: web.Request, ws: web.WebSocketResponse, hello: Hello) -> None:
    app = request.app
    with app[common.HUB].subscribe(hello.wants) as subscription:
        await _send(ws, {"type": "ready"})
        last_id = await _send_backlog(ws, app[common.INSIGHTS], hello,
                                      app[common.CONFIG].server.stream_backlog)
        tasks = {asyncio.create_task(_send_live(ws, subscription, last_id, app[FRAMES]),
                                     name="ws-send"),
                 asyncio.create_task(_read_until_closed(ws), name="ws-read")}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def _hello(ws: web.WebSocketResponse, bearers: auth.Bearers) -> Hello:
    try:
        msg = await ws.receive(timeout=HELLO_TIMEOUT_SECONDS)
    except TimeoutError:
        raise BadHello(vocabulary.CLOSE_HELLO_TIMEOUT, "no hello received in time") from None
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        raise BadHello(vocabulary.CLOSE_BAD_HELLO, "hello expected")
    return parse_hello(msg.data, bearers)


async def logs_socket(request: web.Request) -> web.StreamResponse:
    if not origin_allowed(request):
        raise common.ApiError(403, "origin not allowed")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_MESSAGE_BYTES)
    try:
        upgrade = ws.can_prepare(request).ok
    except ValueError:  # aiohttp's handshake trips over header values that are not ASCII
        upgrade = False
    if not upgrade:
        raise common.ApiError(400, "websocket upgrade expected")
    await ws.prepare(request)
    request.app[common.WEBSOCKETS].add(ws)
    try:
        hello = await _hello(ws, request.app[auth.BEARERS])
        await _stream(request, ws, hello)
    except BadHello as exc:
        await ws.close(code=exc.code, message=str(exc).encode())
    except ConnectionError:
        pass  # the peer went away mid-send
    except store.StoreError as exc:
        log.warning("log_stream_database_unavailable", error=str(exc))
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"database unavailable")
    except Exception:
        # Headers are sent: json_errors cannot answer any more.
        log.exception("log_stream_failed")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    finally:
        await ws.close()
    return ws


def setup(routes: errors.Routes) -> None:
    routes.app[FRAMES] = EntryFrames(routes.app[common.CONFIG].server.stream_queue_size)
    routes.get("/ws/logs", logs_socket)
