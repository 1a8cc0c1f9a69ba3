"""The fan-out hub: bounded per-subscriber queues, drop markers, de-duplication, NOTIFY feed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import structlog
import webstack
from kit import wait_until

from tokend import metrics, model, store, stream
from tokend.testing.pgproxy import PgProxy


def entry(entry_id: int | None, *, source: str = "scheduled", org: str | None = "acme"):
    return model.Entry(action="token_refreshed", source=source, created_at=datetime.now(UTC),
                       account_id="acct-1", org_id=org, id=entry_id)


async def take(subscription: stream.Subscription, n: int) -> list:
    return [await asyncio.wait_for(subscription.get(), 1.0) for _ in range(n)]


async def test_every_subscriber_gets_matching_entries_in_order():
    hub = stream.Hub(queue_size=10)
    everything = hub.subscribe()
    manual_only = hub.subscribe(lambda e: e.source == "manual")
    for i, source in enumerate(["scheduled", "manual", "scheduled", "manual"], start=1):
        hub.publish(entry(i, source=source))
    assert [e.id for e in await take(everything, 4)] == [1, 2, 3, 4]
    assert [e.id for e in await take(manual_only, 2)] == [2, 4]


async def test_a_full_queue_drops_and_reports_once_drained():
    stats = metrics.Metrics()
    hub = stream.Hub(queue_size=3, stats=stats)
    slow = hub.subscribe()
    for i in range(1, 11):  # 1-3 fit, 4-10 are dropped
        hub.publish(entry(i))
    hub_dropped = stats.registry.get_sample_value("tokend_stream_dropped_entries_total")
    assert hub_dropped == 7
    items = await take(slow, 4)
    assert [e.id for e in items[:3]] == [1, 2, 3]
    assert items[3] == stream.Dropped(count=7, last_id=10)
    hub.publish(entry(11))
    assert (await take(slow, 1))[0].id == 11


async def test_the_marker_comes_before_the_next_entry_that_fits():
    hub = stream.Hub(queue_size=2)
    slow = hub.subscribe()
    for i in range(1, 5):  # 3 and 4 dropped
        hub.publish(entry(i))
    assert (await take(slow, 1))[0].id == 1  # one slot free again
    hub.publish(entry(5))
    items = await take(slow, 3)
    assert items[0].id == 2
    assert items[1] == stream.Dropped(count=2, last_id=4)
    assert items[2].id == 5


async def test_publish_skips_an_id_it_has_seen():
    hub = stream.Hub()
    sub = hub.subscribe()
    hub.publish(entry(7))
    hub.publish(entry(7))
    hub.publish(entry(None))  # unsaved entries have nothing to compare
    hub.publish(entry(None))
    hub.publish(entry(8))  # the sentinel: whatever came before it has arrived
    items = await take(sub, 4)
    assert [e.id for e in items] == [7, None, None, 8]


async def test_close_ends_iteration_and_updates_the_gauge():
    stats = metrics.Metrics()
    hub = stream.Hub(stats=stats)
    sub = hub.subscribe()
    assert stats.registry.get_sample_value("tokend_stream_subscribers") == 1
    waiter = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await waiter
    assert stats.registry.get_sample_value("tokend_stream_subscribers") == 0
    hub.publish(entry(1))  # nobody listening: fine


async def test_a_failing_predicate_does_not_stop_the_others():
    hub = stream.Hub()
    hub.subscribe(lambda e: 1 / 0)
    good = hub.subscribe()
    hub.publish(entry(1))
    assert (await take(good, 1))[0].id == 1


async def test_publish_stays_fast_with_stalled_subscribers():
    """Stalled subscribers cost a counter each, never a wait or a growing queue: publish is
    synchronous, each stalled queue stays at its bound and every entry beyond it is counted
    as dropped, and a subscriber that reads still gets every entry. (How fast it is, is
    bench.fanout's business.)"""
    stats = metrics.Metrics()
    hub = stream.Hub(stats=stats, queue_size=100)
    stalled = [hub.subscribe() for _ in range(20)]  # nobody ever reads these
    reader = hub.subscribe()
    got = []
    for i in range(1, 5001):
        assert hub.publish(entry(i)) is None  # returns at once: nothing to await
        got.append(await anext(reader))
    assert [e.id for e in got] == list(range(1, 5001))
    assert all(s._queue.qsize() == 100 for s in stalled)
    assert stats.registry.get_sample_value("tokend_stream_dropped_entries_total") == 20 * 4900


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_entries_of_another_replica_arrive_once_via_notify(db_url):
    replica_a = await store.connect(db_url)
    replica_b = await store.connect(db_url)
    hub_a, hub_b = stream.Hub(), stream.Hub()
    feeds = [asyncio.create_task(coro) for hub, db in ((hub_a, replica_a), (hub_b, replica_b))
             for _, coro in hub.side_tasks(db)]
    assert len(feeds) == 2
    try:
        await asyncio.wait_for(hub_a.listening.wait(), 10)
        await asyncio.wait_for(hub_b.listening.wait(), 10)
        sub_a, sub_b = hub_a.subscribe(), hub_b.subscribe()
        written = [await webstack.add_entry(replica_a, hub_a) for _ in range(5)]
        ids = [e.id for e in written]
        assert [e.id for e in await take(sub_a, 5)] == ids
        assert [e.id for e in await take(sub_b, 5)] == ids
        # NOTIFYs reach a listener in commit order: once B's sentinel arrives, the echoes of
        # A's own writes have come and gone, and none of them came through twice.
        sentinel = await webstack.add_entry(replica_b)
        assert [e.id for e in await take(sub_a, 1)] == [sentinel.id]
        assert [e.id for e in await take(sub_b, 1)] == [sentinel.id]
    finally:
        for task in feeds:
            task.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)
        await replica_a.close()
        await replica_b.close()


async def test_sqlite_has_no_feed(sqlite_url):
    db = await store.connect(sqlite_url)
    try:
        assert stream.Hub().side_tasks(db) == []
    finally:
        await db.close()


async def test_a_feed_started_while_the_database_is_down_waits_for_it(pg_url):
    """A daemon may start its stream feed just as the database goes away: the feed keeps
    trying instead of dying, and hears other replicas once the database is back."""
    proxy = PgProxy(pg_url)
    await proxy.start()
    reader, writer = await store.connect(proxy.url), await store.connect(pg_url)
    hub = stream.Hub()
    task = None
    try:
        async with proxy.outage():
            with structlog.testing.capture_logs() as logs:
                task = asyncio.create_task(hub.feed(reader))
                await wait_until(lambda: sum(
                    e["event"] == "entries_listener_lost" for e in logs) >= 2, 10)
            assert not task.done() and not hub.listening.is_set()  # it tried twice, alive
        await asyncio.wait_for(hub.listening.wait(), 10)
        with hub.subscribe() as subscription:
            sent = await writer.add_entry(entry(None))
            got = await asyncio.wait_for(subscription.get(), 5)
        assert got.id == sent.id
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await reader.close()
        await writer.close()
        await proxy.close()
