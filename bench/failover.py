"""A database that stops answering, with the default bounds of `[database]`: how long until
/readyz says 503, how long until refreshes resume, and how long a SIGTERM takes.

    python -m bench.failover [--accounts 300]

One `tokend run` on PostgreSQL through tokend.testing.pgproxy, against the simulator (500 ms
per refresh, rotating). Three runs: a failover (open connections silent for good, new ones
pass), a partition of 20 s that then heals, and a SIGTERM during a partition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg

from bench import common
from tokend import clock, config, crypto
from tokend.testing import pgproxy, simulator

PARTITION_SECONDS = 20.0


async def until(predicate, seconds: float) -> None:
    """Poll `predicate` (async) every 50 ms until it is true; TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        while not await predicate():  # noqa: ASYNC110 (an outside process: nothing to await)
            await asyncio.sleep(0.05)


class Daemon:
    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tokend", "--config",
                                      str(config_path), "run"], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=common.child_env())
        self.log_path = log_path

    async def url(self) -> str:
        async def ready() -> bool:
            return b"daemon_ready" in self.log_path.read_bytes()

        await until(ready, 30)
        for line in self.log_path.read_bytes().splitlines():
            if b"daemon_ready" in line:
                return line.split(b'"url":"')[1].split(b'"')[0].decode()
        raise AssertionError("unreachable")

    async def exit_code(self, within_seconds: float) -> int:
        async def exited() -> bool:
            return self.proc.poll() is not None

        await until(exited, within_seconds)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def seconds_until_unready(http: aiohttp.ClientSession, url: str, since: float) -> float:
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url + "/readyz",
                                    timeout=aiohttp.ClientTimeout(total=5)) as response:
                    if response.status == 503:
                        return time.monotonic() - since
            await asyncio.sleep(0.1)


async def refreshed(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM refresh_log WHERE success")


async def at_least(conn: asyncpg.Connection, n: int, seconds: float = 120) -> None:
    async def enough() -> bool:
        return await refreshed(conn) >= n

    await until(enough, seconds)


async def seconds_until_more(conn: asyncpg.Connection, than: int, since: float) -> float:
    await at_least(conn, than + 1, 300)
    return time.monotonic() - since


@contextlib.asynccontextmanager
async def running(url: str, count: int, folder: Path, name: str, **refresh: float,
                  ) -> AsyncIterator[tuple[Daemon, str, pgproxy.PgProxy, asyncpg.Connection]]:
    key_line = crypto.generate_key_line("k1")
    keyring = crypto.Keyring.from_lines([key_line])
    await common.execute(url, "DELETE FROM refresh_log", "DELETE FROM http_log",
                         "DELETE FROM accounts")
    await common.seed_sealed(url, keyring, count, clock.now(), due=True)
    proxy = pgproxy.PgProxy(url)
    await proxy.start()
    conn = await asyncpg.connect(url)
    async with simulator.Simulator(rotate=True, latency_seconds=0.5) as sim:
        path = common.write_toml(folder / f"{name}.toml", proxy.url, sim.token_url, key_line,
                                 concurrency=8, interval_seconds=5, **refresh)
        daemon = Daemon(path, folder / f"{name}.log")
        try:
            yield daemon, await daemon.url(), proxy, conn
        finally:
            daemon.kill()
            await proxy.close()
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=300)
    args = parser.parse_args()
    defaults = config.DatabaseConfig()
    print(f"[database] defaults: connect {defaults.connect_timeout_seconds:g} s, statement "
          f"{defaults.statement_timeout_seconds:g} s, idle in transaction "
          f"{defaults.idle_in_transaction_timeout_seconds:g} s, health check "
          f"{defaults.health_check_seconds:g} s; shutdown grace "
          f"{config.RefreshConfig().shutdown_grace_seconds:g} s")
    common.print_machine(await common.describe_machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with common.database() as url, aiohttp.ClientSession() as http:
            async with running(url, args.accounts, folder, "failover") as (d, base, proxy, conn):
                await at_least(conn, args.accounts // 4)
                proxy.fail_over()
                at = time.monotonic()
                before = await refreshed(conn)
                unready = await seconds_until_unready(http, base, at)
                resumed = await seconds_until_more(conn, before, at)
            print(f"failover: /readyz 503 after {unready:.1f} s; "
                  f"first refresh after {resumed:.1f} s")

            async with running(url, args.accounts, folder, "partition") as (d, base, proxy,
                                                                               conn):
                await at_least(conn, args.accounts // 4)
                proxy.partition()
                at = time.monotonic()
                before = await refreshed(conn)
                unready = await seconds_until_unready(http, base, at)
                await asyncio.sleep(max(0.0, at + PARTITION_SECONDS - time.monotonic()))
                proxy.heal()
                healed = time.monotonic()
                resumed = await seconds_until_more(conn, before, healed)
            print(f"partition of {PARTITION_SECONDS:g} s: /readyz 503 after {unready:.1f} s; "
                  f"first refresh {resumed:.1f} s after the heal")

            async with running(url, args.accounts, folder, "sigterm") as (d, base, proxy, conn):
                await at_least(conn, 8)
                proxy.partition()
                await asyncio.sleep(1.0)  # answers come back to a daemon that cannot save
                os.kill(d.proc.pid, signal.SIGTERM)
                at = time.monotonic()
                code = await d.exit_code(120)
                took = time.monotonic() - at
            print(f"SIGTERM during a partition: gone after {took:.1f} s, exit {code}")


if __name__ == "__main__":
    asyncio.run(main())
