"""The daily budget: token-endpoint calls counted in the database per provider, grant and
UTC day; the reserve line, the limit, failing accounts, the capacity arithmetic, and what
`tokend status`, `/loop-status` and `/metrics` say. Both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from datetime import UTC, date, datetime, timedelta

import kit
import pytest
import webstack
from kit import Harness

import tokend.store as st
from tokend import budget, clock, config, loop, model, quota, schedule, status, vocabulary

TODAY = lambda: clock.now().date()  # noqa: E731


def limited(harness: Harness, quota_: int, reserve: float = 0.8) -> config.Config:
    providers = {name: dataclasses.replace(p, daily_quota=quota_, budget_reserve=reserve)
                 for name, p in harness.cfg.providers.items()}
    return dataclasses.replace(harness.cfg, providers=providers)


async def test_refreshes_that_called_the_endpoint_are_counted(harness: Harness) -> None:
    for n in range(3):
        await harness.add(f"ok-{n}")
        assert (await harness.worker.refresh_now(f"ok-{n}")).success
    revoked = kit.refresh_token()
    harness.sim.revoke(revoked)
    await harness.add("revoked", token=revoked)  # invalid_grant: still a call
    assert (await harness.worker.refresh_now("revoked")).error_code == "invalid_grant"
    await harness.add("sealed-badly", sealed="ENC:v1:nokey:garbage")  # no call at all
    assert (await harness.worker.refresh_now("sealed-badly")).error_code == "decrypt_failed"
    assert harness.sim.stats()["calls"] == 4
    assert await harness.db.budget_usage(TODAY()) == {kit.PROVIDER: {"refresh_token": 4}}
    assert await harness.db.budget_usage(TODAY() - timedelta(days=1)) == {}


async def test_other_grants_count_through_one_method_per_day(store: st.Store) -> None:
    day = datetime(2026, 5, 1, 23, 59, tzinfo=UTC)
    assert await store.count_token_call("ebay", "authorization_code", day) == 1
    assert await store.count_token_call("ebay", "authorization_code", day) == 2
    assert await store.count_token_call("ebay", "client_credentials", day) == 1
    assert await store.count_token_call("ebay", "client_credentials",
                                        day + timedelta(minutes=2)) == 1  # the next UTC day
    assert await store.budget_usage(date(2026, 5, 1)) == {
        "ebay": {"authorization_code": 2, "client_credentials": 1}}
    with pytest.raises(ValueError, match="unknown grant"):
        await store.count_token_call("ebay", "password", day)


async def test_replicas_share_one_count(pg_url: str) -> None:
    stores = [await st.connect(pg_url) for _ in range(3)]
    try:
        now = clock.now()
        await asyncio.gather(*(s.count_token_call("p", "refresh_token", now)
                               for s in stores for _ in range(40)))
        assert await stores[0].budget_usage(now.date()) == {"p": {"refresh_token": 120}}
    finally:
        for s in stores:
            await s.close()


async def test_past_the_reserve_line_only_expiring_healthy_accounts_refresh(
        harness: Harness) -> None:
    for name in ("healthy", "failing"):
        await harness.add(name)
        assert (await harness.worker.refresh_now(name)).success
    failing = await harness.db.get_account("failing")
    # One failure on record (state stays active): not healthy.
    claimed = await harness.db.claim_account("failing", "t", clock.now(), lease_seconds=5)
    assert claimed is not None and failing is not None
    await harness.db.finish(claimed, "t", model.Failure("server_error", "", clock.now()),
                            model.Attempt("failing", "manual", clock.now(), clock.now(), False,
                                       "server_error", None),
                            model.Entry(action="token_refresh_failed", source="manual",
                                     created_at=clock.now()), clock.now())
    s = harness.settings

    async def due(offset: float, reserved: tuple[str, ...]) -> list[str]:
        when = clock.now() + timedelta(seconds=offset)
        return sorted(a.id for a in await harness.db.claim_due(
            "probe", when, limit=10, lease_seconds=0.001, reserved=reserved,
            expiry_threshold_seconds=s.expiry_threshold_seconds,
            max_age_seconds=s.max_age_seconds))

    # An hour on: due by age, the token still has an hour left.
    assert await due(3700, (kit.PROVIDER,)) == []
    assert await due(3700, ("another-provider",)) == ["failing", "healthy"]
    # Ten minutes before expiry: about to expire; the failing one still waits.
    assert await due(7200 - 600, (kit.PROVIDER,)) == ["healthy"]


async def test_the_warning_fires_once_per_provider_and_day_across_replicas(
        harness: Harness) -> None:
    cfg = limited(harness, 10, reserve=0.5)
    now = clock.now()
    for _ in range(5):
        await harness.db.count_token_call(kit.PROVIDER, "refresh_token", now)
    replicas = [budget.Budget(db=harness.db, providers=cfg.providers) for _ in range(3)]
    plans = [await b.plan() for b in replicas for _ in range(2)]
    assert {p.reserved for p in plans} == {(kit.PROVIDER,)}
    assert {p.headroom for p in plans} == {5}
    [warning] = await harness.db.list_events()
    assert warning.type == vocabulary.BUDGET_WARNING
    assert warning.data["provider"] == kit.PROVIDER and warning.data["used"] == 5
    assert warning.data["limit"] == 10 and warning.data["reserve_line"] == 5


async def test_at_the_limit_scheduled_refreshes_stop_until_the_day_turns(
        harness: Harness) -> None:
    cfg = limited(harness, 3, reserve=1.0)
    for n in range(6):
        await harness.add(f"a{n}")
    refresh_loop = loop.Loop(db=harness.db, worker=harness.worker, hub=harness.hub,
                             stats=harness.stats, settings=cfg.refresh, instance="t",
                             stop=asyncio.Event(),
                             spending=budget.Budget(db=harness.db, providers=cfg.providers))
    assert await refresh_loop.cycle()
    assert harness.sim.stats()["calls"] == 3
    assert await harness.db.budget_usage(TODAY()) == {kit.PROVIDER: {"refresh_token": 3}}
    assert await refresh_loop.cycle()  # records the limit: the provider pauses
    assert harness.sim.stats()["calls"] == 3
    paused = await harness.db.paused_providers(clock.now())
    assert paused == {kit.PROVIDER: budget.day_ends(clock.now())}
    types = [e.type for e in await harness.db.list_events()]
    assert types == [vocabulary.BUDGET_WARNING, vocabulary.PROVIDER_PAUSED]
    assert (await harness.db.list_events())[1].data["reason"] == model.BUDGET_EXHAUSTED
    assert await refresh_loop.cycle()
    assert harness.sim.stats()["calls"] == 3
    # Vending still answers from a valid stored token.
    refreshed = next(a for a in await harness.db.list_accounts() if a.access_token)
    parts_vendor = harness_vendor(harness)
    vended = await parts_vendor.vend(refreshed.id, min_valid_seconds=60)
    assert not vended.refreshed
    # The day turns: the pause ends (provider.resumed) and the new day has its budget.
    tomorrow = budget.day_ends(clock.now()) + timedelta(seconds=1)
    noticed = await harness.db.notice_changes(tomorrow)  # (and the test loop's staleness)
    [resumed] = [e for e in noticed if e.type == vocabulary.PROVIDER_RESUMED]
    assert resumed.data == {"provider": kit.PROVIDER, "reason": "pause_ended"}
    assert await harness.db.budget_usage(tomorrow.date()) == {}


def harness_vendor(harness: Harness):
    from tokend import vending

    return vending.Vendor(db=harness.db, keyring=harness.keyring, worker=harness.worker,
                          stats=harness.stats, settings=harness.settings)


def test_an_account_that_keeps_failing_is_tried_a_few_times_a_day() -> None:
    # The defaults: base 30 s, max 3600 s.
    assert not schedule.backoff_is_long(5, base_seconds=30, max_seconds=3600)
    assert schedule.backoff_is_long(7, base_seconds=30, max_seconds=3600)
    spacing = 86_400 / schedule.FAILING_RETRIES_PER_DAY
    assert schedule.failing_retry_seconds(0.0) == spacing
    assert schedule.failing_retry_seconds(0.999) < spacing * 1.25


async def test_a_long_failing_account_waits_a_quarter_day(harness: Harness) -> None:
    await harness.add("flaky")
    harness.sim.configure(fail_mode="500")
    for _ in range(9):
        claimed = await harness.db.claim_account("flaky", harness.worker.owner, clock.now(),
                                                 lease_seconds=30)
        assert claimed is not None
        before = clock.now()
        outcome = await harness.worker.refresh_claimed(claimed, "manual")
        assert not outcome.success
    account = await harness.db.get_account("flaky")
    assert account is not None and account.consecutive_failures == 9
    wait = (account.next_attempt_at - before).total_seconds()
    assert wait >= 86_400 / schedule.FAILING_RETRIES_PER_DAY


def test_capacity_matches_the_measured_arithmetic() -> None:
    ebay = config.ProviderConfig(name="e", type="ebay", environment="production",
                                 client_id="c", client_secret="s", scopes=(),
                                 token_url="https://x", daily_quota=50_000)
    # 2 h tokens refreshed at expiry - 15 min: every 6,300 s, 13.7 times a day.
    at_expiry = config.RefreshConfig(expiry_threshold_seconds=900, max_age_seconds=86_400)
    assert quota.capacity(ebay, at_expiry) == 3645  # about 3,650
    # The 60-minute maximum age (the default): 24 times a day.
    assert quota.capacity(ebay, config.RefreshConfig()) == 2083  # about 2,080
    assert quota.capacity(dataclasses.replace(ebay, daily_quota=None), at_expiry) is None


async def test_status_loop_status_and_metrics_say_where_the_budget_stands(
        store: st.Store, keyring) -> None:
    async with webstack.running(store, keyring) as stack:
        provider = stack.cfg.providers[webstack.PROVIDER]
        for _ in range(3):
            await store.count_token_call(webstack.PROVIDER, "refresh_token", clock.now())
        await store.count_token_call(webstack.PROVIDER, "authorization_code", clock.now())
        status_code, body = await stack.get_json("/loop-status")
        assert status_code == 200
        standing = body["budget"][webstack.PROVIDER]
        assert standing["used"] == 3 and standing["limit"] == provider.daily_quota
        assert standing["state"] == budget.NORMAL
        assert standing["calls"] == {"refresh_token": 3, "authorization_code": 1}
        assert body["quota"][webstack.PROVIDER]["capacity_accounts"] == 2083
        async with stack.http.get(stack.url + "/metrics") as response:
            text = await response.text()
        assert (f'tokend_budget_calls{{grant_type="refresh_token",provider="{webstack.PROVIDER}"}}'
                f" 3.0") in text
        assert f'tokend_budget_state{{provider="{webstack.PROVIDER}"}} 0.0' in text
        assert f'tokend_capacity_accounts{{provider="{webstack.PROVIDER}"}} 2083.0' in text
        exhausted = {**body, "budget": {webstack.PROVIDER: {
            **standing, "used": provider.daily_quota, "state": budget.EXHAUSTED}}}
        out = io.StringIO()
        status.print_report(exhausted, out)
        assert "carries about 2,083 accounts" in out.getvalue()
        assert "LIMIT REACHED" in out.getvalue()


# -- demand-aware scheduling ----------------------------------------------------------------

IDLE_AFTER = {kit.PROVIDER: 3600.0}


async def due_at(harness: Harness, offset: float, idle_after=IDLE_AFTER) -> list[str]:
    s = harness.settings
    when = clock.now() + timedelta(seconds=offset)
    count = await harness.db.count_due(
        when, expiry_threshold_seconds=s.expiry_threshold_seconds,
        max_age_seconds=s.max_age_seconds, idle_after=idle_after)
    claimed = sorted(a.id for a in await harness.db.claim_due(
        "probe", when, limit=50, lease_seconds=0.001, idle_after=idle_after,
        expiry_threshold_seconds=s.expiry_threshold_seconds, max_age_seconds=s.max_age_seconds))
    assert count == len(claimed)
    return claimed


async def test_accounts_no_app_asked_for_are_not_refreshed_on_schedule(
        harness: Harness) -> None:
    for name in ("wanted", "idle"):
        await harness.add(name)
        assert (await harness.worker.refresh_now(name)).success
    await harness.db.touch_vended("wanted", clock.now() + timedelta(seconds=6000))
    # Two hours on, both tokens are about to expire; only the wanted one was asked for
    # within the hour.
    assert await due_at(harness, 6700) == ["wanted"]
    assert await due_at(harness, 6701, idle_after={"other-provider": 60.0}) == [
        "idle", "wanted"]
    split = await harness.db.demand_split(IDLE_AFTER, clock.now() + timedelta(seconds=6700))
    assert split == {kit.PROVIDER: {"scheduled": 1, "idle": 1}}
    assert await harness.db.demand_split({}, clock.now()) == {
        kit.PROVIDER: {"scheduled": 2, "idle": 0}}


async def test_the_first_vend_refreshes_an_idle_account_and_puts_it_back(
        harness: Harness) -> None:
    day = {kit.PROVIDER: 86_400.0}
    await harness.add("sleeper")
    assert await due_at(harness, 90_000, day) == []  # nobody asked for a day: idle
    vended = await harness_vendor(harness).vend("sleeper", min_valid_seconds=60)
    assert vended.refreshed  # on demand
    account = await harness.db.get_account("sleeper")
    assert account is not None and account.last_vended_at is not None
    # Back on the schedule: due when its token nears expiry; idle again a day later.
    assert await due_at(harness, 6700, day) == ["sleeper"]
    assert await due_at(harness, 90_000, day) == []
    assert await harness.db.demand_split(day, clock.now()) == {
        kit.PROVIDER: {"scheduled": 1, "idle": 0}}


async def test_the_projection_counts_only_scheduled_accounts(harness: Harness,
                                                             db_url: str) -> None:
    providers = {name: dataclasses.replace(p, idle_after_seconds=3600.0)
                 for name, p in harness.cfg.providers.items()}
    cfg = dataclasses.replace(harness.cfg, providers=providers)
    for n in range(4):
        await harness.add(f"a{n}")
    await harness.db.touch_vended("a0", clock.now())
    # Created just now, all four are inside the idle window; an hour and more on, only
    # a0's vend would keep it scheduled, but the projection is for now.
    (projection,) = await quota.project(harness.db, cfg)
    assert projection.active_accounts == 4 and projection.scheduled_accounts == 4
    await kit.execute_sql(db_url, "UPDATE accounts SET created_at = "
                          + ("created_at - 7200" if harness.db.backend == "sqlite"
                             else "created_at - interval '2 hours'"))
    (projection,) = await quota.project(harness.db, cfg)
    assert projection.scheduled_accounts == 1 and projection.projected_daily_calls == 24
    out = io.StringIO()
    status.print_report({"loops": [], "accounts": {}, "paused_providers": {},
                         "quota": {kit.PROVIDER: projection.to_dict()}, "budget": {}}, out)
    assert "4 active accounts (1 scheduled, 3 idle)" in out.getvalue()


def make_loop(harness: Harness, cfg: config.Config, *, offset: float = 0.0,
              idle_after=None, spending: bool = True) -> loop.Loop:
    return loop.Loop(db=harness.db, worker=harness.worker, hub=harness.hub,
                     stats=harness.stats, settings=cfg.refresh, instance="t",
                     stop=asyncio.Event(), idle_after=idle_after,
                     clock=lambda: clock.now() + timedelta(seconds=offset),
                     spending=budget.Budget(db=harness.db, providers=cfg.providers)
                     if spending else None)


async def test_idle_accounts_are_parked_until_a_vend_brings_them_back(
        harness: Harness, db_url: str) -> None:
    await harness.add("sleeper")
    await kit.execute_sql(db_url, "UPDATE accounts SET created_at = " + (
        "created_at - 7200" if harness.db.backend == "sqlite"
        else "created_at - interval '2 hours'"))
    refresh_loop = make_loop(harness, harness.cfg, idle_after=IDLE_AFTER)
    assert await refresh_loop.cycle()
    assert harness.sim.stats()["calls"] == 0
    sleeper = await harness.db.get_account("sleeper")
    assert sleeper is not None and sleeper.next_attempt_at == st.PARKED
    assert await refresh_loop.seconds_until_next_cycle() == refresh_loop.interval_seconds
    await harness.db.touch_vended("sleeper", clock.now())  # an app asks (vending does this)
    assert await refresh_loop.cycle()
    assert harness.sim.stats()["calls"] == 1
    sleeper = await harness.db.get_account("sleeper")
    assert sleeper is not None and sleeper.access_token is not None


async def test_the_loop_does_not_spin_while_the_budget_holds_accounts_back(
        harness: Harness) -> None:
    cfg = limited(harness, 10, reserve=0.5)
    await harness.add("healthy")
    assert (await harness.worker.refresh_now("healthy")).success
    for _ in range(5):
        await harness.db.count_token_call(kit.PROVIDER, "refresh_token", clock.now())
    # An hour on it is due by age, but past the reserve line only expiring tokens refresh.
    held = make_loop(harness, cfg, offset=3700)
    assert await held.cycle()
    assert harness.sim.stats()["calls"] == 1
    assert await held.seconds_until_next_cycle() == held.interval_seconds
    free = make_loop(harness, cfg, offset=3700, spending=False)
    assert await free.cycle()
    assert harness.sim.stats()["calls"] == 2


async def test_a_normal_day_asks_the_database_once_per_cycle_not_per_claim(
        harness: Harness) -> None:
    """Far below the reserve line the cycle's first plan holds for its later claims: no
    budget query on the loop's critical path for each of them."""
    cfg = limited(harness, 10_000)
    cfg = dataclasses.replace(cfg, refresh=dataclasses.replace(cfg.refresh, concurrency=2))
    for n in range(12):
        await harness.add(f"a{n}")
    asked = 0
    real = harness.db.budget_usage

    async def counted(day):
        nonlocal asked
        asked += 1
        return await real(day)

    harness.db.budget_usage = counted
    refresh_loop = make_loop(harness, cfg)
    assert await refresh_loop.cycle()
    assert harness.sim.stats()["calls"] == 12
    assert asked == 1
    assert await harness.db.budget_usage(TODAY()) == {kit.PROVIDER: {"refresh_token": 12}}
