"""The app client (clients/python, `tokend_client`): vending with its cache, the httpx and
aiohttp integrations against a fake eBay API that starts refusing the current token, with
three replicas on one database, and webhook verification."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import secrets
import subprocess
import sys
import time
import tomllib
from datetime import timedelta
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest
import standardwebhooks
import tokend_client
import tokend_client.aiohttp
import webstack
from aiohttp import web

from tokend import store, webhooks

CONSUMER = webstack.CONSUMER
REPO = Path(__file__).resolve().parent.parent
API_PATH = "/sell/inventory/v1/inventory_item"
EXPIRED = {"errors": [{"errorId": 1100, "domain": "ACCESS", "category": "REQUEST",
                       "message": "Access denied",
                       "longMessage": "Insufficient permissions to fulfill the request."}]}


class FakeEbay:
    """An eBay API on loopback that answers any bearer token until told to refuse it:
    then 403 errorId 1100 (Inventory's "token expired"), or 401 when `status` says so."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.status = 403
        self.seen: list[str] = []
        self.url = ""

    async def _inventory(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token in self.refused:
            if self.status == 401:
                return web.json_response({"error": "invalid_token"}, status=401)
            return web.json_response(EXPIRED, status=403)
        return web.json_response({"total": 0, "inventoryItems": []})

    @contextlib.asynccontextmanager
    async def running(self):
        app = web.Application()
        app.router.add_get(API_PATH, self._inventory)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield self
        finally:
            await runner.cleanup()


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


@pytest.fixture
async def ebay():
    async with FakeEbay().running() as api:
        yield api


async def test_access_tokens_are_cached_while_valid_enough(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    async with tokend_client.AsyncTokend(stack.url, CONSUMER) as tokend:
        token = await tokend.access_token("acct-1", min_valid_seconds=600)
        assert token.startswith("v^1.1#")
        assert await tokend.access_token("acct-1", min_valid_seconds=600) == token
        asked = stack.stats.registry.get_sample_value("tokend_vends_total",
                                                      {"outcome": "stored"}) or 0
        assert asked == 0  # the second came from the cache
        # A cached token with less left than asked for is asked for again.
        cached = tokend._cache._tokens["acct-1"]
        tokend._cache._tokens["acct-1"] = dataclasses.replace(
            cached, expires_at=webstack.now() + timedelta(seconds=500))
        assert await tokend.access_token("acct-1", min_valid_seconds=600) == token
        assert tokend._cache._tokens["acct-1"] == cached
        assert stack.stats.registry.get_sample_value("tokend_vends_total",
                                                     {"outcome": "stored"}) == 1
        with pytest.raises(tokend_client.TokendError) as missing:
            await tokend.access_token("nope")
        assert missing.value.status == 404 and missing.value.message == "unknown account"
    assert CONSUMER not in repr(tokend)

    def blocking() -> str:
        with tokend_client.Tokend(stack.url, CONSUMER) as sync:
            first = sync.access_token("acct-1", min_valid_seconds=600)
            assert sync.access_token("acct-1", min_valid_seconds=600) == first
            with tokend_client.Tokend(stack.url, "wrong") as wrong, pytest.raises(
                    tokend_client.TokendError):
                wrong.access_token("acct-1")
            return first

    assert await asyncio.to_thread(blocking) == token
    assert stack.sim.calls == 1


def test_what_counts_as_a_refused_token():
    assert tokend_client.refused(401, b"")
    assert tokend_client.refused(403, orjson.dumps(EXPIRED))
    assert not tokend_client.refused(403, orjson.dumps({"errors": [{"errorId": 1100.5}]}))
    assert not tokend_client.refused(403, b'{"errors": [{"errorId": 2004}]}')
    assert not tokend_client.refused(403, b"errorId <html>")
    assert not tokend_client.refused(500, orjson.dumps(EXPIRED))
    assert not tokend_client.refused(200, b"")


async def test_httpx_reports_a_refused_token_and_retries_once(stack, ebay):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    async with tokend_client.AsyncTokend(stack.url, CONSUMER) as tokend:
        auth = tokend_client.TokendAuth(tokend, "acct-1")
        async with httpx.AsyncClient(auth=auth) as api:
            assert (await api.get(ebay.url + API_PATH)).status_code == 200
            old = ebay.seen[-1]
            ebay.refused.add(old)
            stack.vendor.rejected_window_seconds = 0.0  # the token is minutes old, in effect
            stack.sim.reset_stats()
            response = await api.get(ebay.url + API_PATH)
            assert response.status_code == 200
            assert ebay.seen[-2:] == [old, ebay.seen[-1]] and ebay.seen[-1] != old
            assert stack.sim.calls == 1
            # The fresh one refused as well: one report, no second refresh, the answer stays.
            ebay.refused.add(ebay.seen[-1])
            stack.vendor.rejected_window_seconds = 30.0
            response = await api.get(ebay.url + API_PATH)
            assert response.status_code == 403 and response.json() == EXPIRED
            assert stack.sim.calls == 1

    def blocking() -> int:
        ebay.refused.clear()
        ebay.status = 401
        with tokend_client.Tokend(stack.url, CONSUMER) as sync, httpx.Client(
                auth=tokend_client.TokendAuth(sync, "acct-1")) as api:
            assert api.get(ebay.url + API_PATH).status_code == 200
            ebay.refused.add(ebay.seen[-1])
            stack.vendor.rejected_window_seconds = 0.0
            return api.get(ebay.url + API_PATH).status_code

    assert await asyncio.to_thread(blocking) == 200
    assert stack.sim.calls == 2
    _, logs = await stack.get_json("/api/logs?source=vend&action=token_rejected")
    assert [e["details"]["verdict"] for e in reversed(logs["entries"])] == [
        "refresh", "too_soon", "refresh"]


async def test_a_stale_report_costs_nothing(stack, ebay):
    """An app still holding a token that a refresh replaced gets the current one at once."""
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    async with tokend_client.AsyncTokend(stack.url, CONSUMER) as app, \
            tokend_client.AsyncTokend(stack.url, CONSUMER) as other:
        old = await app.access_token("acct-1")
        stack.vendor.rejected_window_seconds = 0.0
        assert (await other.report_rejected("acct-1", old)).refreshed
        assert stack.sim.calls == 2
        ebay.refused.add(old)
        async with aiohttp.ClientSession(middlewares=(
                tokend_client.aiohttp.middleware(app, "acct-1"),)) as session, \
                session.get(ebay.url + API_PATH) as response:
            assert response.status == 200
        assert ebay.seen[-1] != old and stack.sim.calls == 2


async def test_ten_callers_on_three_replicas_cost_one_refresh(pg_url, keyring, ebay):
    async with contextlib.AsyncExitStack() as exits:
        replicas = []
        for n in range(3):
            db = await exits.enter_async_context(store.open(pg_url))
            sim = replicas[0].sim if replicas else None
            replicas.append(await exits.enter_async_context(webstack.running(
                db, keyring, sim=sim, instance=f"replica-{n}")))
        sim = replicas[0].sim
        await webstack.add_account(replicas[0].db, keyring, "acct-1")
        apps = [await exits.enter_async_context(tokend_client.AsyncTokend(
            replicas[n % 3].url, CONSUMER)) for n in range(10)]
        sessions = []
        for n, app in enumerate(apps):  # half of them httpx, half aiohttp
            if n % 2:
                sessions.append(await exits.enter_async_context(aiohttp.ClientSession(
                    middlewares=(tokend_client.aiohttp.middleware(app, "acct-1"),))))
            else:
                sessions.append(await exits.enter_async_context(httpx.AsyncClient(
                    auth=tokend_client.TokendAuth(app, "acct-1"))))

        async def call(session) -> int:
            if isinstance(session, httpx.AsyncClient):
                return (await session.get(ebay.url + API_PATH)).status_code
            async with session.get(ebay.url + API_PATH) as response:
                return response.status

        assert await asyncio.gather(*(call(s) for s in sessions)) == [200] * 10
        assert len(set(ebay.seen)) == 1
        ebay.refused.add(ebay.seen[0])
        for replica in replicas:
            replica.vendor.rejected_window_seconds = 0.5
        await asyncio.sleep(0.6)  # the token is older than the window
        sim.reset_stats()
        sim.configure(latency_seconds=0.3)
        started = time.monotonic()
        assert await asyncio.gather(*(call(s) for s in sessions)) == [200] * 10
        assert sim.calls == 1
        fresh = {t for t in ebay.seen[10:] if t not in ebay.refused}
        assert len(fresh) == 1 and time.monotonic() - started < 20
        _, logs = await replicas[0].get_json("/api/logs?source=vend")
        actions = [e["action"] for e in logs["entries"]]
        assert actions.count("token_refreshed") == 2  # the first vend's, and the forced one
        assert 1 <= actions.count("token_rejected") <= 10


def test_webhooks_verify_as_tokend_signs_them():
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    body = orjson.dumps({"type": "account.reauth_required", "timestamp": "2026-01-01T00:00:00Z",
                         "data": {"account_id": "acct-1"}})
    now = int(time.time())
    headers = webhooks.headers(key, "evt_1", now, body)
    assert tokend_client.verify_webhook(secret, headers, body)["data"] == {
        "account_id": "acct-1"}
    # The reference implementation agrees on the same delivery.
    assert standardwebhooks.Webhook(secret).verify(body, headers)["type"] == (
        "account.reauth_required")
    upper = {k.upper(): v for k, v in headers.items()}
    assert tokend_client.verify_webhook(secret, upper, body)
    two = {**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]}
    assert tokend_client.verify_webhook(secret, two, body)
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    for bad_secret, bad_headers, bad_body in (
            (other, headers, body),
            (secret, headers, body + b" "),
            (secret, {**headers, "webhook-id": "evt_2"}, body),
            (secret, webhooks.headers(key, "evt_1", now - 600, body), body),
            (secret, {k: v for k, v in headers.items() if k != "webhook-signature"}, body),
            (secret, {**headers, "webhook-timestamp": "soon"}, body)):
        with pytest.raises(tokend_client.WebhookVerificationError):
            tokend_client.verify_webhook(bad_secret, bad_headers, bad_body)


def test_the_client_stands_alone():
    """An app installs tokend-client without the daemon: it needs httpx (aiohttp is an
    extra) and imports nothing of tokend's own nor its database drivers."""
    pyproject = tomllib.loads((REPO / "clients/python/pyproject.toml").read_text())
    assert [d.split(">")[0] for d in pyproject["project"]["dependencies"]] == ["httpx"]
    probe = ("import sys, tokend_client, tokend_client.aiohttp; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('tokend', 'asyncpg', 'aiosqlite', 'cryptography', 'structlog', 'orjson')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO / "clients/python")
    assert out.stdout.strip() == "[]"
