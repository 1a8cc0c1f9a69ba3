"""`/openapi.json` is the contract: it names exactly the routes the router serves, it is a
valid OpenAPI 3.1 document, and a real `tokend run` on PostgreSQL answers every operation
the way it says (schemathesis, bounded)."""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.parse
from pathlib import Path

import aiohttp
import orjson
import pytest
import webstack
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from proc import ADMIN_TOKEN, Daemon, write_config

from tokend import connect, store
from tokend.testing import simulator
from tokend.web import app, errors, openapi

# aiohttp answers HEAD for every GET by itself; the document describes the GET.
IMPLIED = "HEAD"
_PATTERN = re.compile(r"\{(\w+):[^}]*\}")  # `{token:[\s\S]*}` -> `{token}`


def registered(web_app) -> set[tuple[str, str]]:
    out = set()
    for route in web_app.router.routes():
        if route.method == IMPLIED or route.name == errors.UNROUTED:
            continue  # the last route answers 404 and 405 for paths no other route has
        info = route.resource.get_info()
        path = info.get("formatter") or info.get("path") or info.get("prefix")
        out.add((route.method.lower(), _PATTERN.sub(r"{\1}", path)))
    return out


def documented(document) -> set[tuple[str, str]]:
    return {(method, path) for path, operations in document["paths"].items()
            for method in operations}


async def test_every_route_is_documented_and_every_documented_route_exists(
        sqlite_url, keyring) -> None:
    async with store.open(sqlite_url) as db, webstack.running(db, keyring) as s:
        served = registered(s.app)
    described = documented(openapi.document())
    assert not served - described, f"registered, not documented: {served - described}"
    assert not described - served, f"documented, not registered: {described - served}"
    assert len(served) >= 31


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi.document())


