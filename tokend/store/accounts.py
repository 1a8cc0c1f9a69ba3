"""Accounts: add, read and count them. What a refresh, a console action or a notice does to
one lives with that concern."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from tokend import model
from tokend.store import errors, ports, records


class Accounts:
    _db: ports.Connector

    async def add_account(self, new: model.NewAccount, now: datetime) -> model.Account:
        try:
            row = await self._db.one("insert_account", **dataclasses.asdict(new), now=now)
        except errors.DuplicateKey:
            raise errors.DuplicateAccount(
                f"an account with id {new.id!r} or provider/org/name "
                f"{new.provider}/{new.org}/{new.name} already exists") from None
        return records.account(row)

    async def get_account(self, account_id: str) -> model.Account | None:
        if records.unmatchable(account_id):
            return None
        return records.maybe_account(await self._db.one("get_account", id=account_id))

    async def get_accounts(self, account_ids: Sequence[str]) -> list[model.Account]:
        """These accounts, in one query (missing ids are skipped)."""
        ids = [i for i in account_ids if not records.unmatchable(i)]
        if not ids:
            return []
        return [records.account(row) for row in await self._db.all("get_accounts", ids=ids)]

    async def account_versions(self, account_ids: Sequence[str]) -> dict[str, int]:
        """id -> version of these accounts (missing ids are left out)."""
        ids = [i for i in account_ids if not records.unmatchable(i)]
        if not ids:
            return {}
        return {row["id"]: row["version"]
                for row in await self._db.all("account_versions", ids=ids)}

    async def list_accounts(self, org: str | None = None) -> list[model.Account]:
        return [records.account(row) for row in await self._db.all("list_accounts", org=org)]

    async def reauth_account(
        self, account_id: str, refresh_token: str, refresh_expires_at: datetime | None,
        now: datetime,
    ) -> model.Account | None:
        """New refresh token, state back to active, failures cleared, due now."""
        return records.maybe_account(await self._db.one(
            "reauth_account", id=account_id, refresh_token=refresh_token,
            refresh_expires_at=refresh_expires_at, now=now))

    async def set_state(self, account_id: str, state: str, now: datetime) -> model.Account | None:
        return records.maybe_account(await self._db.one("set_state", id=account_id, state=state,
                                                 now=now))

    async def account_counts(self) -> dict[str, int]:
        """Accounts by state."""
        counts = dict.fromkeys(model.STATES, 0)
        counts.update({row["state"]: row["n"] for row in await self._db.all("account_counts")})
        return counts

    async def active_by_provider(self, org: str | None = None) -> dict[str, int]:
        return {row["provider"]: row["n"]
                for row in await self._db.all("active_by_provider", org=org)}

    async def failing_counts(self) -> dict[str, int]:
        """Active accounts with consecutive failures, by their last error code."""
        return {row["error_code"]: row["n"] for row in await self._db.all("failing_counts")}
