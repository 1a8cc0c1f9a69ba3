"""The HTTP server over a real socket: health, status, metrics, admin API, the log stream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import socket
import struct
import time
from datetime import timedelta

import aiohttp
import orjson
import pytest
import webstack
from aiohttp import WSCloseCode

from tokend import logclient, vocabulary
from tokend.web import websocket

ADMIN, ORG_ACME, CONSUMER = webstack.ADMIN, webstack.ORG_ACME, webstack.CONSUMER


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


class SlowPing:
    """A store whose database never answers a ping."""

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    async def ping(self, timeout_seconds: float = 1.0):
        await asyncio.sleep(30)


# -- health, status, metrics --------------------------------------------------------------
async def test_health_passes(stack):
    async with stack.http.get(stack.url + "/health") as response:
        assert response.status == 200
        assert response.content_type == "application/health+json"
        body = await response.json(content_type=None)
    assert body["status"] == "pass"
    assert body["checks"]["loop:freshness"][0]["status"] == "pass"
    assert body["checks"]["database:reachability"][0]["status"] == "pass"


async def test_health_warns_when_the_database_is_gone(stack):
    await stack.db.close()
    status, body = await stack.get_json("/health", token=None)
    assert status == 200
    assert body["status"] == "warn"
    assert body["checks"]["database:reachability"][0]["status"] == "warn"
    assert body["checks"]["loop:freshness"][0]["status"] == "pass"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_health_warns_within_two_seconds_when_the_database_hangs(store, keyring):
    async with webstack.running(SlowPing(store), keyring) as s:
        began = time.monotonic()
        status, body = await s.get_json("/health", token=None)
        assert time.monotonic() - began < 3.5
    assert (status, body["status"]) == (200, "warn")


async def test_health_fails_when_the_loop_is_wedged(stack):
    stack.loop.started_at -= timedelta(seconds=4 * stack.loop.interval_seconds)
    status, body = await stack.get_json("/health", token=None)
    assert status == 503
    assert body["status"] == "fail"
    assert body["checks"]["loop:freshness"][0]["status"] == "fail"
    await stack.loop.cycle()  # a finished cycle makes it healthy again
    status, body = await stack.get_json("/health", token=None)
    assert (status, body["status"]) == (200, "pass")


async def test_loop_status_shows_the_worker_and_no_secret(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await stack.loop.cycle()  # refreshes acct-1 against the simulator
    status, body = await stack.get_json("/loop-status", token=None)
    assert status == 200
    (worker,) = body["loops"]
    assert worker["instance"] == webstack.INSTANCE
    assert worker["stale"] is False
    assert worker["last_summary"]["accounts_refreshed"] == 1
    assert body["accounts"] == {"active": 1, "failing": 0, "reauth_required": 0,
                                "disabled": 0, "deleted": 0}
    text = orjson.dumps(body).decode()
    assert "ENC:" not in text and "v^1.1#" not in text


async def test_loop_status_is_a_503_json_when_the_database_is_gone(stack):
    await stack.db.close()
    status, body = await stack.get_json("/loop-status", token=None)
    assert status == 503
    assert body == {"error": "database unavailable"}


async def test_metrics_project_daily_calls_and_survive_an_outage(stack):
    for i in range(3):
        await webstack.add_account(stack.db, stack.keyring, f"acct-{i}")
    async with stack.http.get(stack.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'tokend_accounts{state="active"} 3.0' in text
    # default schedule: min(max_age 3600, 7200 - 900) = 3600 s -> 24 calls a day each
    assert f'tokend_projected_daily_calls{{provider="{webstack.PROVIDER}"}} 72.0' in text
    assert f'tokend_daily_quota{{provider="{webstack.PROVIDER}"}} 50000.0' in text
    assert f'tokend_provider_paused{{provider="{webstack.PROVIDER}"}} 0.0' in text
    await stack.db.close()
    async with stack.http.get(stack.url + "/metrics") as response:
        assert response.status == 200
        assert "tokend_accounts" in await response.text()


# -- authentication and org isolation -------------------------------------------------------
ADMIN_ROUTES = [("GET", "/api/accounts"), ("POST", "/api/accounts/acct-1/refresh"),
                ("GET", "/api/logs"), ("POST", "/api/accounts/acct-1/disable"),
                ("POST", "/api/accounts/acct-1/enable"),
                ("POST", "/api/accounts/acct-1/clear-backoff"),
                ("GET", "/api/accounts/acct-1/attempts"), ("GET", "/api/providers"),
                ("POST", f"/api/providers/{webstack.PROVIDER}/resume")]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-xxxxxxxxxxxx", f"Basic {ADMIN}",
                                    f"Bearer {CONSUMER}", "Bearer ", f"Bearer {ADMIN}x",
                                    "Bearer é"])
async def test_admin_routes_refuse_a_missing_or_wrong_token(stack, method, path, header):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    headers = {"Authorization": header} if header is not None else {}
    async with stack.http.request(method, stack.url + path, headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json()) == {"error": "missing or invalid bearer token"}
    assert stack.sim.calls == 0


async def test_an_org_token_sees_only_its_org(stack):
    await webstack.add_account(stack.db, stack.keyring, "acme-1", "acme")
    await webstack.add_account(stack.db, stack.keyring, "globex-1", "globex")
    await webstack.add_entry(stack.db, account_id="acme-1", org="acme")
    await webstack.add_entry(stack.db, account_id="globex-1", org="globex")
    await webstack.add_entry(stack.db, account_id=None, org=None, action="worker_heartbeat")

    status, body = await stack.get_json("/api/accounts", token=ORG_ACME)
    assert [a["id"] for a in body["accounts"]] == ["acme-1"]
    _, body = await stack.get_json("/api/accounts")
    assert sorted(a["id"] for a in body["accounts"]) == ["acme-1", "globex-1"]

    status, body = await stack.get_json("/api/logs", token=ORG_ACME)
    assert [e["account_id"] for e in body["entries"]] == ["acme-1"]
    status, body = await stack.get_json("/api/logs?account_id=globex-1", token=ORG_ACME)
    assert (status, body) == (404, {"error": "unknown account"})
    status, body = await stack.get_json("/api/logs")
    assert len(body["entries"]) == 3

    async with stack.http.post(stack.url + "/api/accounts/globex-1/refresh",
                               headers=stack.auth(ORG_ACME)) as response:
        assert response.status == 404
        assert await response.json() == {"error": "unknown account"}
    status, body = await stack.get_json("/api/accounts/globex-1/access-token",
                                        token=webstack.CONSUMER_ACME)
    assert (status, body) == (404, {"error": "unknown account"})
    assert stack.sim.calls == 0


async def test_accounts_never_show_a_token(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await stack.loop.cycle()
    _, body = await stack.get_json("/api/accounts")
    (account,) = body["accounts"]
    assert account["id"] == "acct-1" and account["access_expires_at"]
    assert "refresh_token" not in account and "access_token" not in account
    assert "ENC:" not in orjson.dumps(body).decode()


# -- refresh and logs ----------------------------------------------------------------------
async def test_manual_and_debug_refresh(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    async with stack.http.post(stack.url + "/api/accounts/acct-1/refresh",
                               headers=stack.auth()) as response:
        assert response.status == 200
        plain = await response.json()
    assert plain["success"] is True and plain["error"] is None
    assert isinstance(plain["entry_id"], int) and "request" not in plain

    async with stack.http.post(stack.url + "/api/accounts/acct-1/refresh", headers=stack.auth(),
                               json={"debug": True}) as response:
        assert response.status == 200
        debug = await response.json()
    assert debug["success"] is True
    assert debug["request"]["method"] == "POST"
    assert debug["request"]["headers"]["Authorization"] == "Basic ****"
    assert debug["response"]["status"] == 200
    text = orjson.dumps(debug).decode()
    assert "v^1.1#i^1#r^1" not in text  # the refresh token, masked
    assert "v^1.1#i^1#access" not in text

    _, body = await stack.get_json("/api/logs?source=manual,debug")
    assert [(e["source"], e["action"]) for e in body["entries"]] == [
        ("debug", "token_refresh_debug"), ("manual", "token_refreshed")]


async def test_refresh_of_a_busy_or_unknown_account(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    claimed = await stack.db.claim_account("acct-1", "someone-else", webstack.now(),
                                           lease_seconds=60)
    assert claimed is not None
    async with stack.http.post(stack.url + "/api/accounts/acct-1/refresh",
                               headers=stack.auth()) as response:
        assert response.status == 409
        assert "error" in await response.json()
    async with stack.http.post(stack.url + "/api/accounts/nope/refresh",
                               headers=stack.auth()) as response:
        assert response.status == 404
    assert stack.sim.calls == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/api/accounts/acct-1/refresh", b"{not json", 400),
    ("POST", "/api/accounts/acct-1/refresh", b"[true]", 400),
    ("POST", "/api/accounts/acct-1/refresh", b'{"debug": "yes"}', 400),
    ("POST", "/api/accounts/acct-1/refresh", b'{"debugg": true}', 400),
    ("POST", "/api/accounts/acct-1/refresh", b"x" * 70_000, 413),
    ("GET", "/api/logs?limit=0", None, 400),
    ("GET", "/api/logs?limit=1001", None, 400),
    ("GET", "/api/logs?limit=ten", None, 400),
    ("GET", "/api/logs?before_id=-1", None, 400),
    ("GET", "/api/logs?after_id=1.5", None, 400),
    ("GET", "/api/logs?source=scheduled,bogus", None, 400),
    ("GET", "/api/logs?source=", None, 400),
    ("GET", "/api/logs?action=DROP%20TABLE", None, 400),
    ("GET", "/api/logs?colour=red", None, 400),
    ("GET", "/api/nothing-here", None, 404),
    ("DELETE", "/api/accounts", None, 405),
    ("GET", "/api/accounts/acct-1/access-token?min_valid_seconds=abc", None, 400),
    ("GET", "/api/accounts/acct-1/access-token?min_valid_seconds=3601", None, 400),
    ("GET", "/api/accounts/acct-1/access-token?min_valid_seconds=-1", None, 400),
    ("GET", "/api/accounts/nope/access-token", None, 404),
    ("GET", "/terminal/../../etc/passwd", None, 404),
    ("GET", "/terminal/terminal.py", None, 404),
    ("GET", "/terminal/terminal.html", None, 404),
])
async def test_bad_input_is_a_4xx_json_error(stack, method, path, body, status):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    token = CONSUMER if "access-token" in path else ADMIN
    async with stack.http.request(method, stack.url + path, data=body,
                                  headers=stack.auth(token)) as response:
        assert response.status == status
        assert response.content_type == "application/json"
        answer = await response.json()
    assert set(answer) == {"error"} and answer["error"]
    assert stack.sim.calls == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("DELETE", "/api/accounts", 405, "GET,HEAD"),
    ("PUT", "/api/accounts/acct-1/access-token", 405, "GET,HEAD"),
    ("GET", "/api/accounts/acct-1/refresh", 405, "POST"),
    ("PATCH", "/ebay/notifications", 405, "GET,HEAD,POST"),
    ("POST", "/connect/abc", 405, "GET"),
    ("GET", "/nothing/here", 404, None),
    ("OPTIONS", "/nothing", 404, None),
    ("GET", "/api/accounts/a%0Ab/c%0A", 404, None),
    ("GET", "//", 404, None),
])
async def test_a_request_no_route_takes_is_a_json_404_or_405_with_allow(
        stack, method, path, status, allow):
    """The same answers aiohttp's router gives, as JSON: the last route works them out."""
    async with stack.http.request(method, stack.url + path,
                                  headers=stack.auth(ADMIN)) as response:
        assert response.status == status
        assert response.headers.get("Allow") == allow
        assert await response.json() == {
            "error": "method not allowed" if status == 405 else "not found"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_unexpected_error_is_a_500_json_without_details(stack, monkeypatch):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")

    async def explode(account_id, *, source="manual"):
        raise RuntimeError("secret detail v^1.1#leak")

    monkeypatch.setattr(stack.worker, "refresh_now", explode)
    async with stack.http.post(stack.url + "/api/accounts/acct-1/refresh",
                               headers=stack.auth()) as response:
        assert response.status == 500
        assert await response.json() == {"error": "internal error"}


# -- the terminal page ---------------------------------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_terminal_page_and_its_assets(stack):
    async with stack.http.get(stack.url + "/terminal") as response:
        assert response.status == 200
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert 'data-max-entries="2000"' in page
    modules = ("terminal.js", "vocabulary.js", "render.js", "terminal-entries.js",
               "connection.js", "terminal-controls.js", "session.js")
    for name, kind in (*((m, "javascript") for m in modules), ("terminal.css", "text/css")):
        async with stack.http.get(f"{stack.url}/terminal/{name}") as response:
            assert response.status == 200
            assert kind in response.headers["Content-Type"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_console_page_and_its_assets(stack):
    async with stack.http.get(stack.url + "/", allow_redirects=False) as response:
        assert response.status == 200
        assert "script-src 'self';" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert '<script type="module" src="/console/console.js">' in page
    assert 'href="/terminal"' in page
    for name in ("console.js", "console-state.js", "console-render.js", "console-controls.js",
                 "console.css", "terminal.css", "vocabulary.js", "connection.js", "render.js",
                 "session.js"):
        async with stack.http.get(f"{stack.url}/console/{name}") as response:
            assert response.status == 200, name
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    async with stack.http.get(f"{stack.url}/console/console.html") as response:
        assert response.status == 404


# -- the WebSocket stream ------------------------------------------------------------------
def hello(token=ADMIN, since=None, sources=None, **extra):
    return {"type": "hello", "token": token, "since": since, "sources": sources, **extra}


async def receive(ws, timeout=5.0):
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


def entries_of(message):
    """The entries a live frame carries: one `entry`, or several ready together."""
    if message["type"] == "entries":
        return message["entries"]
    assert message["type"] == "entry", message
    return [message]


async def receive_entries(ws, n):
    out = []
    while len(out) < n:
        out.extend(entries_of(await receive(ws)))
    assert len(out) == n, out
    return out


@contextlib.asynccontextmanager
async def stream(stack, **hello_fields):
    async with stack.http.ws_connect(stack.url + "/ws/logs") as ws:
        await ws.send_json(hello(**hello_fields))
        assert await receive(ws) == {"type": "ready"}
        yield ws


async def test_entries_published_together_go_out_as_one_frame_serialised_once(stack):
    async with stream(stack) as one, stream(stack) as two:
        burst = [webstack.make_entry(20_000_000 + n) for n in range(5)]
        for entry in burst:
            stack.hub.publish(entry)
        frames = [await receive(one), await receive(two)]
        assert [m["type"] for m in frames] == ["entries", "entries"]
        assert [[e["id"] for e in m["entries"]] for m in frames] == [[e.id for e in burst]] * 2
        assert frames[0]["entries"][0] == {**burst[0].to_dict(), "id": burst[0].id}
        # Both subscribers got the very same bytes: the batch was serialised once.
        cache = stack.app[websocket.FRAMES]
        assert cache.message(burst) is cache.message(list(burst))
        lone = webstack.make_entry(20_000_100)
        stack.hub.publish(lone)
        assert await receive(one) == {"type": "entry", **lone.to_dict()}


async def test_backlog_then_live_then_reconnect_without_gap_or_duplicate(stack):
    first = [await webstack.add_entry(stack.db, stack.hub) for _ in range(5)]
    async with stream(stack) as ws:
        assert [e["id"] for e in await receive_entries(ws, 5)] == [e.id for e in first]
        live = [await webstack.add_entry(stack.db, stack.hub) for _ in range(3)]
        got = await receive_entries(ws, 3)
        assert [e["id"] for e in got] == [e.id for e in live]
        assert got[0]["request"]["headers"] == {"Authorization": "Basic ****"}
        last_seen = got[-1]["id"]
    missed = [await webstack.add_entry(stack.db, stack.hub) for _ in range(4)]
    async with stream(stack, since=last_seen) as ws:
        assert [e["id"] for e in await receive_entries(ws, 4)] == [e.id for e in missed]
        newer = await webstack.add_entry(stack.db, stack.hub)
        assert [e["id"] for e in await receive_entries(ws, 1)] == [newer.id]
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)


async def test_connecting_while_entries_keep_coming_misses_and_doubles_nothing(stack):
    for _ in range(20):
        await webstack.add_entry(stack.db, stack.hub)
    writing = asyncio.Event()

    async def writer():
        for _ in range(60):
            await webstack.add_entry(stack.db, stack.hub)
            writing.set()

    task = asyncio.create_task(writer())
    await writing.wait()
    async with stream(stack, since=0) as ws:
        await task
        expected = [e.id for e in reversed(await stack.db.list_entries(limit=1000))]
        got = [e["id"] for e in await receive_entries(ws, len(expected))]
        assert got == expected
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)


