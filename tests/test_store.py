"""The storage contract, run unchanged against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
from conftest import BACKEND_FIXTURES
from kit import execute_sql, store_options

import tokend.store as st
from tokend import crypto, model, stream
from tokend.model import Account, Attempt, Entry, Failure, NewAccount, Success
from tokend.store import postgres as postgres_connector
from tokend.store import sqlite as sqlite_connector

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "postgresql", "pgbouncer"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The store contract holds on each backend, and on PostgreSQL through PgBouncer's
    transaction pooling (no session survives between transactions there)."""
    return request.getfixturevalue(BACKEND_FIXTURES[request.param])
LEASE = 120.0
THRESHOLD = 900.0
MAX_AGE = 3600.0


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def new_account(keyring: crypto.Keyring, n: int, *, org: str = "acme",
                provider: str = "ebay-production", token: str = "v^1.1#r") -> NewAccount:
    account_id = f"acct-{n:03d}"
    return NewAccount(
        id=account_id, org=org, provider=provider, name=f"seller-{n}", scopes=("s1", "s2"),
        refresh_token=keyring.encrypt(token, account_id=account_id, column="refresh_token"),
        refresh_expires_at=later(86400 * 500))


async def claim(db: st.Store, now: datetime = NOW, owner: str = "w1",
                limit: int = 100) -> list[Account]:
    return await db.claim_due(owner, now, limit=limit, lease_seconds=LEASE,
                              expiry_threshold_seconds=THRESHOLD, max_age_seconds=MAX_AGE)


async def count(db: st.Store, now: datetime = NOW) -> int:
    return await db.count_due(now, expiry_threshold_seconds=THRESHOLD, max_age_seconds=MAX_AGE)


def attempt(account: Account, *, success: bool = True, code: str | None = None) -> Attempt:
    return Attempt(account_id=account.id, source="scheduled", started_at=NOW, finished_at=NOW,
                   success=success, error_code=code, error_message=code and f"{code} happened")


def entry(account: Account | None = None, **fields) -> Entry:
    base = dict(action="token_refreshed", source="scheduled", created_at=NOW)
    if account is not None:
        base.update(account_id=account.id, org_id=account.org, provider=account.provider,
                    environment="production")
    return Entry(**{**base, **fields})


def success(keyring: crypto.Keyring, account: Account, *, refreshed_at: datetime = NOW,
            expires_in: float = 7200, next_attempt_at: datetime | None = None,
            access: str = "v^1.1#a", refresh: str | None = None) -> Success:
    return Success(
        access_token=keyring.encrypt(access, account_id=account.id, column="access_token"),
        access_expires_at=refreshed_at + timedelta(seconds=expires_in),
        refresh_token=None if refresh is None else keyring.encrypt(
            refresh, account_id=account.id, column="refresh_token"),
        refresh_expires_at=None if refresh is None else refreshed_at + timedelta(days=540),
        refreshed_at=refreshed_at,
        next_attempt_at=next_attempt_at or refreshed_at + timedelta(seconds=expires_in / 2))


async def refreshed(db: st.Store, keyring: crypto.Keyring, account: Account, *,
                    refreshed_at: datetime, expires_in: float,
                    next_attempt_at: datetime) -> Account:
    """Give `account` a successful refresh at `refreshed_at`."""
    claimed = await db.claim_account(account.id, "setup", refreshed_at, lease_seconds=LEASE)
    assert claimed is not None
    outcome = success(keyring, claimed, refreshed_at=refreshed_at, expires_in=expires_in,
                      next_attempt_at=next_attempt_at)
    applied, _ = await db.finish(claimed, "setup", outcome, attempt(claimed), entry(claimed),
                                 refreshed_at)
    assert applied
    got = await db.get_account(account.id)
    assert got is not None
    return got


# -- accounts -----------------------------------------------------------------------------

async def test_add_get_list(store, keyring):
    new = new_account(keyring, 1)
    added = await store.add_account(new, NOW)
    assert added.id == new.id and added.org == "acme" and added.name == "seller-1"
    assert added.scopes == ("s1", "s2")
    assert added.state == model.ACTIVE
    assert added.refresh_token == new.refresh_token
    assert added.refresh_expires_at == new.refresh_expires_at
    assert added.access_token is None and added.last_refresh_at is None
    assert added.next_attempt_at == NOW and added.created_at == NOW
    assert added.consecutive_failures == 0 and added.lease_owner is None
    assert added.created_at.tzinfo is not None
    assert await store.get_account(new.id) == added
    assert await store.get_account("nope") is None

    await store.add_account(new_account(keyring, 2, org="globex"), NOW)
    assert [a.id for a in await store.list_accounts()] == ["acct-001", "acct-002"]
    assert [a.id for a in await store.list_accounts(org="globex")] == ["acct-002"]
    assert await store.list_accounts(org="initech") == []


