"""The peer: what a careful Python user writes instead of tokend, for the throughput
benchmark to run beside it. Rows from asyncpg, Fernet at rest, Authlib's
`AsyncOAuth2Client` (httpx) for the refresh, `asyncio.gather` under a semaphore.

    python -m bench.peer --db URL --token-url URL --key FERNET_KEY --concurrency 64

Refreshes every row of `peer_accounts` once, writes the new tokens back, and prints one
JSON line: wall seconds, refreshed, failed, and this process's CPU seconds for that work.
Bench-only: needs the `bench` extras (authlib, httpx, cryptography).
"""

from __future__ import annotations

import argparse
import asyncio
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


async def run(url: str, token_url: str, key: bytes, concurrency: int) -> dict[str, float]:
    fernet = Fernet(key)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    failed = 0
    cpu_before, began = cpu_seconds(), time.perf_counter()
    try:
        rows = await pool.fetch("SELECT id, refresh_token FROM peer_accounts")
        semaphore = asyncio.Semaphore(concurrency)
        async with AsyncOAuth2Client(
                client_id=simulator.DEFAULT_CLIENT_ID,
                client_secret=simulator.DEFAULT_CLIENT_SECRET,
                token_endpoint=token_url, timeout=15.0,
                limits=httpx.Limits(max_connections=concurrency * 2)) as client:

            async def refresh(row: asyncpg.Record) -> None:
                nonlocal failed
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

            await asyncio.gather(*(refresh(row) for row in rows))
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
    args = parser.parse_args()
    result = asyncio.run(run(args.db, args.token_url, args.key.encode(), args.concurrency))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
