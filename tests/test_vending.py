"""Token vending over HTTP with the real refresher and the simulator: on-demand refresh,
single flight in a process, and waiting out another replica's lease (the app client:
test_client.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
import structlog
import webstack

from tokend import refresher, vending

CONSUMER, CONSUMER_ACME = webstack.CONSUMER, webstack.CONSUMER_ACME


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


async def vend(stack, account_id="acct-1", token=CONSUMER, **params):
    query = {k: str(v) for k, v in params.items()}
    return await stack.get_json(f"/api/accounts/{account_id}/access-token", token=token,
                                params=query)


def seconds_left(body) -> float:
    return (datetime.fromisoformat(body["expires_at"]) - webstack.now()).total_seconds()


def vends(stack, outcome: str) -> float:
    return stack.stats.registry.get_sample_value("tokend_vends_total", {"outcome": outcome}) or 0


async def near_expiry(stack, account_id="acct-1", expires_in=200):
    """An account whose stored token expires within the default 300 s."""
    await webstack.add_account(stack.db, stack.keyring, account_id)
    stack.sim.configure(expires_in=expires_in)
    await stack.loop.cycle()
    stack.sim.configure(expires_in=7200)
    assert stack.sim.calls == 1
    stack.sim.reset_stats()


async def test_a_token_is_refreshed_on_demand_then_reused(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    status, body = await vend(stack, min_valid_seconds=600)
    assert status == 200
    assert body["access_token"].startswith("v^1.1#")
    assert seconds_left(body) >= 600
    assert stack.sim.calls == 1
    status, again = await vend(stack, min_valid_seconds=600)
    assert (status, again) == (200, body)
    assert stack.sim.calls == 1
    assert (vends(stack, "refreshed"), vends(stack, "stored")) == (1, 1)
    _, logs = await stack.get_json("/api/logs?source=vend")
    assert [e["action"] for e in logs["entries"]] == ["token_refreshed"]


async def test_fifty_concurrent_vends_make_one_provider_call(stack):
    await near_expiry(stack)
    stack.sim.configure(latency_seconds=0.2)
    answers = await asyncio.gather(*(vend(stack) for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    assert len({body["access_token"] for _, body in answers}) == 1
    assert all(seconds_left(body) >= 300 for _, body in answers)
    assert stack.sim.calls == 1


def other_replica(stack) -> refresher.Refresher:
    """Another replica's refresher on the same database."""
    return refresher.Refresher(
        db=stack.db, keyring=stack.keyring, clients=stack.worker.clients,
        session=stack.worker.session, hub=stack.hub, stats=stack.stats,
        settings=stack.cfg.refresh, owner="replica-b")


async def test_a_vend_waits_for_another_replicas_refresh(stack):
    await near_expiry(stack)
    other = other_replica(stack)
    claimed = await stack.db.claim_account("acct-1", "replica-b", webstack.now(),
                                           lease_seconds=60)
    assert claimed is not None
    stack.sim.configure(latency_seconds=0.3)

    async def replica_b():
        await asyncio.sleep(0.3)
        return await other.refresh_claimed(claimed, "scheduled")

    task = asyncio.create_task(replica_b())
    status, body = await vend(stack)
    outcome = await task
    assert outcome.success
    assert status == 200 and seconds_left(body) >= 300
    assert stack.sim.calls == 1  # replica B's; this one only waited and read


async def test_only_consumer_tokens_vend_and_an_org_sees_its_own(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1", "acme")
    await webstack.add_account(stack.db, stack.keyring, "other-1", "globex")
    for token in (webstack.ADMIN, webstack.ORG_ACME, None, "nope-" * 5):
        status, body = await vend(stack, token=token)
        assert (status, body) == (401, {"error": "missing or invalid bearer token"})
    status, _ = await vend(stack, token=CONSUMER_ACME)
    assert status == 200
    status, body = await vend(stack, "other-1", token=CONSUMER_ACME)
    assert (status, body) == (404, {"error": "unknown account"})
    status, _ = await vend(stack, "other-1", token=CONSUMER)
    assert status == 200
    assert stack.sim.calls == 2


async def test_an_account_that_is_not_active_is_a_409(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await stack.db.set_state("acct-1", "reauth_required", webstack.now())
    status, body = await vend(stack)
    assert (status, body) == (409, {"error": "account is reauth_required",
                                    "state": "reauth_required"})
    assert stack.sim.calls == 0


async def test_a_failed_refresh_is_a_503(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    stack.sim.configure(fail_mode="500")
    async with stack.http.get(stack.url + "/api/accounts/acct-1/access-token",
                              headers=stack.auth(CONSUMER)) as response:
        assert response.status == 503
        assert response.headers["Retry-After"]
        body = await response.json()
    assert body["error"].startswith("refresh failed")
    assert vends(stack, "unavailable") == 1


async def test_a_vend_is_logged_without_the_token(stack, monkeypatch):
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(vending, "log", structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[capture]))
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    _, body = await vend(stack)
    (event,) = capture.entries
    assert event["event"] == "token_vended" and event["account_id"] == "acct-1"
    assert body["access_token"] not in repr(capture.entries)


async def test_a_token_another_replica_stored_is_vended_within_a_second(stack):
    """Vending keeps rows (ciphertext) for under a second: a busy app costs no query per
    token, and a refresh elsewhere is still seen at once."""
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    _, first = await vend(stack)
    other = other_replica(stack)
    claimed = await stack.db.claim_account("acct-1", "replica-b", webstack.now(),
                                           lease_seconds=60)
    assert (await other.refresh_claimed(claimed, "scheduled")).success
    started = asyncio.get_running_loop().time()
    while True:
        _, body = await vend(stack)
        if body["access_token"] != first["access_token"]:
            break
        assert asyncio.get_running_loop().time() - started < 1.5  # 1 s, and a busy box
        await asyncio.sleep(0.02)
    assert stack.sim.calls == 2


async def test_the_cache_spares_the_database_and_drops_what_changed(store, keyring):
    from tokend import accountcache

    await webstack.add_account(store, keyring, "acct-1")
    clock = [100.0]
    cache = accountcache.AccountCache(store, monotonic=lambda: clock[0])
    reads = []
    original = store.get_account

    async def counted(account_id):
        reads.append(account_id)
        return await original(account_id)

    store.get_account = counted
    try:
        row = await cache.get("acct-1")
        assert await cache.get("acct-1") == row and reads == ["acct-1"]
        assert await cache.get("missing") is None and await cache.get("missing") is None
        assert reads == ["acct-1", "missing", "missing"]  # an absent row is not kept
        await store.set_state("acct-1", "disabled", webstack.now())
        clock[0] += 0.6  # old enough to check again, young enough to serve meanwhile
        assert (await cache.get("acct-1")).state == "active"
        await cache._reload
        assert (await cache.get("acct-1")).state == "disabled"
        assert reads == ["acct-1", "missing", "missing"]  # the check, not a read each
        clock[0] += 1.0  # too old to serve: read again
        await cache.get("acct-1")
        assert reads[-1] == "acct-1" and len(reads) == 4
    finally:
        store.get_account = original
        await cache.close()