async def test_duplicate_account(store, keyring):
    await store.add_account(new_account(keyring, 1), NOW)
    with pytest.raises(st.DuplicateAccount):
        await store.add_account(new_account(keyring, 1), NOW)
    same_name = dataclasses.replace(new_account(keyring, 1), id="other")
    with pytest.raises(st.DuplicateAccount):
        await store.add_account(same_name, NOW)
    assert len(await store.list_accounts()) == 1


async def test_plaintext_secret_is_refused(store):
    with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
        await store.add_account(NewAccount(
            id="plain", org="acme", provider="ebay-production", name="p", scopes=(),
            refresh_token="v^1.1#plaintext", refresh_expires_at=None), NOW)


async def test_set_state_and_counts(store, keyring):
    for n in range(1, 5):
        await store.add_account(new_account(keyring, n), NOW)
    before = await store.get_account("acct-002")
    changed = await store.set_state("acct-002", model.DISABLED, later(1))
    assert changed.state == model.DISABLED and changed.version == before.version + 1
    await store.set_state("acct-003", model.REAUTH_REQUIRED, later(1))
    assert await store.set_state("nope", model.DISABLED, NOW) is None
    assert await store.account_counts() == {model.ACTIVE: 2, model.REAUTH_REQUIRED: 1,
                                            model.DISABLED: 1, model.DELETED: 0}


async def test_reauth_account(store, keyring):
    account = await store.add_account(new_account(keyring, 1), NOW)
    claimed = (await claim(store))[0]
    await store.finish(claimed, "w1", Failure("invalid_grant", "revoked", later(60),
                                               model.REAUTH_REQUIRED), attempt(claimed),
                       entry(claimed), NOW)
    stuck = await store.get_account(account.id)
    assert stuck.state == model.REAUTH_REQUIRED and stuck.consecutive_failures == 1

    token = keyring.encrypt("v^1.1#new", account_id=account.id, column="refresh_token")
    again = await store.reauth_account(account.id, token, later(86400), later(10))
    assert again.state == model.ACTIVE and again.refresh_token == token
    assert again.refresh_expires_at == later(86400)
    assert again.consecutive_failures == 0 and again.last_error is None
    assert again.next_attempt_at == later(10) and again.version == stuck.version + 1
    assert [a.id for a in await claim(store, later(10))] == [account.id]
    assert await store.reauth_account("nope", token, None, NOW) is None


# -- due selection ------------------------------------------------------------------------

async def test_claim_due_selects_only_due_accounts(store, db_url, keyring):
    accounts = {n: await store.add_account(new_account(keyring, n), ago(7200))
                for n in range(1, 9)}
    # 1: never refreshed -> due.
    # 2: access token expires within the threshold -> due.
    await refreshed(store, keyring, accounts[2], refreshed_at=ago(600), expires_in=1200,
                    next_attempt_at=ago(1))
    # 3: last refreshed longer than max_age ago, token still long-lived -> due.
    await refreshed(store, keyring, accounts[3], refreshed_at=ago(MAX_AGE + 60),
                    expires_in=MAX_AGE * 4, next_attempt_at=ago(60))
    # 4: fresh token, even though next_attempt_at has passed -> not due.
    await refreshed(store, keyring, accounts[4], refreshed_at=ago(60), expires_in=7200,
                    next_attempt_at=ago(1))
    # 5, 6: not active.
    await store.set_state(accounts[5].id, model.REAUTH_REQUIRED, ago(10))
    await store.set_state(accounts[6].id, model.DISABLED, ago(10))
    # 7: backing off until later.
    held = await store.claim_account(accounts[7].id, "w0", ago(10), lease_seconds=LEASE)
    await store.finish(held, "w0", Failure("temporarily_unavailable", "503", later(300)),
                       attempt(held, success=False, code="temporarily_unavailable"),
                       entry(held), ago(10))
    # 8: leased by someone else; its next_attempt_at forced back so only the lease guards it.
    await store.claim_account(accounts[8].id, "other", ago(10), lease_seconds=LEASE)
    await execute_sql(db_url, "UPDATE accounts SET next_attempt_at = created_at "
                             "WHERE id = 'acct-008'")
    # 9: its provider is paused.
    await store.add_account(new_account(keyring, 9, provider="acme-oauth"), ago(7200))
    await store.pause_provider("acme-oauth", later(3600), "invalid_client")

    assert await count(store) == 3
    claimed = await claim(store)
    assert sorted(a.id for a in claimed) == ["acct-001", "acct-002", "acct-003"]
    for account in claimed:
        assert account.lease_owner == "w1"
        assert account.lease_expires_at == later(LEASE)
        assert account.next_attempt_at == later(LEASE)
        assert account.version == accounts[int(account.id[-3:])].version + (
            1 if account.id == "acct-001" else 3)
    assert await claim(store) == []
    assert await count(store) == 0


