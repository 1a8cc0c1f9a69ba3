"""Outbound webhooks (SPEC 10.2): signed deliveries from the outbox to a real receiver that
verifies them with the `standardwebhooks` reference code; failing, hanging and slow
receivers; time-driven events; replicas; and a `kill -9` between a change and its delivery."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import kit
import pytest
import webstack
from kit import seed, wait_until
from proc import Daemon, daemon_config
from webhook_receiver import Receiver

import tokend.store as st
from tokend import clock, config, crypto, daemon, model, vocabulary, webhooks
from tokend.testing import simulator

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def delivering(db: st.Store, keyring: crypto.Keyring, sim: simulator.Simulator,
                     *endpoints: config.WebhookConfig, instance: str = "test-owner",
                     ) -> AsyncIterator[daemon.Parts]:
    """A daemon's parts on `db` with its delivery task running (the loop is not)."""
    cfg = dataclasses.replace(kit.engine_config(sim.token_url), webhooks=endpoints)
    async with daemon.assemble(cfg, db=db, keyring=keyring, instance=instance) as parts:
        task = asyncio.create_task(parts.deliverer.run())
        try:
            yield parts
        finally:
            parts.stop.set()
            await asyncio.wait_for(task, 10)


async def reauth_event(parts: daemon.Parts, sim: simulator.Simulator, account_id: str) -> None:
    """A real state change that emits account.reauth_required: the provider answers
    invalid_grant to this account's refresh."""
    token = kit.refresh_token()
    sim.revoke(token)
    await parts.db.add_account(model.NewAccount(
        id=account_id, org="acme", provider=kit.PROVIDER, name=f"seller-{account_id}",
        scopes=(), refresh_token=parts.keyring.encrypt(token, account_id=account_id,
                                                       column="refresh_token"),
        refresh_expires_at=None), clock.now())
    outcome = await parts.refresher.refresh_now(account_id)
    assert outcome.error_code == "invalid_grant"


def counter(parts: daemon.Parts, outcome: str, endpoint: str = "receiver") -> float:
    return parts.stats.registry.get_sample_value(
        "tokend_webhook_deliveries_total", {"endpoint": endpoint, "outcome": outcome}) or 0.0


