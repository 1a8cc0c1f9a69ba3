"""Secrets and tenants against a real `tokend run`: planted canaries (refresh, access and
application tokens, the client secret, every bearer token, the encryption key, eBay's
verification token) never leave the vault by any route, stream, metric, log line or
table, even when the provider echoes them back or eBay notifies; and an org token never
reaches another org's accounts, entries or stream messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import signal
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from kit import wait_until
from proc import Daemon, write_config

from tokend import clock, crypto, model, store
from tokend.testing import simulator

pytestmark = pytest.mark.timeout(60)


def canary(label: str) -> str:
    return f"CANARY-{label}-{secrets.token_hex(16)}"


ADMIN = canary("ADMIN")
ORG_ACME = canary("ORG-ACME")
ORG_GLOBEX = canary("ORG-GLOBEX")
CONSUMER = canary("CONSUMER")
CONSUMER_ACME = canary("CONSUMER-ACME")
CLIENT_SECRET = canary("CLIENT-SECRET")
VERIFICATION_TOKEN = canary("VERIFY")  # eBay's rule: 32-80 of A-Z a-z 0-9 _ -
CLIENT_ID = simulator.DEFAULT_CLIENT_ID
ACCOUNTS = {"acme-1": "acme", "acme-2": "acme", "globex-1": "globex", "globex-2": "globex"}
ADMIN_ROUTES = [("GET", "/api/accounts"), ("POST", "/api/accounts/acme-1/refresh"),
                ("GET", "/api/logs"), ("GET", "/api/logs?account_id=acme-1")]
VEND = "/api/accounts/{}/access-token"
APP_TOKEN = "/api/providers/ebay-sandbox/app-token"
REVOKED_USER = "ebayRevokedUser"  # acme-2's eBay user id


class Provider:
    """The simulator, recording every token it issues (and whose it is), and able to
    answer with everything we sent it echoed back."""

    def __init__(self, sim: simulator.Simulator, seeded: dict[str, str]) -> None:
        self.sim = sim
        self.owner = {token: account for account, token in seeded.items()}
        self.access: dict[str, set[str]] = {account: set() for account in seeded}
        self.issued: set[str] = set()
        self.echo: str | None = None
        self._grant, self._answer = sim._grant, sim._answer
        sim._grant, sim._answer = self.grant, self.answer

    def grant(self, token: str) -> web.Response:
        response = self._grant(token)
        body = orjson.loads(response.body)
        account = self.owner.get(token)
        self.issued.add(body["access_token"])
        if "refresh_token" in body:
            self.issued.add(body["refresh_token"])
            self.owner[body["refresh_token"]] = account
        if account is not None:
            self.access[account].add(body["access_token"])
        return response

    async def answer(self, request: web.Request, form: dict[str, str],
                     token: str) -> web.StreamResponse:
        if self.echo is None:
            return await self._answer(request, form, token)
        auth = request.headers.get("Authorization", "")
        client_secret = base64.b64decode(auth.partition(" ")[2]).decode().partition(":")[2]
        raw_form = urllib.parse.urlencode(form)
        headers = {"X-Echo-Token": token, "X-Echo-Authorization": auth}
        said = {"refresh_token": token, "client_secret": client_secret, "authorization": auth,
                "message": f"you sent {token} as {client_secret}"}
        if self.echo == "json500":
            return web.json_response({
                "error": "server_error", **said,
                "error_description": f"upstream rejected {raw_form} with {auth}"},
                status=500, headers=headers)
        if self.echo == "html502":
            return web.Response(status=502, content_type="text/html", headers=headers,
                                text=f"<html><pre>POST {request.path}\nAuthorization: {auth}"
                                     f"\n\n{raw_form}\n{token} {client_secret}</pre></html>")
        if self.echo == "form400":
            return web.Response(status=400, content_type="application/x-www-form-urlencoded",
                                text=f"error=invalid_request&{raw_form}&error_description="
                                     + urllib.parse.quote_plus(f"bad {token} {client_secret}"))
        if self.echo == "secret_as_code":
            return web.json_response({"error": client_secret, "error_description": token},
                                     status=400, headers=headers)
        # A success that also echoes what we sent.
        response = await self._answer(request, form, token)
        body = orjson.loads(response.body)
        return web.json_response({**body, "echo": said, "note": f"{token}/{client_secret}"},
                                 headers=headers)


def refresh_token() -> str:
    return "v^1.1#i^1#r^1#p^3#t^" + canary("REFRESH")


async def seed(pg_url: str, keyring: crypto.Keyring) -> dict[str, str]:
    tokens = {account: refresh_token() for account in ACCOUNTS}
    db = await store.connect(pg_url)
    try:
        for account, org in ACCOUNTS.items():
            await db.add_account(model.NewAccount(
                id=account, org=org, provider="ebay-sandbox", name=account, scopes=(),
                refresh_token=keyring.encrypt(tokens[account], account_id=account,
                                              column="refresh_token"),
                refresh_expires_at=None), clock.now())
        await db.set_provider_user("acme-2", REVOKED_USER, "acme two", clock.now())
    finally:
        await db.close()
    return tokens


def config_file(tmp_path: Path, pg_url: str, key_line: str, token_url: str,
                public_key_url: str) -> Path:
    return write_config(tmp_path / "tokend.toml", {
        "database": {"url": pg_url},
        "refresh": {"interval_seconds": 0.5, "request_timeout_seconds": 2,
                    "lease_seconds": 30, "shutdown_grace_seconds": 5},
        "crypto": {"keys": [key_line]},
        "server": {"host": "127.0.0.1", "port": 0, "admin_token": ADMIN,
                   "consumer_token": CONSUMER},
        "server.org_tokens": {"acme": ORG_ACME, "globex": ORG_GLOBEX},
        "server.consumer_org_tokens": {"acme": CONSUMER_ACME},
        "providers.ebay-sandbox": {"type": "ebay", "environment": "sandbox",
                                   "token_url": token_url, "client_id": CLIENT_ID,
                                   "client_secret": CLIENT_SECRET},
        "ebay_notifications": {"verification_token": VERIFICATION_TOKEN,
                               "endpoint": "https://tokend.example.com/ebay/notifications",
                               "provider": "ebay-sandbox", "public_key_url": public_key_url},
    })


class Client:
    """Every answer the daemon gives is kept, for the canary sweep at the end."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.answers: list[tuple[str, str]] = []
        self.vended: list[tuple[str, str]] = []
        self.app_tokens: list[str] = []  # application-token answers

    async def call(self, method: str, path: str, token: str | None = None, *,
                   json: Any = None, headers: dict[str, str] | None = None,
                   ) -> tuple[int, Any]:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, json=json, headers=headers,
                                     allow_redirects=False) as response:
            text = await response.text()
            status, content_type = response.status, response.content_type
        label = f"{method} {path}"
        if urllib.parse.urlsplit(path).path.endswith("/access-token") and status == 200:
            self.vended.append((label, text))
        elif urllib.parse.urlsplit(path).path.endswith("/app-token") and status == 200:
            self.app_tokens.append(text)
        else:
            self.answers.append((label, text))
        body = orjson.loads(text) if "json" in content_type else text
        return status, body

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return await self.call("GET", path, token)

    async def refresh(self, account: str, token: str = ADMIN, *,
                      debug: bool = False) -> tuple[int, Any]:
        return await self.call("POST", f"/api/accounts/{account}/refresh", token,
                               json={"debug": True} if debug else None)


