"""Generated requests against the real aiohttp app on a real socket: every route, odd ids,
odd queries and bodies, bad credentials. Never a 5xx; every 4xx is `{"error": ...}` JSON.
The log stream gets the same treatment for its hello and its frames."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import signal
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import hostile
import kit
import orjson
import proc
import pytest
import webstack
from aiohttp import WSCloseCode, WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tokend import crypto, vocabulary
from tokend.testing import simulator
from tokend.web import errors, websocket

pytestmark = pytest.mark.timeout(60)

ACCOUNTS = {"acct-1": "acme", "acct-2": "acme", "other-1": "globex"}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
_PARAM = re.compile(r"\{([^}]+)\}")


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring, notifications=True) as s:
        for account_id, org in ACCOUNTS.items():
            await webstack.add_account(store, keyring, account_id, org)
        for n in range(5):
            await webstack.add_entry(store, account_id="acct-1" if n % 2 else "other-1",
                                     org="acme" if n % 2 else "globex")
        yield s


def routes(stack: webstack.Stack) -> list[str]:
    """Every path the app serves, as templates: new routes get fuzzed without a change here."""
    out = []
    for resource in stack.app.router.resources():
        info = resource.get_info()
        out.append(info.get("formatter") or info.get("path") or resource.canonical)
    return sorted(set(out))


odd_ids = st.one_of(
    st.sampled_from([*ACCOUNTS, "missing", "", ".", "..", "%", "%00", "%2F", "a/b", "a%2Fb",
                     "x" * 300, "x" * 5000, "🙂", "null", "0", "-1", "'; DROP TABLE accounts;--",
                     "\x00", "\ud7ff", "terminal.js", "terminal.css", "../sql"]),
    st.text(max_size=40),
)
query_keys = st.sampled_from(["source", "action", "account_id", "limit", "before_id",
                              "after_id", "min_valid_seconds", "debug", "since", "token"]) | \
    st.text(min_size=1, max_size=10)
query_values = st.one_of(
    st.sampled_from(["", "0", "-1", "1", "1000", "1001", "99999999999999999999999", "1e3",
                     "abc", "scheduled", "scheduled,manual", "scheduled,,", "bogus",
                     "token_refreshed", "Token Refreshed", *ACCOUNTS, "\x00", "🙂"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=30),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["debug", "token", "id"]) | st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
bodies = st.one_of(
    st.none(),
    st.just(b""),
    st.sampled_from([b'{"debug": true}', b'{"debug": false}', b'{"debug": "yes"}',
                     b'{"debug": 1}', b"[]", b"null", b"{", b'{"debug": true, "x": 1}',
                     b"\xff\xfe\x00", b"debug=true"]),
    json_values.map(lambda v: json.dumps(v).encode()),  # big ints too
    st.binary(max_size=200),
    st.sampled_from([70_000, 200_000]).map(lambda n: b'{"debug": "' + b"x" * n + b'"}'),
)
content_types = st.sampled_from([None, "application/json", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data",
                                 "application/json; charset=latin-1"])
printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                    max_size=60)
authorizations = st.one_of(
    st.none(),
    st.sampled_from(["admin", "org", "consumer", "consumer-org"]),
    st.sampled_from(["", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Token x",
                     "Bearer null", "Bearer undefined", f"Bearer {webstack.ADMIN}x",
                     f"Bearer {webstack.ADMIN[:-1]}", f"bearer {webstack.ADMIN.upper()}",
                     f"Basic {webstack.ADMIN}", f"Bearer  {webstack.ORG_ACME} extra"]),
    printable.map(lambda t: "Bearer " + t),
    printable,
)
TOKENS = {"admin": webstack.ADMIN, "org": webstack.ORG_ACME, "consumer": webstack.CONSUMER,
          "consumer-org": webstack.CONSUMER_ACME}


def _beyond_int64(key: str, value: str) -> bool:
    """Entry ids past 64 bits have a test of their own (below); the fuzz looks elsewhere."""
    try:
        return key in ("before_id", "after_id") and abs(int(value)) >= 2**63
    except ValueError:
        return False


@st.composite
def requests(draw: st.DrawFn, templates: list[str]) -> dict[str, Any]:
    template = draw(st.sampled_from([*templates, "/api", "/api/accounts/", "/api/logs/",
                                     "/nope", "/ws", "//api/accounts", "/api/accounts/{id}",
                                     "/api/accounts/{id}/refresh/extra"]))

    def fill(match: re.Match[str]) -> str:
        return urllib.parse.quote(draw(odd_ids), safe=draw(st.sampled_from(["", "/", ".%"])))

    path = _PARAM.sub(fill, template)
    query = [(k, v) for k, v in draw(st.lists(st.tuples(query_keys, query_values), max_size=4))
             if not _beyond_int64(k, v)]
    auth = draw(authorizations)
    headers = {}
    if auth is not None:
        headers["Authorization"] = f"Bearer {TOKENS[auth]}" if auth in TOKENS else auth
    content_type = draw(content_types)
    if content_type:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Origin"] = draw(st.sampled_from(["http://evil.example", "null", ""]))
    return {
        "method": draw(st.sampled_from(["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH",
                                        "HEAD", "OPTIONS"])),
        "path": path, "query": query, "headers": headers, "body": draw(bodies),
    }


async def send(stack: webstack.Stack, request: dict[str, Any]) -> tuple[int, str, bytes]:
    query = urllib.parse.urlencode(request["query"])
    url = URL(stack.url + request["path"] + (f"?{query}" if query else ""), encoded=True)
    async with stack.http.request(
            request["method"], url, headers=request["headers"], data=request["body"],
            allow_redirects=False, timeout=aiohttp.ClientTimeout(total=20)) as response:
        return response.status, response.content_type, await response.read()


# A browser lands on these (connect links, the provider's way back): a refusal is a page.
BROWSER_PAGES = ("/connect/", "/oauth/callback")


def check(request: dict[str, Any], status: int, content_type: str, body: bytes) -> None:
    assert status < 500, (request, status, body[:500])
    if (status >= 400 and request["method"] == "GET"
            and request["path"].startswith(BROWSER_PAGES)):
        assert content_type == "text/html", (request, status, content_type)
        assert b"<script" not in body
        return
    if status >= 400 and request["method"] != "HEAD":
        assert content_type == "application/json", (request, status, content_type, body[:200])
        payload = orjson.loads(body)
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
        assert "Traceback" not in payload["error"]


@FUZZ
@given(data=st.data())
async def test_generated_requests_never_get_a_5xx_and_errors_are_json(stack, data) -> None:
    templates = routes(stack)
    assert "/api/accounts/{id}/refresh" in templates  # the route table was read
    request = data.draw(requests(templates), label="request")
    check(request, *await send(stack, request))


async def test_every_route_refuses_oversized_and_malformed_bodies_with_json(stack) -> None:
    templates = [_PARAM.sub("acct-1", t) for t in routes(stack)]
    for path in templates:
        for method in ("GET", "POST", "PUT"):
            for body in (b"{" * 100_000, b"\x00\xff" * 10, b'{"debug": true}'):
                for auth in (webstack.ADMIN, webstack.CONSUMER, "wrong"):
                    request = {"method": method, "path": path, "query": [], "body": body,
                               "headers": {"Authorization": f"Bearer {auth}",
                                           "Content-Type": "application/json"}}
                    check(request, *await send(stack, request))


ODD_IDS = [*ACCOUNTS, "missing", ".", "..", "%", "\x00", "a\x00b", "a/b", "x" * 5000, "🙂",
           "\ud7ff", "'; DROP TABLE accounts;--", " ", "\n", "terminal.js"]
ODD_QUERIES = [[], [("account_id", "\x00")], [("account_id", "x" * 201)], [("limit", "0")],
               [("limit", str(2**70))], [("before_id", str(2**63 - 1))], [("after_id", "-1")],
               [("source", "\x00")], [("action", "\x00")], [("min_valid_seconds", "3601")],
               [("min_valid_seconds", str(2**64))], [("since", "1")]]


async def test_odd_ids_and_queries_on_every_route_with_every_token(stack) -> None:
    """The corners the generator may or may not reach, every time: NUL bytes (which
    PostgreSQL refuses in text), huge numbers, ids with slashes, every principal."""
    failures = []
    for template in routes(stack):
        ids = ODD_IDS if _PARAM.search(template) else [""]
        for account_id in ids:
            path = _PARAM.sub(urllib.parse.quote(account_id, safe=""), template)
            for query in ODD_QUERIES:
                for token in (*TOKENS.values(), "wrong"):
                    request = {"method": "POST" if path.endswith("/refresh") else "GET",
                               "path": path, "query": query, "body": None,
                               "headers": {"Authorization": f"Bearer {token}"}}
                    if template == "/ws/logs":
                        continue  # the upgrade is tested below
                    try:
                        check(request, *await send(stack, request))
                    except AssertionError as exc:
                        failures.append(str(exc)[:300])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("param", ["before_id", "after_id"])
async def test_entry_ids_beyond_64_bits_are_a_400(stack, param) -> None:
    for value in (str(2**63), str(2**70), "9" * 40):
        status, body = await stack.get_json(f"/api/logs?{param}={value}")
        assert status == 400, (param, value, status, body)
        assert isinstance(body["error"], str)


# -- bytes no well-behaved client sends ------------------------------------------------


def _path(template: str) -> str:
    return template.replace("{id}", "acct-1").replace("{name}", webstack.PROVIDER) \
        .replace("{token}", "x")


async def _raw(stack: webstack.Stack, method: str, path: str,
               headers: list[tuple[bytes, bytes]], body: bytes | None = None) -> hostile.Answer:
    return await hostile.exchange("127.0.0.1", stack.port,
                                  hostile.message(method, path, headers, body))


def _malformed_count(stack: webstack.Stack) -> float:
    return stack.stats.registry.get_sample_value("tokend_http_malformed_requests_total") or 0


def _json_error(answer: hostile.Answer) -> str:
    assert answer.content_type == "application/json", answer
    return orjson.loads(answer.body)["error"]


async def test_authorization_bytes_that_are_not_utf8_are_a_401_on_every_bearer_route(stack):
    """aiohttp keeps such bytes as surrogates, which the token comparison cannot encode."""
    for method, template in hostile.ROUTES:
        if not template.startswith("/api/") or template == "/api/vocabulary":
            continue
        for value in hostile.NON_UTF8:
            answer = await _raw(stack, method, _path(template),
                                [(b"Authorization", b"Bearer " + value)],
                                b"{}" if method == "POST" else None)
            assert answer.status == 401, (method, template, value, answer)
            assert _json_error(answer) == "missing or invalid bearer token"


async def test_a_body_that_contradicts_its_content_encoding_is_a_400_never_a_stack(
        stack, caplog):
    """Routes that read the body answer 400; the others answer as usual, and the body they
    never read is counted, not logged as an unhandled exception."""
    caplog.set_level(logging.ERROR)
    before = _malformed_count(stack)
    readers = {"/api/accounts/{id}/refresh", "/api/connect-links", "/ebay/notifications"}
    for method, template in hostile.ROUTES:
        for encoding in (b"gzip", b"deflate"):
            answer = await _raw(stack, method, _path(template), [
                (b"Authorization", b"Bearer " + webstack.ADMIN.encode()),
                (b"Content-Type", b"application/json"), (b"Content-Encoding", encoding)],
                b'{"debug": true}')
            assert 0 < answer.status < 500, (method, template, answer)
            if method == "POST" and template in readers:
                assert answer.status == 400, (template, answer)
                assert _json_error(answer) == "malformed request body"
    await asyncio.sleep(0.2)  # the lingering reads of unread bodies end after the answers
    assert _malformed_count(stack) > before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]


async def test_malformed_messages_are_counted_not_logged_as_errors(stack, caplog):
    caplog.set_level(logging.DEBUG)
    before = _malformed_count(stack)
    for _ in range(3):
        for raw in hostile.MALFORMED:
            answer = await hostile.exchange("127.0.0.1", stack.port, raw)
            assert answer.status in (0, 400), (raw, answer)
    assert _malformed_count(stack) - before >= 2 * len(hostile.MALFORMED)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]


async def test_nul_in_link_fields_cursors_and_filters_is_a_400(stack):
    """PostgreSQL refuses NUL in text; SQLite would store it. Both answer 400."""
    for body in ({"provider": webstack.PROVIDER, "org": "a\x00b"},
                 {"provider": webstack.PROVIDER, "org": "acme", "scopes": ["a\x00"]},
                 {"provider": webstack.PROVIDER, "org": "acme", "account_id": "\x00"}):
        async with stack.http.post(stack.url + "/api/connect-links", json=body,
                                   headers=stack.auth()) as response:
            assert response.status == 400, (body, await response.text())
            assert "error" in await response.json()
    for raw in (["name", False, "a\x00b", "x"], ["name", False, "a", "acct\x00"]):
        cursor = base64.urlsafe_b64encode(orjson.dumps(raw)).decode().rstrip("=")
        status, body = await stack.get_json(f"/api/accounts?cursor={cursor}")
        assert status == 400 and "cursor" in body["error"], body
    for query in ("q=%00", "org=a%00", "provider=%00", "cursor=%00"):
        status, body = await stack.get_json(f"/api/accounts?{query}")
        assert status == 400 and "NUL" in body["error"], (query, body)
    status, body = await stack.get_json("/api/accounts/a%00b/attempts")
    assert status == 400, body


# -- the log stream -------------------------------------------------------------------------

hello_tokens = st.one_of(
    st.sampled_from(["admin", "org", "consumer", "consumer-org"]).map(TOKENS.get),
    st.none(), st.integers(), st.just(""), printable,
    st.lists(st.text(max_size=5), max_size=2),
)
hellos = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("hello"), "token": hello_tokens},
        optional={
            # past 64 bits: test_a_since_beyond_64_bits_is_a_bad_hello_not_an_internal_error
            "since": st.none() | st.integers(-5, 2**63 - 1) | st.text(max_size=5) | st.booleans()
            | st.floats(allow_nan=False),
            "sources": st.none() | st.lists(st.sampled_from(
                ["scheduled", "manual", "debug", "admin", "vend", "bogus"]), max_size=4)
            | st.text(max_size=5) | st.integers(),
            "account_id": st.none() | st.sampled_from([*ACCOUNTS, "missing", "a\x00b"])
            | st.text(max_size=8) | st.integers() | st.lists(st.text(max_size=3), max_size=2),
            "extra": json_values,
        }),
    json_values,
    st.dictionaries(st.sampled_from(["type", "token", "since"]), json_values, max_size=3),
)
raw_hellos = st.one_of(
    hellos.map(lambda h: ("text", json.dumps(h))),
    hellos.map(lambda h: ("binary", json.dumps(h).encode())),
    st.text(max_size=50).map(lambda t: ("text", t)),
    st.binary(max_size=50).map(lambda b: ("binary", b)),
)


def expected_close(raw: str | bytes) -> int | None:
    """What the hello deserves: None (ready), 4400 (malformed) or 4401 (bad token)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return vocabulary.CLOSE_BAD_HELLO
    if not isinstance(data, dict) or data.get("type") != "hello":
        return vocabulary.CLOSE_BAD_HELLO
    if data.get("token") not in (webstack.ADMIN, webstack.ORG_ACME):
        return vocabulary.CLOSE_UNAUTHORIZED
    since = data.get("since")
    if since is not None and (type(since) is not int or since < 0):
        return vocabulary.CLOSE_BAD_HELLO
    sources = data.get("sources")
    if sources is not None and (not isinstance(sources, list) or any(
            s not in ("scheduled", "manual", "debug", "admin", "vend") for s in sources)):
        return vocabulary.CLOSE_BAD_HELLO
    account_id = data.get("account_id")
    if account_id is not None and not isinstance(account_id, str):
        return vocabulary.CLOSE_BAD_HELLO
    return None


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=raw_hellos)
async def test_generated_hellos_get_ready_or_a_clean_close(stack, raw) -> None:
    kind, data = raw
    async with stack.http.ws_connect(stack.url + "/ws/logs") as ws:
        if kind == "text":
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)
        msg = await ws.receive(timeout=10)
        code = expected_close(data)
        if code is None:
            assert msg.type == WSMsgType.TEXT, (raw, msg)
            assert orjson.loads(msg.data) == {"type": "ready"}
        else:
            assert msg.type == WSMsgType.CLOSE, (raw, msg)
            assert ws.close_code == code, (raw, ws.close_code, msg.extra)


