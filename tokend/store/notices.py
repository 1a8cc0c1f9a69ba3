"""Provider notices (eBay's Notification API): who an account is at the provider, and a
verified notice applied once by its id. What a notice does to an account is decided
outside (`ebay.notifications.decide`); this module only applies the generic change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tokend import model
from tokend.store import errors, ports, records


async def _forget_links(tx: ports.Session, provider: str, provider_user_id: str) -> None:
    """Remove the connect links this provider user signed in through, and empty their log
    entries: some name the user, and none need carry an account id."""
    for row in await tx.all("forget_provider_user_links", provider=provider,
                            provider_user_id=provider_user_id):
        await tx.all("purge_link_entries", link_id=row["id"])


async def _apply(tx: ports.Session, account: model.Account, change: model.NoticeChange,
                 reason: str, now: datetime) -> None:
    if change.action == model.PURGE:
        await tx.one("purge_account", id=account.id, reason=reason, now=now)
        await tx.all("purge_account_entries", account_id=account.id)
    elif change.action == model.REVOKE:
        await tx.one("revoke_account", id=account.id, reason=reason, now=now)


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
        now: datetime, *, decide: Callable[[model.Account], model.NoticeChange],
        forget_user: bool = False,
    ) -> list[model.Entry] | None:
        """Apply one verified notification in one transaction: record its id, change the
        seller's accounts as `decide(account)` says, emit their events, write the log
        entries (`entry(account, outcome)` builds each); `forget_user` also removes the
        connect links the seller signed in through. None when this notificationId was
        applied before."""
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
            if forget_user and notice.user_id:
                await _forget_links(tx, notice.provider, notice.user_id)
            entries, events = [], []
            for account in found:
                change = decide(account)
                await _apply(tx, account, change, notice.reason, now)
                events.extend(change.events)
                entries.append(entry(account, change.outcome))
            outcome = notice.outcome_without_account if not found else (
                "applied" if events else "unchanged")
            if not found:
                entries.append(entry(None, outcome))
            await tx.one("finish_ebay_notification", notification_id=notice.notification_id,
                         outcome=outcome, account_ids=[a.id for a in found])
            await records.emit(tx, events, now)
            return await records.store_entries(tx, entries)
