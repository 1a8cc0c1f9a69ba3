"""The refresh cycle: heartbeats, summaries, concurrency, sleeping and surviving outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import pytest
from kit import Harness, refresh_token

from tokend import clock, loop, model, store


def make_loop(h: Harness, stop: asyncio.Event | None = None, **overrides) -> loop.Loop:
    settings = h.settings
    if overrides:
        import dataclasses
        settings = dataclasses.replace(settings, **overrides)
    return loop.Loop(db=h.db, worker=h.worker, hub=h.hub, stats=h.stats, settings=settings,
                     instance="test-instance", stop=stop or asyncio.Event())


async def test_quiet_cycle_writes_heartbeat_and_says_so(harness: Harness) -> None:
    published = []
    harness.hub.publish = published.append
    cycle = make_loop(harness)
    assert await cycle.cycle()
    (worker,) = await harness.db.list_workers()
    assert worker.name == "refresh" and worker.instance == "test-instance"
    assert worker.last_status == "idle" and worker.last_finished_at is not None
    assert worker.last_summary["message"] == "no accounts need token refresh"
    assert not worker.stale(clock.now())
    (entry,) = await harness.db.list_entries(action="worker_heartbeat")
    assert entry.message == "no accounts need token refresh" and entry.source == "scheduled"
    assert [e.action for e in published] == ["worker_heartbeat"]
    assert cycle.healthy(clock.now())


async def test_busy_cycle_refreshes_every_due_account_and_summarises(harness: Harness) -> None:
    revoked = refresh_token()
    harness.sim.revoke(revoked)
    for n in range(40):
        await harness.add(f"a{n:02d}", token=revoked if n == 7 else None)
    harness.sim.configure(latency_seconds=0.05)
    cycle = make_loop(harness, concurrency=8)
    started = time.perf_counter()
    assert await cycle.cycle()
    elapsed = time.perf_counter() - started
    (worker,) = await harness.db.list_workers()
    summary = worker.last_summary
    assert summary["status"] == "completed"
    assert summary["accounts_checked"] == 40 and summary["accounts_refreshed"] == 39
    assert summary["errors"] == [{"account_id": "a07", "error_code": "invalid_grant"}]
    assert harness.sim.stats()["max_in_flight"] <= 8
    assert elapsed < 40 * 0.05  # concurrent, not one by one
    (entry,) = await harness.db.list_entries(action="cycle_summary")
    assert entry.details["accounts_refreshed"] == 39
    # Everything is fresh now: the next cycle is quiet.
    assert await cycle.cycle()
    assert (await harness.db.list_workers())[0].last_status == "idle"


def test_stale_is_three_intervals() -> None:
    now = clock.now()
    worker = model.Worker(name="refresh", instance="i", interval_seconds=10,
                          last_started_at=now, last_finished_at=now - timedelta(seconds=29),
                          last_summary=None, last_status="idle")
    assert not worker.stale(now)
    assert worker.stale(now + timedelta(seconds=2))


async def test_loop_sleeps_until_the_earliest_due_time(harness: Harness) -> None:
    cycle = make_loop(harness, interval_seconds=600)
    assert await cycle.seconds_until_next_cycle() == 600  # nothing stored at all
    await harness.add("a1")
    assert (await harness.worker.refresh_now("a1")).success
    # Due again after max_age (3600 s): the interval is sooner.
    assert await cycle.seconds_until_next_cycle() == 600
    cycle.interval_seconds = cycle.settings.interval_seconds
    short = make_loop(harness, interval_seconds=10_000)
    due_in = await short.seconds_until_next_cycle()
    assert 3590 <= due_in <= 3600


async def test_wake_and_stop_end_a_sleep_at_once(harness: Harness) -> None:
    stop = asyncio.Event()
    cycle = make_loop(harness, stop)
    sleeper = asyncio.create_task(cycle.sleep(60))
    await asyncio.sleep(0.01)
    cycle.wake()
    await asyncio.wait_for(sleeper, 1)
    runner = asyncio.create_task(cycle.run())
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(runner, 2)


async def test_stop_lets_in_flight_refreshes_finish(harness: Harness) -> None:
    for n in range(6):
        await harness.add(f"a{n}")
    harness.sim.configure(latency_seconds=0.3)
    stop = asyncio.Event()
    cycle = make_loop(harness, stop, concurrency=3)
    runner = asyncio.create_task(cycle.run())
    while harness.sim.stats()["in_flight"] < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(runner, 5)
    accounts = await harness.db.list_accounts()
    refreshed = [a for a in accounts if a.access_token]
    assert len(refreshed) == harness.sim.stats()["successes"] == 3  # no new claims after stop
    assert all(a.lease_owner is None for a in refreshed)


async def test_database_outage_fails_the_cycle_and_the_loop_recovers(harness: Harness) -> None:
    cycle = make_loop(harness)
    real = harness.db.worker_started

    async def down(*args, **kwargs):
        raise store.StoreError("database unreachable")

    harness.db.worker_started = down
    cycle.started_at -= timedelta(seconds=10 * cycle.interval_seconds)  # a long outage
    assert not await cycle.cycle()
    assert cycle.last_finished_at is None
    # Still turning: not wedged, so /health says warn (not fail) and the watchdog pings.
    assert cycle.healthy(clock.now())
    harness.db.worker_started = real
    assert await cycle.cycle()
    assert cycle.last_finished_at is not None


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_claims_never_exceed_concurrency(harness: Harness, concurrency: int) -> None:
    for n in range(10):
        await harness.add(f"a{n}")
    harness.sim.configure(latency_seconds=0.02)
    cycle = make_loop(harness, concurrency=concurrency)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(cycle.cycle(), 10)
    assert harness.sim.stats()["max_in_flight"] == concurrency
    assert harness.sim.stats()["successes"] == 10


async def test_old_log_rows_are_pruned_in_batches(harness: Harness, monkeypatch) -> None:
    monkeypatch.setattr(loop, "PRUNE_BATCH", 3)
    await harness.add("a1")
    for _ in range(4):
        assert (await harness.worker.refresh_now("a1")).success
    await harness.db.set_state("a1", model.DISABLED, clock.now())  # keep the cycle quiet
    link = await harness.db.add_connect_link(model.NewConnectLink(
        id="link-1", token_hash="t" * 64, provider="p", org="acme", account_id=None,
        scopes=(), expires_at=clock.now() + timedelta(minutes=15)), clock.now())
    cycle = make_loop(harness)
    cycle.log_retention_seconds = 3600.0
    cycle.clock = lambda: clock.now() + timedelta(hours=2)  # every row is old now
    assert await cycle.cycle()
    assert await harness.db.list_attempts("a1") == []
    assert await harness.db.find_connect_link(token_hash=link.token_hash) is None
    entries = await harness.db.list_entries()
    assert [e.action for e in entries] == ["worker_heartbeat"]  # written after the prune
    assert cycle.next_prune > time.monotonic() + 3000  # not again for an hour