async def test_the_stream_honours_sources_and_org(stack):
    async with stream(stack, token=ORG_ACME, sources=["manual"]) as ws:
        await webstack.add_entry(stack.db, stack.hub, source="scheduled")
        await webstack.add_entry(stack.db, stack.hub, source="manual", org="globex")
        await webstack.add_entry(stack.db, stack.hub, source="manual", org=None)
        wanted = await webstack.add_entry(stack.db, stack.hub, source="manual")
        assert [e["id"] for e in await receive_entries(ws, 1)] == [wanted.id]
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
    async with stream(stack, sources=[], since=wanted.id) as ws:  # an empty list: no filter
        entry = await webstack.add_entry(stack.db, stack.hub, source="admin")
        assert [e["id"] for e in await receive_entries(ws, 1)] == [entry.id]
    async with stream(stack, token=ORG_ACME, since=0) as ws:  # the backlog is filtered too
        got = await receive_entries(ws, 3)
        assert {e["org_id"] for e in got} == {"acme"}
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("first", "code"), [
    (hello(token="wrong-token-xxxxxxxxxxxxx"), 4401),
    (hello(token=CONSUMER), 4401),
    (hello(token=None), 4401),
    ({"type": "subscribe", "token": ADMIN}, 4400),
    (hello(since="yesterday"), 4400),
    (hello(sources=["everything"]), 4400),
    ("not json", 4400),
])
async def test_a_bad_hello_closes_the_socket(stack, first, code):
    async with stack.http.ws_connect(stack.url + "/ws/logs") as ws:
        if isinstance(first, str):
            await ws.send_str(first)
        else:
            await ws.send_json(first)
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == code


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_huge_frame_is_closed_cleanly(stack):
    async with stack.http.ws_connect(stack.url + "/ws/logs") as ws:
        await ws.send_str("x" * 200_000)
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_foreign_origin_is_refused_before_the_upgrade(store, keyring):
    allowed = "https://ops.example.com"
    async with webstack.running(store, keyring, server={"allowed_origins": (allowed,)}) as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.http.ws_connect(s.url + "/ws/logs", origin="http://evil.example")
        assert refused.value.status == 403
        for origin in (s.url, allowed):
            async with s.http.ws_connect(s.url + "/ws/logs", origin=origin) as ws:
                await ws.send_json(hello())
                assert await receive(ws) == {"type": "ready"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_shutdown_closes_sockets_with_going_away_even_past_a_stalled_one(store, keyring):
    async with webstack.running(store, keyring) as s, stream(s) as ws:
        stalled = StalledClient(s.port)
        await stalled.connect(ADMIN)
        for i in range(1, 2001):  # fills its socket buffers: its sender is stuck in a drain
            s.hub.publish(webstack.make_entry(i, body_size=1000))
            if i % 100 == 0:
                await asyncio.sleep(0.01)
        began = time.monotonic()
        await s.runner.cleanup()
        assert time.monotonic() - began < 5
        msg = await ws.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:  # what was sent before the goodbye
            msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == WSCloseCode.GOING_AWAY
        stalled.close()


class StalledClient:
    """A WebSocket client on a raw socket with a tiny receive buffer that stops reading."""

    def __init__(self, port):
        self.port = port

    async def connect(self, token):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((
            f"GET /ws/logs HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.send(orjson.dumps(hello(token)))
        assert (await self.read_message())["type"] == "ready"

    def send(self, payload: bytes):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def read_message(self):
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        data = await self.reader.readexactly(size)
        assert first & 0x0F == 0x1, first  # text frames only
        return orjson.loads(data)

    def close(self):
        self.writer.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_stalled_client_gets_dropped_markers_and_delays_nobody(store, keyring):
    total, batch = 3000, 100
    async with webstack.running(store, keyring, server={"stream_queue_size": 200}) as s:
        stalled = StalledClient(s.port)
        await stalled.connect(ADMIN)
        async with stream(s) as fast:
            fast_ids: list[int] = []
            worst = 0.0
            for start in range(1, total + 1, batch):
                for entry_id in range(start, start + batch):
                    entry = webstack.make_entry(10_000_000 + entry_id, body_size=1000)
                    began = time.perf_counter()
                    s.hub.publish(entry)
                    worst = max(worst, time.perf_counter() - began)
                while len(fast_ids) < start + batch - 1:  # the fast reader keeps up
                    fast_ids.extend(e["id"] for e in entries_of(await receive(fast)))
            assert fast_ids == [10_000_000 + i for i in range(1, total + 1)]
            assert worst < 0.05  # microseconds in practice; a blocked publish takes seconds

        entries = dropped = 0
        while entries + dropped < total:  # now it reads: what it missed is accounted for
            message = await asyncio.wait_for(stalled.read_message(), 5)
            if message["type"] == "dropped":
                dropped += message["count"]
            else:
                entries += len(entries_of(message))
        stalled.close()
        assert dropped > 0 and entries > 0
        assert entries + dropped == total
        assert s.stats.registry.get_sample_value("tokend_stream_dropped_entries_total") == dropped


# -- `tokend logs` -------------------------------------------------------------------------
async def wait_for_text(out, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while text not in out.getvalue():
        assert time.monotonic() < deadline, out.getvalue()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_logs_client_prints_history_then_follows(stack):
    first = await webstack.add_entry(stack.db, stack.hub, account_id="acct-a")
    await webstack.add_entry(stack.db, stack.hub, source="manual", account_id="acct-b",
                             error=vocabulary.error("invalid_grant", "revoked"))
    out = io.StringIO()
    await logclient.follow(stack.url, ADMIN, follow=False, out=out)
    text = out.getvalue()
    assert text.index("acct-a") < text.index("acct-b")
    assert "[SCHEDULED]" in text and "[MANUAL]" in text and "\033[" not in text
    assert "=== HTTP REQUEST ===" in text and "=== HTTP RESPONSE ===" in text
    assert "ERROR invalid_grant: revoked" in text

    out = io.StringIO()
    await logclient.follow(stack.url, ADMIN, since=first.id, sources=["manual"],
                           follow=False, json_lines=True, out=out)
    assert [orjson.loads(line)["account_id"] for line in out.getvalue().splitlines()] == [
        "acct-b"]

    out = io.StringIO()
    task = asyncio.create_task(logclient.follow(stack.url, ADMIN, account_id="acct-c", out=out))
    try:
        await asyncio.sleep(0.3)
        await webstack.add_entry(stack.db, stack.hub, account_id="acct-d")
        await webstack.add_entry(stack.db, stack.hub, account_id="acct-c")
        await wait_for_text(out, "acct-c")
        assert "acct-d" not in out.getvalue() and "acct-a" not in out.getvalue()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_logs_client_follows_entries_frames(stack):
    out = io.StringIO()
    task = asyncio.create_task(logclient.follow(stack.url, ADMIN, json_lines=True, out=out))
    try:
        await asyncio.sleep(0.3)
        burst = [webstack.make_entry(30_000_000 + n) for n in range(4)]
        for entry in burst:  # published together: one `entries` frame
            stack.hub.publish(entry)
        await wait_for_text(out, str(burst[-1].id))
        ids = [orjson.loads(line)["id"] for line in out.getvalue().splitlines()]
        assert ids[-4:] == [e.id for e in burst]
        assert all("type" not in orjson.loads(line) for line in out.getvalue().splitlines())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("follow", [False, True])
async def test_the_logs_client_reports_a_refused_token(stack, follow):
    with pytest.raises(logclient.LogsError):
        await asyncio.wait_for(logclient.follow(stack.url, "wrong-token-xxxxxxxxxxxx",
                                                follow=follow, out=io.StringIO()), 5)


async def test_the_logs_client_renders_colour_on_a_tty():
    entry = {"id": 1, "created_at": "2024-05-01T12:00:00+00:00", "action": "token_refreshed",
             "source": "scheduled", "account_id": "acct-1", "response": {"status": 400}}
    coloured = logclient.render(entry, color=True)
    assert "\033[32;1m[SCHEDULED]\033[0m" in coloured
    assert "\033[31mHTTP 400\033[0m" in coloured
    assert "\033[" not in logclient.render(entry, color=False)