async def test_claim_due_respects_limit_and_order(store, keyring):
    for n in range(1, 6):
        await store.add_account(new_account(keyring, n), ago(100 - n))
    first = await claim(store, limit=2)
    assert sorted(a.id for a in first) == ["acct-001", "acct-002"]
    rest = await claim(store, limit=10)
    assert sorted(a.id for a in rest) == ["acct-003", "acct-004", "acct-005"]


async def test_lease_expiry_makes_an_account_claimable_again(store, keyring):
    await store.add_account(new_account(keyring, 1), NOW)
    [first] = await claim(store, owner="w1")
    assert await claim(store, later(LEASE - 1), owner="w2") == []
    assert await store.next_due_at(NOW) == later(LEASE)
    [second] = await claim(store, later(LEASE), owner="w2")
    assert second.lease_owner == "w2" and second.version == first.version + 1
    # The first owner's late result must not land.
    applied, _ = await store.finish(first, "w1", success(keyring, first), attempt(first),
                                    entry(first), later(LEASE + 1))
    assert not applied


async def test_concurrent_claimers_never_share_an_account(store, keyring):
    for n in range(60):
        await store.add_account(new_account(keyring, n), NOW)
    rounds = []
    for _ in range(3):
        batches = await asyncio.gather(*(claim(store, owner=f"w{i}", limit=3)
                                         for i in range(30)))
        rounds.extend(a.id for batch in batches for a in batch)
    assert len(rounds) == len(set(rounds)) == 60


async def test_two_stores_never_share_an_account(db_url, keyring):
    """Two processes' worth of connections on one database, claiming at once."""
    one, two = (await st.connect(db_url, **store_options(db_url)),
                await st.connect(db_url, **store_options(db_url)))
    try:
        for n in range(80):
            await one.add_account(new_account(keyring, n), NOW)
        batches = await asyncio.gather(*(claim(db, owner=f"{name}-{i}", limit=4)
                                         for i in range(15)
                                         for name, db in (("one", one), ("two", two))))
        ids = [a.id for batch in batches for a in batch]
        assert len(ids) == len(set(ids))
        ids += [a.id for a in await claim(two, limit=100)]
        assert len(ids) == len(set(ids)) == 80
    finally:
        await one.close()
        await two.close()


class AnswerLost:
    """A connector whose next run of `statement`, once set, does its work and then fails
    the way a connection that dies after the commit does: the caller cannot tell that it
    happened."""

    def __init__(self, inner: st.Connector) -> None:
        self.inner, self.statement = inner, None

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def all(self, query: str, /, **params):
        rows = await self.inner.all(query, **params)
        if query == self.statement:
            self.statement = None
            raise st.StoreError("PostgreSQL unavailable: connection was closed in the middle "
                                "of operation")
        return rows


async def open_connector(db_url: str) -> st.Connector:
    if db_url.startswith("sqlite://"):
        return await sqlite_connector.Connector.open(db_url.removeprefix("sqlite://"))
    return await postgres_connector.Connector.open(db_url, pool_max_size=2,
                                                   **store_options(db_url))


@pytest.mark.parametrize("statement", ["claim_due", "claim_account"])
async def test_a_claim_whose_answer_was_lost_is_given_back_by_the_next(db_url, keyring,
                                                                       statement):
    """The claim committed and its answer never came: the next claim first gives those
    accounts back, due at once, instead of leaving them leased to nobody for a whole
    lease. Only that claim's rows: the owner's other leases, even one taken at the same
    instant, stay."""
    lossy = AnswerLost(await open_connector(db_url))
    db = st.Store(lossy)
    try:
        for n in (1, 2, 3):
            await db.add_account(new_account(keyring, n), NOW)
        manual = await db.claim_account("acct-003", "w1", NOW, lease_seconds=LEASE)
        lossy.statement = statement
        with pytest.raises(st.StoreError):
            if statement == "claim_due":
                await claim(db, limit=1)
            else:
                await db.claim_account("acct-001", "w1", NOW, lease_seconds=LEASE)
        stranded = await db.get_account("acct-001")
        assert stranded.lease_owner == "w1" and stranded.lease_expires_at > later(LEASE)
        claimed = await claim(db, later(2))
        assert sorted(a.id for a in claimed) == ["acct-001", "acct-002"]
        given_back = next(a for a in claimed if a.id == "acct-001")
        assert given_back.version == stranded.version + 2  # released, then claimed
        kept = await db.get_account("acct-003")
        assert (kept.lease_owner, kept.lease_expires_at, kept.version) == (
            "w1", manual.lease_expires_at, manual.version)
    finally:
        await db.close()


