"""What an operator sees of refreshes that fail or never start: failing accounts apart
from active ones, latency only for real calls, and a trace of every manual attempt."""

from __future__ import annotations

import asyncio

import pytest
import webstack

from tokend import model


@pytest.fixture
async def stack(store, keyring):
    async with webstack.running(store, keyring) as s:
        yield s


async def add_undecryptable(stack, account_id: str) -> None:
    sealed = stack.keyring.encrypt(webstack.refresh_token(), account_id="someone-else",
                                   column="refresh_token")
    await stack.db.add_account(model.NewAccount(
        id=account_id, org="acme", provider=webstack.PROVIDER, name=account_id, scopes=(),
        refresh_token=sealed, refresh_expires_at=None), webstack.now())


async def metrics_text(stack) -> str:
    async with stack.http.get(stack.url + "/metrics") as response:
        return await response.text()


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name:
            return float(value)
    return None


async def test_decrypt_failed_accounts_are_failing_not_active(stack):
    await webstack.add_account(stack.db, stack.keyring, "good")
    await add_undecryptable(stack, "broken")
    assert (await stack.worker.refresh_now("broken")).error_code == "decrypt_failed"
    status, body = await stack.get_json("/loop-status", token=None)
    assert status == 200
    assert body["accounts"]["active"] == 1 and body["accounts"]["failing"] == 1
    assert body["failing_accounts"] == {"decrypt_failed": 1}
    text = await metrics_text(stack)
    assert 'tokend_accounts{state="active"} 1.0' in text
    assert 'tokend_accounts{state="failing"} 1.0' in text
    assert 'tokend_failing_accounts{error_code="decrypt_failed"} 1.0' in text


async def test_refresh_latency_counts_only_attempts_that_called_the_provider(stack):
    await add_undecryptable(stack, "broken")
    await webstack.add_account(stack.db, stack.keyring, "good")
    assert (await stack.worker.refresh_now("broken")).error_code == "decrypt_failed"
    name = f'tokend_refresh_duration_seconds_count{{provider="{webstack.PROVIDER}"}}'
    assert sample(await metrics_text(stack), name) in (None, 0.0)
    assert (await stack.worker.refresh_now("good")).success
    assert sample(await metrics_text(stack), name) == 1.0


async def refresh(stack, account_id: str, debug: bool) -> int:
    async with stack.http.post(f"{stack.url}/api/accounts/{account_id}/refresh",
                               headers=stack.auth(), json={"debug": debug}) as response:
        return response.status


async def test_a_refused_debug_refresh_leaves_a_log_entry(stack):
    assert await refresh(stack, "nope", True) == 404
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    await stack.db.set_state("acct-1", "reauth_required", webstack.now())
    assert await refresh(stack, "acct-1", True) == 409
    entries = await stack.db.list_entries(source=["debug"])
    codes = sorted((e.action, e.error["code"], e.details["status"]) for e in entries)
    assert codes == [("token_refresh_debug", "account_busy", 409),
                     ("token_refresh_debug", "unknown_account", 404)]
    (busy,) = [e for e in entries if e.account_id == "acct-1"]
    assert busy.org_id == "acme" and "reauth_required" in busy.message


async def test_manual_and_debug_refreshes_write_no_heartbeat(stack):
    await webstack.add_account(stack.db, stack.keyring, "acct-1")
    runner = asyncio.create_task(stack.loop.run())

    async def turned() -> int:
        async with asyncio.timeout(10):
            while True:
                workers = await stack.db.list_workers()
                if workers and workers[0].last_finished_at is not None:
                    return workers[0].last_finished_at
                await asyncio.sleep(0.02)

    try:
        first = await turned()  # the first, scheduled cycle refreshed acct-1
        for debug in (False, True):
            before = await turned()
            assert await refresh(stack, "acct-1", debug) == 200
            async with asyncio.timeout(10):  # the woken cycle ran and found nothing due
                while await turned() == before:
                    await asyncio.sleep(0.02)
        assert await turned() > first
    finally:
        stack.stop.set()
        await runner
    actions = [e.action for e in await stack.db.list_entries(limit=100)]
    assert "worker_heartbeat" not in actions, actions
    assert sorted(actions) == sorted(["cycle_summary", "token_refreshed", "token_refreshed",
                                      "token_refresh_debug"])
