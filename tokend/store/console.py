"""The console's reads and an operator's actions on one account: a page of the accounts
table by any sort key (one index walk each), disable, enable, clear backoff, end a pause."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from tokend import model, vocabulary
from tokend.store import ports, records, refresh

# The sort keys of the console's accounts table and the statement walking each one's index.
_PAGES: dict[tuple[str, bool], Callable[[ports.Session, dict[str, Any]],
                                        Awaitable[list[Mapping[str, Any]]]]] = {
    ("name", False): lambda db, p: db.all("console_page_name_asc", **p),
    ("name", True): lambda db, p: db.all("console_page_name_desc", **p),
    ("next_attempt_at", False): lambda db, p: db.all("console_page_next_attempt_asc", **p),
    ("next_attempt_at", True): lambda db, p: db.all("console_page_next_attempt_desc", **p),
    ("consecutive_failures", False): lambda db, p: db.all("console_page_failures_asc", **p),
    ("consecutive_failures", True): lambda db, p: db.all("console_page_failures_desc", **p),
    ("access_expires_at", False): lambda db, p: db.all("console_page_access_expiry_asc", **p),
    ("access_expires_at", True): lambda db, p: db.all("console_page_access_expiry_desc", **p),
    ("refresh_expires_at", False): lambda db, p: db.all("console_page_refresh_expiry_asc", **p),
    ("refresh_expires_at", True): lambda db, p: db.all("console_page_refresh_expiry_desc",
                                                        **p),
    ("last_refresh_at", False): lambda db, p: db.all("console_page_last_refresh_asc", **p),
    ("last_refresh_at", True): lambda db, p: db.all("console_page_last_refresh_desc", **p),
}
SORT_KEYS = tuple(dict.fromkeys(key for key, _ in _PAGES))
NEVER = refresh.FAR_FUTURE  # an absent expiry's sort value (sql fragment `never`)


class Console:
    _db: ports.Connector

    async def page_accounts(self, page: model.AccountPage) -> list[model.Account]:
        """One page of the console's accounts table: one statement walking the sort key's
        index from `page.after` (the previous page's last (key, id)); `page.limit` rows.
        `q` matches the start of the id, the name or the provider's user name, in any case:
        a prefix, so PostgreSQL answers it from an index (migration 0006_console)."""
        if records.unmatchable(page.q, page.org, page.provider, page.state, page.after_id):
            return []
        low, high = (1, 2**31 - 1) if page.failing else (0, 0 if page.healthy else 2**31 - 1)
        pattern = None
        if page.q:
            escaped = page.q.lower().replace("\\", "\\\\").replace("%", "\\%")
            pattern = escaped.replace("_", "\\_") + "%"
        params = {"org": page.org, "provider": page.provider, "state": page.state,
                  "min_failures": low, "max_failures": high, "pattern": pattern,
                  "after_key": page.after_key, "after_id": page.after_id, "limit": page.limit}
        run = _PAGES[(page.sort, page.descending)]
        async with self._db.transaction() as tx:
            await tx.one("console_custom_plan")
            rows = await run(tx, params)
        return [records.account(row) for row in rows]

    async def disable_account(self, account_id: str, reason: str, now: datetime,
                              ) -> model.Account | None:
        """Stop refreshing: None when there is no such account or it is deleted."""
        if records.unmatchable(account_id):
            return None
        return records.maybe_account(await self._db.one("disable_account", id=account_id,
                                                 reason=reason, now=now))

    async def enable_account(self, account_id: str, now: datetime) -> model.Account | None:
        """Back to active and due now: None unless the account is disabled."""
        if records.unmatchable(account_id):
            return None
        return records.maybe_account(await self._db.one("enable_account", id=account_id, now=now))

    async def clear_backoff(self, account_id: str, now: datetime) -> model.Account | None:
        """Due now: None unless the account is active and not leased."""
        if records.unmatchable(account_id):
            return None
        return records.maybe_account(await self._db.one("clear_backoff", id=account_id, now=now))

    async def provider_pauses(self, now: datetime) -> dict[str, tuple[datetime, str]]:
        """Paused providers: (until, reason)."""
        rows = await self._db.all("provider_pauses", now=now)
        return {row["provider"]: (row["paused_until"], row["reason"]) for row in rows}

    async def failing_by_error(self, org: str | None = None) -> dict[str, dict[str, int]]:
        """Accounts with failures (not deleted), provider -> last error code -> count."""
        out: dict[str, dict[str, int]] = {}
        for row in await self._db.all("failing_by_error", org=org):
            out.setdefault(row["provider"], {})[row["error_code"]] = row["n"]
        return out


    async def clear_provider_pause(self, provider: str, now: datetime) -> bool:
        """End a provider's pause now (an operator's action); emits provider.resumed."""
        async with self._db.transaction() as tx:
            row = await tx.one("clear_provider_pause", provider=provider, now=now)
            if row is not None:
                await records.emit(tx, [model.Event(vocabulary.PROVIDER_RESUMED,
                                      {"provider": provider, "reason": "cleared"})], now)
        return row is not None
