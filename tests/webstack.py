"""The HTTP side of tokend assembled for tests: real store, refresher, loop, vendor and hub,
an aiohttp server on 127.0.0.1 and the eBay simulator on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web as aioweb
from kit import refresh_token

from tokend import (
    apptokens,
    config,
    crypto,
    daemon,
    loop,
    metrics,
    model,
    probes,
    refresher,
    store,
    stream,
    vending,
)
from tokend.testing import simulator

ADMIN = "admin-" + secrets.token_hex(12)
ORG_ACME = "acme-" + secrets.token_hex(12)
CONSUMER = "consumer-" + secrets.token_hex(12)
CONSUMER_ACME = "consumer-acme-" + secrets.token_hex(12)
PROVIDER = "ebay-sandbox"
INSTANCE = "test-instance"


def now() -> datetime:
    return datetime.now(UTC)


VERIFICATION_TOKEN = "verify-" + secrets.token_hex(16)
ENDPOINT = "https://tokend.example.com/ebay/notifications"


def make_config(token_url: str, *, server: Mapping[str, Any] | None = None,
                refresh: Mapping[str, Any] | None = None,
                public_key_url: str | None = None,
                provider: Mapping[str, Any] | None = None) -> config.Config:
    """`public_key_url` turns on `[ebay_notifications]` against that getPublicKey."""
    return config.Config(
        ebay_notifications=None if public_key_url is None else config.EbayNotificationsConfig(
            verification_token=VERIFICATION_TOKEN, endpoint=ENDPOINT, provider=PROVIDER,
            public_key_url=public_key_url),
        refresh=config.RefreshConfig(**{"request_timeout_seconds": 5.0, **(refresh or {})}),
        server=config.ServerConfig(**{
            "host": "127.0.0.1", "port": 0, "admin_token": ADMIN,
            "org_tokens": {"acme": ORG_ACME}, "consumer_token": CONSUMER,
            "consumer_org_tokens": {"acme": CONSUMER_ACME}, **(server or {})}),
        providers={PROVIDER: config.ProviderConfig(**{
            "name": PROVIDER, "type": "ebay", "environment": "sandbox",
            "client_id": simulator.DEFAULT_CLIENT_ID,
            "client_secret": simulator.DEFAULT_CLIENT_SECRET,
            "scopes": ("https://api.ebay.com/oauth/api_scope",), "token_url": token_url,
            "daily_quota": 50_000, **(provider or {})})},
    )


async def add_account(db: store.Store, keyring: crypto.Keyring, account_id: str,
                      org: str = "acme", *, token: str | None = None) -> model.Account:
    return await db.add_account(model.NewAccount(
        id=account_id, org=org, provider=PROVIDER, name=f"seller-{account_id}",
        scopes=(), refresh_token=keyring.encrypt(token or refresh_token(), account_id=account_id,
                                                 column="refresh_token"),
        refresh_expires_at=None), now())


async def add_entry(db: store.Store, hub: stream.Hub | None = None, *, source: str = "scheduled",
                    org: str | None = "acme", account_id: str | None = "acct-1",
                    action: str = "token_refreshed", **fields: Any) -> model.Entry:
    """A stored HTTP-log entry, published on `hub` like the refresher does."""
    entry = await db.add_entry(model.Entry(
        action=action, source=source, created_at=now(), account_id=account_id, org_id=org,
        provider=PROVIDER, environment="sandbox", duration_ms=12.5,
        request={"method": "POST", "url": "http://127.0.0.1/identity/v1/oauth2/token",
                 "headers": {"Authorization": "Basic ****"},
                 "body": "grant_type=refresh_token&refresh_token=v%5E1....abcd"},
        response={"status": 200, "reason": "OK", "headers": {"Content-Type": "application/json"},
                  "body": {"access_token": "v^1....wxyz", "expires_in": 7200}},
        **fields))
    if hub is not None:
        hub.publish(entry)
    return entry


def make_entry(entry_id: int, *, body_size: int = 0) -> model.Entry:
    """An entry as if stored, for publishing straight to a hub."""
    return model.Entry(action="token_refreshed", source="scheduled", created_at=now(),
                       account_id="acct-1", org_id="acme", id=entry_id,
                       request={"method": "POST", "body": "x" * body_size})


@dataclasses.dataclass
class Stack:
    cfg: config.Config
    db: store.Store
    keyring: crypto.Keyring
    sim: simulator.Simulator
    hub: stream.Hub
    stats: metrics.Metrics
    worker: refresher.Refresher
    loop: loop.Loop
    vendor: vending.Vendor
    app_tokens: apptokens.AppTokens
    readiness: probes.Readiness
    app: aioweb.Application
    runner: aioweb.AppRunner
    url: str
    http: aiohttp.ClientSession
    stop: asyncio.Event

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def auth(self, token: str = ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get_json(self, path: str, token: str | None = ADMIN,
                       **kwargs: Any) -> tuple[int, Any]:
        headers = self.auth(token) if token else {}
        async with self.http.get(self.url + path, headers=headers, **kwargs) as response:
            return response.status, await response.json(content_type=None)


@contextlib.asynccontextmanager
async def running(
    db: store.Store, keyring: crypto.Keyring, *, server: Mapping[str, Any] | None = None,
    refresh: Mapping[str, Any] | None = None, sim: simulator.Simulator | None = None,
    port: int = 0, notifications: bool = False,
    provider: Mapping[str, Any] | None = None, instance: str = INSTANCE,
) -> AsyncIterator[Stack]:
    """The web app of a daemon on `db`; the refresh loop is built but not run."""
    async with contextlib.AsyncExitStack() as exits:
        if sim is None:
            sim = await exits.enter_async_context(simulator.Simulator())
        cfg = make_config(sim.token_url, server=server, refresh=refresh, provider=provider,
                          public_key_url=sim.public_key_url if notifications else None)
        parts = await exits.enter_async_context(
            daemon.assemble(cfg, db=db, keyring=keyring, instance=instance))
        listener = await exits.enter_async_context(
            daemon.listening(parts, "127.0.0.1", port, shutdown_timeout=1.0))
        feeds = [asyncio.create_task(coro, name=name)
                 for name, coro in parts.hub.side_tasks(db)]
        if feeds:  # a LISTEN cancelled while it connects leaves its connection behind
            await asyncio.wait_for(parts.hub.listening.wait(), 10)
        http = await exits.enter_async_context(aiohttp.ClientSession())
        try:
            yield Stack(cfg=cfg, db=db, keyring=keyring, sim=sim, hub=parts.hub,
                        stats=parts.stats, worker=parts.refresher, loop=parts.loop,
                        vendor=parts.vendor, app_tokens=parts.app_tokens,
                        readiness=parts.readiness, app=parts.app,
                        runner=listener.runner, url=listener.url, http=http, stop=parts.stop)
        finally:
            for task in feeds:
                task.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)