async def test_claim_account(store, keyring):
    account = await store.add_account(new_account(keyring, 1), NOW)
    # Not due (fresh token, next attempt far away) does not matter for a manual refresh.
    await refreshed(store, keyring, account, refreshed_at=NOW, expires_in=7200,
                    next_attempt_at=later(3600))
    manual = await store.claim_account(account.id, "cli", NOW, lease_seconds=LEASE)
    assert manual.lease_owner == "cli" and manual.lease_expires_at == later(LEASE)
    assert await store.claim_account(account.id, "loop", later(1), lease_seconds=LEASE) is None
    assert await claim(store, later(1)) == []
    again = await store.claim_account(account.id, "loop", later(LEASE), lease_seconds=LEASE)
    assert again.lease_owner == "loop"
    assert await store.claim_account("nope", "cli", NOW, lease_seconds=LEASE) is None

    await store.add_account(new_account(keyring, 2), NOW)
    await store.set_state("acct-002", model.DISABLED, NOW)
    assert await store.claim_account("acct-002", "cli", NOW, lease_seconds=LEASE) is None


# -- finishing ----------------------------------------------------------------------------

async def test_finish_success_keeps_or_replaces_the_refresh_token(store, keyring):
    added = await store.add_account(new_account(keyring, 1), NOW)
    [claimed] = await claim(store)
    outcome = success(keyring, claimed, next_attempt_at=later(3600))
    applied, saved_entry = await store.finish(claimed, "w1", outcome, attempt(claimed),
                                              entry(claimed), NOW)
    assert applied and saved_entry.id is not None
    account = await store.get_account(added.id)
    assert account.refresh_token == added.refresh_token
    assert account.refresh_expires_at == added.refresh_expires_at
    assert account.access_token == outcome.access_token
    assert account.access_expires_at == outcome.access_expires_at
    assert account.last_refresh_at == NOW and account.next_attempt_at == later(3600)
    assert account.lease_owner is None and account.lease_expires_at is None
    assert account.version == claimed.version + 1
    assert keyring.decrypt(account.access_token, account_id=added.id,
                           column="access_token") == "v^1.1#a"

    [claimed] = await claim(store, later(3600))
    rotated = success(keyring, claimed, refreshed_at=later(3600), refresh="v^1.1#rotated")
    applied, _ = await store.finish(claimed, "w1", rotated, attempt(claimed), entry(claimed),
                                    later(3600))
    account = await store.get_account(added.id)
    assert applied and account.refresh_token == rotated.refresh_token
    assert account.refresh_expires_at == rotated.refresh_expires_at
    assert keyring.decrypt(account.refresh_token, account_id=added.id,
                           column="refresh_token") == "v^1.1#rotated"


async def test_finish_failure_counts_and_changes_state(store, keyring):
    await store.add_account(new_account(keyring, 1), NOW)
    [claimed] = await claim(store)
    applied, _ = await store.finish(
        claimed, "w1", Failure("temporarily_unavailable", "503", later(30)),
        attempt(claimed, success=False, code="temporarily_unavailable"), entry(claimed), NOW)
    account = await store.get_account(claimed.id)
    assert applied and account.consecutive_failures == 1 and account.state == model.ACTIVE
    assert account.last_error == "temporarily_unavailable"
    assert account.next_attempt_at == later(30) and account.lease_owner is None

    [claimed] = await claim(store, later(30))
    await store.finish(claimed, "w1", Failure("invalid_grant", "revoked", later(60),
                                               model.REAUTH_REQUIRED),
                       attempt(claimed, success=False, code="invalid_grant"), entry(claimed),
                       later(30))
    account = await store.get_account(claimed.id)
    assert account.consecutive_failures == 2 and account.state == model.REAUTH_REQUIRED
    assert account.last_error == "invalid_grant"

    await store.reauth_account(claimed.id, account.refresh_token, None, later(60))
    [claimed] = await claim(store, later(60))
    await store.finish(claimed, "w1", success(keyring, claimed, refreshed_at=later(60)),
                       attempt(claimed), entry(claimed), later(60))
    account = await store.get_account(claimed.id)
    assert account.consecutive_failures == 0 and account.last_error is None


async def test_finish_stale_changes_nothing_but_logs(store, keyring):
    await store.add_account(new_account(keyring, 1), NOW)
    [stale] = await claim(store, owner="w1")
    [current] = await claim(store, later(LEASE), owner="w2")
    before = await store.get_account(stale.id)

    late = await store.finish(stale, "w1", success(keyring, stale), attempt(stale),
                              entry(stale, message="late"), later(LEASE + 1))
    intruder = await store.finish(current, "intruder", Failure("x", "y", later(9999)),
                                  attempt(current, success=False, code="x"),
                                  entry(current, message="intruder"), later(LEASE + 1))
    assert late[0] is False and intruder[0] is False
    assert await store.get_account(stale.id) == before
    assert [a.success for a in await store.list_attempts(stale.id)] == [False, True]
    logged = await store.list_entries(account_id=stale.id)
    assert [e.message for e in logged] == ["intruder", "late"]
    assert [e.id for e in logged] == [intruder[1].id, late[1].id]


