"""The workers' heartbeats, and what time alone changes: a loop gone stale or recovered,
a provider's pause run out. The stale rule is `model.STALE_AFTER_INTERVALS`, passed to SQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tokend import model, vocabulary
from tokend.store import ports, records


class Workers:
    _db: ports.Connector

    async def worker_started(
        self, name: str, instance: str, interval_seconds: float, now: datetime,
    ) -> None:
        await self._db.one("worker_started", name=name, instance=instance,
                           interval_seconds=interval_seconds, now=now)

    async def worker_finished(
        self, name: str, instance: str, now: datetime, status: str,
        summary: Mapping[str, Any],
    ) -> None:
        await self._db.one("worker_finished", name=name, instance=instance, now=now,
                           status=status, summary=summary)

    async def list_workers(self) -> list[model.Worker]:
        return [model.Worker(**row) for row in await self._db.all("list_workers")]

    async def notice_changes(self, now: datetime) -> list[model.Event]:
        """Emit what time alone changes, once across replicas: pauses that ran out
        (provider.resumed) and worker rows crossing the stale line (loop.stale,
        loop.recovered). Returns the events written."""
        events = []
        async with self._db.transaction() as tx:
            for row in await tx.all("resume_providers", now=now):
                events.append(model.Event(vocabulary.PROVIDER_RESUMED,
                                    {"provider": row["provider"], "reason": "pause_ended"}))
            line = {"now": now, "stale_after_intervals": model.STALE_AFTER_INTERVALS}
            stale = await tx.all("mark_stale_workers", **line)
            recovered = await tx.all("mark_recovered_workers", **line)
            for kind, rows in ((vocabulary.LOOP_STALE, stale),
                               (vocabulary.LOOP_RECOVERED, recovered)):
                for row in rows:
                    finished = row["last_finished_at"]
                    events.append(model.Event(kind, {
                        "worker": row["name"], "instance": row["instance"],
                        "last_finished_at": finished and finished.isoformat()}))
            await records.emit(tx, events, now)
        return events
