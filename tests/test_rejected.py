"""An app's rejected-token report (POST /api/accounts/{id}/access-token/rejected): the pure
verdict, and the route against the real refresher, the simulator and both backends."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
import webstack

from tokend import model, rejected

CONSUMER = webstack.CONSUMER


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


async def vend(stack, account_id="acct-1"):
    status, body = await stack.get_json(f"/api/accounts/{account_id}/access-token",
                                        token=CONSUMER)
    assert status == 200, body
    return body


async def report(stack, sha256, account_id="acct-1", token=CONSUMER, *, raw=None):
    headers = stack.auth(token) if token else {}
    data = raw if raw is not None else {"sha256": sha256}
    kwargs = {"data": data} if isinstance(data, str | bytes) else {"json": data}
    async with stack.http.post(
            f"{stack.url}/api/accounts/{account_id}/access-token/rejected", headers=headers,
            **kwargs) as response:
        return response.status, await response.json(), response.headers


def later(stack, seconds=60.0):
    """The vendor's clock `seconds` ahead: the last refresh is out of the window."""
    stack.vendor.clock = lambda: webstack.now() + timedelta(seconds=seconds)


async def reports_logged(stack):
    _, logs = await stack.get_json("/api/logs?source=vend&action=token_rejected")
    return [e["details"]["verdict"] for e in reversed(logs["entries"])]


def account(**changes) -> model.Account:
    now = webstack.now()
    base = model.Account(
        id="a", org="o", provider="p", name="n", scopes=(), state="active",
        refresh_token="ENC:x", access_token="ENC:y", access_expires_at=now + timedelta(hours=1),
        refresh_expires_at=None, last_refresh_at=now - timedelta(minutes=10),
        consecutive_failures=0, next_attempt_at=now + timedelta(minutes=30), lease_owner=None,
        lease_expires_at=None, version=3, last_error=None, created_at=now, updated_at=now)
    return dataclasses.replace(base, **changes)


def test_the_verdicts():
    now, current, other = webstack.now(), "a" * 64, "b" * 64
    minute = timedelta(minutes=1)

    def verdict(reported=current, **changes):
        return rejected.decide(account(**changes), reported=reported, current=current,
                               now=now, window_seconds=30)

    assert verdict().kind == rejected.REFRESH
    assert verdict(other).kind == rejected.STALE
    assert verdict(other, last_refresh_at=now - timedelta(seconds=5)).kind == rejected.RECENT
    too_soon = verdict(last_refresh_at=now - timedelta(seconds=5))
    assert too_soon.kind == rejected.TOO_SOON and too_soon.retry_after_seconds == 25
    assert verdict(lease_owner="b", lease_expires_at=now + minute).kind == rejected.WAIT
    assert verdict(lease_owner="b", lease_expires_at=now - minute).kind == rejected.REFRESH
    assert verdict(consecutive_failures=2).kind == rejected.BLOCKED  # backing off
    assert verdict(consecutive_failures=2, next_attempt_at=now).kind == rejected.REFRESH
    assert rejected.decide(account(), reported=current, current=current, now=now,
                           blocked_until=now + minute).kind == rejected.BLOCKED
    assert rejected.decide(account(), reported=current, current=None, now=now).kind == (
        rejected.STALE)
    assert verdict().refreshed and verdict(other, last_refresh_at=now).refreshed
    assert not verdict(other).refreshed


async def test_the_current_token_is_refreshed_once_and_an_old_one_costs_nothing(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    first = await vend(stack)
    assert stack.sim.calls == 1
    stack.sim.reset_stats()
    later(stack)
    status, body, _ = await report(stack, rejected.digest("v^1.1#some-older-token"))
    assert (status, body) == (200, {"refreshed": False})
    assert stack.sim.calls == 0

    old = rejected.digest(first["access_token"])
    later(stack, 0)
    assert (await report(stack, old))[0] == 429  # refreshed just now: not again so soon
    later(stack)
    status, body, _ = await report(stack, old)
    assert status == 200 and body["refreshed"] is True
    assert stack.sim.calls == 1
    later(stack, 0)
    second = await vend(stack)
    assert second["access_token"] != first["access_token"]
    assert body["expires_at"] == second["expires_at"]
    # The same token again, within the window: the fresh token's answer, no new call.
    assert (await report(stack, old))[:2] == (200, body)
    # The fresh token refused at once: refreshing again would not help.
    status, refused, headers = await report(stack, rejected.digest(second["access_token"]))
    assert status == 429 and "error" in refused and 1 <= int(headers["Retry-After"]) <= 30
    assert stack.sim.calls == 1
    assert await reports_logged(stack) == [rejected.STALE, rejected.TOO_SOON, rejected.REFRESH,
                                           rejected.RECENT, rejected.TOO_SOON]
    _, logs = await stack.get_json("/api/logs?source=vend")
    assert first["access_token"] not in str(logs) and second["access_token"] not in str(logs)


async def test_a_paused_provider_is_not_called(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    token = (await vend(stack))["access_token"]
    stack.sim.reset_stats()
    await stack.db.pause_provider(webstack.PROVIDER, webstack.now() + timedelta(minutes=5),
                                  "invalid_client")
    later(stack)
    status, body, headers = await report(stack, rejected.digest(token))
    assert status == 503 and body["error"] and int(headers["Retry-After"]) > 0
    assert stack.sim.calls == 0


async def test_a_spent_budget_is_not_spent_further(store, keyring):
    async with webstack.running(store, keyring, provider={"daily_quota": 1}) as stack:
        await webstack.add_account(stack.db, stack.keyring, "acct-1")
        token = (await vend(stack))["access_token"]  # the day's one call
        later(stack)
        status, _, _ = await report(stack, rejected.digest(token))
        assert status == 503
        assert stack.sim.calls == 1


async def test_bad_reports_are_4xx(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    good = "ab" * 32
    for raw in (b"{", b"[]", {"sha256": good.upper()}, {"sha256": good[:-1]},
                {"sha256": good + "\n"}, {}, {"sha256": 5}, {"sha256": good, "token": "v^x"},
                b""):
        status, body, _ = await report(stack, None, raw=raw)
        assert status == 400 and isinstance(body["error"], str), raw
    for token in (webstack.ADMIN, None):
        assert (await report(stack, good, token=token))[0] == 401
    assert (await report(stack, good, "nope"))[:2] == (404, {"error": "unknown account"})
    assert (await report(stack, good, token=webstack.CONSUMER_ACME))[0] == 200
    await webstack.add_account(stack.db, stack.keyring, "other-1", "globex")
    assert (await report(stack, good, "other-1", token=webstack.CONSUMER_ACME))[0] == 404
    await stack.db.set_state("acct-1", "reauth_required", webstack.now())
    assert (await report(stack, good))[0] == 409
    assert stack.sim.calls == 0