async def test_a_save_is_found_by_its_id_and_never_written_twice(store, keyring):
    """A retry whose first COMMIT landed unseen: `saved` tells what that save did, and
    writing the same save again is refused whole (DuplicateKey, a StoreError: retried)."""
    await store.add_account(new_account(keyring, 1), NOW)
    await store.add_account(new_account(keyring, 2), NOW)
    [one, two] = await claim(store, limit=2)
    first = attempt(one, success=True)
    assert await store.saved(first.save_id) is None
    called = entry(one, request={"method": "POST"})  # the token endpoint was called
    applied, logged = await store.finish(one, "w1", success(keyring, one), first, called,
                                         later(1))
    assert await store.saved(first.save_id) == (True, logged.id) and applied
    lost = attempt(two, success=False, code="x")  # a save whose lease was lost: not applied
    _, lost_entry = await store.finish(two, "intruder", Failure("x", "y", later(9999)), lost,
                                       entry(two), later(1))
    assert await store.saved(lost.save_id) == (False, lost_entry.id)
    before = (await store.list_entries(), await store.budget_usage(NOW.date()),
              await store.get_account(one.id))
    with pytest.raises(st.DuplicateKey):
        await store.finish(one, "w1", success(keyring, one), first, called, later(2))
    after = (await store.list_entries(), await store.budget_usage(NOW.date()),
             await store.get_account(one.id))
    assert after == before and before[1] == {one.provider: {"refresh_token": 1}}
    assert [a.save_id for a in await store.list_attempts(one.id)] == [first.save_id]


async def test_next_due_at_count_due_and_pauses(store, keyring):
    assert await store.next_due_at(NOW) is None
    assert await count(store) == 0
    await store.add_account(new_account(keyring, 1), later(300))
    await store.add_account(new_account(keyring, 2, provider="acme-oauth"), later(100))
    await store.add_account(new_account(keyring, 3), later(50))
    await store.set_state("acct-003", model.DISABLED, NOW)
    assert await store.next_due_at(NOW) == later(100)
    assert await count(store) == 0
    assert await count(store, later(300)) == 2

    await store.pause_provider("acme-oauth", later(200), "invalid_client")
    assert await store.paused_providers(NOW) == {"acme-oauth": later(200)}
    assert await store.next_due_at(NOW) == later(300)
    assert await count(store, later(150)) == 0
    assert await claim(store, later(150)) == []
    # A pause can be moved; an expired pause no longer holds anything back.
    await store.pause_provider("acme-oauth", later(120), "invalid_client again")
    assert await store.paused_providers(NOW) == {"acme-oauth": later(120)}
    assert await store.paused_providers(later(120)) == {}
    assert [a.id for a in await claim(store, later(150))] == ["acct-002"]


# -- logs ---------------------------------------------------------------------------------

async def test_entries_round_trip_and_filters(store, keyring):
    a = await store.add_account(new_account(keyring, 1, org="acme"), NOW)
    b = await store.add_account(new_account(keyring, 2, org="globex"), NOW)
    full = entry(a, duration_ms=12.5, request={"method": "POST", "headers": {"x": "1"}},
                 response={"status": 200, "body": {"expires_in": 7200}},
                 error=None, message="ok", details={"n": [1, 2]})
    saved = await store.add_entry(full)
    assert saved.id is not None and saved == Entry(**{**full.to_dict(), "id": saved.id,
                                                      "created_at": NOW})
    assert (await store.list_entries())[0] == saved
    await store.add_entry(entry(b, source="manual", action="token_refresh_failed",
                                error={"code": "invalid_grant"}))
    await store.add_entry(entry(None, action="worker_heartbeat", message="idle"))
    await store.add_entry(entry(a, source="debug", action="token_refresh_debug"))
    await store.add_entry(entry(b, source="admin", action="token_refreshed"))
    every = await store.list_entries()
    ids = [e.id for e in every]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5

    assert [e.source for e in await store.list_entries(source=["manual", "debug"])] == [
        "debug", "manual"]
    assert await store.list_entries(source=[]) == []
    assert [e.action for e in await store.list_entries(action="worker_heartbeat")] == [
        "worker_heartbeat"]
    assert {e.account_id for e in await store.list_entries(account_id=b.id)} == {b.id}
    assert [e.org_id for e in await store.list_entries(org="globex")] == ["globex", "globex"]
    assert [e.id for e in await store.list_entries(before_id=ids[1], limit=2)] == ids[2:4]
    assert [e.id for e in await store.list_entries(after_id=ids[3], limit=2)] == [
        ids[2], ids[1]]
    assert [e.id for e in await store.list_entries(after_id=ids[1], source=["manual"])] == []
    assert [e.id for e in await store.list_entries(limit=1)] == ids[:1]
    assert [e.id for e in await store.get_entries([ids[0], ids[3], 999999])] == [
        ids[3], ids[0]]
    assert await store.get_entries([]) == []


