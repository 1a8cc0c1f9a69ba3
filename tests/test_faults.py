"""Faults, bounded in time and all on loopback: replicas killed mid-cycle, the database
going away under a running daemon, and a provider that misbehaves in every way it can."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sqlite3
import threading
import time
from collections.abc import Awaitable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pgcluster
import pytest
from conftest import SKIP_POSTGRES
from kit import Harness, engine_config, seed, seed_postgres, wait_until
from proc import Daemon, daemon_config

from tokend import clock, daemon, loop, model, providers, store
from tokend.testing import simulator
from tokend.testing.pgproxy import PgProxy

pytestmark = pytest.mark.timeout(60)


class Watch:
    """One connection for polling the database while daemons work on it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, pg_url: str) -> Watch:
        return cls(await asyncpg.connect(pg_url))

    async def count(self, where: str, *args: Any) -> int:
        return await self.conn.fetchval(f"SELECT count(*) FROM accounts WHERE {where}", *args)

    async def reaches(self, where: str, n: int) -> bool:
        return await self.count(where) >= n

    async def close(self) -> None:
        await self.conn.close()


async def stop_all(daemons: list[Daemon]) -> list[int]:
    for d in daemons:
        if d.proc.poll() is None:
            d.signal(signal.SIGTERM)
    return [await d.wait() for d in daemons]


# -- replicas -----------------------------------------------------------------------------


async def test_three_replicas_refresh_5000_rotating_accounts_exactly_once(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    count = 5000
    await seed_postgres(pg_url, keyring, count)
    watch = await Watch.open(pg_url)
    async with simulator.Simulator(rotate=True, latency_seconds=0.01) as sim:
        config_path = daemon_config(tmp_path, db_url=pg_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=32,
                                    interval_seconds=2)
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(3)]
        try:
            for d in daemons:
                await d.url()
            await wait_until(lambda: watch.reaches("access_token IS NOT NULL", count), 50, 0.25)
            assert await stop_all(daemons) == [0, 0, 0]
        finally:
            for d in daemons:
                d.kill()
            rows = await watch.conn.fetch(
                "SELECT account_id, count(*) FILTER (WHERE success) AS ok, "
                "count(*) FILTER (WHERE NOT success) AS failed FROM refresh_log "
                "GROUP BY account_id")
            states = dict(await watch.conn.fetch(
                "SELECT state, count(*) FROM accounts GROUP BY state"))
            await watch.close()
        stats = sim.stats(tokens=False)
    assert stats["max_in_flight_per_token"] == 1, "two refreshes of one token at once"
    assert stats["by_error"] == {}, stats["by_error"]  # above all, no invalid_grant
    assert stats["successes"] == stats["calls"] == count
    assert len(rows) == count
    assert all(r["ok"] == 1 and r["failed"] == 0 for r in rows)
    assert states == {"active": count}
    shares = [sum(e.get("event") == "token_refreshed" for e in d.events()) for d in daemons]
    assert sum(shares) == count and min(shares) > 0, shares


