"""Application tokens (client credentials): one cached row per provider and scope, leased
to the replica that renews it."""

from __future__ import annotations

from datetime import datetime, timedelta

from tokend import model
from tokend.store import ports, records


class AppTokens:
    _db: ports.Connector

    async def get_app_token(self, token_id: str) -> model.AppToken | None:
        row = await self._db.one("get_app_token", id=token_id)
        return None if row is None else model.AppToken(**row)

    async def claim_app_token(
        self, token_id: str, provider: str, scope: str, owner: str, now: datetime, *,
        lease_seconds: float,
    ) -> model.AppToken | None:
        """Lease the app token's row to `owner` (creating it on first use); None while
        another owner's lease runs."""
        row = await self._db.one("claim_app_token", id=token_id, provider=provider,
                                 scope=scope, owner=owner, now=now,
                                 lease_until=now + timedelta(seconds=lease_seconds))
        return None if row is None else model.AppToken(**row)

    async def finish_app_token(
        self, token_id: str, owner: str, *, access_token: str | None,
        expires_at: datetime | None, entry: model.Entry | None, now: datetime,
    ) -> tuple[bool, model.Entry | None]:
        """Store the new token (an envelope; None keeps the old) and release the lease,
        with the exchange's log entry (if any), in one transaction."""
        async with self._db.transaction() as tx:
            applied = await tx.one("finish_app_token", id=token_id, owner=owner,
                                   access_token=access_token, expires_at=expires_at, now=now)
            if entry is not None:
                entry = await records.stored(tx, entry)
        return applied is not None, entry
