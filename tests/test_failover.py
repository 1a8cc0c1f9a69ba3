"""A database that stops answering instead of refusing: a cloud failover (open connections
go silent for good, new ones reach the new primary) and a partition (everything goes silent,
then heals), played by a loopback proxy in front of the shared PostgreSQL. Real `tokend run`
processes, a rotating provider; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from kit import seed_postgres, wait_until
from proc import Daemon, daemon_config
from test_daemon import streaming
from test_faults import Watch, stop_all
from webhook_receiver import Receiver

from tokend import model
from tokend.testing import simulator
from tokend.testing.pgproxy import PgProxy

pytestmark = pytest.mark.timeout(150)

# Small bounds, so that a fault is noticed within seconds of test time.
TIMEOUTS = {"connect_timeout_seconds": 2, "statement_timeout_seconds": 2,
            "idle_in_transaction_timeout_seconds": 3, "health_check_seconds": 1}


async def _seconds_until_unready(http: aiohttp.ClientSession, url: str, since: float,
                                 within: float) -> float:
    """Poll /readyz until it answers 503; the seconds from `since` until then."""
    async with asyncio.timeout(within + 3):
        while True:
            try:
                async with http.get(url + "/readyz",
                                    timeout=aiohttp.ClientTimeout(total=3)) as response:
                    if response.status == 503:
                        return time.monotonic() - since
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)


async def _successes(watch: Watch) -> int:
    return await watch.conn.fetchval("SELECT count(*) FROM refresh_log WHERE success")


async def _assert_each_refreshed_once(watch: Watch, keyring, tokens: dict[str, str],
                                      sim: simulator.Simulator) -> None:
    stats = sim.stats(tokens=False)
    assert stats["max_in_flight_per_token"] == 1, "two refreshes of one token at once"
    assert stats["by_error"] == {}, stats["by_error"]  # no invalid_grant: no rotation lost
    assert stats["successes"] == stats["calls"] == len(tokens)
    rows = await watch.conn.fetch(
        "SELECT account_id, count(*) FILTER (WHERE success) AS ok, "
        "count(*) FILTER (WHERE NOT success) AS failed FROM refresh_log GROUP BY account_id")
    assert len(rows) == len(tokens)
    assert all(r["ok"] == 1 and r["failed"] == 0 for r in rows), \
        [dict(r) for r in rows if (r["ok"], r["failed"]) != (1, 0)][:5]
    for row in await watch.conn.fetch("SELECT id, state, refresh_token FROM accounts"):
        assert row["state"] == model.ACTIVE
        current = keyring.decrypt(row["refresh_token"], account_id=row["id"],
                                  column="refresh_token")
        # The provider's current token: rotated once, never one it has revoked since.
        assert current != tokens[row["id"]] and current not in sim._revoked, row["id"]


async def test_a_failover_is_noticed_in_seconds_and_survived_without_a_restart(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    count = 240
    tokens = await seed_postgres(pg_url, keyring, count)
    watch = await Watch.open(pg_url)  # direct: the proxy's faults are the daemons' alone
    proxy = PgProxy(pg_url)
    await proxy.start()
    streams = contextlib.AsyncExitStack()
    async with simulator.Simulator(rotate=True, latency_seconds=0.3) as sim, \
            aiohttp.ClientSession() as http:
        config_path = daemon_config(tmp_path, db_url=proxy.url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=4,
                                    interval_seconds=1, lease_seconds=30, database=TIMEOUTS)
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(3)]
        try:
            urls = [await d.url() for d in daemons]
            seen = await streams.enter_async_context(streaming(urls[0]))
            await wait_until(lambda: watch.reaches("access_token IS NOT NULL", count // 4),
                             30, 0.02)
            proxy.fail_over()
            failed_over_at = time.monotonic()
            before = await _successes(watch)
            unready = await asyncio.gather(*(
                _seconds_until_unready(http, url, failed_over_at, 5) for url in urls))
            await wait_until(lambda: _more_than(_successes(watch), before), 30, 0.05)
            resumed = time.monotonic() - failed_over_at
            await wait_until(lambda: watch.reaches("access_token IS NOT NULL", count), 60, 0.1)
            streamed = lambda: [e["account_id"] for e in seen  # noqa: E731
                                if e["action"] == "token_refreshed"]
            await wait_until(lambda: len(set(streamed())) == count, 20, 0.1)
            assert [d.proc.poll() for d in daemons] == [None, None, None], "a daemon died"
            assert await stop_all(daemons) == [0, 0, 0]
        finally:
            await streams.aclose()
            for d in daemons:
                d.kill()
            await proxy.close()
        try:
            await _assert_each_refreshed_once(watch, keyring, tokens, sim)
        finally:
            await watch.close()
    print(f"failover: /readyz 503 after {max(unready):.1f} s, "
          f"first refresh after {resumed:.1f} s")
    assert max(unready) <= 5.0, unready
    assert resumed <= 30.0
    # Entries the other replicas wrote while this one's LISTEN connection was silent
    # were read back when it was replaced: each reached the stream, and only once.
    assert sorted(streamed()) == sorted(tokens)
    events = [e for d in daemons for e in d.events()]
    names = {e.get("event") for e in events}
    assert "database_connections_replaced" in names
    assert "entries_listener_restored" in names
    assert "refresh_result_lost" not in names


async def _more_than(count, n: int) -> bool:
    return await count > n


async def test_a_partition_heals_and_the_loop_the_stream_and_webhooks_carry_on(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    count, revoked = 60, 3
    watch = await Watch.open(pg_url)
    proxy = PgProxy(pg_url)
    await proxy.start()
    streams = contextlib.AsyncExitStack()
    async with simulator.Simulator(rotate=True, latency_seconds=0.05) as sim, \
            Receiver() as receiver, aiohttp.ClientSession() as http:
        config_path = daemon_config(tmp_path, db_url=proxy.url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=4,
                                    interval_seconds=1, lease_seconds=30, database=TIMEOUTS)
        with config_path.open("a") as f:
            f.write(f'\n[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{receiver.secret}"\n'
                    'events = ["account.reauth_required"]\nbackoff_base_seconds = 0.2\n'
                    'backoff_max_seconds = 1\n')
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(2)]
        try:
            urls = [await d.url() for d in daemons]
            seen = await streams.enter_async_context(streaming(urls[0]))
            # Past its backlog (which reads the database): live entries are flowing.
            await wait_until(lambda: any(e["action"] == "worker_heartbeat" for e in seen), 10)
            proxy.partition()
            partitioned_at = time.monotonic()
            unready = await asyncio.gather(*(
                _seconds_until_unready(http, url, partitioned_at, 5) for url in urls))
            # Work arrives while nobody can reach the database: it waits for the heal.
            tokens = await seed_postgres(pg_url, keyring, count)
            lost_grants = sorted(tokens)[:revoked]
            for account_id in lost_grants:
                sim.revoke(tokens[account_id])
            await asyncio.sleep(3)  # long enough for every bound to have fired
            assert sim.calls == 0
            proxy.heal()
            healed_at = time.monotonic()
            await wait_until(lambda: _more_than(_successes(watch), 0), 30, 0.05)
            resumed = time.monotonic() - healed_at
            await wait_until(lambda: watch.reaches("access_token IS NOT NULL",
                                                   count - revoked), 40, 0.1)
            await wait_until(lambda: len(receiver.received) >= revoked, 30, 0.1)
            streamed = lambda: [e["account_id"] for e in seen  # noqa: E731
                                if e["action"] in ("token_refreshed", "token_refresh_failed")]
            await wait_until(lambda: len(set(streamed())) == count, 20, 0.1)
            assert [d.proc.poll() for d in daemons] == [None, None], "a daemon died"
            assert await stop_all(daemons) == [0, 0]
        finally:
            await streams.aclose()
            for d in daemons:
                d.kill()
            await proxy.close()
            states = dict(await watch.conn.fetch(
                "SELECT state, count(*) FROM accounts GROUP BY state"))
            await watch.close()
        stats = sim.stats(tokens=False)
    print(f"partition: /readyz 503 after {max(unready):.1f} s, "
          f"first refresh {resumed:.1f} s after the heal")
    assert max(unready) <= 5.0, unready
    assert resumed <= 30.0
    assert states == {model.ACTIVE: count - revoked, model.REAUTH_REQUIRED: revoked}
    assert stats["successes"] == count - revoked and stats["max_in_flight_per_token"] == 1
    assert sorted(streamed()) == sorted(tokens)  # each entry on the stream once
    delivered = sorted(r["payload"]["data"]["account_id"] for r in receiver.received)
    assert delivered == lost_grants
    assert receiver.bad_signatures == 0


async def test_sigterm_during_a_partition_ends_the_process_within_its_bound(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    grace = 2.0
    await seed_postgres(pg_url, keyring, 8)
    proxy = PgProxy(pg_url)
    await proxy.start()
    async with simulator.Simulator(rotate=True, latency_seconds=1.0) as sim:
        config_path = daemon_config(tmp_path, db_url=proxy.url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=8,
                                    shutdown_grace_seconds=grace, database=TIMEOUTS)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            await daemon.url()
            await wait_until(lambda: sim.in_flight == 8, 15, 0.01)
            # The answers come back to a daemon that can no longer save them.
            proxy.partition()
            await wait_until(lambda: sim.in_flight == 0, 5, 0.01)
            daemon.signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            code = await daemon.wait(timeout=grace + 20)
            took = time.monotonic() - signalled_at
        finally:
            daemon.kill()
            await proxy.close()
    print(f"partition + SIGTERM: gone after {took:.1f} s (grace {grace:g} s), exit {code}")
    assert took <= grace + 5, took
    events = daemon.events()
    names = [e.get("event") for e in events]
    # Eight granted refreshes could not be saved: said, and the exit code says so too.
    abandoned = {step for e in events if e.get("event") == "shutdown_abandoned"
                 for step in e["steps"]}
    assert "refresh saves" in abandoned, names
    assert "refresh-loop" not in abandoned  # cancelled after the grace, and it ended
    assert code == 1
