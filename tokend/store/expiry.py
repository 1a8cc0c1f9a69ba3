"""Refresh-token expiry: accounts whose refresh token ran out go to reauth_required, and
each notice threshold (model.REFRESH_NOTICE_DAYS) is recorded once, across replicas."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tokend import model
from tokend.store import ports, records

# Builds an account's events and log entry for a change the store makes in bulk.
Describe = Callable[[model.Account], tuple[Sequence[model.Event], model.Entry]]


def _notice_params(now: datetime) -> dict[str, Any]:
    return {"now": now, **{f"within_{days}": now + timedelta(days=days)
                           for days in model.REFRESH_NOTICE_DAYS}}



async def _described(
    tx: ports.Session, rows: Sequence[Mapping[str, Any]], now: datetime,
    describe: Describe,
) -> list[model.Entry]:
    """Write each changed account's events and entry in `tx`; the entries with their ids."""
    entries = []
    for row in rows:
        events, entry = describe(records.account(row))
        await records.emit(tx, events, now)
        entries.append(await records.stored(tx, entry))
    return entries


class Expiry:
    _db: ports.Connector

    async def expire_refresh_tokens(
        self, now: datetime, *, describe: Describe,
    ) -> list[model.Entry]:
        """Every active account whose refresh token has expired goes to reauth_required,
        with its events and log entry, in one transaction; returns the stored entries."""
        async with self._db.transaction() as tx:
            rows = await tx.all("expire_refresh_tokens", **_notice_params(now))
            return await _described(tx, rows, now, describe)

    async def note_refresh_expiry(
        self, now: datetime, *, describe: Describe,
    ) -> list[model.Entry]:
        """Every active account that crossed a notice threshold (REFRESH_NOTICE_DAYS) since
        its last notice records it, with its events and entry, in one transaction."""
        async with self._db.transaction() as tx:
            rows = await tx.all("note_refresh_expiry", **_notice_params(now))
            return await _described(tx, rows, now, describe)

    async def refresh_expiry_counts(self, now: datetime) -> dict[str, int]:
        """Active accounts whose refresh token expires within 30, 7 and 1 days."""
        row = await self._db.one("refresh_expiry_counts", **_notice_params(now))
        return {f"within_{days}_days": int(row[f"within_{days}"])
                for days in model.REFRESH_NOTICE_DAYS}