async def test_a_since_beyond_64_bits_is_a_bad_hello_not_an_internal_error(stack) -> None:
    async with stack.http.ws_connect(stack.url + "/ws/logs") as ws:
        await ws.send_str(json.dumps({"type": "hello", "token": webstack.ADMIN,
                                      "since": 2**63}))
        msg = await ws.receive(timeout=5)
        while msg.type == WSMsgType.TEXT:
            msg = await ws.receive(timeout=5)
        assert ws.close_code == vocabulary.CLOSE_BAD_HELLO, ws.close_code


async def _ready(stack: webstack.Stack) -> aiohttp.ClientWebSocketResponse:
    ws = await stack.http.ws_connect(stack.url + "/ws/logs")
    await ws.send_json({"type": "hello", "token": webstack.ADMIN, "since": None})
    assert orjson.loads((await ws.receive(timeout=5)).data) == {"type": "ready"}
    return ws


async def _drain_until_close(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    msg = await ws.receive(timeout=5)
    while msg.type == WSMsgType.TEXT:  # the backlog
        msg = await ws.receive(timeout=5)
    return msg


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_frame_over_the_limit_after_the_hello_closes_cleanly(stack) -> None:
    ws = await _ready(stack)
    await ws.send_str("x" * (websocket.MAX_MESSAGE_BYTES + 1))
    msg = await _drain_until_close(ws)
    assert msg.type == WSMsgType.CLOSE
    assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG
    await ws.close()
    # The server is still serving everyone else.
    status, _ = await stack.get_json("/api/accounts")
    assert status == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_chatter_after_the_hello_is_ignored_and_the_stream_goes_on(stack) -> None:
    ws = await _ready(stack)
    for frame in ("not json", '{"type": "hello", "token": "x"}', "{" * 1000):
        await ws.send_str(frame)
    await ws.send_bytes(b"\x00\xff" * 100)
    await ws.ping(b"are you there")
    msgs = []
    while len(msgs) < 5:  # the backlog: five entries
        msgs.append(orjson.loads((await ws.receive(timeout=5)).data))
    entry = await webstack.add_entry(stack.db, stack.hub, account_id="acct-2")
    live = orjson.loads((await ws.receive(timeout=5)).data)
    assert live["type"] == "entry" and live["id"] == entry.id
    await ws.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_silent_client_is_closed_after_the_hello_timeout(stack, monkeypatch) -> None:
    monkeypatch.setattr(websocket, "HELLO_TIMEOUT_SECONDS", 0.3)
    async with stack.http.ws_connect(stack.url + "/ws/logs") as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE
        assert ws.close_code == vocabulary.CLOSE_HELLO_TIMEOUT


# -- a real daemon under hostile traffic -------------------------------------------------

ROGUE_HELLOS = ['{"type": "hello", "token": "\\u00e9"}', '{"type": "hello", "token": null}',
                "x" * 70_000, '{"type": "hello", "token": "' + "x" * 5000 + '"}', "\x00",
                '{"type": "hello", "token": ["a"]}', '{"type": "hello"}']


def test_the_hostile_routes_cover_every_route_of_the_app(stack) -> None:
    served = {(route.method, route.resource.canonical) for route in stack.app.router.routes()
              if route.method != "HEAD" and route.name != errors.UNROUTED}
    templates = {(m, hostile_route(t)) for m, t in served}
    assert templates <= set(hostile.ROUTES), templates - set(hostile.ROUTES)


def hostile_route(canonical: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", canonical)


def parser_refusal(answer: hostile.Answer) -> bool:
    """aiohttp's own plain 400 for a message its parser refuses (an encoding it cannot
    decode, a broken header): no route ever saw the request."""
    return answer.status == 400 and answer.content_type == "text/plain"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def fuzz_config(tmp_path: Path, db_url: str, key_line: str,
                sim: simulator.Simulator) -> Path:
    return proc.write_config(tmp_path / "tokend.toml", {
        "database": {"url": db_url},
        "refresh": {"interval_seconds": 5, "request_timeout_seconds": 5},
        "crypto": {"keys": [key_line]},
        "server": {"host": "127.0.0.1", "port": 0, "admin_token": webstack.ADMIN,
                   "consumer_token": webstack.CONSUMER, "public_url": "http://127.0.0.1:1"},
        "server.org_tokens": {"acme": webstack.ORG_ACME},
        "server.consumer_org_tokens": {"acme": webstack.CONSUMER_ACME},
        f"providers.{webstack.PROVIDER}": {
            "type": "ebay", "environment": "sandbox", "token_url": sim.token_url,
            "identity_url": sim.identity_url, "authorize_url": sim.authorize_url,
            "client_id": simulator.DEFAULT_CLIENT_ID,
            "client_secret": simulator.DEFAULT_CLIENT_SECRET},
        "ebay_notifications": {"verification_token": webstack.VERIFICATION_TOKEN,
                               "endpoint": webstack.ENDPOINT, "provider": webstack.PROVIDER,
                               "public_key_url": sim.public_key_url},
    })


# Longer runs measure memory (the RSS figures are printed):
# TOKEND_FUZZ_SECONDS=400 TOKEND_FUZZ_REQUESTS=50000 ./scripts/test tests/test_api_fuzz.py \
#     -k real_daemon -s
FUZZ_SECONDS = float(os.environ.get("TOKEND_FUZZ_SECONDS", "30"))
FUZZ_REQUESTS = int(os.environ.get("TOKEND_FUZZ_REQUESTS", "1000000"))
FUZZ_SEED = int(os.environ.get("TOKEND_FUZZ_SEED", "20261205"))


@pytest.mark.timeout(FUZZ_SECONDS + 60)
async def test_a_real_daemon_under_seeded_hostile_traffic(tmp_path, pg_url, key_lines) -> None:
    """`tokend run` on PostgreSQL against a seeded stream of malformed, oversized and
    unauthorised requests over every route, the stream included, for FUZZ_SECONDS: never a
    5xx, every refusal JSON (but aiohttp's own plain 400 for what its parser refuses), no
    secret in any answer or log line, no error-level line for what clients send, and the
    refusals counted. RSS is printed as the run goes; the memory check is a longer run."""
    async with simulator.Simulator() as sim:
        config_path = fuzz_config(tmp_path, pg_url, key_lines[0], sim)
        keyring = crypto.Keyring.from_lines(key_lines[:1])
        tokens = await kit.seed(pg_url, keyring, 4)
        daemon = proc.Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            port = int(url.rsplit(":", 1)[1])
            secrets_ = [webstack.ADMIN, webstack.ORG_ACME, webstack.CONSUMER,
                        webstack.CONSUMER_ACME, simulator.DEFAULT_CLIENT_SECRET,
                        webstack.VERIFICATION_TOKEN, key_lines[0].split(":", 1)[1],
                        *tokens.values()]
            draws = iter(hostile.Generator(FUZZ_SEED, {
                "admin": webstack.ADMIN, "org": webstack.ORG_ACME,
                "consumer": webstack.CONSUMER, "wrong": "wrong-token"},
                [*tokens, "missing"], webstack.PROVIDER))
            failures: list[str] = []
            counts = {"request": 0, "malformed": 0, "ws": 0}
            rss: list[tuple[int, float]] = [(0, rss_mib(daemon.proc.pid))]
            deadline = asyncio.get_running_loop().time() + FUZZ_SECONDS
            sent = 0

            def judge(kind: str, raw: bytes, answer: hostile.Answer) -> None:
                text = answer.body.decode(errors="replace") + repr(answer.headers)
                for secret in secrets_:
                    if secret in text:
                        failures.append(f"secret in answer to {raw[:200]!r}")
                if answer.status == -1:
                    failures.append(f"no answer within 10 s to {raw[:300]!r}")
                elif answer.status >= 500 or (kind == "request" and answer.status == 0):
                    failures.append(f"{answer.status} for {raw[:300]!r}: {answer.body[:200]!r}")
                elif (kind == "request" and answer.status >= 400 and not parser_refusal(answer)
                      and not raw.startswith((b"HEAD", b"GET /connect/", b"GET /oauth/"))):
                    try:
                        payload = orjson.loads(answer.body)
                        assert isinstance(payload["error"], str)
                    except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
                        failures.append(f"not a JSON error: {answer.status} "
                                        f"{answer.content_type} for {raw[:200]!r}")

            async def worker() -> None:
                nonlocal sent
                async with aiohttp.ClientSession() as http:
                    while sent < FUZZ_REQUESTS and asyncio.get_running_loop().time() < deadline:
                        sent += 1
                        if sent % 50 == 0:
                            counts["ws"] += 1
                            hello = ROGUE_HELLOS[sent // 50 % len(ROGUE_HELLOS)]
                            async with http.ws_connect(url + "/ws/logs") as ws:
                                await ws.send_str(hello)
                                msg = await ws.receive(timeout=10)
                                if msg.type != WSMsgType.CLOSE or ws.close_code not in (
                                        4400, 4401, WSCloseCode.MESSAGE_TOO_BIG):
                                    failures.append(f"hello {hello[:50]!r}: {msg}")
                            continue
                        kind, raw = next(draws)
                        counts[kind] += 1
                        judge(kind, raw, await hostile.exchange("127.0.0.1", port, raw))
                        if sent % 1000 == 0:
                            rss.append((sent, rss_mib(daemon.proc.pid)))

            await asyncio.gather(*(worker() for _ in range(6)))
            rss.append((sent, rss_mib(daemon.proc.pid)))
            _, body = await webstack_get(url, "/metrics")
            assert daemon.proc.poll() is None, "the daemon died"
        finally:
            daemon.signal(signal.SIGTERM)
            await daemon.wait()
            daemon.kill()
    log_text = daemon.log_path.read_text()
    events = daemon.events()
    errors = [e for e in events if e.get("level") in ("error", "critical", "exception")]
    print(f"seed {FUZZ_SEED}: {counts}, RSS MiB by requests sent: {rss}, "
          f"log lines {len(events)}, errors {len(errors)}")
    assert not failures, "\n".join(failures[:30])
    for secret in secrets_:
        assert secret not in log_text, "a secret leaked into the log"
    assert not errors, errors[:5]
    assert len(events) < 200 + FUZZ_SECONDS * 10, "the log grows with hostile requests"
    refused = re.search(r'^tokend_http_malformed_requests_total (\S+)$', body, re.M)
    assert refused and float(refused.group(1)) > 0, "malformed requests are not counted"


async def webstack_get(url: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url + path) as response:
        return response.status, await response.text()