async def test_kill_9_loses_only_rotations_it_never_saved_and_says_so(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    """With rotation on, a refresh the provider granted but the killed process never stored
    is lost for good: the provider already killed the old token, and nobody knows the new
    one. That window cannot be closed from our side (the answer may be lost on the wire just
    as well). What tokend must do is notice on the next attempt, classify it right
    (invalid_grant for the very token it holds, so reauth_required, not a retry loop) and
    refresh every other account exactly once. To hit the window every time, the provider
    here holds each granted answer for a second before sending it."""
    count, concurrency = 150, 8
    tokens = await seed_postgres(pg_url, keyring, count)
    granted: set[str] = set()
    hold = {"seconds": 1.0}
    watch = await Watch.open(pg_url)
    async with simulator.Simulator(rotate=True, latency_seconds=0.01) as sim:
        answer = sim._answer

        async def answer_then_hold(request, form, token):
            response = await answer(request, form, token)
            if response.status == 200:
                granted.add(token)  # rotated at the provider: the old token is dead now
                await asyncio.sleep(hold["seconds"])
            return response

        sim._answer = answer_then_hold
        config_path = daemon_config(tmp_path, db_url=pg_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=concurrency,
                                    lease_seconds=3, interval_seconds=0.5)
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(3)]
        victim, survivors = daemons[0], daemons[1:]
        try:
            for d in daemons:
                await d.url()
            instance = (await victim.wait_for_event("daemon_ready"))["instance"]
            owned = "lease_owner = $1"
            await wait_until(lambda: _at_least(watch.count(owned, instance), concurrency), 15,
                             0.02)
            await asyncio.sleep(0.3)  # its calls are past the provider, their answers held
            victim.kill()  # SIGKILL: no save, no release, leases left behind
            leased = {r["id"]: r["lease_expires_at"] for r in await watch.conn.fetch(
                "SELECT id, lease_expires_at FROM accounts WHERE lease_owner = $1", instance)}
            hold["seconds"] = 0.0
            await wait_until(lambda: watch.reaches(
                "access_token IS NOT NULL OR state = 'reauth_required'", count), 30, 0.2)
            assert await stop_all(survivors) == [0, 0]
        finally:
            for d in daemons:
                d.kill()
            accounts = {r["id"]: r for r in await watch.conn.fetch(
                "SELECT id, state, last_error, refresh_token FROM accounts")}
            log_rows = await watch.conn.fetch(
                "SELECT account_id, success, error_code, started_at FROM refresh_log")
            await watch.close()
        stats = sim.stats(tokens=False)

    lost = {a for a in leased if tokens[a] in granted}
    assert leased and lost, "the kill did not land while answers were in flight"
    assert stats["max_in_flight_per_token"] == 1
    assert stats["by_error"] == {"invalid_grant": len(lost)}
    attempts: dict[str, list[tuple[bool, str | None]]] = {a: [] for a in accounts}
    for row in log_rows:
        attempts[row["account_id"]].append((row["success"], row["error_code"]))
        if row["account_id"] in leased:  # nobody touched it before the dead lease ran out
            assert row["started_at"] >= leased[row["account_id"]]
    for account_id, row in accounts.items():
        if account_id in lost:
            # Its next refresh sent the token the provider had rotated away.
            assert row["state"] == model.REAUTH_REQUIRED, account_id
            assert row["last_error"] == providers.INVALID_GRANT
            assert attempts[account_id] == [(False, providers.INVALID_GRANT)]
            assert keyring.decrypt(row["refresh_token"], account_id=account_id,
                                   column="refresh_token") == tokens[account_id]
        else:
            assert row["state"] == model.ACTIVE, account_id
            assert attempts[account_id] == [(True, None)], (account_id, attempts[account_id])
    events = [e for d in daemons for e in d.events()]  # the victim's, up to its death
    assert sum(e.get("event") == "token_refreshed" for e in events) == count - len(lost)
    failed = [e for e in events if e.get("event") == "token_refresh_failed"]
    assert {e["account_id"] for e in failed} == lost
    assert all(e["error_code"] == "invalid_grant" and e["error_kind"] == "reauth" for e in failed)


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


# -- the database going away ---------------------------------------------------------------


