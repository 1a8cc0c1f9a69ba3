"""Group commit on both backends: saves that come in together share one transaction, each
caller gets its own result once that transaction committed, the lease and version guard
holds per row, and one bad save cannot fail the others."""

from __future__ import annotations

import asyncio
import dataclasses

from test_store import NOW, attempt, claim, entry, new_account, success

from tokend import groupcommit, model
from tokend import store as st


async def test_saves_that_come_in_together_share_one_transaction(store, keyring):
    for n in range(20):
        await store.add_account(new_account(keyring, n), NOW)
    claimed = await claim(store, limit=20)
    stale = claimed[0]
    await store.set_state(stale.id, model.ACTIVE, NOW)  # any write bumps the version
    commits = groupcommit.GroupCommit(store, max_items=8, max_delay_seconds=0.05)
    results = await asyncio.gather(*(
        commits.finish(a, "w1", success(keyring, a), attempt(a), entry(a), NOW)
        for a in claimed))
    await commits.close()
    assert commits.saves == 20 and commits.batches == 3  # 8 + 8 + 4
    assert [applied for applied, _ in results] == [False] + [True] * 19
    ids = [e.id for _, e in results]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 20
    assert [e.account_id for _, e in results] == [a.id for a in claimed]
    for a, (_, e) in zip(claimed, results, strict=True):
        assert (await store.get_entries([e.id]))[0].account_id == a.id
        got = await store.get_account(a.id)
        assert (got.access_token is not None) == (a.id != stale.id)
        assert got.lease_owner is None or a.id == stale.id
        assert len(await store.list_attempts(a.id)) == 1  # the stale one is logged too


async def test_a_lone_save_waits_for_nobody(store, keyring):
    await store.add_account(new_account(keyring, 1), NOW)
    [a] = await claim(store)
    commits = groupcommit.GroupCommit(store, max_items=64, max_delay_seconds=60)
    applied, saved = await commits.finish(a, "w1", success(keyring, a), attempt(a), entry(a),
                                          NOW)
    assert applied and saved.id is not None and commits.batches == 1
    assert (await store.get_account(a.id)).access_token is not None


async def test_one_bad_save_fails_alone(store, keyring):
    for n in range(4):
        await store.add_account(new_account(keyring, n), NOW)
    claimed = await claim(store, limit=4)
    # An attempt for an account that does not exist breaks its refresh-log foreign key.
    bad = dataclasses.replace(attempt(claimed[1]), account_id="no-such-account")
    commits = groupcommit.GroupCommit(store, max_items=4, max_delay_seconds=0.05)
    results = await asyncio.gather(*(
        commits.finish(a, "w1", success(keyring, a), bad if n == 1 else attempt(a),
                       entry(a), NOW)
        for n, a in enumerate(claimed)), return_exceptions=True)
    assert isinstance(results[1], Exception) and not isinstance(results[1], st.StoreError)
    assert all(r[0] is True for n, r in enumerate(results) if n != 1), results
    saved = [(await store.get_account(a.id)).access_token is not None for a in claimed]
    assert saved == [True, False, True, True]
