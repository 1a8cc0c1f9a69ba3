"""`tokend logs`: the terminal in a shell. History from `/api/logs`, live entries over the
WebSocket with `follow`; rendered like the terminal page, coloured by source on a tty."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import aiohttp
import orjson

from tokend import vocabulary

PAGE = 1000
HISTORY = 200
RECONNECT_MAX_SECONDS = 15.0
SEEN_MAX = 10_000
SOURCE_COLORS = {  # ANSI colours close to the page's
    vocabulary.SCHEDULED: "32", vocabulary.MANUAL: "34", vocabulary.DEBUG: "34",
    vocabulary.ADMIN: "33", vocabulary.VEND: "35", vocabulary.CONNECT: "36", vocabulary.EBAY: "33"}


class LogsError(Exception):
    """tokend refused or could not be reached; the message is one line for the operator."""


class Unreachable(LogsError):
    """No daemon answers at the URL (the database still has the history)."""


def _paint(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color else text


def _time(value: str | None) -> str:
    try:
        moment = datetime.fromisoformat(value or "")
    except ValueError:
        return value or "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _body(body: Any) -> list[str]:
    if body is None or body == "":
        return []
    if isinstance(body, str):
        return ["", body]
    return ["", orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()]


def _headers(headers: Mapping[str, str] | None) -> list[str]:
    return [f"{name}: {value}" for name, value in (headers or {}).items()]


def render(entry: Mapping[str, Any], *, color: bool = False) -> str:
    """One entry as the terminal page shows it, from the same fields: a head line, the
    message, the HTTP exchange (masked), then the error."""
    source = str(entry.get("source") or "-")
    label = _paint(f"[{source.upper()}]", SOURCE_COLORS.get(source, "37") + ";1", color)
    where = str(entry.get("account_id") or "-")
    if entry.get("org_id"):
        where = f"{entry['org_id']} > {where}"
    context = " ".join(str(v) for v in (entry.get("provider"), entry.get("environment")) if v)
    action_color = "31;1" if vocabulary.failed(entry) else "1"
    head = [_paint(_time(entry.get("created_at")), "2", color), f"#{entry.get('id')}",
            _paint(str(entry.get("action")), action_color, color), label, where]
    if context:
        head.append(f"({context})")
    if entry.get("duration_ms") is not None:
        head.append(f"{entry['duration_ms']:.0f} ms")
    lines = ["  ".join(head)]
    error = entry.get("error")
    described = error.get("description") if isinstance(error, Mapping) else None
    if entry.get("message") and entry["message"] != described:  # said once, on the ERROR line
        lines.append(str(entry["message"]))
    details = entry.get("details")
    if isinstance(details, Mapping) and details.get("error_count"):
        lines.append(_paint(f"{details['error_count']} account(s) failed", "31", color))
    request, response = entry.get("request"), entry.get("response")
    if request:
        lines.append(_paint("=== HTTP REQUEST ===", "36", color))
        lines.append(f"{request.get('method', '')} {request.get('url', '')}".strip())
        lines += _headers(request.get("headers")) + _body(request.get("body"))
    if response:
        lines.append(_paint("=== HTTP RESPONSE ===", "36", color))
        status = f"HTTP {response.get('status', '')} {response.get('reason') or ''}".strip()
        failed = isinstance(response.get("status"), int) and response["status"] >= 400
        lines.append(_paint(status, "31", color and failed))
        lines += _headers(response.get("headers")) + _body(response.get("body"))
    if error:
        lines.append(_paint(f"ERROR {vocabulary.error_text(error)}", "31;1", color))
    return "\n".join(lines) + "\n"


def render_dropped(count: int, *, color: bool = False) -> str:
    return _paint(f"... skipped {count} entries (this client fell behind)", "33", color) + "\n"


def _query(sources: Sequence[str] | None, account_id: str | None) -> dict[str, str]:
    query = {}
    if sources:
        query["source"] = ",".join(sources)
    if account_id:
        query["account_id"] = account_id
    return query


async def _answer(response: aiohttp.ClientResponse) -> Any:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = None
    if response.status != 200:
        message = body.get("error") if isinstance(body, dict) else response.reason
        raise LogsError(f"tokend answered {response.status}: {message}")
    return body


async def history(
    session: aiohttp.ClientSession, base_url: str, token: str, *, since: int | None,
    sources: Sequence[str] | None, account_id: str | None,
) -> list[dict[str, Any]]:
    """Entries after `since` (all of them), or the latest ones; oldest first."""
    url, headers = f"{base_url}/api/logs", {"Authorization": f"Bearer {token}"}
    query = _query(sources, account_id)
    if since is None:
        async with session.get(url, params={**query, "limit": str(HISTORY)},
                               headers=headers) as response:
            return list(reversed((await _answer(response))["entries"]))
    out: list[dict[str, Any]] = []
    while True:
        params = {**query, "after_id": str(since), "limit": str(PAGE)}
        async with session.get(url, params=params, headers=headers) as response:
            page = (await _answer(response))["entries"]
        out += page
        if len(page) < PAGE:
            return out
        since = page[-1]["id"]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or type(exc.os_error).__name__
    return type(exc).__name__


def _emit(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


async def _stream(
    session: aiohttp.ClientSession, base_url: str, hello: dict[str, Any], *, json_lines: bool,
    color: bool, out: TextIO, seen: set[int],
) -> int | None:
    """One WebSocket session; returns the last id shown. Raises LogsError when refused."""
    ws_url = "ws" + base_url.removeprefix("http") + "/ws/logs"
    last_id = hello["since"]
    async with session.ws_connect(ws_url, heartbeat=30.0) as ws:
        await ws.send_str(orjson.dumps(hello).decode())
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            data = orjson.loads(msg.data)
            if data.get("type") == "dropped":
                if json_lines:
                    _emit(out, orjson.dumps(data).decode() + "\n")
                else:
                    _emit(out, render_dropped(data.get("count", 0), color=color))
            elif data.get("type") in ("entry", "entries"):
                # Entries ready together may come as one `entries` frame.
                for entry in data["entries"] if data["type"] == "entries" else [data]:
                    if entry.get("id") in seen:
                        continue
                    seen.add(entry["id"])
                    if len(seen) > SEEN_MAX:  # only recent ids come back after a reconnect
                        keep = sorted(seen)[-SEEN_MAX // 2:]
                        seen.clear()
                        seen.update(keep)
                    last_id = entry["id"]
                    entry.pop("type", None)
                    _emit(out, orjson.dumps(entry).decode() + "\n" if json_lines
                          else render(entry, color=color))
        if ws.close_code in vocabulary.CLOSE_CODES.values():
            raise LogsError("tokend refused the token"
                            if ws.close_code == vocabulary.CLOSE_UNAUTHORIZED
                            else "tokend refused the stream request")
    return last_id


async def follow(
    base_url: str, token: str, *, since: int | None = None,
    sources: Sequence[str] | None = None, account_id: str | None = None, follow: bool = True,
    json_lines: bool = False, out: TextIO = sys.stdout,
) -> None:
    """Print history, then (with `follow`) live entries until cancelled, reconnecting."""
    base_url = base_url.rstrip("/")
    color = not json_lines and out.isatty()
    async with aiohttp.ClientSession() as session:
        if not follow:
            try:
                entries = await history(session, base_url, token, since=since, sources=sources,
                                        account_id=account_id)
            except aiohttp.ClientError as exc:
                raise Unreachable(f"no daemon answers at {base_url} ({_reason(exc)})") from None
            for entry in entries:
                _emit(out, orjson.dumps(entry).decode() + "\n" if json_lines
                      else render(entry, color=color))
            return
        seen: set[int] = set()
        delay, connected = 0.5, False
        while True:
            hello = {"type": "hello", "token": token, "since": since,
                     "sources": list(sources) if sources else None, "account_id": account_id}
            try:
                since = await _stream(session, base_url, hello, json_lines=json_lines,
                                      color=color, out=out, seen=seen)
                connected, delay = True, 0.5
            except aiohttp.ClientError as exc:
                if not connected:
                    raise Unreachable(f"no daemon answers at {base_url} ({_reason(exc)})") from None
            print(f"tokend: stream lost; reconnecting in {delay:g} s", file=sys.stderr)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)
