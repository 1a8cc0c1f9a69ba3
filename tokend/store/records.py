"""Records in and out: what every module of the store turns a row into, or a record into,
once, so both backends answer with the same model objects."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tokend import model
from tokend.store import ports

# Field names once, not per save: dataclasses.asdict deep-copies and walks every field.
ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(model.Entry) if f.name != "id")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unmatchable(*values: object) -> bool:
    """Text cannot hold NUL on PostgreSQL (it refuses the parameter) and tokend never stores
    one: no row can match such a value, so a lookup by one finds nothing on either backend."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


def account(row: Mapping[str, Any]) -> model.Account:
    return model.Account(**{**row, "scopes": tuple(row["scopes"])})


def maybe_account(row: Mapping[str, Any] | None) -> model.Account | None:
    return None if row is None else account(row)


def utc_day(moment: datetime) -> str:
    """The UTC day a call counts against, as the budget tables store it."""
    return moment.astimezone(UTC).date().isoformat()


def row(record: Any, fields: Sequence[str], **extra: Any) -> dict[str, Any]:
    """One row of a batch statement (sql fragments `*_rows`): a JSON object without its
    None fields, timestamps as whole microseconds since the epoch, exact on both backends."""
    out = {}
    for name, value in (*((f, getattr(record, f)) for f in fields), *extra.items()):
        if isinstance(value, datetime):
            delta = value - _EPOCH
            value = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if value is not None:
            out[name] = value
    return out


async def store_entries(db: ports.Session | ports.Connector, entries: Sequence[model.Entry],
                        ) -> list[model.Entry]:
    """Insert log entries in one statement; returns them with their ids, in order. Here
    rather than in `entries` because the refresh, notices and expiry write theirs in their
    own transactions."""
    rows = [row(entry, ENTRY_FIELDS, n=n) for n, entry in enumerate(entries)]
    ids = sorted(r["id"] for r in await db.all("insert_entries", rows=rows))
    return [dataclasses.replace(e, id=i) for e, i in zip(entries, ids, strict=True)]


async def stored(db: ports.Session | ports.Connector, entry: model.Entry) -> model.Entry:
    """Insert a log entry; returns it with its id."""
    return (await store_entries(db, [entry]))[0]


async def emit(tx: ports.Session, events: Sequence[model.Event], now: datetime) -> None:
    """Write `events` to the outbox inside the transaction `tx` that makes their change."""
    for event in events:
        await tx.one("insert_event", type=event.type, data=event.data, created_at=now)