async def test_attempts_are_listed_newest_first(store, keyring):
    await store.add_account(new_account(keyring, 1), NOW)
    for n in range(3):
        [claimed] = await claim(store, later(n * 1000))
        await store.finish(claimed, "w1", Failure(f"e{n}", f"error {n}", later(n * 1000 + 1)),
                           attempt(claimed, success=False, code=f"e{n}"), entry(claimed),
                           later(n * 1000))
    attempts = await store.list_attempts("acct-001")
    assert [a.error_code for a in attempts] == ["e2", "e1", "e0"]
    assert attempts[0] == Attempt("acct-001", "scheduled", NOW, NOW, False, "e2", "e2 happened",
                                  attempts[0].save_id)
    assert len({a.save_id for a in attempts}) == 3
    assert len(await store.list_attempts("acct-001", limit=2)) == 2


async def test_listen_entries_hears_every_replica(pg_url, keyring):
    one, two = await st.connect(pg_url), await st.connect(pg_url)
    heard: asyncio.Queue[int] = asyncio.Queue()
    stop = await stream.listen_entries(one, heard.put_nowait)
    try:
        beat = await two.add_entry(entry(None, action="worker_heartbeat"))
        assert await asyncio.wait_for(heard.get(), 5) == beat.id
        await two.add_account(new_account(keyring, 1), NOW)
        [claimed] = await claim(two)
        _, done = await two.finish(claimed, "w1", success(keyring, claimed), attempt(claimed),
                                   entry(claimed), NOW)
        assert await asyncio.wait_for(heard.get(), 5) == done.id
        assert await one.get_entries([done.id, beat.id]) == [beat, done]
    finally:
        await stop()
        await stop()
        await one.close()
        await two.close()
    await assert_stopped_listener_hears_nothing(pg_url, heard)


async def assert_stopped_listener_hears_nothing(url: str, heard: asyncio.Queue[int]) -> None:
    """A new listener hears the entry: had the stopped one still listened, it would have too."""
    db = await st.connect(url)
    sentinel: asyncio.Queue[int] = asyncio.Queue()
    stop = await stream.listen_entries(db, sentinel.put_nowait)
    try:
        written = await db.add_entry(entry(None, action="worker_heartbeat"))
        assert await asyncio.wait_for(sentinel.get(), 5) == written.id
        assert heard.empty()
    finally:
        await stop()
        await db.close()


# -- workers ------------------------------------------------------------------------------

async def test_workers(store):
    await store.worker_started("refresh", "host-1", 600.0, NOW)
    await store.worker_started("refresh", "host-2", 60.0, ago(1000))
    await store.worker_finished("refresh", "host-1", later(2), "completed",
                                {"status": "completed", "accounts_checked": 3, "errors": []})
    one, two = await store.list_workers()
    assert one.instance == "host-1" and one.interval_seconds == 600.0
    assert one.last_started_at == NOW and one.last_finished_at == later(2)
    assert one.last_status == "completed" and one.last_summary["accounts_checked"] == 3
    assert not one.stale(later(1800)) and one.stale(later(1803))
    assert two.last_finished_at is None and two.last_summary is None and two.stale(NOW)

    await store.worker_started("refresh", "host-1", 300.0, later(10))
    one, _ = await store.list_workers()
    assert one.interval_seconds == 300.0 and one.last_started_at == later(10)
    assert one.last_finished_at == later(2)


# -- key rotation -------------------------------------------------------------------------