async def _health(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as response:
        return response.status, (await response.json(content_type=None))["status"]


async def test_postgres_outage_mid_cycle_loses_no_answered_refresh(
        tmp_path: Path, pg_url: str, keyring, key_lines) -> None:
    count, concurrency = 48, 8
    await seed_postgres(pg_url, keyring, count)
    watch = await Watch.open(pg_url)
    proxy = PgProxy(pg_url)
    await proxy.start()
    # interval 10 s: three intervals without a finished cycle (a wedged loop, `fail`) is far
    # longer than this outage, so /health must say `warn`, never `fail`.
    async with simulator.Simulator(rotate=True, latency_seconds=0.5) as sim, \
            aiohttp.ClientSession() as http:
        config_path = daemon_config(tmp_path, db_url=proxy.url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=concurrency,
                                    lease_seconds=10, interval_seconds=10)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            assert await _health(http, url) == (200, "pass")
            await wait_until(lambda: sim.in_flight >= concurrency, 15, 0.01)
            await asyncio.sleep(0.2)  # mid-cycle: answers are on their way back
            during = []
            async with proxy.outage():
                down_at = clock.now()
                for _ in range(12):
                    during.append(await _health(http, url))
                    await asyncio.sleep(0.25)
            up_at = clock.now()
            assert daemon.proc.poll() is None, "the daemon died with its database"
            assert (200, "warn") in during, during
            assert all(status == 200 for status, _ in during), during
            await wait_until(lambda: _healthy(http, url), 10, 0.2)
            await wait_until(lambda: watch.reaches("access_token IS NOT NULL", count), 40, 0.2)
            finished = "SELECT max(last_finished_at) FROM workers"
            await wait_until(lambda: _after(watch.conn.fetchval(finished), up_at), 20, 0.2)
            async with http.get(url + "/loop-status") as response:
                status = await response.json()
            assert status["loops"][0]["stale"] is False
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            daemon.kill()
            await proxy.close()
            states = dict(await watch.conn.fetch(
                "SELECT state, count(*) FROM accounts GROUP BY state"))
            ok = tuple(await watch.conn.fetchrow(
                "SELECT count(*), count(DISTINCT account_id) FROM refresh_log WHERE success"))
            failed = await watch.conn.fetchval("SELECT count(*) FROM refresh_log WHERE NOT success")
            await watch.close()
        stats = sim.stats(tokens=False)
    # Every answer the provider gave (each one rotated the token) reached the database.
    assert stats["successes"] == count and stats["by_error"] == {}
    assert states == {"active": count}
    assert (ok, failed) == ((count, count), 0)  # a row each: no save written twice
    names = [e.get("event") for e in daemon.events()]
    assert "refresh_save_retry" in names, "the outage missed the in-flight saves"
    assert "refresh_result_lost" not in names
    assert down_at < up_at


async def test_a_save_whose_commit_answer_is_lost_is_written_once(
        pg_url: str, keyring) -> None:
    """The save's COMMIT reaches PostgreSQL and the connection dies before its answer
    comes back: the retry finds the save by its id and writes nothing a second time (no
    second refresh-log row, entry or budget count), and reports it applied."""
    proxy = PgProxy(pg_url)
    await proxy.start()
    try:
        async with store.open(proxy.url) as db, simulator.Simulator(rotate=True) as sim:
            cfg = engine_config(sim.token_url)
            async with daemon.assemble(cfg, db=db, keyring=keyring, instance="w1") as parts:
                h = Harness(sim=sim, db=db, keyring=keyring, worker=parts.refresher,
                            hub=parts.hub, stats=parts.stats, cfg=cfg)
                await h.add("a1")
                proxy.lose_commit_answer()
                outcome = await h.worker.refresh_now("a1")
                after = await db.get_account("a1")
            stats = sim.stats(tokens=False)
    finally:
        await proxy.close()
    assert proxy.commit_answers_lost == 1
    assert outcome.success and outcome.applied and outcome.error_code is None
    conn = await asyncpg.connect(pg_url)
    try:
        attempts = await conn.fetch("SELECT applied, entry_id FROM refresh_log")
        entries = await conn.fetchval("SELECT count(*) FROM http_log WHERE account_id = 'a1'")
        calls = await conn.fetchval("SELECT sum(calls) FROM token_calls")
    finally:
        await conn.close()
    assert [tuple(row) for row in attempts] == [(True, outcome.entry.id)]
    assert (entries, calls, stats["calls"]) == (1, 1, 1)
    # The rotated refresh token the provider holds current is the one stored.
    current = keyring.decrypt(after.refresh_token, account_id="a1", column="refresh_token")
    assert sim.calls_for(current) == 0 and after.version == 2 and after.lease_owner is None


async def _healthy(http: aiohttp.ClientSession, url: str) -> bool:
    return await _health(http, url) == (200, "pass")


async def _after(value: Awaitable[datetime | None], moment: datetime) -> bool:
    when = await value
    return when is not None and when > moment


async def test_a_briefly_locked_sqlite_file_delays_but_loses_nothing(
        tmp_path: Path, sqlite_url: str, keyring, key_lines) -> None:
    count = 24
    await seed(sqlite_url, keyring, count)
    path = sqlite_url.removeprefix("sqlite://")
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        # Another process holding the write lock (a backup, a stuck CLI): 2 s, below the
        # store's busy timeout, so writers wait their turn instead of failing.
        conn = sqlite3.connect(path, timeout=5, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(10)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    async with simulator.Simulator(rotate=True, latency_seconds=0.3) as sim, \
            aiohttp.ClientSession() as http:
        config_path = daemon_config(tmp_path, db_url=sqlite_url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=6, interval_seconds=5)
        daemon = Daemon(config_path, tmp_path / "daemon.log")
        try:
            url = await daemon.url()
            await wait_until(lambda: sim.in_flight >= 6, 15, 0.01)
            holder = asyncio.create_task(asyncio.to_thread(hold_the_write_lock))
            await asyncio.to_thread(locked.wait, 5)
            during = [await _health(http, url)]
            await asyncio.sleep(2.0)
            during.append(await _health(http, url))
            release.set()
            await holder
            assert daemon.proc.poll() is None
            assert all(status == 200 for status, _ in during), during

            async def all_saved() -> bool:
                with sqlite3.connect(path) as conn:
                    (n,), = conn.execute(
                        "SELECT count(*) FROM accounts WHERE access_token IS NOT NULL")
                return n == count

            await wait_until(all_saved, 30, 0.2)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        finally:
            release.set()
            daemon.kill()
        stats = sim.stats(tokens=False)
    assert stats["successes"] == count and stats["by_error"] == {}
    with sqlite3.connect(path) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM accounts GROUP BY state"))
    assert states == {"active": count}


# -- provider storms ------------------------------------------------------------------------


@dataclasses.dataclass
class Clock:
    """Wall-clock time moved forward on demand, so backoff can be waited out at once."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return clock.now() + self.offset

    def travel_to(self, moment: datetime) -> None:
        self.offset += max(moment - self(), timedelta()) + timedelta(seconds=1)


STORMS = [
    ("500", providers.SERVER_ERROR, 500),
    ("502_html", providers.SERVER_ERROR, 502),
    ("429", providers.RATE_LIMITED, 429),
    ("reset", providers.CONNECTION_ERROR, None),
    ("hang", providers.TIMEOUT, None),
    ("huge", providers.BAD_RESPONSE, 200),
]
RETRY_AFTER_SECONDS = 120


@pytest.mark.parametrize(("mode", "code", "status"), STORMS, ids=[s[0] for s in STORMS])
async def test_a_provider_storm_is_classified_backed_off_and_recovered_from(
        harness: Harness, mode: str, code: str, status: int | None) -> None:
    rounds, accounts = 3, 5
    clock = Clock()
    harness.worker.clock = clock
    cycle = loop.Loop(db=harness.db, worker=harness.worker, hub=harness.hub,
                      stats=harness.stats, settings=harness.settings, instance="storm",
                      stop=asyncio.Event(), clock=clock)
    base = harness.settings.backoff_base_seconds
    for n in range(accounts):
        await harness.add(f"a{n}")
    harness.sim.configure(fail_mode=mode, retry_after_seconds=RETRY_AFTER_SECONDS)
    delays: dict[str, list[float]] = {}
    for n in range(rounds):
        failed_at = clock()
        assert await cycle.cycle()
        elapsed = (clock() - failed_at).total_seconds()
        rows = await harness.db.list_accounts()
        for a in rows:
            assert (a.state, a.last_error, a.consecutive_failures) == ("active", code, n + 1)
            assert a.lease_owner is None and a.access_token is None
            delay = (a.next_attempt_at - failed_at).total_seconds()
            ceiling = base * 2 ** n  # the n-th consecutive failure: [ceiling/2, ceiling)
            floor = ceiling / 2
            if mode == "429":
                floor, ceiling = max(floor, RETRY_AFTER_SECONDS), max(ceiling,
                                                                     RETRY_AFTER_SECONDS)
            assert floor <= delay <= ceiling + elapsed, (n, delay)
            delays.setdefault(a.id, []).append(delay)
        (worker,) = [w for w in await harness.db.list_workers() if w.instance == "storm"]
        assert worker.last_summary["accounts_checked"] == accounts
        assert worker.last_summary["accounts_refreshed"] == 0
        assert {e["error_code"] for e in worker.last_summary["errors"]} == {code}
        assert await cycle.cycle()  # backing off: nothing is due until then
        assert (await harness.db.list_workers())[0].last_status == "idle"
        clock.travel_to(max(a.next_attempt_at for a in rows))
    for series in delays.values():
        if mode == "429":  # Retry-After (120 s) dominates the first rounds' 15-120 s
            assert min(series) >= RETRY_AFTER_SECONDS
        else:
            assert series == sorted(series) and len(set(series)) == rounds, series
    assert await harness.db.paused_providers(clock()) == {}  # not a credentials problem
    for n in range(accounts):
        attempts = await harness.db.list_attempts(f"a{n}")
        assert [(a.success, a.error_code) for a in attempts] == [(False, code)] * rounds
        entries = await harness.db.list_entries(account_id=f"a{n}")
        assert len(entries) == rounds
        for entry in entries:
            assert entry.action == "token_refresh_failed"
            assert entry.error["code"] == code and entry.error["kind"] == providers.TRANSIENT
            if mode == "429":
                assert entry.error["retry_after_seconds"] == RETRY_AFTER_SECONDS
            if status is None:
                assert entry.response is None
            else:
                assert entry.response["status"] == status
                assert len(str(entry.response["body"])) <= 5000  # cut, never 10 MiB
    # The provider recovers: the next due attempt succeeds and clears the failures.
    harness.sim.configure(fail_mode=None)
    assert await cycle.cycle()
    rows = await harness.db.list_accounts()
    assert all(a.access_token and a.consecutive_failures == 0 and a.last_error is None
               and a.state == "active" for a in rows)
    assert harness.sim.stats()["successes"] == accounts


# -- a real database crash -----------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[pgcluster.Cluster]:
    """A PostgreSQL cluster of this test's own, to crash at will."""
    if SKIP_POSTGRES:
        pytest.skip("PostgreSQL tests skipped: TOKEND_TEST_SKIP_POSTGRES=1")
    with pgcluster.running() as running:
        yield running


async def _watch_health(http: aiohttp.ClientSession, url: str,
                        seen: list[tuple[float, str]]) -> None:
    """Record (monotonic time, /health status) every 0.1 s, "down" when it does not answer."""
    while True:
        try:
            _, status = await _health(http, url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = f"down: {exc!r}"
        seen.append((time.monotonic(), status))
        await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_a_real_postgres_crash_mid_cycle_loses_no_rotation(
        tmp_path: Path, cluster: pgcluster.Cluster, keyring, key_lines) -> None:
    """3 replicas x 5,000 rotating accounts, and `pg_ctl restart -m immediate` (every backend
    killed, crash recovery from the WAL) while a third of them are done: afterwards every
    account was refreshed exactly once, its stored refresh token is the one the provider
    holds current, /health went warn and came back, and every daemon is still up."""
    count = 5000
    db = await store.connect(cluster.url)
    try:
        await db.migrate()
    finally:
        await db.close()
    tokens = await seed_postgres(cluster.url, keyring, count)
    async with simulator.Simulator(rotate=True, latency_seconds=0.02) as sim, \
            aiohttp.ClientSession() as http:
        # lease 60 s: a save keeps retrying until its lease ends, far beyond the crash.
        # interval 30 s: /health fails only for a loop with no cycle ended in three
        # intervals (a wedged loop), which this whole run is shorter than, so it says
        # `warn` for the database and nothing worse.
        config_path = daemon_config(tmp_path, db_url=cluster.url, key_line=key_lines[0],
                                    token_url=sim.token_url, concurrency=24,
                                    interval_seconds=30, lease_seconds=60)
        daemons = [Daemon(config_path, tmp_path / f"d{n}.log") for n in range(3)]
        health: list[list[tuple[float, str]]] = [[] for _ in daemons]
        watchers: list[asyncio.Task] = []
        try:
            urls = [await d.url() for d in daemons]
            watchers = [asyncio.create_task(_watch_health(http, url, seen))
                        for url, seen in zip(urls, health, strict=True)]
            watch = await Watch.open(cluster.url)
            try:
                await wait_until(lambda: watch.reaches("access_token IS NOT NULL", count // 3),
                                 60, 0.05)
            finally:
                await watch.close()
            crashed_at = time.monotonic()
            await asyncio.to_thread(cluster.restart_immediate)
            back_at = time.monotonic()
            watch = await Watch.open(cluster.url)
            try:
                at_restart = await watch.count("access_token IS NOT NULL")
                await wait_until(lambda: watch.reaches("access_token IS NOT NULL", count), 90,
                                 0.25)
            finally:
                await watch.close()

            async def all_pass_again() -> bool:
                return all(seen and seen[-1][1] == "pass" and seen[-1][0] > back_at
                           for seen in health)

            await wait_until(all_pass_again, 30, 0.1)
            assert [d.proc.poll() for d in daemons] == [None, None, None], "a daemon died"
            stopping_at = time.monotonic()
            assert await stop_all(daemons) == [0, 0, 0]
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            for d in daemons:
                d.kill()
        stats = sim.stats(tokens=False)
        revoked = set(sim._revoked)
    watch = await Watch.open(cluster.url)
    try:
        rows = await watch.conn.fetch(
            "SELECT account_id, count(*) FILTER (WHERE success) AS ok, "
            "count(*) FILTER (WHERE NOT success) AS failed FROM refresh_log GROUP BY account_id")
        accounts = await watch.conn.fetch("SELECT id, state, refresh_token FROM accounts")
    finally:
        await watch.close()

    assert count // 3 <= at_restart < count, "the crash did not land mid-cycle"
    assert stats["max_in_flight_per_token"] == 1, "two refreshes of one token at once"
    assert stats["by_error"] == {}, stats["by_error"]  # no invalid_grant: no rotation lost
    assert stats["successes"] == stats["calls"] == count
    assert len(rows) == count
    assert all(r["ok"] == 1 and r["failed"] == 0 for r in rows), \
        [dict(r) for r in rows if (r["ok"], r["failed"]) != (1, 0)][:5]
    for row in accounts:
        assert row["state"] == model.ACTIVE
        current = keyring.decrypt(row["refresh_token"], account_id=row["id"],
                                  column="refresh_token")
        # Rotated once: not the seeded token, and not one the provider has revoked.
        assert current != tokens[row["id"]] and current not in revoked, row["id"]
    for seen in health:
        during = [status for at, status in seen if crashed_at <= at < stopping_at]
        assert "warn" in during, during
        assert set(during) <= {"pass", "warn"}, [s for s in during if s not in ("pass", "warn")]
    events = [e for d in daemons for e in d.events()]
    names = {e.get("event") for e in events}
    assert "refresh_result_lost" not in names
    assert "refresh_save_retry" in names, "the crash missed the in-flight saves"
    assert sum(e.get("event") == "token_refreshed" for e in events) == count
