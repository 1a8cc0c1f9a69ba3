"""One account's refresh against the real simulator over loopback, on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from kit import Harness, refresh_token

from tokend import clock, crypto, model, refresher
from tokend.testing import simulator


async def test_success_saves_tokens_and_schedules_next(harness: Harness) -> None:
    account = await harness.add("a1")
    outcome = await harness.worker.refresh_now("a1")
    assert outcome.success and outcome.applied
    after = await harness.db.get_account("a1")
    assert after.access_token.startswith("ENC:v1:")
    token = harness.keyring.decrypt(after.access_token, account_id="a1", column="access_token")
    assert token.startswith("v^1.1#")
    lifetime = (after.access_expires_at - after.last_refresh_at).total_seconds()
    assert lifetime == pytest.approx(7200, abs=1)
    due_in = (after.next_attempt_at - after.last_refresh_at).total_seconds()
    assert due_in == pytest.approx(3600, abs=1)  # max_age is sooner than expiry - threshold
    assert after.refresh_token == account.refresh_token  # not rotating: the old one is kept
    assert after.consecutive_failures == 0 and after.lease_owner is None
    assert outcome.entry.id is not None and outcome.entry.action == "token_refreshed"
    assert outcome.entry.request["headers"]["Authorization"] == "Basic ****"


async def test_rotated_refresh_token_is_saved(harness: Harness) -> None:
    harness.sim.configure(rotate=True)
    old = refresh_token()
    await harness.add("a1", token=old)
    assert (await harness.worker.refresh_now("a1")).success
    after = await harness.db.get_account("a1")
    new = harness.keyring.decrypt(after.refresh_token, account_id="a1", column="refresh_token")
    assert new != old and new.startswith("v^1.1#")
    assert after.refresh_expires_at is not None
    # The old token is revoked by rotation; the saved one keeps working.
    assert (await harness.worker.refresh_now("a1")).success


@pytest.mark.parametrize("stored", [
    "undecryptable", "other_key", "unknown_kid", "garbage", "empty",
    "enc_plaintext", "not_ebay",
])
async def test_bad_stored_token_sends_nothing(harness: Harness, stored: str) -> None:
    plain = {"empty": "", "enc_plaintext": "ENC:v1:k1:abc", "not_ebay": "abc123def456"}
    other = crypto.Keyring.from_lines([crypto.generate_key_line(harness.keyring.primary_kid)])
    if stored == "undecryptable":  # sealed for another row
        sealed = harness.keyring.encrypt(refresh_token(), account_id="other",
                                         column="refresh_token")
    elif stored == "other_key":
        sealed = other.encrypt(refresh_token(), account_id="a1", column="refresh_token")
    elif stored == "unknown_kid":
        sealed = "ENC:v1:nokey:" + "A" * 40
    elif stored == "garbage":
        sealed = f"ENC:v1:{harness.keyring.primary_kid}:%%%not-b64"
    else:
        sealed = harness.keyring.encrypt(plain[stored], account_id="a1", column="refresh_token")
    await harness.add("a1", sealed=sealed)
    outcome = await harness.worker.refresh_now("a1")
    assert not outcome.success and outcome.error_code == "decrypt_failed"
    assert outcome.request is None and outcome.response is None
    assert harness.sim.stats()["calls"] == 0
    after = await harness.db.get_account("a1")
    assert after.state == model.ACTIVE and after.consecutive_failures == 1
    assert after.next_attempt_at > clock.now() + timedelta(seconds=3000)
    (entry,) = await harness.db.list_entries(account_id="a1")
    assert entry.action == "token_refresh_failed" and entry.error["code"] == "decrypt_failed"


async def test_invalid_grant_requires_reauth_and_stops_attempts(harness: Harness) -> None:
    token = refresh_token()
    harness.sim.revoke(token)
    await harness.add("a1", token=token)
    outcome = await harness.worker.refresh_now("a1")
    assert outcome.error_code == "invalid_grant"
    assert (await harness.db.get_account("a1")).state == model.REAUTH_REQUIRED
    assert await harness.claim_due(now_offset_seconds=10 ** 7) == []
    with pytest.raises(refresher.Busy, match="reauth_required"):
        await harness.worker.refresh_now("a1")
    assert harness.sim.stats()["calls"] == 1


async def test_invalid_grant_after_a_lost_race_is_not_a_revocation(harness: Harness) -> None:
    token = refresh_token()
    harness.sim.revoke(token)
    await harness.add("a1", token=token)
    claimed = await harness.db.claim_account("a1", harness.worker.owner, clock.now(),
                                             lease_seconds=60)
    # Meanwhile an operator stores a new refresh token for the account.
    await harness.db.reauth_account("a1", harness.keyring.encrypt(
        refresh_token(), account_id="a1", column="refresh_token"), None, clock.now())
    outcome = await harness.worker.refresh_claimed(claimed, "scheduled")
    assert outcome.error_code == "invalid_grant" and not outcome.applied
    assert (await harness.db.get_account("a1")).state == model.ACTIVE
    assert await harness.db.list_events() == []  # no change applied, so no event


@pytest.mark.parametrize(("fail_mode", "code"), [
    ("500", "server_error"), ("502_html", "server_error"), ("429", "rate_limited"),
    ("hang", "timeout"), ("reset", "connection_error"),
])
async def test_transient_failures_back_off(harness: Harness, fail_mode: str, code: str) -> None:
    harness.sim.configure(fail_mode=fail_mode, retry_after_seconds=900)
    await harness.add("a1")
    before = clock.now()
    outcome = await harness.worker.refresh_now("a1")
    assert outcome.error_code == code
    after = await harness.db.get_account("a1")
    assert after.state == model.ACTIVE and after.consecutive_failures == 1
    delay = (after.next_attempt_at - before).total_seconds()
    if fail_mode == "429":
        assert delay >= 900  # Retry-After honoured
    else:
        base = harness.settings.backoff_base_seconds
        assert base / 2 <= delay <= base + 5
    assert await harness.claim_due() == []


async def test_invalid_client_pauses_the_provider(harness: Harness) -> None:
    harness.sim.client_secret = "rotated-by-someone"
    await harness.add("a1")
    await harness.add("a2")
    outcome = await harness.worker.refresh_now("a1")
    assert outcome.error_code == "invalid_client"
    paused = await harness.db.paused_providers(clock.now())
    assert simulator.DEFAULT_CLIENT_ID and harness.provider in paused
    assert await harness.claim_due() == []  # a2 waits with its provider


async def test_save_is_shielded_from_cancellation(harness: Harness) -> None:
    harness.sim.configure(rotate=True)
    await harness.add("a1")
    saving, release = asyncio.Event(), asyncio.Event()
    real_finish = harness.db.finish_many  # the daemon's saves are group-committed

    async def slow_finish(*args, **kwargs):
        saving.set()
        await release.wait()
        return await real_finish(*args, **kwargs)

    harness.db.finish_many = slow_finish
    task = asyncio.create_task(harness.worker.refresh_now("a1"))
    await saving.wait()  # the provider answered; the rotated token is being saved
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await harness.worker.drain()
    after = await harness.db.get_account("a1")
    assert after.access_token is not None and after.lease_owner is None
    saved = harness.keyring.decrypt(after.refresh_token, account_id="a1", column="refresh_token")
    assert harness.sim.calls_for(saved) == 0  # the new, unused token was kept


async def test_manual_refresh_of_unknown_or_leased_account(harness: Harness) -> None:
    with pytest.raises(refresher.NotFound):
        await harness.worker.refresh_now("nope")
    await harness.add("a1")
    await harness.db.claim_account("a1", "someone-else", clock.now(), lease_seconds=60)
    with pytest.raises(refresher.Busy, match="another worker"):
        await harness.worker.refresh_now("a1")


async def test_debug_source_and_published_entry(harness: Harness) -> None:
    await harness.add("a1")
    received = []
    harness.hub.publish = received.append  # what the stream would get
    outcome = await harness.worker.refresh_now("a1", source="debug")
    assert outcome.entry.action == "token_refresh_debug" and outcome.entry.source == "debug"
    assert received == [outcome.entry]
    (attempt,) = await harness.db.list_attempts("a1")
    assert attempt.success and attempt.source == "debug"


async def test_lease_lost_result_is_not_applied(harness: Harness) -> None:
    await harness.add("a1")
    claimed = await harness.db.claim_account("a1", harness.worker.owner, clock.now(),
                                             lease_seconds=60)
    stale = dataclasses.replace(claimed, version=claimed.version - 1)
    outcome = await harness.worker.refresh_claimed(stale, "scheduled")
    assert not outcome.success and not outcome.applied
    assert (await harness.db.get_account("a1")).access_token is None


async def test_the_refresh_token_is_decrypted_once_per_attempt(harness: Harness) -> None:
    await harness.add("a1")
    calls = []
    real = harness.keyring.decrypt

    def counting(value, *, account_id, column):
        calls.append(column)
        return real(value, account_id=account_id, column=column)

    harness.keyring.decrypt = counting
    try:
        assert (await harness.worker.refresh_now("a1")).success
    finally:
        del harness.keyring.decrypt
    assert calls == ["refresh_token"]


# -- outbox events: written with the change that causes them, and only when it applies ------


async def test_a_revoked_grant_and_its_recovery_are_events(harness: Harness) -> None:
    token = refresh_token()
    harness.sim.revoke(token)
    await harness.add("a1", token=token)
    await harness.worker.refresh_now("a1")
    (event,) = await harness.db.list_events()
    assert event.type == "account.reauth_required"
    assert event.data == {"account_id": "a1", "org": "acme", "provider": harness.provider,
                          "state": "reauth_required", "reason": "invalid_grant"}
    assert (await harness.db.get_account("a1")).state_reason == "invalid_grant"

    fresh = refresh_token()
    await harness.db.reauth_account("a1", harness.keyring.encrypt(
        fresh, account_id="a1", column="refresh_token"), None, clock.now())
    assert (await harness.worker.refresh_now("a1")).success
    events = await harness.db.list_events(after_id=event.id)
    assert [(e.type, e.data["reason"]) for e in events] == [("account.recovered", "invalid_grant")]
    assert (await harness.db.get_account("a1")).state_reason is None
    for e in (event, *events):
        assert token not in str(e.data) and fresh not in str(e.data) and "ENC:" not in str(e.data)


async def test_a_success_after_transient_failures_is_a_recovery(harness: Harness) -> None:
    await harness.add("a1")
    harness.sim.configure(fail_mode="500")
    assert not (await harness.worker.refresh_now("a1")).success
    assert await harness.db.list_events() == []  # a transient failure is no event
    harness.sim.configure(fail_mode=None)
    assert (await harness.worker.refresh_now("a1")).success
    assert [e.type for e in await harness.db.list_events()] == ["account.recovered"]
    assert (await harness.worker.refresh_now("a1")).success
    assert len(await harness.db.list_events()) == 1  # healthy: nothing more to say


async def test_a_paused_provider_is_an_event(harness: Harness) -> None:
    harness.sim.client_secret = "rotated-by-someone"
    await harness.add("a1")
    await harness.worker.refresh_now("a1")
    (event,) = await harness.db.list_events()
    assert event.type == "provider.paused"
    assert event.data["provider"] == harness.provider
    assert event.data["reason"] == "invalid_client"
