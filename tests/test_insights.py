"""The read-only view: `tokend status` and the loop-status report run on `store.Insights`
alone, and a `Store` is one (same names, same signatures)."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import kit

from tokend import status, store

NOW = datetime.now(UTC).replace(microsecond=0)
READS = tuple(name for name, value in vars(store.Insights).items()
              if inspect.iscoroutinefunction(value))


class ReadsOnly:
    """The store's Insights methods and nothing else: a write, or any read the view does
    not list, is an AttributeError."""

    def __init__(self, db: store.Store) -> None:
        for name in READS:
            setattr(self, name, getattr(db, name))


def test_a_store_is_an_insights_with_the_same_signatures():
    assert len(READS) >= 10
    for name in READS:
        assert inspect.signature(getattr(store.Store, name)) == inspect.signature(
            getattr(store.Insights, name)), name


def test_the_view_has_no_write():
    assert not {name for name in READS
                if name.startswith(("add_", "set_", "claim", "finish", "prune", "apply"))}


async def test_the_status_report_needs_only_the_view(store):
    cfg = kit.engine_config("http://127.0.0.1:9/token")
    await store.worker_started("refresh", "host-1", 60.0, NOW)
    view = ReadsOnly(store)
    report = await status.report(view, cfg, NOW)
    assert report["loops"][0]["name"] == "refresh"
    assert report == await status.report(store, cfg, NOW)
