"""The HTTP log: entries written, read, pruned, and heard as other replicas commit them.
How new ids are followed (NOTIFY, catch-up, polling) is the stream's (`stream.EntryIds`);
the store keeps the statements and the LISTEN."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from tokend import model
from tokend.store import errors, ports, records

MAX_ENTRY_ID = 2**63 - 1  # entry ids are 64-bit on both backends
ENTRIES_CHANNEL = "tokend_entries"  # NOTIFY channel of new entry ids (sql insert_entry)


class Entries:
    _db: ports.Connector
    backend: str

    async def add_entry(self, entry: model.Entry) -> model.Entry:
        """Store a log entry that is not part of a refresh; returns it with its id."""
        return await records.stored(self._db, entry)

    async def list_entries(
        self, *, source: Sequence[str] | None = None, action: str | None = None,
        account_id: str | None = None, org: str | None = None,
        after_id: int | None = None, before_id: int | None = None, limit: int = 200,
    ) -> list[model.Entry]:
        """Entries, newest first, except with `after_id`: then the oldest after it first."""
        sources = None if source is None else list(source)
        if records.unmatchable(action, account_id, org, *(sources or ())):
            return []
        where = {"action": action, "account_id": account_id, "org": org, "limit": limit,
                 "sources": sources, "all_sources": sources is None}
        if after_id is not None:
            rows = await self._db.all("list_entries_after", after_id=after_id, **where)
        else:
            rows = await self._db.all("list_entries_before", before_id=before_id, **where)
        return [model.Entry(**row) for row in rows]

    async def get_entries(self, ids: Sequence[int]) -> list[model.Entry]:
        """These entries, oldest first (missing ids are skipped)."""
        return [model.Entry(**row) for row in await self._db.all("get_entries", ids=list(ids))]

    async def list_attempts(self, account_id: str, limit: int = 50) -> list[model.Attempt]:
        """An account's refresh-log rows, newest first."""
        rows = await self._db.all("list_attempts", account_id=account_id, limit=limit)
        return [model.Attempt(**row) for row in rows]

    async def prune_logs(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` rows of each history older than `before`: HTTP-log and
        refresh-log rows, applied eBay notification ids and connect links."""
        async with self._db.transaction() as tx:
            entries = await tx.all("prune_http_log", before=before, limit=limit)
            attempts = await tx.all("prune_refresh_log", before=before, limit=limit)
            notices = await tx.all("prune_ebay_notifications", before=before, limit=limit)
            links = await tx.all("prune_connect_links", before=before, limit=limit)
        return len(entries) + len(attempts) + len(notices) + len(links)

    async def latest_entry_id(self) -> int:
        """The newest entry's id (0 when there is none): where following new ones starts."""
        row = await self._db.one("latest_entry_id")
        assert row is not None
        return row["id"] or 0

    async def entry_ids_after(self, after_id: int, limit: int) -> list[int]:
        """Ids of committed entries after `after_id`, oldest first, up to `limit`."""
        rows = await self._db.all("entry_ids_after", after_id=after_id, limit=limit)
        return [row["id"] for row in rows]

    @property
    def can_listen(self) -> bool:
        """Whether other processes' entries can be heard (`feed_mode` is not None)."""
        return self._db.feed_mode is not None

    @property
    def feed_mode(self) -> str | None:
        """How other processes' entries are heard: "notify" (PostgreSQL LISTEN), "poll"
        (PostgreSQL behind PgBouncer without a direct `listen_url`), or None (SQLite: one
        process sees its own writes)."""
        return self._db.feed_mode

    async def listen_entry_ids(
        self, seen: Callable[[int], None], on_restored: Callable[[], Awaitable[None]],
    ) -> Callable[[], Awaitable[None]]:
        """Call `seen(entry_id)` for every entry id any replica's NOTIFY announces, and
        await `on_restored()` after a lost LISTEN connection is replaced; returns `stop`.
        Only where `feed_mode` is "notify"."""
        if self._db.listen is None:
            raise errors.StoreError(f"the {self.backend} store cannot listen")
        return await self._db.listen(ENTRIES_CHANNEL, lambda payload: seen(int(payload)),
                                     on_restored)
