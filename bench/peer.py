"""The peer: what a careful Python user writes instead of tokend, for the throughput
benchmark to run beside it. Rows from asyncpg, Fernet at rest, Authlib's
`AsyncOAuth2Client` (httpx) for the refresh, `asyncio.gather` under a semaphore.

    python -m bench.peer --db URL --token-url URL --key FERNET_KEY --concurrency 64

Its HTTP clients keep httpx's default connection limits (100 connections, 20 kept alive),
as httpx's and Authlib's documentation use them, and the work is spread over four such
clients: httpcore scans its whole pool for every request, so one pool of 64 busy
connections costs more CPU than the refresh itself. That was the fastest of the variants
`--variant` still runs (BENCHMARKS.md, "A peer worth beating"): `defaults`, one client;
`wide`, the peer as first written, `httpx.Limits(max_connections=2 x concurrency)`
(keep-alive then unbounded); `matched`, `concurrency` connections all kept alive;
`pool20`, 20 connections; `plain`, one httpx client without Authlib (form and Basic auth
by hand). The `bench` extra installs `sniffio`: without it httpcore retries a failed
import, a search of sys.path, on every request.

Refreshes every row of `peer_accounts` once, writes the new tokens back, and prints one
JSON line: wall seconds, refreshed, failed, and this process's CPU seconds for that work.
Bench-only: needs the `bench` extras (authlib, httpx, cryptography).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
from authlib.integrations.httpx_client import AsyncOAuth2Client
from cryptography.fernet import Fernet

from tokend.testing import simulator

TABLE = """
CREATE TABLE IF NOT EXISTS peer_accounts (
    id text PRIMARY KEY,
    refresh_token text NOT NULL,
    access_token text,
    access_expires_at timestamptz,
    refreshed_at timestamptz
)"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def seed(url: str, key: bytes, tokens: dict[str, str]) -> None:
    """The peer's own table, holding the same kind of refresh tokens, Fernet-encrypted."""
    fernet = Fernet(key)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(TABLE)
        await conn.execute("TRUNCATE peer_accounts")
        await conn.copy_records_to_table(
            "peer_accounts", columns=("id", "refresh_token"),
            records=[(i, fernet.encrypt(t.encode()).decode()) for i, t in tokens.items()])
        await conn.execute("VACUUM ANALYZE peer_accounts")
    finally:
        await conn.close()


VARIANTS = ("defaults", "wide", "matched", "plain", "pool20", "shards")
SHARDS = 4


def limits(variant: str, concurrency: int) -> httpx.Limits:
    if variant == "wide":
        return httpx.Limits(max_connections=concurrency * 2)
    if variant == "matched":
        return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if variant == "pool20":
        return httpx.Limits(max_connections=20, max_keepalive_connections=20)
    return httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults


def plain_client(token_url: str, timeout: float, pool: httpx.Limits) -> httpx.AsyncClient:
    """httpx alone: what Authlib's `refresh_token` sends, written out."""
    client = httpx.AsyncClient(
        auth=httpx.BasicAuth(simulator.DEFAULT_CLIENT_ID, simulator.DEFAULT_CLIENT_SECRET),
        timeout=timeout, limits=pool)

    async def refresh_token(url: str, *, refresh_token: str) -> dict:
        response = await client.post(url, data={"grant_type": "refresh_token",
                                                "refresh_token": refresh_token})
        response.raise_for_status()
        return response.json()

    client.refresh_token = refresh_token  # type: ignore[attr-defined]
    return client


async def run(url: str, token_url: str, key: bytes, concurrency: int,
              variant: str = "shards") -> dict[str, float]:
    fernet = Fernet(key)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    failed = 0
    cpu_before, began = cpu_seconds(), time.perf_counter()
    try:
        rows = await pool.fetch("SELECT id, refresh_token FROM peer_accounts")
        semaphore = asyncio.Semaphore(concurrency)
        pool_limits = limits(variant, concurrency)
        async with contextlib.AsyncExitStack() as clients_open:
            clients = [await clients_open.enter_async_context(
                plain_client(token_url, 15.0, pool_limits) if variant == "plain"
                else AsyncOAuth2Client(
                    client_id=simulator.DEFAULT_CLIENT_ID,
                    client_secret=simulator.DEFAULT_CLIENT_SECRET,
                    token_endpoint=token_url, timeout=15.0, limits=pool_limits))
                for _ in range(SHARDS if variant == "shards" else 1)]

            async def refresh(n: int, row: asyncpg.Record) -> None:
                nonlocal failed
                client = clients[n % len(clients)]
                async with semaphore:
                    token = fernet.decrypt(row["refresh_token"].encode()).decode()
                    try:
                        answer = await client.refresh_token(token_url, refresh_token=token)
                    except Exception:  # a failed refresh is counted, not fatal
                        failed += 1
                        return
                    now = datetime.now(UTC)
                    await pool.execute(
                        "UPDATE peer_accounts SET access_token = $2, refresh_token = $3, "
                        "access_expires_at = $4, refreshed_at = $5 WHERE id = $1",
                        row["id"], fernet.encrypt(answer["access_token"].encode()).decode(),
                        fernet.encrypt(answer.get("refresh_token", token).encode()).decode(),
                        now + timedelta(seconds=int(answer.get("expires_in", 7200))), now)

            await asyncio.gather(*(refresh(n, row) for n, row in enumerate(rows)))
    finally:
        wall, cpu = time.perf_counter() - began, cpu_seconds() - cpu_before
        await pool.close()
    return {"wall": wall, "cpu": cpu, "refreshed": len(rows) - failed, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--key", required=True, help="a Fernet key")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--variant", choices=VARIANTS, default="shards")
    args = parser.parse_args()
    result = asyncio.run(run(args.db, args.token_url, args.key.encode(), args.concurrency,
                             args.variant))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
