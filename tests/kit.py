"""A refresher wired to a real store and the simulator on loopback, for engine tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import secrets
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import asyncpg

from tokend import clock, config, crypto, metrics, model, refresher, store, stream
from tokend.store import queries
from tokend.testing import simulator

PROVIDER = "ebay-sandbox"
# Ports of the PgBouncers the tests run (tests/pgbouncer.py): a URL through one of them
# needs the store's `pgbouncer` option.
PGBOUNCER_PORTS: set[int] = set()


def store_options(db_url: str) -> dict[str, bool]:
    """The `store.connect` options a test database URL needs."""
    return {"pgbouncer": urlsplit(db_url).port in PGBOUNCER_PORTS}


def refresh_token() -> str:
    return "v^1.1#i^1#r^1#p^3#t^" + secrets.token_urlsafe(24)


def engine_config(token_url: str, **refresh: float) -> config.Config:
    settings = {"request_timeout_seconds": 1.0, "interval_seconds": 60.0,
                "backoff_base_seconds": 30.0, **refresh}
    return config.Config(
        refresh=config.RefreshConfig(**settings),
        providers={PROVIDER: config.ProviderConfig(
            name=PROVIDER, type="ebay", environment="sandbox",
            client_id=simulator.DEFAULT_CLIENT_ID, client_secret=simulator.DEFAULT_CLIENT_SECRET,
            scopes=("https://api.ebay.com/oauth/api_scope",), token_url=token_url)},
    )


@dataclasses.dataclass
class Harness:
    sim: simulator.Simulator
    db: store.Store
    keyring: crypto.Keyring
    worker: refresher.Refresher
    hub: stream.Hub
    stats: metrics.Metrics
    cfg: config.Config
    provider: str = PROVIDER

    @property
    def settings(self) -> config.RefreshConfig:
        return self.cfg.refresh

    async def add(self, account_id: str, *, token: str | None = None, sealed: str | None = None,
                  org: str = "acme") -> model.Account:
        sealed = sealed or self.keyring.encrypt(token or refresh_token(), account_id=account_id,
                                                column="refresh_token")
        return await self.db.add_account(model.NewAccount(
            id=account_id, org=org, provider=self.provider, name=f"seller-{account_id}",
            scopes=(), refresh_token=sealed, refresh_expires_at=None), clock.now())

    async def claim_due(self, *, now_offset_seconds: float = 0.0) -> list[model.Account]:
        s = self.settings
        return await self.db.claim_due(
            "probe", clock.now() + timedelta(seconds=now_offset_seconds), limit=100,
            lease_seconds=1, expiry_threshold_seconds=s.expiry_threshold_seconds,
            max_age_seconds=s.max_age_seconds)


async def seed(db_url: str, keyring: crypto.Keyring, count: int) -> dict[str, str]:
    """`count` due accounts `acct_00000`... through the store; returns id -> plaintext token."""
    tokens = {f"acct_{n:05d}": refresh_token() for n in range(count)}
    async with store.open(db_url) as db:
        now = clock.now()
        for account_id, token in tokens.items():
            await db.add_account(model.NewAccount(
                id=account_id, org="acme", provider=PROVIDER, name=account_id, scopes=(),
                refresh_token=keyring.encrypt(token, account_id=account_id,
                                              column="refresh_token"),
                refresh_expires_at=None), now)
    return tokens


async def seed_postgres(pg_url: str, keyring: crypto.Keyring, count: int) -> dict[str, str]:
    """The same in one pipelined `executemany`, for thousands of accounts."""
    tokens = {f"acct_{n:05d}": refresh_token() for n in range(count)}
    now = clock.now()
    sql, names = queries.to_numbered(queries.load("postgresql")["insert_account"])
    rows = [{"id": account_id, "org": "acme", "provider": PROVIDER, "name": account_id,
             "scopes": [], "refresh_token": keyring.encrypt(
                 token, account_id=account_id, column="refresh_token"),
             "refresh_expires_at": None, "now": now}
            for account_id, token in tokens.items()]
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.executemany(sql, [[row[n] for n in names] for row in rows])
    finally:
        await conn.close()
    return tokens


async def wait_until(predicate: Callable[[], object], timeout: float,
                     interval: float = 0.05) -> None:
    """Poll `predicate` (plain or async) until it is true; TimeoutError after `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


async def execute_sql(db_url: str, sql: str) -> None:
    """A statement behind the store's back, for states its interface cannot produce."""
    if db_url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite://"))) as conn:
            conn.execute(sql)
            conn.commit()
        return
    conn = await asyncpg.connect(db_url, statement_cache_size=0)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
