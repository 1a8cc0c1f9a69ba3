"""`tokend rotate-keys`: every secret ends up under the primary key, even after a crash."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tokend import apptokens, clock, crypto, model, rotation
from tokend import store as st


async def fill(db: st.Store, keyring: crypto.Keyring, count: int) -> dict[str, str]:
    plain = {}
    now = clock.now()
    for n in range(count):
        account_id = f"a{n:03d}"
        plain[account_id] = f"v^1.1#token-{n}"
        await db.add_account(model.NewAccount(
            id=account_id, org="acme", provider="p", name=account_id, scopes=(),
            refresh_token=keyring.encrypt(plain[account_id], account_id=account_id,
                                          column="refresh_token"),
            refresh_expires_at=None), now)
        if n % 2:  # half of them also hold an access token
            claimed = await db.claim_account(account_id, "o", now, lease_seconds=60)
            await db.finish(claimed, "o", model.Success(
                access_token=keyring.encrypt(f"access-{n}", account_id=account_id,
                                             column="access_token"),
                access_expires_at=now + timedelta(hours=2), refresh_token=None,
                refresh_expires_at=None, refreshed_at=now, next_attempt_at=now),
                model.Attempt(account_id, "scheduled", now, now, True, None, None),
                model.Entry(action="token_refreshed", source="scheduled", created_at=now), now)
    return plain


async def check_all_current(db: st.Store, keyring: crypto.Keyring, plain: dict[str, str]) -> None:
    for account in await db.list_accounts():
        assert account.refresh_token.startswith(f"ENC:v1:{keyring.primary_kid}:")
        assert keyring.decrypt(account.refresh_token, account_id=account.id,
                               column="refresh_token") == plain[account.id]
        if account.access_token is not None:
            assert keyring.is_current(account.access_token)
            n = int(account.id[1:])
            assert keyring.decrypt(account.access_token, account_id=account.id,
                                   column="access_token") == f"access-{n}"


async def test_rotation_moves_every_secret_to_the_primary_key(
        store: st.Store, keyring: crypto.Keyring, rotated_keyring: crypto.Keyring) -> None:
    plain = await fill(store, keyring, 25)
    counts = await rotation.rotate(store, rotated_keyring, batch_size=7)
    assert (counts.rotated, counts.failed, counts.conflicts) == (25, 0, 0)
    await check_all_current(store, rotated_keyring, plain)
    again = await rotation.rotate(store, rotated_keyring, batch_size=7)
    assert again.rotated == 0  # idempotent


async def test_interrupted_rotation_resumes(
        store: st.Store, keyring: crypto.Keyring, rotated_keyring: crypto.Keyring) -> None:
    plain = await fill(store, keyring, 30)
    real = store.replace_secrets
    calls = 0

    async def crash_after_ten(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > 10:
            raise asyncio.CancelledError  # the process dies mid-batch
        return await real(*args, **kwargs)

    store.replace_secrets = crash_after_ten
    with pytest.raises(asyncio.CancelledError):
        await rotation.rotate(store, rotated_keyring, batch_size=4)
    store.replace_secrets = real
    mixed = await store.list_accounts()
    assert sum(rotated_keyring.is_current(a.refresh_token) for a in mixed) == 10
    counts = await rotation.rotate(store, rotated_keyring, batch_size=4)
    assert counts.rotated == 20 and counts.failed == 0
    await check_all_current(store, rotated_keyring, plain)


async def test_undecryptable_rows_are_counted_and_skipped(
        store: st.Store, keyring: crypto.Keyring, rotated_keyring: crypto.Keyring) -> None:
    plain = await fill(store, keyring, 4)
    await store.add_account(model.NewAccount(
        id="moved", org="acme", provider="p", name="moved", scopes=(),
        refresh_token=keyring.encrypt("v^x", account_id="elsewhere", column="refresh_token"),
        refresh_expires_at=None), clock.now())
    counts = await rotation.rotate(store, rotated_keyring, batch_size=2)
    assert (counts.rotated, counts.failed) == (4, 1)
    assert not rotated_keyring.is_current((await store.get_account("moved")).refresh_token)
    del plain


async def test_app_tokens_and_pkce_verifiers_are_resealed_too(
        store: st.Store, keyring: crypto.Keyring, rotated_keyring: crypto.Keyring) -> None:
    now = clock.now()
    key = apptokens.token_id("p", "scope-a")
    await store.claim_app_token(key, "p", "scope-a", "o", now, lease_seconds=60)
    await store.finish_app_token(
        key, "o", access_token=keyring.encrypt("app-access", account_id=apptokens.aad_id(key),
                                               column="access_token"),
        expires_at=now + timedelta(hours=2), entry=None, now=now)
    link = model.NewConnectLink(id="link-1", token_hash="t" * 64, provider="p", org="acme",
                                account_id=None, scopes=(), expires_at=now + timedelta(minutes=15))
    await store.add_connect_link(link, now)
    await store.open_connect_link(
        link.token_hash, state_hash="s" * 64, state_expires_at=now + timedelta(minutes=15),
        code_verifier=keyring.encrypt("verifier-1", account_id=link.id, column="code_verifier"),
        now=now)
    counts = await rotation.rotate(store, rotated_keyring)
    assert (counts.rotated, counts.failed, counts.conflicts) == (2, 0, 0)
    token = await store.get_app_token(key)
    assert rotated_keyring.is_current(token.access_token)
    assert rotated_keyring.decrypt(token.access_token, account_id=apptokens.aad_id(key),
                                   column="access_token") == "app-access"
    opened = await store.find_connect_link(token_hash=link.token_hash)
    assert rotated_keyring.is_current(opened.code_verifier)
    assert rotated_keyring.decrypt(opened.code_verifier, account_id=link.id,
                                   column="code_verifier") == "verifier-1"
    assert (await rotation.rotate(store, rotated_keyring)).rotated == 0