def test_every_operation_says_its_auth_and_every_json_error_has_the_one_shape() -> None:
    document = openapi.document()
    assert app.MAX_BODY_BYTES == 64 * 1024, "the document says 64 KiB"
    schemes = set(document["components"]["securitySchemes"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert "security" in operation, where
            used = {name for requirement in operation["security"] for name in requirement}
            assert used <= schemes, where
            if used:
                assert "401" in operation["responses"], where
            for status, answer in operation["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if int(status) >= 400 and schema is not None:
                    assert schema == {"$ref": "#/components/schemas/Error"}, (where, status)


async def test_the_document_is_served_without_a_token(store, keyring) -> None:
    async with webstack.running(store, keyring) as s:
        status, body = await s.get_json("/openapi.json", token=None)
    assert status == 200
    assert body == openapi.document()



def conforms(document: dict, name: str, message: dict) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    OAS31Validator(schema).validate(message)


async def test_the_log_stream_says_what_the_document_describes(store, keyring) -> None:
    """OpenAPI has no words for WebSocket frames: the document names them in `x-websocket`,
    and the frames a real stream sends match those schemas."""
    document = openapi.document()
    described = document["paths"]["/ws/logs"]["get"]["x-websocket"]
    frame_schema = {"ready": "StreamReady", "entry": "StreamEntry", "entries": "StreamEntries",
                    "dropped": "StreamDropped"}
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in described["server_messages"]} == set(
        frame_schema.values())
    hello = {"type": "hello", "token": webstack.ADMIN, "since": None, "sources": []}
    conforms(document, "StreamHello", hello)
    async with webstack.running(store, keyring, server={"stream_queue_size": 4}) as s:
        await webstack.add_entry(store)
        async with s.http.ws_connect(s.url + "/ws/logs") as ws:
            await ws.send_json(hello)
            seen = [await ws.receive_json(timeout=10), await ws.receive_json(timeout=10)]
            for n in range(40):  # more than the queue holds: some are dropped
                s.hub.publish(webstack.make_entry(30_000_000 + n))
            async with asyncio.timeout(10):
                while "dropped" not in {m["type"] for m in seen}:
                    seen.append(await ws.receive_json())
        for message in seen:
            conforms(document, frame_schema[message["type"]], message)
        assert [m["type"] for m in seen[:2]] == ["ready", "entry"]
        async with s.http.ws_connect(s.url + "/ws/logs") as ws:
            await ws.send_json({**hello, "token": "not-the-token-0123456789"})
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == described["close_codes"]["unauthorized"]


# -- schemathesis against `tokend run` ----------------------------------------------------

CONSUMER_TOKEN = "consumer-token-for-tests-0123456789"
SEED = 20_261_205
MAX_EXAMPLES = 25


def _daemon_config(tmp_path: Path, *, db_url: str, key_line: str,
                   sim: simulator.Simulator) -> Path:
    return write_config(tmp_path / "tokend.toml", {
        "database": {"url": db_url},
        "refresh": {"interval_seconds": 5, "request_timeout_seconds": 5, "lease_seconds": 30,
                    "shutdown_grace_seconds": 5},
        "crypto": {"keys": [key_line]},
        "server": {"host": "127.0.0.1", "port": 0, "admin_token": ADMIN_TOKEN,
                   "consumer_token": CONSUMER_TOKEN,
                   "public_url": "https://tokens.example.com"},
        "providers.ebay-sandbox": {
            "type": "ebay", "environment": "sandbox", "token_url": sim.token_url,
            "authorize_url": sim.authorize_url, "identity_url": sim.identity_url,
            "redirect_uri": "tokend-runame", "client_id": simulator.DEFAULT_CLIENT_ID,
            "client_secret": simulator.DEFAULT_CLIENT_SECRET},
        "ebay_notifications": {"verification_token": webstack.VERIFICATION_TOKEN,
                               "endpoint": webstack.ENDPOINT, "provider": webstack.PROVIDER,
                               "public_key_url": sim.public_key_url},
    })


@pytest.mark.timeout(150)
async def test_schemathesis_finds_nothing_against_tokend_run_on_postgresql(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    """Every operation, authenticated with the admin token (and the consumer token where it
    vends): no 5xx, every status, content type, header and body is one the document names,
    a route that asks for a token refuses a request without one, and a method the document
    does not name is a 405."""
    async with store.open(pg_url) as db:
        for account_id, org in (("acct-1", "acme"), ("acct-2", "globex")):
            await webstack.add_account(db, keyring, account_id, org)
    async with simulator.Simulator() as sim:
        daemon = Daemon(_daemon_config(tmp_path, db_url=pg_url, key_line=key_lines[0],
                                       sim=sim), tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            # A real link, so one visit reaches the redirect and the next ones the 410.
            async with aiohttp.ClientSession() as http, http.post(
                    f"{url}/api/connect-links", json={"provider": webstack.PROVIDER,
                                                      "org": "acme"},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
                assert response.status == 201
                link = (await response.json())["url"]
            (tmp_path / "schemathesis.toml").write_text(
                f'[auth.openapi.adminBearer]\nbearer = "{ADMIN_TOKEN}"\n'
                f'[auth.openapi.consumerBearer]\nbearer = "{CONSUMER_TOKEN}"\n'
                f'[[operations]]\ninclude-path = "/connect/{{token}}"\n'
                f'parameters = {{ token = "{link.rsplit("/", 1)[1]}" }}\n')
            run = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "schemathesis.cli",
                "--config-file", str(tmp_path / "schemathesis.toml"), "--no-color",
                "run", f"{url}/openapi.json",
                # Not the data-acceptance checks: a schema cannot say "a configured
                # provider" or "signed by eBay", so schema-valid requests are refused too.
                "--checks", "not_a_server_error,status_code_conformance,"
                            "content_type_conformance,response_schema_conformance,"
                            "response_headers_conformance,ignored_auth,unsupported_method",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
                "--workers", "2", "--request-timeout", "20", "--max-redirects", "0",
                "--generation-database", "none", "--suppress-health-check", "all",
                "--report", "har", "--report-har-path", str(tmp_path / "run.har"),
                cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                async with asyncio.timeout(120):
                    output, _ = await run.communicate()
            finally:
                if run.returncode is None:
                    run.kill()
                    await run.wait()
        finally:
            daemon.kill()
    text = output.decode(errors="replace")
    print(text)  # shown with -s or on failure: what was tested, and how often
    assert run.returncode == 0, text[-12_000:]
    assert "No issues found" in text or "passed" in text, text[-4000:]
    assert not [e for e in daemon.events() if e.get("event") == "http_request_failed"]
    reached = successes(orjson.loads((tmp_path / "run.har").read_bytes()))
    # Only eBay's signature, a provider's real sign-in and a WebSocket client get further;
    # schemathesis leaves out the document it loaded (served above, without a token).
    unreachable = {("post", "/ebay/notifications"), ("get", connect.CALLBACK_PATH),
                   ("get", "/ws/logs"), ("get", "/openapi.json"),
                   # signing needs a key, which this run does not create
                   ("post", "/api/providers/{name}/signature")}
    missed = documented(openapi.document()) - unreachable - reached
    assert not missed, f"never answered 2xx/3xx, so never really tested: {sorted(missed)}"


def successes(har: dict) -> set[tuple[str, str]]:
    """The documented operations that answered 2xx or 3xx at least once in a HAR log."""
    templates = [(re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$"),
                  path) for path in openapi.document()["paths"]]
    out = set()
    for entry in har["log"]["entries"]:
        if entry["response"]["status"] >= 400:
            continue
        path = urllib.parse.urlsplit(entry["request"]["url"]).path
        out |= {(entry["request"]["method"].lower(), template)
                for pattern, template in templates if pattern.match(path)}
    return out
