"""The only code that runs SQL: the domain's queries, once, over a thin connector per
backend (`postgres.Connector`, `sqlite.Connector`) that runs named statements.

`Store` is what callers see; it is written as one module per concern (accounts, refresh,
entries, outbox, budget, ...), each a class over `self._db` mixed in here. Every timestamp
crosses this boundary as an aware UTC `datetime`; every secret as an `ENC:v1:` envelope
(see `tokend.crypto`). The store never sees a plaintext token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from tokend.store import (
    accounts,
    apptokens,
    budget,
    console,
    entries,
    errors,
    expiry,
    insights,
    links,
    notices,
    outbox,
    ports,
    records,
    refresh,
    rotation,
    schema,
    signing_keys,
    workers,
)

# What callers name as `store.X`, wherever it is written.
StoreError = errors.StoreError
SchemaError = errors.SchemaError
DuplicateKey = errors.DuplicateKey
DuplicateAccount = errors.DuplicateAccount
Timeouts = ports.Timeouts
DEFAULT_TIMEOUTS = ports.DEFAULT_TIMEOUTS
Session = ports.Session
Connector = ports.Connector
Insights = insights.Insights
MAX_ENTRY_ID = entries.MAX_ENTRY_ID
PARKED = budget.PARKED
SORT_KEYS = console.SORT_KEYS
NEVER = console.NEVER
due_params = refresh.due_params
utc_day = records.utc_day


class Store(
    schema.Schema, accounts.Accounts, refresh.Refresh, entries.Entries, outbox.Outbox,
    budget.Budget, workers.Workers, rotation.Rotation, apptokens.AppTokens, notices.Notices,
    links.Links, expiry.Expiry, console.Console, signing_keys.SigningKeys,
):
    """What the daemon needs from a database. Each method is one short transaction (or one
    statement), and no method holds a connection while it waits on anything else."""

    def __init__(self, db: ports.Connector) -> None:
        self._db = db
        self.backend = db.dialect
        self._claims_in_doubt: list[tuple[str, datetime]] = []
        self._last_lease_until: dict[str, datetime] = {}

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Close every connection; one still busy after `timeout_seconds` is cut."""
        await self._db.close(timeout_seconds)

    async def ping(self, timeout_seconds: float = 1.0) -> None:
        """A trivial round trip; raises StoreError when the database is unreachable or does
        not answer within `timeout_seconds` (the connection is then replaced)."""
        await self._db.ping(timeout_seconds)


async def connect(url: str, *, pool_max_size: int = 10, pgbouncer: bool = False,
                  listen_url: str | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Store:
    """Open the store that `url` names; the caller owns it and must `close()` it.
    `pgbouncer` and `listen_url` apply to PostgreSQL (see `postgres.Connector.open`)."""
    if url.startswith("sqlite://"):
        from tokend.store import sqlite

        return Store(await sqlite.Connector.open(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        from tokend.store import postgres

        return Store(await postgres.Connector.open(url, pool_max_size=pool_max_size,
                                                   pgbouncer=pgbouncer, listen_url=listen_url,
                                                   timeouts=timeouts))
    raise StoreError(f"unsupported database url scheme: {url.split(':', 1)[0]!r}")


@contextlib.asynccontextmanager
async def open(
    url: str, *, pool_max_size: int = 10, check_schema: bool = True, pgbouncer: bool = False,
    listen_url: str | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> AsyncIterator[Store]:
    """The store for `url`, schema checked, closed on the way out."""
    db = await connect(url, pool_max_size=pool_max_size, pgbouncer=pgbouncer,
                       listen_url=listen_url, timeouts=timeouts)
    try:
        if check_schema:
            await db.check_schema()
        yield db
    finally:
        await db.close()
