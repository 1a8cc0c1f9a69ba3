"""eBay notifications: who an account is at the provider, and a verified notification
applied once by its id, with its accounts' changes, events and entries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tokend import model, vocabulary
from tokend.store import errors, ports, records


async def _forget_links(tx: ports.Session, provider: str, provider_user_id: str) -> None:
    """Remove the connect links this provider user signed in through, and empty their log
    entries: some name the user, and none need carry an account id."""
    for row in await tx.all("forget_provider_user_links", provider=provider,
                            provider_user_id=provider_user_id):
        await tx.all("purge_link_entries", link_id=row["id"])


class Notices:
    _db: ports.Connector

    async def set_provider_user(
        self, account_id: str, provider_user_id: str | None, provider_user_name: str | None,
        now: datetime,
    ) -> model.Account | None:
        """Who the account is at the provider (eBay's userId and username)."""
        return records.maybe_account(await self._db.one(
            "set_provider_user", id=account_id, provider_user_id=provider_user_id,
            provider_user_name=provider_user_name, now=now))

    async def apply_ebay_notification(
        self, notice: model.Notice, entry: Callable[[model.Account | None, str], model.Entry],
        now: datetime,
    ) -> list[model.Entry] | None:
        """Apply one verified notification in one transaction: record its id, change the
        seller's accounts, emit their events, write the log entries (`entry(account,
        outcome)` builds each). None when this notificationId was applied before."""
        if records.unmatchable(notice.notification_id, notice.user_id, notice.reason):
            raise errors.StoreError("a notification field holds a NUL character")
        async with self._db.transaction() as tx:
            fresh = await tx.one("record_ebay_notification",
                                 notification_id=notice.notification_id, topic=notice.topic,
                                 provider=notice.provider, account_ids=[], now=now)
            if fresh is None:
                return None
            found = [] if not notice.known else [records.account(row) for row in await tx.all(
                "accounts_of_provider_user", provider=notice.provider,
                provider_user_id=notice.user_id)]
            if notice.known and notice.topic == model.Notice.DELETION:
                await _forget_links(tx, notice.provider, notice.user_id)
            entries, events = [], []
            for account in found:
                outcome = await self._apply_notice(tx, notice, account, events, now)
                entries.append(entry(account, outcome))
            outcome = notice.outcome_without_account if not found else (
                "applied" if events else "unchanged")
            if not found:
                entries.append(entry(None, outcome))
            await tx.one("finish_ebay_notification", notification_id=notice.notification_id,
                         outcome=outcome, account_ids=[a.id for a in found])
            await records.emit(tx, events, now)
            return await records.store_entries(tx, entries)

    async def _apply_notice(
        self, tx: ports.Session, notice: model.Notice, account: model.Account,
        events: list[model.Event],
        now: datetime,
    ) -> str:
        if notice.topic == model.Notice.DELETION:
            if account.state == model.DELETED:
                return "unchanged"
            await tx.one("purge_account", id=account.id, reason=notice.reason, now=now)
            await tx.all("purge_account_entries", account_id=account.id)
            events.append(model.Event.about(vocabulary.ACCOUNT_DELETED, account,
                                            state=model.DELETED, reason=notice.reason))
            return model.DELETED
        if account.state in (model.DELETED, model.REAUTH_REQUIRED):
            return "unchanged"
        await tx.one("revoke_account", id=account.id, reason=notice.reason, now=now)
        events.append(model.Event.about(vocabulary.ACCOUNT_REAUTH_REQUIRED, account,
                                  state=model.REAUTH_REQUIRED, reason=notice.reason))
        return model.REAUTH_REQUIRED