class Listener:
    """A log-stream subscriber that keeps every frame it is sent."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, **hello: Any):
        self.http, self.url, self.token, self.hello = http, url, token, hello
        self.frames: list[str] = []
        self.close_code: int | None = None
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _listen(self) -> None:
        async with self.http.ws_connect(self.url + "/ws/logs") as ws:
            await ws.send_json({"type": "hello", "token": self.token, "since": None,
                                **self.hello})
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(msg.data)
                    self._arrived.set()
                    if orjson.loads(msg.data)["type"] == "ready":
                        self._ready.set()
            self.close_code = ws.close_code
            self._ready.set()

    @property
    def entries(self) -> list[dict[str, Any]]:
        out = []
        for message in map(orjson.loads, self.frames):
            if message["type"] == "entry":
                out.append(message)
            elif message["type"] == "entries":
                out.extend(message["entries"])
        return out

    async def until_entry(self, entry_id: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while entry_id not in {e["id"] for e in self.entries}:
                self._arrived.clear()
                await self._arrived.wait()


async def dump_tables(pg_url: str) -> str:
    conn = await asyncpg.connect(pg_url)
    try:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        parts = []
        for table in tables:
            rows = await conn.fetch(f'SELECT * FROM "{table}"')
            parts.append(f"-- {table}\n" + "\n".join(repr(dict(r)) for r in rows))
        return "\n".join(parts)
    finally:
        await conn.close()


def shapes(secret: str) -> set[str]:
    """The secret as it is, in the encodings it travels in, and fragments of its random
    tail: a leak of 12 characters in a row is a leak, whatever cut it."""
    out = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
           base64.b64encode(secret.encode()).decode()}
    tail = secret[-32:]
    out |= {tail[i:i + 12] for i in range(0, len(tail) - 11, 4)}
    return out


def assert_nowhere(secrets_by_name: dict[str, str], texts: dict[str, str]) -> None:
    leaks = []
    for name, secret in secrets_by_name.items():
        for shape in shapes(secret):
            for where, text in texts.items():
                if shape in text:
                    leaks.append(f"{name} ({shape!r}) in {where}")
    assert not leaks, "\n".join(leaks[:20])


@contextlib.asynccontextmanager
async def running_daemon(config_path: Path, log_path: Path) -> AsyncIterator[tuple[Daemon,
                                                                                  str]]:
    daemon = Daemon(config_path, log_path)
    try:
        yield daemon, await daemon.url()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        daemon.kill()


async def test_no_secret_leaves_and_no_org_sees_another(tmp_path: Path, pg_url: str,
                                                        key_lines: list[str]) -> None:
    keyring = crypto.Keyring.from_lines(key_lines[:1])
    seeded = await seed(pg_url, keyring)
    db = await store.connect(pg_url)
    async with simulator.Simulator(client_secret=CLIENT_SECRET, rotate=True) as sim, \
            aiohttp.ClientSession() as http:
        provider = Provider(sim, seeded)
        config_path = config_file(tmp_path, pg_url, key_lines[0], sim.token_url,
                                  sim.public_key_url)
        async with running_daemon(config_path, tmp_path / "daemon.log") as (daemon, url):
            api = Client(http, url)
            async with Listener(http, url, ADMIN) as admin_ws, \
                    Listener(http, url, ORG_ACME) as acme_ws, \
                    Listener(http, url, ORG_ACME, account_id="globex-1") as nosy_ws:
                await _wait_for_fresh_tokens(db)
                await _exercise(api, provider, sim)
                await _org_isolation(api, http, url)
                await _authentication(api, http, url)
                await _app_tokens_and_notifications(api, sim, url)
                # An entry written last, that every stream above may see: once it arrives,
                # each has everything before it.
                sentinel = await db.add_entry(model.Entry(
                    action="worker_heartbeat", source="scheduled", created_at=clock.now(),
                    org_id="acme", account_id="globex-1", message="sentinel"))
                for listener in (admin_ws, acme_ws, nosy_ws):
                    await listener.until_entry(sentinel.id)
            # A late subscriber asking for all of history sees the same as the live one.
            async with Listener(http, url, ORG_ACME, since=0) as history_ws:
                await history_ws.until_entry(sentinel.id)
        stdout = daemon.log_path.read_text()
        tables = await dump_tables(pg_url)
        accounts = {a.id: a for a in await db.list_accounts()}
        await db.close()

    # The org token's stream: only its own org, live and from history.
    for listener in (acme_ws, history_ws):
        assert listener.entries, "the org stream saw nothing at all"
        assert {e["org_id"] for e in listener.entries} == {"acme"}
        own = [orjson.dumps(e).decode() for e in listener.entries if e["id"] != sentinel.id]
        own += [f for f in listener.frames
                if orjson.loads(f)["type"] not in ("entry", "entries")]
        assert not any("globex" in text for text in own)
    assert [e["id"] for e in nosy_ws.entries] == [sentinel.id]  # nothing of globex's own
    assert {e["org_id"] for e in admin_ws.entries} >= {"acme", "globex"}

    # Every vend answer carries exactly that account's own current access token.
    for label, text in api.vended:
        account = label.split("/")[3]
        assert orjson.loads(text)["access_token"] in provider.access[account], label

    planted = {"client secret": CLIENT_SECRET, "admin token": ADMIN, "acme org token": ORG_ACME,
               "globex org token": ORG_GLOBEX, "consumer token": CONSUMER,
               "acme consumer token": CONSUMER_ACME,
               "encryption key": key_lines[0].partition(":")[2],
               "basic credentials": base64.b64encode(
                   f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()}
    planted |= {f"seeded refresh token of {a}": t for a, t in seeded.items()}
    planted |= {f"issued token {n}": t for n, t in enumerate(sorted(provider.issued))}
    planted["verification token"] = VERIFICATION_TOKEN
    planted |= {f"application token {n}": t for n, t in enumerate(sorted(sim._app_tokens))}
    assert len(sim._app_tokens) == 1 and accounts["acme-2"].state == "reauth_required"
    for account in accounts.values():  # what is stored now, decrypted
        planted[f"stored refresh token of {account.id}"] = keyring.decrypt(
            account.refresh_token, account_id=account.id, column="refresh_token")
        planted[f"stored access token of {account.id}"] = keyring.decrypt(
            account.access_token, account_id=account.id, column="access_token")
    assert len(provider.issued) >= 16  # rotations, echoes and vends really happened
    texts = {"daemon stdout": stdout, "tables": tables}
    texts |= {f"answer {n} {label}": text for n, (label, text) in enumerate(api.answers)}
    for name, listener in (("admin stream", admin_ws), ("acme stream", acme_ws),
                           ("history stream", history_ws)):
        texts[name] = "\n".join(listener.frames)
    assert_nowhere(planted, texts)
    for text in api.app_tokens:  # an app-token answer holds that token and no other secret
        own = orjson.loads(text)["access_token"]
        assert own in sim._app_tokens
        assert_nowhere({k: v for k, v in planted.items() if v != own}, {"app token": text})
    for label, text in api.vended:
        account = label.split("/")[3]
        own = orjson.loads(text)["access_token"]
        others = {k: v for k, v in planted.items() if v != own}
        assert_nowhere(others, {label: text})
    assert "ENC:v1:" in tables and "Basic ****" in tables


async def _wait_for_fresh_tokens(db: store.Store) -> None:
    async def fresh() -> bool:
        return all(a.access_token for a in await db.list_accounts())

    await wait_until(fresh, 15)


async def _exercise(api: Client, provider: Provider, sim: simulator.Simulator) -> None:
    """Every route, every principal, while the provider is fine, failing, and echoing."""
    async def sweep() -> None:
        for path in ("/health", "/loop-status", "/metrics", "/terminal", "/"):
            status, _ = await api.get(path)
            assert status in (200, 302), path
        for token in (ADMIN, ORG_ACME):
            assert (await api.get("/api/accounts", token))[0] == 200
            assert (await api.get("/api/logs?limit=1000", token))[0] == 200
            assert (await api.get("/api/logs?account_id=acme-1", token))[0] == 200
            assert (await api.get("/api/logs?source=debug,manual", token))[0] == 200

    await sweep()
    for mode in ("500", "429", "502_html", "reset", "huge"):
        sim.configure(fail_mode=mode)
        assert (await api.refresh("acme-1"))[1]["success"] is False
        status, answer = await api.refresh("globex-1", debug=True)
        assert status == 200 and answer["success"] is False
        await sweep()
    sim.configure(fail_mode=None)
    for echo in ("json500", "html502", "form400", "secret_as_code", "grant"):
        provider.echo = echo
        for account in ("acme-2", "globex-2"):
            status, answer = await api.refresh(account, debug=True)
            assert status == 200 and answer["success"] is (echo == "grant"), (echo, answer)
            status, answer = await api.refresh(account, ORG_ACME if account == "acme-2"
                                               else ADMIN)
            assert status == 200 and answer["success"] is (echo == "grant"), (echo, answer)
        await sweep()
    provider.echo = None
    for account in ACCOUNTS:  # everything fresh again
        status, answer = await api.refresh(account)
        assert (status, answer["success"]) == (200, True), answer
    for account in ACCOUNTS:
        status, _ = await api.get(VEND.format(account) + "?min_valid_seconds=60", CONSUMER)
        assert status == 200
    status, _ = await api.get(VEND.format("acme-1"), CONSUMER_ACME)
    assert status == 200
    await sweep()


async def _app_tokens_and_notifications(api: Client, sim: simulator.Simulator,
                                        url: str) -> None:
    """An application token vended twice (one grant), the endpoint challenge, and a signed
    revocation, plus refused ones, with every answer kept for the sweep."""
    for token in (CONSUMER, CONSUMER_ACME):
        assert (await api.get(APP_TOKEN, token))[0] == 200
    for token in (ADMIN, ORG_ACME, None):
        assert (await api.get(APP_TOKEN, token))[0] == 401
    status, body = await api.get("/ebay/notifications?challenge_code=abc")
    assert status == 200 and len(body["challengeResponse"]) == 64
    message = sim.notification("AUTHORIZATION_REVOCATION", REVOKED_USER,
                               revokeReason="REVOKED_BY_USER")
    body = orjson.dumps(message)
    for signature in ("", sim.sign({**message, "x": 1})):
        status, _ = await api.call("POST", "/ebay/notifications", headers={
            "X-EBAY-SIGNATURE": signature, "Content-Type": "application/json"},
            json=message)
        assert status == 412
    assert await sim.deliver(url + "/ebay/notifications", message, body=body) == 204


async def _org_isolation(api: Client, http: aiohttp.ClientSession, url: str) -> None:
    status, body = await api.get("/api/accounts", ORG_ACME)
    assert status == 200
    assert {a["id"] for a in body["accounts"]} == {"acme-1", "acme-2"}
    for account in ("globex-1", "globex-2", "missing"):
        for debug in (False, True):
            status, body = await api.refresh(account, ORG_ACME, debug=debug)
            assert status == 404 and body == {"error": "unknown account"}, (account, body)
        status, body = await api.get(f"/api/logs?account_id={account}", ORG_ACME)
        assert status == 404 or body == {"entries": []}, body
        status, body = await api.get(VEND.format(account), CONSUMER_ACME)
        assert status == 404 and body == {"error": "unknown account"}, body
    for query in ("", "?limit=1000", "?source=scheduled,manual,debug,admin,vend",
                  "?action=token_refresh_failed", "?before_id=999999999", "?after_id=0"):
        status, body = await api.get("/api/logs" + query, ORG_ACME)
        assert status == 200 and body["entries"], query
        assert {e["org_id"] for e in body["entries"]} == {"acme"}, query
        assert "globex" not in orjson.dumps(body).decode()
    # The other org's token, the mirror image.
    status, body = await api.get("/api/accounts", ORG_GLOBEX)
    assert {a["id"] for a in body["accounts"]} == {"globex-1", "globex-2"}
    status, body = await api.refresh("acme-1", ORG_GLOBEX, debug=True)
    assert status == 404


async def _authentication(api: Client, http: aiohttp.ClientSession, url: str) -> None:
    wrong = [None, "", CONSUMER, CONSUMER_ACME, ADMIN + "x", ADMIN[:-1], ADMIN.lower(),
             f"{ADMIN} {ADMIN}", "null"]
    for method, path in ADMIN_ROUTES:
        for token in wrong:
            status, body = await api.call(method, path, token)
            assert status == 401 and isinstance(body, dict) and body.get("error"), (path, token)
        for header in (f"Basic {ADMIN}", f"Token {ADMIN}", ADMIN, f"Bearer: {ADMIN}"):
            status, body = await api.call(method, path, headers={"Authorization": header})
            assert status == 401 and body.get("error"), (path, header)
    # The admin and org tokens are not consumer tokens.
    for token in (ADMIN, ORG_ACME, None, "wrong-token-wrong-token"):
        status, body = await api.get(VEND.format("acme-1"), token)
        assert status == 401 and body.get("error"), token
    # The stream: consumer tokens and wrong tokens are refused; a foreign page is refused.
    for token in (CONSUMER, CONSUMER_ACME, ADMIN + "x", ""):
        async with http.ws_connect(url + "/ws/logs") as ws:
            await ws.send_json({"type": "hello", "token": token, "since": None})
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4401, token
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url + "/ws/logs", origin="http://evil.example")
    assert refused.value.status == 403
