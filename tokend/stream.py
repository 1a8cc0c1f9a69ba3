"""Fan-out of log entries to live subscribers: one bounded queue each, never blocking the publisher.

The refresh loop publishes synchronously; a subscriber that falls behind loses entries and
is told how many (`Dropped`) once it catches up. With PostgreSQL a feed task also publishes
what other replicas wrote (LISTEN/NOTIFY); `publish` ignores an id it has already seen, so
an entry written here and announced by NOTIFY reaches each subscriber once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from tokend import metrics, model, store

log = structlog.get_logger("tokend.stream")

RECENT_IDS = 10_000  # ids remembered for de-duplication; far more than one NOTIFY burst
FEED_BATCH = 100  # ids fetched per query when other replicas announce entries
FEED_PENDING_MAX = 50_000  # announced ids waiting for a fetch; older ones are given up
FEED_RETRY_SECONDS = 1.0  # between attempts to start listening while the database is down

Predicate = Callable[[model.Entry], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Dropped:
    """`count` entries were dropped for this subscriber; `last_id` is the newest of them."""

    count: int
    last_id: int | None


class Subscription:
    """One subscriber's bounded queue. Iterate it for `Entry` and `Dropped` items; close it."""

    def __init__(self, hub: Hub, predicate: Predicate | None, queue_size: int) -> None:
        self._hub = hub
        self.predicate = predicate
        # Items are (Dropped or None, entry): a marker rides with the first entry that fits
        # after a loss, so it never needs a slot of its own.
        self._queue: asyncio.Queue[tuple[Dropped | None, model.Entry] | None] = asyncio.Queue(
            queue_size)
        self._dropped = 0
        self._dropped_last_id: int | None = None
        self._held: model.Entry | None = None
        self.closed = False

    def offer(self, entry: model.Entry) -> None:
        """Called by the hub: enqueue without waiting, or count the entry as dropped."""
        if self._queue.full():
            self._dropped += 1
            self._dropped_last_id = entry.id
            self._hub.stats.stream_dropped.inc()
            return
        self._queue.put_nowait((self._take_marker() if self._dropped else None, entry))

    def _take_marker(self) -> Dropped:
        marker = Dropped(self._dropped, self._dropped_last_id)
        self._dropped, self._dropped_last_id = 0, None
        return marker

    async def get(self) -> model.Entry | Dropped:
        """The next item; raises StopAsyncIteration once closed."""
        if self._held is not None:
            entry, self._held = self._held, None
            return entry
        if self.closed:
            raise StopAsyncIteration
        if self._dropped and self._queue.empty():
            return self._take_marker()
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return self._unpack(item)

    def get_nowait(self) -> model.Entry | Dropped | None:
        """The next item if one is ready now (None if not, or once closed)."""
        if self._held is not None:
            entry, self._held = self._held, None
            return entry
        if self.closed:
            return None
        if self._queue.empty():
            return self._take_marker() if self._dropped else None
        item = self._queue.get_nowait()
        return None if item is None else self._unpack(item)

    def _unpack(self, item: tuple[Dropped | None, model.Entry]) -> model.Entry | Dropped:
        """A queued entry, or the marker of what was dropped before it (the entry is held
        for the next call)."""
        marker, entry = item
        if marker is None:
            return entry
        self._held = entry
        return marker

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._hub._remove(self)
        # Wake a waiting reader; a full queue means nobody is waiting.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> model.Entry | Dropped:
        return await self.get()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Hub:
    def __init__(self, *, queue_size: int = 1000, stats: metrics.Metrics | None = None) -> None:
        self.queue_size = queue_size
        self.stats = stats or metrics.Metrics()
        self._subscriptions: list[Subscription] = []
        self._recent: set[int] = set()
        self._recent_order: collections.deque[int] = collections.deque()
        self.listening = asyncio.Event()  # set while the NOTIFY feed is subscribed

    def subscribe(self, predicate: Predicate | None = None) -> Subscription:
        subscription = Subscription(self, predicate, self.queue_size)
        self._subscriptions.append(subscription)
        self.stats.stream_subscribers.set(len(self._subscriptions))
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        self._subscriptions.remove(subscription)
        self.stats.stream_subscribers.set(len(self._subscriptions))

    def publish(self, entry: model.Entry) -> None:
        """Hand `entry` to every matching subscriber at once; an id seen before is skipped."""
        if entry.id is not None:
            if entry.id in self._recent:
                return
            self._remember(entry.id)
        for subscription in tuple(self._subscriptions):
            try:
                wanted = subscription.predicate is None or subscription.predicate(entry)
            except Exception:
                log.exception("stream_predicate_failed")
                continue
            if wanted:
                subscription.offer(entry)

    def _remember(self, entry_id: int) -> None:
        if len(self._recent_order) >= RECENT_IDS:
            self._recent.discard(self._recent_order.popleft())
        self._recent_order.append(entry_id)
        self._recent.add(entry_id)

    def side_tasks(self, db: store.Store) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The tasks that keep this hub fed: the NOTIFY feed when the store can listen."""
        if not db.can_listen:
            return []
        return [("stream-feed", self.feed(db))]

    async def feed(self, db: store.Store) -> None:
        """Publish the entries NOTIFY announces (any replica's); runs until cancelled."""
        pending: collections.deque[int] = collections.deque(maxlen=FEED_PENDING_MAX)
        wake = asyncio.Event()

        def announced(entry_id: int) -> None:
            if entry_id not in self._recent:
                pending.append(entry_id)
                wake.set()

        while True:
            try:
                stop = await db.listen_entries(announced)
                break
            except store.StoreError as exc:
                # The database may be down as the daemon starts: the feed waits for it
                # instead of dying (and taking the daemon with it).
                log.warning("entries_listener_lost", error=str(exc))
                await asyncio.sleep(FEED_RETRY_SECONDS)
        self.listening.set()
        try:
            while True:
                await wake.wait()
                wake.clear()
                while pending:
                    batch = [pending.popleft() for _ in range(min(FEED_BATCH, len(pending)))]
                    await self._fetch_and_publish(db, batch)
        finally:
            self.listening.clear()
            await stop()

    async def _fetch_and_publish(self, db: store.Store, ids: list[int]) -> None:
        ids = [i for i in ids if i not in self._recent]  # published here meanwhile
        if not ids:
            return
        try:
            entries = await db.get_entries(ids)
        except store.StoreError as exc:
            # Live subscribers miss these; a reconnect with `since` still finds them.
            log.warning("stream_feed_fetch_failed", error=str(exc), count=len(ids))
            return
        for entry in sorted(entries, key=lambda e: e.id or 0):
            self.publish(entry)
