"""The outbox: events written by the transaction that makes their change (`records.emit`),
fanned out to webhook endpoints as deliveries, each claimed, attempted and pruned."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from tokend import model
from tokend.store import errors, ports, records

EVENTS_CHANNEL = "tokend_events"  # NOTIFY channel of new outbox events (sql insert_event)


class Outbox:
    _db: ports.Connector
    backend: str

    async def list_events(self, *, after_id: int = 0, limit: int = 100) -> list[model.Event]:
        """Outbox events after `after_id`, oldest first."""
        rows = await self._db.all("list_events", after_id=after_id, limit=limit)
        return [model.Event(**row) for row in rows]

    # -- webhooks: the outbox's deliveries ---------------------------------------------
    async def dispatch_events(
        self, targets: Callable[[str], Sequence[str]], now: datetime, *, limit: int,
    ) -> int:
        """Fan up to `limit` undispatched events out to the endpoints `targets(type)` names,
        in one transaction (replicas skip each other's batches); returns how many."""
        async with self._db.transaction() as tx:
            rows = await tx.all("dispatch_events", now=now, limit=limit)
            for row in rows:
                for endpoint in targets(row["type"]):
                    await tx.one("insert_delivery", event_id=row["id"], endpoint=endpoint,
                                 type=row["type"], data=row["data"],
                                 event_at=row["created_at"], now=now)
        return len(rows)

    async def claim_deliveries(
        self, endpoint: str, owner: str, now: datetime, *, limit: int, lease_seconds: float,
    ) -> list[model.Delivery]:
        """Lease up to `limit` due deliveries of `endpoint`, oldest due first."""
        rows = await self._db.all(
            "claim_deliveries", endpoint=endpoint, owner=owner, now=now, limit=limit,
            lease_until=now + timedelta(seconds=lease_seconds))
        return [model.Delivery(**row) for row in rows]

    async def finish_delivery(
        self, delivery: model.Delivery, owner: str, now: datetime, *, state: str,
        next_attempt_at: datetime, status: int | None, error: str | None,
    ) -> bool:
        """Record one attempt; False when the lease was lost meanwhile."""
        row = await self._db.one(
            "finish_delivery", id=delivery.id, owner=owner, state=state,
            next_attempt_at=next_attempt_at, status=status, error=error,
            finished_at=None if state == model.PENDING else now)
        return row is not None

    async def list_deliveries(
        self, *, endpoint: str | None = None, state: str | None = None,
        type: str | None = None, event_id: int | None = None, before_id: int | None = None,
        limit: int = 100,
    ) -> list[model.Delivery]:
        """Deliveries, newest first."""
        if records.unmatchable(endpoint, state, type):
            return []
        rows = await self._db.all("list_deliveries", endpoint=endpoint, state=state,
                                  type=type, event_id=event_id, before_id=before_id,
                                  limit=limit)
        return [model.Delivery(**row) for row in rows]

    async def delivery_counts(self) -> dict[str, dict[str, int]]:
        """Deliveries per endpoint and state."""
        out: dict[str, dict[str, int]] = {}
        for row in await self._db.all("delivery_counts"):
            out.setdefault(row["endpoint"], dict.fromkeys(model.DELIVERY_STATES, 0))[
                row["state"]] = row["n"]
        return out

    async def prune_deliveries(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` finished deliveries and dispatched events older than
        `before` each."""
        async with self._db.transaction() as tx:
            deliveries = await tx.all("prune_deliveries", before=before, limit=limit)
            events = await tx.all("prune_events", before=before, limit=limit)
        return len(deliveries) + len(events)

    async def listen_events(
        self, callback: Callable[[], None],
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback()` whenever any replica commits an event; returns `stop`.
        Only where `can_listen`."""
        if self._db.listen is None:
            raise errors.StoreError(f"the {self.backend} store cannot listen")
        async def restored() -> None:  # events may have been committed meanwhile
            callback()

        return await self._db.listen(EVENTS_CHANNEL, lambda _payload: callback(), restored)
