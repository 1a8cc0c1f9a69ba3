"""Refresh-token expiry on both backends: expired tokens go to reauth_required without a
provider call, expiring ones get one entry and event per threshold crossed (30, 7, 1 days),
and the counts show in /loop-status, /metrics, /api/accounts and the CLI."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import pytest
import webstack
from kit import refresh_token
from proc import cli, write_config

import tokend.store as st
from tokend import clock, crypto, model, vocabulary
from tokend.testing import simulator

pytestmark = pytest.mark.timeout(60)


async def add(db: st.Store, keyring: crypto.Keyring, account_id: str,
              expires_at: datetime | None) -> model.Account:
    return await db.add_account(model.NewAccount(
        id=account_id, org="acme", provider=webstack.PROVIDER, name=account_id, scopes=(),
        refresh_token=keyring.encrypt(refresh_token(), account_id=account_id,
                                      column="refresh_token"),
        refresh_expires_at=expires_at), clock.now())


async def test_an_expired_refresh_token_needs_reauth_without_a_provider_call(
        store, keyring) -> None:
    async with webstack.running(store, keyring) as s:
        await add(store, keyring, "expired", clock.now() - timedelta(seconds=1))
        await s.loop.cycle()
        account = await store.get_account("expired")
        assert account.state == model.REAUTH_REQUIRED
        assert account.state_reason == model.REFRESH_TOKEN_EXPIRED
        assert s.sim.calls == 0
        (event,) = await store.list_events()
        assert event.type == vocabulary.ACCOUNT_REAUTH_REQUIRED
        assert event.data["reason"] == model.REFRESH_TOKEN_EXPIRED
        (entry,) = await store.list_entries(action=vocabulary.REFRESH_TOKEN_EXPIRED)
        assert entry.account_id == "expired" and entry.source == vocabulary.SCHEDULED
        await s.loop.cycle()
        assert len(await store.list_events()) == 1  # once


async def test_a_manual_refresh_of_an_expired_token_sends_nothing(store, keyring) -> None:
    async with webstack.running(store, keyring) as s:
        await add(store, keyring, "expired", clock.now() - timedelta(seconds=1))
        outcome = await s.worker.refresh_now("expired")
        assert outcome.error_code == model.REFRESH_TOKEN_EXPIRED and outcome.request is None
        assert s.sim.calls == 0
        account = await store.get_account("expired")
        assert account.state == model.REAUTH_REQUIRED
        assert account.state_reason == model.REFRESH_TOKEN_EXPIRED
        (event,) = await store.list_events()
        assert (event.type, event.data["reason"]) == (vocabulary.ACCOUNT_REAUTH_REQUIRED,
                                                       model.REFRESH_TOKEN_EXPIRED)


async def test_one_notice_per_threshold_crossed(store, keyring) -> None:
    now = clock.now()
    async with webstack.running(store, keyring) as s:
        for name, days in (("d20", 20), ("d5", 5), ("h12", 0.5), ("d60", 60)):
            await add(store, keyring, name, now + timedelta(days=days))
        await add(store, keyring, "unknown", None)

        async def cycle_at(when: datetime) -> dict[str, int]:
            s.loop.clock = lambda: when
            before = {e.id for e in await store.list_events(limit=1000)}
            await s.loop.cycle()
            return {e.data["account_id"]: e.data["days"]
                    for e in await store.list_events(limit=1000)
                    if e.id not in before
                    and e.type == vocabulary.ACCOUNT_REFRESH_TOKEN_EXPIRING}

        assert await cycle_at(now) == {"d20": 30, "d5": 7, "h12": 1}
        assert await cycle_at(now + timedelta(hours=1)) == {}
        assert await cycle_at(now + timedelta(days=14)) == {"d20": 7}
        assert await cycle_at(now + timedelta(days=19, hours=1)) == {"d20": 1}
        assert await cycle_at(now + timedelta(days=19, hours=2)) == {}
        assert await cycle_at(now + timedelta(days=31)) == {"d60": 30}
        entries = await store.list_entries(action=vocabulary.REFRESH_TOKEN_EXPIRING)
        assert len(entries) == 6
        assert {e.account_id for e in entries} == {"d20", "d5", "h12", "d60"}
        assert (await store.get_account("d60")).refresh_expiry_notice_days == 30
        assert (await store.get_account("unknown")).refresh_expiry_notice_days is None


async def test_expiry_shows_in_loop_status_metrics_and_the_api(store, keyring) -> None:
    now = clock.now()
    async with webstack.running(store, keyring) as s:
        for name, days in (("d20", 20), ("d5", 5), ("h12", 0.5), ("d60", 60)):
            await add(store, keyring, name, now + timedelta(days=days))
        status, body = await s.get_json("/loop-status", token=None)
        assert status == 200
        assert body["refresh_tokens_expiring"] == {"within_30_days": 3, "within_7_days": 2,
                                                   "within_1_days": 1}
        async with s.http.get(s.url + "/metrics") as response:
            text = await response.text()
        assert 'tokend_refresh_tokens_expiring{days="30"} 3.0' in text
        assert 'tokend_refresh_tokens_expiring{days="1"} 1.0' in text
        _, body = await s.get_json("/api/accounts")
        shown = {a["id"]: a["refresh_expires_at"] for a in body["accounts"]}
        assert datetime.fromisoformat(shown["d5"]) == (
            await store.get_account("d5")).refresh_expires_at


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_expiry_statements_use_their_index(db_url) -> None:
    from tokend.store import queries

    statements = queries.load("sqlite")
    with sqlite3.connect(db_url.removeprefix("sqlite://")) as conn:
        for name in ("expire_refresh_tokens", "note_refresh_expiry", "refresh_expiry_counts"):
            sql = statements[name]
            names = queries.params(sql)
            plan = conn.execute("EXPLAIN QUERY PLAN " + sql, dict.fromkeys(names, 0)).fetchall()
            assert any("accounts_refresh_expiry" in row[-1] for row in plan), (name, plan)


def test_the_cli_keeps_and_lists_the_refresh_expiry_and_prints_connect_links(
        tmp_path, key_lines) -> None:
    tables = {
        "database": {"url": f"sqlite://{tmp_path / 'tokend.db'}"},
        "crypto": {"keys": key_lines[:1]},
        "server": {"public_url": "https://tokens.example.com/"},
        "providers.ebay-sandbox": {
            "type": "ebay", "environment": "sandbox", "client_id": simulator.DEFAULT_CLIENT_ID,
            "client_secret": simulator.DEFAULT_CLIENT_SECRET, "redirect_uri": "my-runame"},
    }
    path = write_config(tmp_path / "tokend.toml", tables)
    assert cli(path, "migrate").returncode == 0
    added = cli(path, "accounts", "add", "--provider", "ebay-sandbox", "--org", "acme",
                "--name", "s1", "--id", "a1", "--refresh-token-expires-in", "86400",
                stdin=refresh_token() + "\n")
    assert added.returncode == 0, added.stderr
    listed = cli(path, "accounts", "list")
    assert "refresh_expires_at" in listed.stdout.splitlines()[0]
    expected = (clock.now() + timedelta(days=1)).strftime("%Y-%m-%d")
    assert expected in listed.stdout.splitlines()[1]

    reauth = cli(path, "accounts", "reauth", "a1", "--refresh-token-expires-in", "172800",
                 stdin=refresh_token() + "\n")
    assert reauth.returncode == 0, reauth.stderr
    expected = (clock.now() + timedelta(days=2)).strftime("%Y-%m-%d")
    assert expected in cli(path, "accounts", "list").stdout.splitlines()[1]

    link = cli(path, "accounts", "connect-link", "--provider", "ebay-sandbox", "--org", "acme",
               "--account", "a1")
    assert link.returncode == 0, link.stderr
    assert link.stdout.startswith("https://tokens.example.com/connect/")
    assert "works once" in link.stderr
    refused = cli(path, "accounts", "connect-link", "--provider", "ebay-sandbox", "--org",
                  "other", "--account", "a1")
    assert refused.returncode == 2 and refused.stderr.strip() == "tokend: unknown account"

    del tables["server"]
    write_config(path, tables)
    refused = cli(path, "accounts", "connect-link", "--provider", "ebay-sandbox", "--org", "acme")
    assert refused.returncode == 2 and "server.public_url" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
