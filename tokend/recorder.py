"""The one way to record a log entry: store it, then hand it to the live stream.

Entries written by another store call, in that call's transaction (a refresh's save, an
application token's, a batch of signatures), are only published here.
"""

from __future__ import annotations

from tokend import model, store, stream


class Recorder:
    def __init__(self, db: store.Store, hub: stream.Hub | None) -> None:
        self.db, self.hub = db, hub

    async def record(self, entry: model.Entry) -> model.Entry:
        """Store `entry` and publish it; returns it with its id."""
        stored = await self.db.add_entry(entry)
        self.publish(stored)
        return stored

    def publish(self, *entries: model.Entry | None) -> None:
        """Publish entries already stored (None: nothing was)."""
        if self.hub is None:
            return
        for entry in entries:
            if entry is not None:
                self.hub.publish(entry)