async def test_rotation(store, keyring, rotated_keyring):
    for n in range(1, 4):
        await store.add_account(new_account(keyring, n), NOW)
    [claimed] = await claim(store, limit=1)
    await store.finish(claimed, "w1", success(keyring, claimed), attempt(claimed),
                       entry(claimed), NOW)
    todo = await store.accounts_to_rotate("ENC:v1:k2:", 10)
    assert [a.id for a in todo] == ["acct-001", "acct-002", "acct-003"]
    later_ones = await store.accounts_to_rotate("ENC:v1:k2:", 10, after_id="acct-001")
    assert [a.id for a in later_ones] == ["acct-002", "acct-003"]
    assert await store.accounts_to_rotate("ENC:v1:k1:", 10) == []

    first = todo[0]
    resealed = [rotated_keyring.reseal(first.refresh_token, account_id=first.id,
                                       column="refresh_token"),
                rotated_keyring.reseal(first.access_token, account_id=first.id,
                                       column="access_token")]
    assert await store.replace_secrets(first.id, first.version + 1, *resealed,
                                       now=datetime.now(UTC)) is False
    assert await store.replace_secrets(first.id, first.version, *resealed,
                                       now=datetime.now(UTC)) is True
    assert await store.replace_secrets(first.id, first.version, *resealed,
                                       now=datetime.now(UTC)) is False
    after = await store.get_account(first.id)
    assert after.version == first.version + 1
    assert rotated_keyring.is_current(after.refresh_token)
    assert rotated_keyring.decrypt(after.access_token, account_id=first.id,
                                   column="access_token") == "v^1.1#a"

    # A live lease holds rotation off: its owner may be about to save a new refresh token.
    leased = await store.claim_account("acct-002", "w1", datetime.now(UTC),
                                       lease_seconds=LEASE)
    token = rotated_keyring.reseal(leased.refresh_token, account_id=leased.id,
                                   column="refresh_token")
    assert await store.replace_secrets(leased.id, leased.version, token, None,
                                       now=datetime.now(UTC)) is False

    third = todo[2]
    token = rotated_keyring.reseal(third.refresh_token, account_id=third.id,
                                   column="refresh_token")
    assert await store.replace_secrets(third.id, third.version, token, None,
                                       now=datetime.now(UTC)) is True
    assert [a.id for a in await store.accounts_to_rotate("ENC:v1:k2:", 10)] == ["acct-002"]


# -- no plaintext at rest -----------------------------------------------------------------

async def dump(db: st.Store, url: str) -> str:
    """Everything the database holds, as text."""
    if db.backend == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()
    if shutil.which("pg_dump"):
        proc = await asyncio.create_subprocess_exec(
            "pg_dump", "--no-owner", url, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out.decode()
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'ARRAY')")
        parts = []
        for table, column in columns:
            rows = await conn.fetch(f'SELECT "{column}"::text FROM "{table}"')
            parts.extend(str(row[0]) for row in rows)
        return "\n".join(parts)
    finally:
        await conn.close()


async def test_no_plaintext_token_at_rest(store, db_url, keyring):
    canary = f"CANARY{secrets.token_hex(8)}"
    await store.add_account(new_account(keyring, 1, token=f"v^1.1#{canary}-refresh"), NOW)
    [claimed] = await claim(store)
    outcome = success(keyring, claimed, access=f"v^1.1#{canary}-access",
                      refresh=f"v^1.1#{canary}-rotated")
    await store.finish(claimed, "w1", outcome, attempt(claimed),
                       entry(claimed, request={"body": {"refresh_token": "v^1.1#...XYZ"}}),
                       NOW)
    await store.worker_finished("refresh", "host", NOW, "completed", {"errors": []})

    text = await dump(store, db_url)
    assert "acct-001" in text
    assert outcome.access_token in text and outcome.refresh_token in text
    assert "ENC:v1:k1:" in text
    assert canary not in text


# -- outages ------------------------------------------------------------------------------

async def test_unreachable_postgres_is_a_store_error():
    with pytest.raises(st.StoreError, match="unavailable"):
        await st.connect("postgresql://postgres@127.0.0.1:1/nothing")


async def test_unopenable_sqlite_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(st.StoreError, match="cannot open"):
        await st.connect(f"sqlite://{tmp_path / 'file' / 'tokend.db'}")


