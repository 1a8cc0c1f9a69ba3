"""Outbound webhooks (SPEC 10.2): the outbox's events, signed the Standard Webhooks way and
delivered at least once to every `[[webhooks]]` endpoint.

One `Deliverer` per process. Its main task fans new events out to endpoint deliveries
(replicas skip each other's batches) and notices what time alone changes (a pause ending,
a loop going stale); one task per endpoint claims that endpoint's due deliveries under a
lease and posts them. Nothing here holds a database connection while a receiver answers,
and it has its own HTTP session, so a receiver that hangs or fails never slows refreshes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import aiohttp
import orjson
import structlog

from tokend import clock, config, metrics, model, store

log = structlog.get_logger("tokend.webhooks")

POLL_SECONDS = 0.5  # without a NOTIFY (SQLite), how often new events are looked for
IDLE_POLL_SECONDS = 5.0  # with one (PostgreSQL): a safety net only
NOTICE_EVERY_SECONDS = 5.0  # how often pauses and loop heartbeats are checked
ERROR_RETRY_SECONDS = 5.0
DISPATCH_BATCH = 200
CONCURRENCY = 8  # deliveries in flight per endpoint
LEASE_MARGIN_SECONDS = 10.0  # a claimed delivery is ours for its timeout plus this
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 5000
MAX_ERROR_CHARS = 300

# The outcomes counted per endpoint (metric tokend_webhook_deliveries).
DELIVERED, RETRY, DEAD = "delivered", "retry", "dead"


def body(delivery: model.Delivery) -> bytes:
    """`{"type","timestamp","data"}`: the event's time, so every attempt sends the same."""
    return orjson.dumps({"type": delivery.type, "timestamp": delivery.event_at.isoformat(),
                         "data": delivery.data})


def message_id(delivery: model.Delivery) -> str:
    """The same for every attempt and every endpoint: receivers deduplicate by it."""
    return f"evt_{delivery.event_id}"