async def test_a_state_change_arrives_signed_with_the_standard_webhooks_format(
        store: st.Store, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver, \
            delivering(store, keyring, sim, receiver.endpoint()) as parts:
        await reauth_event(parts, sim, "acct-1")
        await wait_until(lambda: receiver.received, 15)
        [got] = receiver.received
        assert receiver.bad_signatures == 0
        payload = got["payload"]
        assert set(payload) == {"type", "timestamp", "data"}
        assert payload["type"] == vocabulary.ACCOUNT_REAUTH_REQUIRED
        assert payload["data"] == {"account_id": "acct-1", "org": "acme",
                                   "provider": kit.PROVIDER, "state": "reauth_required",
                                   "reason": "invalid_grant"}
        assert got["headers"]["webhook-signature"].startswith("v1,")
        [event] = [e for e in await store.list_events()
                   if e.type == vocabulary.ACCOUNT_REAUTH_REQUIRED]
        assert got["id"] == f"evt_{event.id}"
        await wait_until(lambda: counter(parts, "delivered") == 1, 15)
        [row] = await store.list_deliveries()
        assert (row.state, row.attempts, row.endpoint) == (model.DELIVERED, 1, "receiver")
        assert "refresh_token" not in str(got["payload"]) and "v^1" not in str(got["payload"])


async def test_the_events_list_filters_and_a_wrong_secret_is_refused(store, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver, Receiver() as other:
        wanted = receiver.endpoint(events=(vocabulary.PROVIDER_RESUMED,))
        # Signed with a key the receiver does not know: it answers 401, tokend retries.
        wrong = dataclasses.replace(other.endpoint(name="other", max_attempts=1),
                                    secret=Receiver().secret)
        async with delivering(store, keyring, sim, wanted, wrong) as parts:
            await reauth_event(parts, sim, "acct-1")
            await store.pause_provider(kit.PROVIDER, clock.now(), "invalid_client")
            await wait_until(lambda: receiver.received and counter(parts, "dead", "other") == 2, 15)
            assert [r["payload"]["type"] for r in receiver.received] == [
                vocabulary.PROVIDER_RESUMED]
        dead = await store.list_deliveries(endpoint="other", state=model.DEAD)
        assert len(dead) == 2 and all(d.last_status == 401 for d in dead)
        assert other.bad_signatures == 2 and not other.received


async def test_a_failing_receiver_gets_retries_with_backoff_then_the_event(store,
                                                                          keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        receiver.fail_first = 3
        async with delivering(store, keyring, sim, receiver.endpoint()) as parts:
            await reauth_event(parts, sim, "acct-1")
            await wait_until(lambda: receiver.received, 15)
            await wait_until(lambda: counter(parts, "delivered") == 1, 15)
            assert receiver.requests == 4 and len(receiver.received) == 1
            assert counter(parts, "retry") == 3
        [row] = await store.list_deliveries()
        assert (row.state, row.attempts) == (model.DELIVERED, 4)


async def test_a_receiver_that_always_fails_ends_dead_and_visible(store, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        receiver.mode = "fail"
        async with delivering(store, keyring, sim,
                              receiver.endpoint(max_attempts=3)) as parts:
            await reauth_event(parts, sim, "acct-1")
            await wait_until(lambda: counter(parts, "dead") == 1, 15)
        [row] = await store.list_deliveries(state=model.DEAD)
        assert (row.attempts, row.last_status, row.last_error) == (3, 500, "HTTP 500")
        assert row.finished_at is not None and receiver.requests == 3


async def test_the_circuit_breaker_stops_sending_to_a_failing_endpoint(store, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        receiver.mode = "fail"
        open_seconds = 1.0
        endpoint = receiver.endpoint(breaker_failures=2, breaker_seconds=open_seconds,
                                     max_attempts=100)
        async with delivering(store, keyring, sim, endpoint) as parts:
            for n in range(5):
                await reauth_event(parts, sim, f"acct-{n}")
            breaker = parts.deliverer.breakers["receiver"]
            await wait_until(lambda: breaker.state() == "open" and receiver.in_flight == 0, 15)
            sent = receiver.requests
            assert sent <= webhooks.CONCURRENCY
            parts.deliverer.wake()  # five events pending: a dispatch turn may not send either
            # Each open window ends in one probe (half open), which fails and opens it again.
            await wait_until(lambda: receiver.requests >= sent + 2, 15)
            times = receiver.request_times
            gaps = [times[sent] - times[sent - 1], times[sent + 1] - times[sent]]
            assert min(gaps) >= 0.9 * open_seconds, f"sent while open: {gaps}"
        pending = await store.list_deliveries(state=model.PENDING)
        assert len(pending) == 5


async def test_a_hanging_receiver_does_not_slow_refreshes(store, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        receiver.mode = "hang"
        async with delivering(store, keyring, sim,
                              receiver.endpoint(timeout_seconds=2.0)) as parts:
            await reauth_event(parts, sim, "acct-dead")
            await wait_until(lambda: receiver.in_flight == 1, 15)
            harness = kit.Harness(sim=sim, db=store, keyring=keyring, worker=parts.refresher,
                                  hub=parts.hub, stats=parts.stats, cfg=parts.cfg)
            for n in range(10):
                await harness.add(f"acct-{n}")
                assert (await parts.refresher.refresh_now(f"acct-{n}")).success
            assert receiver.in_flight == 1, "the delivery was still hanging meanwhile"
            # The hung POST times out; the delivery stays pending for its retry.
            await wait_until(lambda: counter(parts, "retry") >= 1, 10)
            [row] = await store.list_deliveries(event_id=None)
            assert row.last_error == "no answer within 2 s"
            receiver.mode = "ok"
            receiver.released.set()
            await wait_until(lambda: counter(parts, "delivered") == 1, 10)
        assert len(set(receiver.ids())) == 1


async def test_a_slow_receiver_gets_each_event_once(store, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        receiver.mode, receiver.delay = "slow", 0.3
        async with delivering(store, keyring, sim,
                              receiver.endpoint(timeout_seconds=5.0)) as parts:
            for n in range(12):
                await reauth_event(parts, sim, f"acct-{n}")
            await wait_until(lambda: counter(parts, "delivered") == 12, 30)
        await wait_until(lambda: receiver.in_flight == 0, 15)  # stopped: all sent arrived
        assert len(set(receiver.ids())) == len(receiver.ids()) == 12
        rows = await store.list_deliveries()
        assert {(r.state, r.attempts) for r in rows} == {(model.DELIVERED, 1)}


# -- events time alone causes ----------------------------------------------------------------


async def test_a_pause_that_runs_out_emits_provider_resumed_once(store) -> None:
    now = clock.now()
    await store.pause_provider("ebay-x", now + timedelta(seconds=10), "invalid_client")
    assert await store.notice_changes(now) == []
    later = now + timedelta(seconds=11)
    [event] = await store.notice_changes(later)
    assert (event.type, event.data) == (vocabulary.PROVIDER_RESUMED,
                                        {"provider": "ebay-x", "reason": "pause_ended"})
    assert await store.notice_changes(later + timedelta(seconds=5)) == []
    # A new pause, then cleared by an operator: resumed again, once.
    await store.pause_provider("ebay-x", later + timedelta(hours=1), "invalid_client")
    assert await store.clear_provider_pause("ebay-x", later)
    assert not await store.clear_provider_pause("ebay-x", later)
    assert await store.notice_changes(later + timedelta(seconds=1)) == []
    types = [e.type for e in await store.list_events()]
    assert types == [vocabulary.PROVIDER_RESUMED] * 2
    assert await store.paused_providers(later) == {}


async def test_a_loop_going_stale_and_coming_back_is_noticed_once(store) -> None:
    start = clock.now()
    await store.worker_started("refresh", "host:1", 10.0, start)
    await store.worker_finished("refresh", "host:1", start, "idle", {})
    assert await store.notice_changes(start + timedelta(seconds=29)) == []
    [stale] = await store.notice_changes(start + timedelta(seconds=31))
    assert stale.type == vocabulary.LOOP_STALE
    assert stale.data["worker"] == "refresh" and stale.data["instance"] == "host:1"
    assert await store.notice_changes(start + timedelta(seconds=40)) == []
    await store.worker_finished("refresh", "host:1", start + timedelta(seconds=41), "idle", {})
    [back] = await store.notice_changes(start + timedelta(seconds=42))
    assert back.type == vocabulary.LOOP_RECOVERED
    assert await store.notice_changes(start + timedelta(seconds=43)) == []
    # A loop that stopped cleanly is not a stale one.
    await store.worker_finished("refresh", "host:1", start + timedelta(seconds=44), "stopped",
                                {})
    assert await store.notice_changes(start + timedelta(seconds=200)) == []


async def test_replicas_notice_a_stale_loop_once(pg_url: str) -> None:
    start = clock.now()
    stores = [await st.connect(pg_url) for _ in range(4)]
    try:
        await stores[0].worker_started("refresh", "gone:1", 1.0, start)
        later = start + timedelta(seconds=10)
        found = await asyncio.gather(*(s.notice_changes(later) for s in stores))
        assert sorted(len(f) for f in found) == [0, 0, 0, 1]
        assert [e.type for e in await stores[0].list_events()] == [vocabulary.LOOP_STALE]
    finally:
        for s in stores:
            await s.close()


# -- replicas, the API, a crash ----------------------------------------------------------------


async def test_two_replicas_deliver_each_event_once(pg_url: str, keyring) -> None:
    async with simulator.Simulator() as sim, Receiver() as receiver:
        first, second = await st.connect(pg_url), await st.connect(pg_url)
        try:
            async with delivering(first, keyring, sim, receiver.endpoint(), instance="a") as a, \
                    delivering(second, keyring, sim, receiver.endpoint(), instance="b") as b:
                for n in range(30):
                    await reauth_event(a if n % 2 else b, sim, f"acct-{n}")
                await wait_until(
                    lambda: counter(a, "delivered") + counter(b, "delivered") >= 30, 30)
                shares = [counter(a, "delivered"), counter(b, "delivered")]
            # Both deliverers have stopped; what they sent has all arrived.
            await wait_until(lambda: receiver.in_flight == 0, 15)
            assert len(receiver.ids()) == len(set(receiver.ids())) == 30
            assert sum(shares) == 30
            rows = await first.list_deliveries()
            assert {(r.state, r.attempts) for r in rows} == {(model.DELIVERED, 1)}
        finally:
            await first.close()
            await second.close()


async def test_deliveries_api_lists_filters_and_refuses_bad_input(store, keyring) -> None:
    async with webstack.running(store, keyring) as stack:
        await store.pause_provider("p1", clock.now(), "invalid_client")
        await store.notice_changes(clock.now() + timedelta(seconds=1))
        await store.dispatch_events(lambda _t: ["hook-a", "hook-b"], clock.now(), limit=10)
        status, body = await stack.get_json("/api/webhook-deliveries")
        assert status == 200
        assert sorted(d["endpoint"] for d in body["deliveries"]) == ["hook-a", "hook-b"]
        assert body["deliveries"][0]["data"] == {"provider": "p1", "reason": "pause_ended"}
        status, body = await stack.get_json(
            "/api/webhook-deliveries?endpoint=hook-a&state=pending&type=provider.resumed")
        assert status == 200 and [d["endpoint"] for d in body["deliveries"]] == ["hook-a"]
        status, body = await stack.get_json("/api/webhook-deliveries?state=delivered&limit=5")
        assert (status, body) == (200, {"deliveries": []})
        for query in ("state=lost", "type=nope", "limit=0", "limit=x", "before_id=-1",
                      "event_id=abc", "colour=red", "endpoint="):
            status, body = await stack.get_json(f"/api/webhook-deliveries?{query}")
            assert status == 400 and body["error"], query
        assert (await stack.get_json("/api/webhook-deliveries", token=None))[0] == 401
        assert (await stack.get_json("/api/webhook-deliveries",
                                     token=webstack.ORG_ACME))[0] == 403


async def test_kill_9_between_a_state_change_and_its_delivery_loses_nothing(
        tmp_path: Path, db_url: str, keyring, key_lines) -> None:
    tokens = await seed(db_url, keyring, 1)
    async with simulator.Simulator() as sim, Receiver() as receiver:
        sim.revoke(tokens["acct_00000"])  # the first refresh moves it to reauth_required
        receiver.mode = "hang"  # the delivery is on the wire when the process dies
        config_path = daemon_config(tmp_path, db_url=db_url, key_line=key_lines[0],
                                    token_url=sim.token_url)
        with config_path.open("a") as f:
            f.write(f'[[webhooks]]\nurl = "{receiver.url}"\nsecret = "{receiver.secret}"\n'
                    'timeout_seconds = 3\nbackoff_base_seconds = 0.2\n')
        first = Daemon(config_path, tmp_path / "first.log")
        try:
            await first.url()
            await wait_until(lambda: receiver.in_flight == 1, 20)
            first.proc.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        finally:
            first.kill()
        async with st.open(db_url) as db:
            [row] = await db.list_deliveries()
            assert row.state == model.PENDING and row.type == vocabulary.ACCOUNT_REAUTH_REQUIRED
            assert (await db.get_account("acct_00000")).state == model.REAUTH_REQUIRED
        receiver.mode = "ok"  # the dead process's request stays hung: its client is gone
        second = Daemon(config_path, tmp_path / "second.log")
        try:
            await second.url()
            # The dead process's lease runs out (timeout + margin), then it is sent again.
            await wait_until(lambda: REAUTH in received_types(receiver), 30)
            async with st.open(db_url) as db:
                async with asyncio.timeout(10):
                    while (await db.list_deliveries(type=REAUTH))[0].state != model.DELIVERED:
                        await asyncio.sleep(0.1)
            # The killed process's loop went quiet: noticed by the new one, once.
            await wait_until(lambda: vocabulary.LOOP_STALE in received_types(receiver), 10)
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0
        finally:
            second.kill()
        [got] = [r for r in receiver.received if r["payload"]["type"] == REAUTH]
        assert got["payload"]["data"]["account_id"] == "acct_00000"
        [stale] = [r for r in receiver.received
                   if r["payload"]["type"] == vocabulary.LOOP_STALE]
        assert stale["payload"]["data"]["instance"].endswith(f":{first.proc.pid}")
        assert receiver.bad_signatures == 0


REAUTH = vocabulary.ACCOUNT_REAUTH_REQUIRED


def received_types(receiver: Receiver) -> list[str]:
    return [r["payload"]["type"] for r in receiver.received]


async def test_finished_deliveries_and_dispatched_events_are_pruned_after_retention(
        store) -> None:
    start = clock.now()
    await store.pause_provider("p1", start, "invalid_client")
    await store.notice_changes(start + timedelta(seconds=1))  # provider.resumed
    await store.dispatch_events(lambda _t: ["a", "b"], start, limit=10)
    [delivery] = await store.claim_deliveries("a", "me", start, limit=5, lease_seconds=30)
    assert await store.finish_delivery(delivery, "me", start, state=model.DELIVERED,
                                       next_attempt_at=start, status=204, error=None)
    later = start + timedelta(days=31)
    # The delivered row and the dispatched event go; the pending delivery stays.
    assert await store.prune_deliveries(later - timedelta(days=30), 100) == 2
    assert [(d.endpoint, d.state) for d in await store.list_deliveries()] == [
        ("b", model.PENDING)]
    assert await store.list_events() == []
    assert await store.prune_deliveries(later - timedelta(days=30), 100) == 0
