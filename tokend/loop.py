"""The refresh cycle: heartbeat, claim what is due, refresh with bounded concurrency, sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from tokend import (
    budget,
    clock,
    config,
    metrics,
    model,
    recorder,
    refresher,
    store,
    stream,
    vocabulary,
)

log = structlog.get_logger("tokend.loop")

NAME = "refresh"
QUIET_MESSAGE = "no accounts need token refresh"
STOPPED = "stopped"  # last_status of a loop that stopped cleanly
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
        status: Callable[[str], object] = lambda text: None,
        spending: budget.Budget | None = None, idle_after: Mapping[str, float] | None = None,
    ) -> None:
        self.db, self.worker, self.hub, self.stats = db, worker, hub, stats
        self.entries = recorder.Recorder(db, hub)
        self.status = status  # one line per cycle for the supervisor (systemd's STATUS=)
        self.spending, self.idle_after = spending, idle_after
        self.settings, self.instance, self.stop, self.clock = settings, instance, stop, clock
        self.interval_seconds = settings.interval_seconds
        self.started_at = clock()
        self.last_finished_at: datetime | None = None  # the last cycle that succeeded
        self.last_turned_at: datetime | None = None  # the last cycle that ended at all
        self._wake = asyncio.Event()
        self._empty_claim_at: datetime | None = None  # the cycle's last claim found nothing
        self.log_retention_seconds = log_retention_seconds
        self.next_prune = time.monotonic()  # monotonic time of the next log prune

    def healthy(self, now: datetime) -> bool:
        """Not wedged: a cycle ended within three intervals (or the loop is that young).

        A cycle the database failed still counts: the loop is turning, and restarting
        the process (what the systemd watchdog would do) cannot bring a database back.
        """
        reference = self.last_turned_at or self.started_at
        limit = model.STALE_AFTER_INTERVALS * self.interval_seconds
        return (now - reference).total_seconds() <= limit

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        log.info("loop_started", instance=self.instance, interval_seconds=self.interval_seconds)
        woken = False
        while not self.stop.is_set():
            ok = await self.cycle(woken=woken)
            woken = await self.sleep(
                await self.seconds_until_next_cycle() if ok else self._retry_seconds())
        try:  # a clean stop is not a stale loop (no loop.stale for it)
            await self.db.worker_finished(NAME, self.instance, self.clock(), STOPPED,
                                          {"status": STOPPED, "timestamp": self._now_iso()})
        except store.StoreError as exc:
            log.warning("stop_not_recorded", error=str(exc))
        log.info("loop_stopped", instance=self.instance)

    async def cycle(self, *, woken: bool = False) -> bool:
        """One cycle; False when the database failed it. A cycle run because a manual
        refresh woke the loop writes no heartbeat entry when it finds nothing due: the
        manual refresh has its own entry, and the schedule did not tick."""
        began = time.perf_counter()
        try:
            await self.db.worker_started(NAME, self.instance, self.interval_seconds, self.clock())
            await self._check_refresh_expiry()
            summary = await self._refresh_due()
            status = summary["status"]
            await self.db.worker_finished(NAME, self.instance, self.clock(), status, summary)
            if not (woken and status == "idle"):
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
        self._empty_claim_at = None
        errors: list[dict[str, str | None]] = []
        if self.idle_after:
            await self.db.park_idle(self.clock(), self.idle_after)

        def collect(done: set[asyncio.Task[refresher.Outcome]]) -> None:
            nonlocal refreshed
            for task in done:
                outcome = task.result()
                if outcome.success:
                    refreshed += 1
                else:
                    errors.append({"account_id": outcome.account_id,
                                   "error_code": outcome.error_code})

        async def settle(tasks: set[asyncio.Task[refresher.Outcome]],
                         ) -> set[asyncio.Task[refresher.Outcome]]:
            """Wait for one refresh to end; the ones still running."""
            done, running = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            collect(done)
            return running

        # Claim once a quarter of the slots are free, not after every completion: a claim
        # is a round trip on the loop's critical path, and a claim of one or two accounts
        # costs nearly what a claim of sixteen does. Never more than the free slots, so no
        # lease is held ahead of the work.
        low_water = max(1, s.concurrency // 4)
        try:
            while not self.stop.is_set():
                free = s.concurrency - len(in_flight)
                if free < low_water:  # (so something is in flight)
                    in_flight = await settle(in_flight)
                    continue
                # Asked before every claim: the day's count moves while the cycle runs, and
                # refreshes in flight are not counted yet.
                plan = budget.Plan()
                if self.spending is not None:
                    plan = await self.spending.plan(claimed=checked, upto=free)
                    if plan.headroom is not None:
                        free = min(free, plan.headroom - len(in_flight))
                if free <= 0:
                    if not in_flight:
                        break
                    in_flight = await settle(in_flight)
                    continue
                claim_at = self.clock()
                batch = await self.db.claim_due(
                    self.worker.owner, claim_at, limit=free, lease_seconds=s.lease_seconds,
                    expiry_threshold_seconds=s.expiry_threshold_seconds,
                    max_age_seconds=s.max_age_seconds, reserved=plan.reserved,
                    idle_after=self.idle_after)
                if not batch:
                    self._empty_claim_at = claim_at
                    break
                checked += len(batch)
                in_flight |= {asyncio.create_task(
                    self.worker.refresh_claimed(a, vocabulary.SCHEDULED),
                    name=f"refresh:{a.id}") for a in batch}
        except asyncio.CancelledError:
            # Past the shutdown grace the refreshes are cut short too. A save under way goes
            # on, shielded, and `Refresher.drain` waits for it within the shutdown's bound.
            for task in in_flight:
                task.cancel()
            raise
        finally:
            # On a stop or a database failure the claimed accounts still finish.
            if in_flight:
                done, _ = await asyncio.wait(in_flight)
                collect({task for task in done if not task.cancelled()})
        if checked == 0:
            return {"status": "idle", "message": QUIET_MESSAGE, "accounts_checked": 0,
                    "accounts_refreshed": 0, "errors": [], "timestamp": self._now_iso()}
        return {"status": "completed", "accounts_checked": checked,
                "accounts_refreshed": refreshed, "errors": errors[:MAX_LISTED_ERRORS],
                "error_count": len(errors), "timestamp": self._now_iso()}

    async def _check_refresh_expiry(self) -> None:
        """Expired refresh tokens: reauth_required without asking the provider. Expiring
        ones: one entry and event per notice threshold crossed. One statement each."""
        now = self.clock()
        for entry in (*await self.db.expire_refresh_tokens(now, describe=_expired),
                      *await self.db.note_refresh_expiry(now, describe=_expiring)):
            log.warning(entry.action, account_id=entry.account_id, message=entry.message)
            self.entries.publish(entry)

    async def _announce(self, summary: dict[str, Any]) -> None:
        if summary["status"] == "idle":
            log.info("worker_heartbeat", message=QUIET_MESSAGE, instance=self.instance)
            message = QUIET_MESSAGE
            entry = model.Entry(action=vocabulary.WORKER_HEARTBEAT, source=vocabulary.SCHEDULED,
                                created_at=self.clock(), message=message, details=summary)
        else:
            log.info("cycle_summary", **summary)
            message = (f"{summary['accounts_refreshed']} of {summary['accounts_checked']} "
                       "accounts refreshed")
            entry = model.Entry(
                action=vocabulary.CYCLE_SUMMARY, source=vocabulary.SCHEDULED,
                created_at=self.clock(), message=message, details=summary)
        await self.entries.record(entry)
        self.status(f"{summary['timestamp']}: {message}")

    async def _prune_if_due(self) -> None:
        """Drop log rows past retention, a batch at a time, about once an hour."""
        if self.log_retention_seconds is None or time.monotonic() < self.next_prune:
            return
        self.next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
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

    async def seconds_until_next_cycle(self) -> float:
        now = self.clock()
        try:
            next_due = await self.db.next_due_at(now)
        except store.StoreError as exc:
            log.warning("next_due_unknown", error=str(exc))
            return self._retry_seconds()
        if next_due is None:
            return self.interval_seconds
        until_due = (next_due - now).total_seconds()
        if self._empty_claim_at is not None and next_due <= self._empty_claim_at:
            # Due before a claim that found nothing: the daily budget holds it back.
            # Waking each second would only write heartbeats.
            return self.interval_seconds
        return min(self.interval_seconds, max(MIN_SLEEP_SECONDS, until_due))

    async def sleep(self, seconds: float) -> bool:
        """Sleep, waking at once for a stop or a wake-up call; True when woken."""
        waiters = {asyncio.ensure_future(self.stop.wait()),
                   asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            return self._wake.is_set()
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._wake.clear()

    def _now_iso(self) -> str:
        return self.clock().isoformat()


def _expiry_entry(account: model.Account, action: str, message: str) -> model.Entry:
    return model.Entry.about(
        account, action=action, source=vocabulary.SCHEDULED, created_at=clock.now(),
        message=message,
        details={"refresh_expires_at": account.refresh_expires_at.isoformat()
                 if account.refresh_expires_at else None,
                 "notice_days": account.refresh_expiry_notice_days})


def _expired(account: model.Account) -> tuple[list[model.Event], model.Entry]:
    event = model.Event.about(vocabulary.ACCOUNT_REAUTH_REQUIRED, account,
                              state=model.REAUTH_REQUIRED, reason=model.REFRESH_TOKEN_EXPIRED)
    return [event], _expiry_entry(
        account, vocabulary.REFRESH_TOKEN_EXPIRED,
        "refresh token expired: the account needs a new sign-in (reauth_required)")


def _expiring(account: model.Account) -> tuple[list[model.Event], model.Entry]:
    days = account.refresh_expiry_notice_days
    event = model.Event(vocabulary.ACCOUNT_REFRESH_TOKEN_EXPIRING, {
        **model.Event.about(vocabulary.ACCOUNT_REFRESH_TOKEN_EXPIRING, account,
                            state=account.state, reason=f"within_{days}_days").data,
        "refresh_expires_at": account.refresh_expires_at.isoformat()
        if account.refresh_expires_at else None, "days": days})
    return [event], _expiry_entry(
        account, vocabulary.REFRESH_TOKEN_EXPIRING,
        f"refresh token expires within {days} day{'s' if days != 1 else ''}: "
        "reconnect the account before then")
