"""Fan-out of log entries to live subscribers: one bounded queue each, never blocking the publisher.

The refresh loop publishes synchronously; a subscriber that falls behind loses entries and
is told how many (`Dropped`) once it catches up. With PostgreSQL a feed task also publishes
what other replicas wrote (LISTEN/NOTIFY, or polling behind PgBouncer: `EntryIds`);
`publish` ignores an id it has already seen, so an entry written here and announced by
NOTIFY reaches each subscriber once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from tokend import metrics, model, store

log = structlog.get_logger("tokend.stream")

RECENT_IDS = 10_000  # ids remembered for de-duplication; far more than one NOTIFY burst
FEED_BATCH = 100  # ids fetched per query when other replicas announce entries
FEED_PENDING_MAX = 50_000  # announced ids waiting for a fetch; older ones are given up
FEED_RETRY_SECONDS = 1.0  # between attempts to start listening while the database is down
# Without LISTEN (PgBouncer, no listen_url), new entry ids are polled this often.
POLL_INTERVAL_SECONDS = 0.5
POLL_BATCH = 1000
# Entry ids come from a sequence at INSERT but become visible at COMMIT, so a lower id can
# appear after a higher one was seen: each poll looks this many ids back (each announced once).
POLL_LOOKBACK_IDS = 2000

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


class EntryIds:
    """Entry ids any replica committed, each handed to `callback` once: announced by NOTIFY
    (`seen`), or read back from http_log (`catch_up`) by the poller behind PgBouncer and
    after a LISTEN connection was replaced. Ids come from a sequence at INSERT but become
    visible at COMMIT, so a lower id can appear after a higher one: each read looks
    POLL_LOOKBACK_IDS back."""

    def __init__(self, db: store.Store, callback: Callable[[int], None], start: int) -> None:
        self._db, self._callback = db, callback
        self._start = self._high = start  # ids up to `start` were there before: history
        self._announced: set[int] = set()

    def seen(self, entry_id: int) -> None:
        if entry_id in self._announced:
            return
        self._announced.add(entry_id)
        self._high = max(self._high, entry_id)
        if len(self._announced) > 2 * POLL_LOOKBACK_IDS:
            self._forget_old()
        self._callback(entry_id)

    def _forget_old(self) -> None:
        floor = self._high - POLL_LOOKBACK_IDS
        self._announced.difference_update([i for i in self._announced if i <= floor])

    async def catch_up(self) -> None:
        after = max(self._high - POLL_LOOKBACK_IDS, self._start)
        while True:
            ids = await self._db.entry_ids_after(after, POLL_BATCH)
            for entry_id in ids:
                self.seen(entry_id)
            if ids:
                after = ids[-1]
            if len(ids) < POLL_BATCH:
                break
        self._forget_old()

    async def poll(self) -> Callable[[], Awaitable[None]]:
        """`catch_up` every POLL_INTERVAL_SECONDS, in a task; returns `stop`."""

        async def poll() -> None:
            failing = False
            while True:
                await asyncio.sleep(POLL_INTERVAL_SECONDS)
                try:
                    await self.catch_up()
                except store.StoreError as exc:
                    if not failing:
                        log.warning("entries_listener_lost", error=str(exc))
                    failing = True
                    continue
                if failing:
                    log.info("entries_listener_restored")
                    failing = False

        task = asyncio.create_task(poll(), name="tokend-entries-poller")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return stop


async def listen_entries(
    db: store.Store, callback: Callable[[int], None],
) -> Callable[[], Awaitable[None]]:
    """Call `callback(entry_id)` for every entry any replica commits; returns `stop`.
    Only where `db.can_listen`. Entries committed while a LISTEN connection was being
    replaced are read back once it is, so each still reaches `callback` once."""
    if not db.can_listen:
        raise store.StoreError(f"the {db.backend} store cannot listen")
    ids = EntryIds(db, callback, start=await db.latest_entry_id())
    if db.feed_mode == "poll":
        return await ids.poll()
    stop = await db.listen_entry_ids(ids.seen, ids.catch_up)
    try:  # what was committed between reading `start` and the LISTEN taking effect
        await ids.catch_up()
    except BaseException:
        await stop()
        raise
    return stop


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
                stop = await listen_entries(db, announced)
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