class Proxy:
    """A TCP forwarder to PostgreSQL that can be cut and restored, like a flaky network."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.server.close()
        await self.server.wait_closed()
        for task in self.pipes:
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)

    async def _accept(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)),
                     asyncio.create_task(pipe(up_reader, writer))):
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)


async def test_postgres_outage_is_a_store_error_and_recovers(pg_url, keyring):
    target = urlsplit(pg_url)
    proxy = Proxy(target.port or 5432)
    await proxy.start()
    db = await st.connect(target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}")
                          .geturl())
    try:
        await db.ping()
        await proxy.cut()
        for _ in range(2):
            with pytest.raises(st.StoreError, match="unavailable"):
                await db.list_accounts()
        with pytest.raises(st.StoreError):
            await db.ping()
        await proxy.start()
        await db.add_account(new_account(keyring, 1), NOW)
        assert len(await db.list_accounts()) == 1
    finally:
        await db.close()
        await proxy.cut()


async def test_listen_entries_survives_a_lost_connection(pg_url, keyring):
    target = urlsplit(pg_url)
    proxy = Proxy(target.port or 5432)
    await proxy.start()
    listener = await st.connect(
        target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl())
    writer = await st.connect(pg_url)
    heard: asyncio.Queue[int] = asyncio.Queue()
    stop = await stream.listen_entries(listener, heard.put_nowait)
    try:
        await proxy.cut()
        missed = await writer.add_entry(entry(None, action="worker_heartbeat", message="missed"))
        await proxy.start()
        # Reconnection happens in the background; keep writing until one is heard. What
        # was written while the listener was away is read back once it is replaced.
        got: list[int] = []
        for _ in range(50):
            sent = await writer.add_entry(entry(None, action="worker_heartbeat"))
            with contextlib.suppress(TimeoutError):
                while sent.id not in got:
                    got.append(await asyncio.wait_for(heard.get(), 0.2))
                break
        else:
            pytest.fail("the listener never came back")
        async with asyncio.timeout(10):  # read back once the pool reconnects too
            while missed.id not in got:
                got.append(await heard.get())
        await asyncio.sleep(0.5)  # and nothing twice
        while not heard.empty():
            got.append(heard.get_nowait())
        assert len(got) == len(set(got)), got
    finally:
        await stop()
        await listener.close()
        await writer.close()
        await proxy.cut()


# -- behind PgBouncer ---------------------------------------------------------------------

async def test_behind_pgbouncer_without_listen_url_the_feed_polls(pgbouncer_url, pg_url,
                                                                  keyring):
    listener = await st.connect(pgbouncer_url, pgbouncer=True)
    writer = await st.connect(pgbouncer_url, pgbouncer=True)
    assert listener.can_listen and listener.feed_mode == "poll"
    heard: asyncio.Queue[int] = asyncio.Queue()
    stop = await stream.listen_entries(listener, heard.put_nowait)
    other = await asyncpg.connect(pg_url)  # another writer, with its transaction held open
    try:
        # An entry whose id is taken first but committed last is still heard, once.
        async with other.transaction():
            late = await other.fetchval(
                "INSERT INTO http_log (created_at, action, source) "
                "VALUES (now(), 'worker_heartbeat', 'scheduled') RETURNING id")
            early = await writer.add_entry(entry(None, action="worker_heartbeat"))
            assert await asyncio.wait_for(heard.get(), 5) == early.id
        assert late < early.id
        assert await asyncio.wait_for(heard.get(), 5) == late
        more = [await writer.add_entry(entry(None, action="worker_heartbeat"))
                for _ in range(3)]
        assert [await asyncio.wait_for(heard.get(), 5) for _ in more] == [e.id for e in more]
        # Two more polls, each ending in a sentinel: nothing was announced twice before it.
        for _ in range(2):
            sentinel = await writer.add_entry(entry(None, action="worker_heartbeat"))
            assert await asyncio.wait_for(heard.get(), 5) == sentinel.id
    finally:
        await other.close()
        await stop()
        await listener.close()
        await writer.close()


async def test_behind_pgbouncer_listen_url_listens_directly(pgbouncer_url, pg_url, keyring):
    listener = await st.connect(pgbouncer_url, pgbouncer=True, listen_url=pg_url)
    writer = await st.connect(pgbouncer_url, pgbouncer=True)
    assert listener.feed_mode == "notify"
    heard: asyncio.Queue[int] = asyncio.Queue()
    stop = await stream.listen_entries(listener, heard.put_nowait)
    try:
        sent = await writer.add_entry(entry(None, action="worker_heartbeat"))
        assert await asyncio.wait_for(heard.get(), 5) == sent.id
    finally:
        await stop()
        await listener.close()
        await writer.close()


async def test_behind_pgbouncer_many_concurrent_calls_share_few_server_connections(
        pgbouncer_url, keyring):
    """Transaction pooling hands each transaction whatever server connection is free: with
    more client connections than PgBouncer keeps per database, nothing may depend on a
    session (a prepared statement cached on one would be missing on the next)."""
    db = await st.connect(pgbouncer_url, pgbouncer=True, pool_max_size=30)
    try:
        for n in range(40):
            await db.add_account(new_account(keyring, n), NOW)

        async def claim_one_and_finish() -> bool:
            got = await claim(db, limit=1, owner="w1")
            if not got:
                return False
            applied, _ = await db.finish(got[0], "w1", success(keyring, got[0]),
                                         attempt(got[0]), entry(got[0]), NOW)
            return applied

        results = await asyncio.gather(*(claim_one_and_finish() for _ in range(40)))
        assert sum(results) == 40
        assert await count(db) == 0
    finally:
        await db.close()


async def test_sqlite_commits_are_durable_against_power_loss(sqlite_url):
    """WAL with synchronous = FULL: every commit is fsynced before it returns (NORMAL
    would survive a crash of tokend but not of the OS, losing a saved rotation)."""
    db = await st.connect(sqlite_url)
    try:
        assert (await db._db._conn.execute_fetchall("PRAGMA synchronous"))[0][0] == 2  # FULL
        assert (await db._db._conn.execute_fetchall("PRAGMA journal_mode"))[0][0] == "wal"
    finally:
        await db.close()