def sign(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (Standard Webhooks)."""
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, payload)}


def backoff_seconds(endpoint: config.WebhookConfig, attempts: int) -> float:
    """Exponential from `backoff_base_seconds`, capped, with jitter over its upper half so
    the retries of many events (and replicas) spread out."""
    ceiling = min(endpoint.backoff_max_seconds,
                  endpoint.backoff_base_seconds * 2 ** min(attempts - 1, 30))
    return ceiling * random.uniform(0.5, 1.0)


class Breaker:
    """Per endpoint: after `breaker_failures` failures in a row, nothing is sent for
    `breaker_seconds`; then one delivery tries (half open), and its outcome decides."""

    def __init__(self, failures: int, seconds: float) -> None:
        self.threshold, self.seconds = failures, seconds
        self.failures = 0
        self.open_until = 0.0  # monotonic

    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "half_open"

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.seconds


class Deliverer:
    def __init__(
        self, *, db: store.Store, endpoints: tuple[config.WebhookConfig, ...],
        stats: metrics.Metrics, instance: str, stop: asyncio.Event,
        retention_seconds: float | None = None,
        clock: Callable[[], datetime] = clock.now,
        signing_key: Callable[[str], bytes] | None = None,
    ) -> None:
        self.db, self.endpoints, self.stats = db, endpoints, stats
        # By endpoint name, asked at every attempt: a reloaded secret signs the next one.
        self.signing_key = signing_key or {e.name: e.key for e in endpoints}.__getitem__
        self.instance, self.stop, self.clock = instance, stop, clock
        self.retention_seconds = retention_seconds
        self.breakers = {e.name: Breaker(e.breaker_failures, e.breaker_seconds)
                         for e in endpoints}
        self._new_events = asyncio.Event()
        self._wakes = {e.name: asyncio.Event() for e in endpoints}
        self._next_notice = 0.0
        self._next_prune = time.monotonic()

    def targets(self, event_type: str) -> list[str]:
        return [e.name for e in self.endpoints if e.wants(event_type)]

    def wake(self) -> None:
        """New events were written (by this process or, via NOTIFY, another)."""
        self._new_events.set()

    async def run(self) -> None:
        """Until `stop`: dispatch, notice, prune; the endpoint tasks post."""
        stop_listening = None
        if self.db.can_listen:
            try:
                stop_listening = await self.db.listen_events(self.wake)
            except store.StoreError as exc:
                log.warning("events_listener_unavailable", error=str(exc))
        # Without endpoints events only need marking (for retention): no hurry.
        poll = IDLE_POLL_SECONDS if stop_listening or not self.endpoints else POLL_SECONDS
        async with aiohttp.ClientSession() as session:
            posters = [asyncio.create_task(self._endpoint(session, e), name=f"webhook:{e.name}")
                       for e in self.endpoints]
            try:
                while not self.stop.is_set():
                    for poster in posters:  # a poster that died takes the process down
                        if poster.done():
                            poster.result()
                    ok = await self._turn()
                    await self._sleep(self._new_events, poll if ok else ERROR_RETRY_SECONDS)
            finally:
                for event in self._wakes.values():
                    event.set()
                await asyncio.gather(*posters, return_exceptions=True)
                if stop_listening is not None:
                    await stop_listening()

    async def _turn(self) -> bool:
        try:
            while await self.db.dispatch_events(self.targets, self.clock(),
                                                limit=DISPATCH_BATCH) == DISPATCH_BATCH:
                pass
            for event in self._wakes.values():
                event.set()
            if time.monotonic() >= self._next_notice:
                self._next_notice = time.monotonic() + NOTICE_EVERY_SECONDS
                for event in await self.db.notice_changes(self.clock()):
                    log.info("event_noticed", type=event.type, **event.data)
            await self._prune_if_due()
        except store.StoreError as exc:
            log.error("webhook_dispatch_failed", error=str(exc))
            return False
        return True

    async def _endpoint(self, session: aiohttp.ClientSession,
                        endpoint: config.WebhookConfig) -> None:
        breaker, wake = self.breakers[endpoint.name], self._wakes[endpoint.name]
        lease = endpoint.timeout_seconds + LEASE_MARGIN_SECONDS
        while not self.stop.is_set():
            state = breaker.state()
            if state == "open":
                await self._sleep(None, breaker.open_until - time.monotonic())
                continue
            try:
                batch = await self.db.claim_deliveries(
                    endpoint.name, self.instance, self.clock(),
                    limit=1 if state == "half_open" else CONCURRENCY, lease_seconds=lease)
                if batch:
                    await asyncio.gather(*(self._deliver(session, endpoint, d) for d in batch))
                    continue
            except store.StoreError as exc:
                log.error("webhook_claim_failed", endpoint=endpoint.name, error=str(exc))
            await self._sleep(wake, POLL_SECONDS)

    async def _deliver(self, session: aiohttp.ClientSession, endpoint: config.WebhookConfig,
                       delivery: model.Delivery) -> None:
        payload, msg_id = body(delivery), message_id(delivery)
        status, error = None, None
        try:
            async with session.post(
                    endpoint.url, data=payload,
                    headers=headers(self.signing_key(endpoint.name), msg_id,
                                    int(self.clock().timestamp()), payload),
                    timeout=aiohttp.ClientTimeout(total=endpoint.timeout_seconds),
                    allow_redirects=False) as response:
                status = response.status
                await response.read()
            ok = 200 <= status < 300
            if not ok:
                error = f"HTTP {status}"
        except TimeoutError:
            ok, error = False, f"no answer within {endpoint.timeout_seconds:g} s"
        except aiohttp.ClientError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        self.breakers[endpoint.name].record(ok)
        attempts = delivery.attempts + 1
        now = self.clock()
        if ok:
            outcome, next_at = DELIVERED, now
        elif attempts >= endpoint.max_attempts:
            outcome, next_at = DEAD, now
        else:
            outcome = RETRY
            next_at = now + timedelta(seconds=backoff_seconds(endpoint, attempts))
        state = {DELIVERED: model.DELIVERED, DEAD: model.DEAD, RETRY: model.PENDING}[outcome]
        try:
            kept = await self.db.finish_delivery(delivery, self.instance, now, state=state,
                                                 next_attempt_at=next_at, status=status,
                                                 error=error)
        except store.StoreError as exc:
            # The lease runs out and the delivery is sent again: at least once.
            log.error("webhook_finish_failed", endpoint=endpoint.name,
                      event_id=delivery.event_id, error=str(exc))
            return
        if not kept:
            log.warning("webhook_lease_lost", endpoint=endpoint.name,
                        event_id=delivery.event_id)
        self.stats.webhook_deliveries.labels(endpoint.name, outcome).inc()
        log_event = log.info if ok else log.warning
        log_event("webhook_" + outcome, endpoint=endpoint.name, event_id=delivery.event_id,
                  type=delivery.type, attempt=attempts, status=status, error=error)
        if ok:
            self.stats.webhook_latency.observe(max(0.0, (now - delivery.event_at)
                                                   .total_seconds()))

    async def _prune_if_due(self) -> None:
        if self.retention_seconds is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        before = self.clock() - timedelta(seconds=self.retention_seconds)
        deleted = 0
        while not self.stop.is_set():
            batch = await self.db.prune_deliveries(before, PRUNE_BATCH)
            deleted += batch
            if batch == 0:
                break
        if deleted:
            log.info("deliveries_pruned", rows=deleted, before=before.isoformat())

    async def _sleep(self, wake: asyncio.Event | None, seconds: float) -> None:
        """Sleep up to `seconds`, waking at once for a stop or `wake`."""
        waiters = {asyncio.ensure_future(self.stop.wait())}
        if wake is not None:
            waiters.add(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            if wake is not None:
                wake.clear()
