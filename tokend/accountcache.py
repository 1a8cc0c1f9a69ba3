"""Account rows as vending last read them, so a busy app costs no database round trip per
token. A row is served for at most `FRESH_SECONDS` after the query that read it was sent;
rows older than `RELOAD_SECONDS` that apps still ask for are checked again in the
background, all in one query of their versions, and only those that changed are read.
So a refresh by another replica is seen within a second, and the rows hold ciphertext
only: the token is decrypted per request, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from tokend import model, singleflight, store

log = structlog.get_logger("tokend.accountcache")

FRESH_SECONDS = 1.0  # never serve a row read longer ago than this
RELOAD_SECONDS = 0.5  # rows this old are read again, all together, while still served
IDLE_SECONDS = 30.0  # rows nobody asked for in this long are dropped
RELOAD_BATCH = 5000  # ids per reload query


class AccountCache:
    def __init__(self, db: store.Store, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db, self.monotonic = db, monotonic
        self._rows: dict[str, tuple[float, model.Account]] = {}  # id -> (read_at, row)
        self._asked: dict[str, float] = {}  # id -> when an app last asked
        self._loads: singleflight.SingleFlight[model.Account | None] = (
            singleflight.SingleFlight("account-row"))
        self._reload: asyncio.Task[None] | None = None

    async def get(self, account_id: str) -> model.Account | None:
        now = self.monotonic()
        self._asked[account_id] = now
        hit = self._rows.get(account_id)
        if hit is not None:
            age = now - hit[0]
            if age < FRESH_SECONDS:
                if age >= RELOAD_SECONDS:
                    self._reload_soon()
                return hit[1]
        return await self._loads.run(account_id, lambda: self._load(account_id))

    def put(self, account: model.Account | None, read_at: float, account_id: str) -> None:
        """Keep `account` as read by a query sent at `read_at`, unless a newer read is kept."""
        if account is None:
            self._rows.pop(account_id, None)  # a missing account is not remembered
            return
        held = self._rows.get(account_id)
        if held is None or held[0] <= read_at:
            self._rows[account_id] = (read_at, account)

    def forget(self, account_id: str) -> None:
        """This process changed the row: the next ask reads it."""
        self._rows.pop(account_id, None)

    async def _load(self, account_id: str) -> model.Account | None:
        sent = self.monotonic()
        account = await self.db.get_account(account_id)
        self.put(account, sent, account_id)
        return account

    def _reload_soon(self) -> None:
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._reload_all(), name="account-cache-reload")

    async def _reload_all(self) -> None:
        now = self.monotonic()
        for account_id, asked in list(self._asked.items()):
            if now - asked >= IDLE_SECONDS:
                del self._asked[account_id]
                self._rows.pop(account_id, None)
        due = [i for i, (read_at, _) in self._rows.items() if now - read_at >= RELOAD_SECONDS]
        try:
            for start in range(0, len(due), RELOAD_BATCH):
                ids = due[start:start + RELOAD_BATCH]
                sent = self.monotonic()
                versions = await self.db.account_versions(ids)
                changed = []
                for account_id in ids:
                    held = self._rows.get(account_id)
                    if held is None or held[0] > sent:
                        continue  # dropped or read again meanwhile
                    if versions.get(account_id) == held[1].version:
                        self._rows[account_id] = (sent, held[1])  # still current at `sent`
                    else:
                        changed.append(account_id)
                if changed:
                    found = {a.id: a for a in await self.db.get_accounts(changed)}
                    for account_id in changed:
                        self.put(found.get(account_id), sent, account_id)
        except store.StoreError as exc:  # rows age out; requests read them themselves
            log.warning("account_cache_reload_failed", error=str(exc))

    async def close(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload
