"""Group commit: refresh saves that finish close together go to the database as one
transaction, so N saves cost one BEGIN/COMMIT, one pool checkout and one fsync instead of N.

A save is written at once when no batch is being written; otherwise it waits until
`max_items` are waiting, the batch in flight commits, or `max_delay_seconds` passed since
the first one came in, and the buffer is written with `Store.finish_many`. Each caller
awaits the commit of ITS batch, so durability is unchanged: `finish` returns only once the
save is on disk, and a kill -9 loses nothing that was reported saved. Every save keeps its
own lease and version guard (`Store.write_finishes`). A batch the database refuses fails each
of its callers with the StoreError (they retry as before); any other error is isolated by
writing that batch's saves one by one, so one bad save cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import structlog

from tokend import model, store

log = structlog.get_logger("tokend.groupcommit")

MAX_ITEMS = 64
MAX_DELAY_SECONDS = 0.003


class GroupCommit:
    def __init__(self, db: store.Store, *, max_items: int = MAX_ITEMS,
                 max_delay_seconds: float = MAX_DELAY_SECONDS) -> None:
        self.db = db
        self.max_items = max_items
        self.max_delay_seconds = max_delay_seconds
        self._waiting: list[tuple[model.Save, asyncio.Future[tuple[bool, model.Entry]]]] = []
        self._timer: asyncio.Handle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches written, for the benchmarks
        self.saves = 0

    async def finish(
        self, claimed: model.Account, owner: str, outcome: model.Success | model.Failure,
        attempt: model.Attempt, entry: model.Entry, now: datetime,
    ) -> tuple[bool, model.Entry]:
        """`Store.finish`, committed together with the saves that come in around it."""
        future: asyncio.Future[tuple[bool, model.Entry]] = (
            asyncio.get_running_loop().create_future())
        self._waiting.append((model.Save(claimed, owner, outcome, attempt, entry, now), future))
        if len(self._waiting) >= self.max_items:
            self._flush()
        elif self._timer is None:
            # Nothing being written: go at the next turn of the event loop (saves finishing
            # in the same turn still share it), so a lone save waits for nobody. Otherwise
            # collect until the batch in flight commits, at most max_delay_seconds.
            loop = asyncio.get_running_loop()
            self._timer = (loop.call_soon(self._flush) if not self._flushes
                           else loop.call_later(self.max_delay_seconds, self._flush))
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting[:self.max_items], self._waiting[self.max_items:]
        if self._waiting:  # more than one batch's worth came in at once
            self._timer = asyncio.get_running_loop().call_soon(self._flush)
        if batch:
            task = asyncio.create_task(self._write(batch), name="group-commit")
            self._flushes.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        """A batch committed: what collected meanwhile goes now, not at its timer."""
        self._flushes.discard(task)
        if self._waiting and not self._flushes:
            self._flush()

    async def _write(
        self, batch: list[tuple[model.Save, asyncio.Future[tuple[bool, model.Entry]]]],
    ) -> None:
        saves = [save for save, _ in batch]
        try:
            results = await self.db.finish_many(saves)
        except store.StoreError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:
            log.exception("group_commit_failed", saves=len(batch))
            await self._write_one_by_one(batch)
            return
        self.batches += 1
        self.saves += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _write_one_by_one(
        self, batch: list[tuple[model.Save, asyncio.Future[tuple[bool, model.Entry]]]],
    ) -> None:
        for save, future in batch:
            try:
                result = await self.db.finish(save.claimed, save.owner, save.outcome,
                                              save.attempt, save.entry, save.now)
            except Exception as exc:  # handed to its own caller
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Write what is waiting and wait for the batches in flight."""
        if self._waiting:
            self._flush()
        while self._flushes:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._flushes)
            if self._waiting:
                self._flush()
