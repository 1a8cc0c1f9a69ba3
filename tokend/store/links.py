"""Connect links: the authorization-code grant's state, one use each, and the account it
creates or renews, with its events, in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from tokend import model
from tokend.store import errors, ports, records


class Links:
    _db: ports.Connector

    async def add_connect_link(
        self, link: model.NewConnectLink, now: datetime,
    ) -> model.ConnectLink:
        return model.ConnectLink(**await self._db.one(
            "insert_connect_link", **dataclasses.asdict(link), now=now))

    async def open_connect_link(
        self, token_hash: str, *, state_hash: str, code_verifier: str | None,
        state_expires_at: datetime, now: datetime,
    ) -> model.ConnectLink | None:
        """Bind a state to the link with this token hash; None unless it is unopened and
        unexpired (a link works once)."""
        row = await self._db.one("open_connect_link", token_hash=token_hash,
                                 state_hash=state_hash, code_verifier=code_verifier,
                                 state_expires_at=state_expires_at, now=now)
        return None if row is None else model.ConnectLink(**row)

    async def consume_connect_state(
        self, state_hash: str, now: datetime,
    ) -> model.ConnectLink | None:
        """Take the link bound to this state; None when unknown, used or expired."""
        row = await self._db.one("consume_connect_state", state_hash=state_hash, now=now)
        return None if row is None else model.ConnectLink(**row)

    async def find_connect_link(
        self, *, state_hash: str | None = None, token_hash: str | None = None,
    ) -> model.ConnectLink | None:
        row = await self._db.one("find_connect_link", state_hash=state_hash,
                                 token_hash=token_hash)
        return None if row is None else model.ConnectLink(**row)

    async def set_connect_outcome(self, link_id: str, outcome: str) -> None:
        await self._db.one("set_connect_outcome", id=link_id, outcome=outcome)

    async def set_connect_user(self, link_id: str, provider_user_id: str) -> None:
        """Who signed in through the link, so an account deletion can find what the
        connect flow logged about them before any account existed."""
        await self._db.one("set_connect_user", id=link_id, provider_user_id=provider_user_id)

    async def connect_account(
        self, connected: model.Connected, now: datetime, *, reconnect: bool,
        events: Callable[[model.Account], Sequence[model.Event]],
    ) -> model.Account | None:
        """Create the account (or, for a reconnect, renew it under its id) and write its
        events in the same transaction. A reconnect answers None when the account is gone,
        deleted, or belongs to another provider user; a new account may raise
        errors.DuplicateAccount."""
        params = dataclasses.asdict(connected)
        async with self._db.transaction() as tx:
            if reconnect:
                row = await tx.one("reconnect_account", **params, now=now)
            else:
                try:
                    row = await tx.one("insert_connected_account", **params, now=now)
                except errors.DuplicateKey:
                    raise errors.DuplicateAccount(
                        f"{connected.provider}/{connected.org}/{connected.name} is already "
                        "connected") from None
            if row is None:
                return None
            account = records.account(row)
            await records.emit(tx, events(account), now)
        return account
