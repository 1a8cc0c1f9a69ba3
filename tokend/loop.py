"""The refresh cycle: heartbeat, claim what is due, refresh with bounded concurrency, sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from tokend import clock, config, metrics, refresher, store, stream, vocabulary

log = structlog.get_logger("tokend.loop")

NAME = "refresh"
QUIET_MESSAGE = "no accounts need token refresh"
MIN_SLEEP_SECONDS = 1.0
ERROR_RETRY_SECONDS = 5.0
MAX_LISTED_ERRORS = 50
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 5000
PRUNE_MAX_BATCHES = 100


class Loop:
    def __init__(
        self, *, db: store.Store, worker: refresher.Refresher, hub: stream.Hub,
        stats: metrics.Metrics, settings: config.RefreshConfig, instance: str,
        stop: asyncio.Event, clock: Callable[[], datetime] = clock.now,
        log_retention_seconds: float | None = None,
    ) -> None:
        self.db, self.worker, self.hub, self.stats = db, worker, hub, stats
        self.settings, self.instance, self.stop, self.clock = settings, instance, stop, clock
        self.interval_seconds = settings.interval_seconds
        self.started_at = clock()
        self.last_finished_at: datetime | None = None  # the last cycle that succeeded
        self.last_turned_at: datetime | None = None  # the last cycle that ended at all
        self._wake = asyncio.Event()
        self.log_retention_seconds = log_retention_seconds
        self._next_prune = time.monotonic()

    def healthy(self, now: datetime) -> bool:
        """Not wedged: a cycle ended within three intervals (or the loop is that young).

        A cycle the database failed still counts: the loop is turning, and restarting
        the process (what the systemd watchdog would do) cannot bring a database back.
        """
        reference = self.last_turned_at or self.started_at
        return (now - reference).total_seconds() <= 3 * self.interval_seconds

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        log.info("loop_started", instance=self.instance, interval_seconds=self.interval_seconds)
        while not self.stop.is_set():
            ok = await self.cycle()
            await self._sleep(await self._sleep_seconds() if ok else self._retry_seconds())
        log.info("loop_stopped", instance=self.instance)

    async def cycle(self) -> bool:
        """One cycle; False when the database failed it."""
        began = time.perf_counter()
        try:
            await self.db.worker_started(NAME, self.instance, self.interval_seconds, self.clock())
            summary = await self._refresh_due()
            status = summary["status"]
            await self.db.worker_finished(NAME, self.instance, self.clock(), status, summary)
            await self._announce(summary)
            await self._prune_if_due()
        except store.StoreError as exc:
            self.stats.cycles.labels("error").inc()
            log.error("cycle_failed", error=str(exc))
            return False
        finally:
            self.stats.cycle_seconds.observe(time.perf_counter() - began)
            self.last_turned_at = self.clock()
        self.last_finished_at = self.clock()
        self.stats.cycles.labels(status).inc()
        return True

    async def _refresh_due(self) -> dict[str, Any]:
        s = self.settings
        in_flight: set[asyncio.Task[refresher.Outcome]] = set()
        checked = refreshed = 0
        errors: list[dict[str, str | None]] = []

        def collect(done: set[asyncio.Task[refresher.Outcome]]) -> None:
            nonlocal refreshed
            for task in done:
                outcome = task.result()
                if outcome.success:
                    refreshed += 1
                else:
                    errors.append({"account_id": outcome.account_id,
                                   "error_code": outcome.error_code})

        # Claim once a quarter of the slots are free, not after every completion: a claim
        # is a round trip on the loop's critical path, and a claim of one or two accounts
        # costs nearly what a claim of sixteen does. Never more than the free slots, so no
        # lease is held ahead of the work.
        low_water = max(1, s.concurrency // 4)
        try:
            while not self.stop.is_set():
                free = s.concurrency - len(in_flight)
                if free < low_water:
                    done, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED)
                    collect(done)
                    continue
                batch = await self.db.claim_due(
                    self.worker.owner, self.clock(), limit=free, lease_seconds=s.lease_seconds,
                    expiry_threshold_seconds=s.expiry_threshold_seconds,
                    max_age_seconds=s.max_age_seconds)
                if not batch:
                    break
                checked += len(batch)
                in_flight |= {asyncio.create_task(
                    self.worker.refresh_claimed(a, vocabulary.SCHEDULED),
                    name=f"refresh:{a.id}") for a in batch}
        finally:
            # On a stop or a database failure the claimed accounts still finish.
            if in_flight:
                done, _ = await asyncio.wait(in_flight)
                collect(done)
        if checked == 0:
            return {"status": "idle", "message": QUIET_MESSAGE, "accounts_checked": 0,
                    "accounts_refreshed": 0, "errors": [], "timestamp": self._now_iso()}
        return {"status": "completed", "accounts_checked": checked,
                "accounts_refreshed": refreshed, "errors": errors[:MAX_LISTED_ERRORS],
                "error_count": len(errors), "timestamp": self._now_iso()}

    async def _announce(self, summary: dict[str, Any]) -> None:
        if summary["status"] == "idle":
            log.info("worker_heartbeat", message=QUIET_MESSAGE, instance=self.instance)
            entry = store.Entry(action=vocabulary.WORKER_HEARTBEAT, source=vocabulary.SCHEDULED,
                                created_at=self.clock(), message=QUIET_MESSAGE, details=summary)
        else:
            log.info("cycle_summary", **summary)
            entry = store.Entry(
                action=vocabulary.CYCLE_SUMMARY, source=vocabulary.SCHEDULED,
                created_at=self.clock(),
                message=f"{summary['accounts_refreshed']} of {summary['accounts_checked']} "
                        "accounts refreshed", details=summary)
        self.hub.publish(await self.db.add_entry(entry))

    async def _prune_if_due(self) -> None:
        """Drop log rows past retention, a batch at a time, about once an hour."""
        if self.log_retention_seconds is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        before = self.clock() - timedelta(seconds=self.log_retention_seconds)
        deleted = 0
        for _ in range(PRUNE_MAX_BATCHES):
            batch = await self.db.prune_logs(before, PRUNE_BATCH)
            deleted += batch
            if batch == 0 or self.stop.is_set():
                break
        if deleted:
            log.info("logs_pruned", rows=deleted, before=before.isoformat())

    def _retry_seconds(self) -> float:
        return min(ERROR_RETRY_SECONDS, self.interval_seconds)

    async def _sleep_seconds(self) -> float:
        now = self.clock()
        try:
            next_due = await self.db.next_due_at(now)
        except store.StoreError as exc:
            log.warning("next_due_unknown", error=str(exc))
            return self._retry_seconds()
        if next_due is None:
            return self.interval_seconds
        until_due = (next_due - now).total_seconds()
        return min(self.interval_seconds, max(MIN_SLEEP_SECONDS, until_due))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking at once for a stop or a wake-up call."""
        waiters = {asyncio.ensure_future(self.stop.wait()),
                   asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()

    def _now_iso(self) -> str:
        return self.clock().isoformat()
