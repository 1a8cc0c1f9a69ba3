"""The SQLite store: one aiosqlite connection in WAL mode, the embedded default.

Timestamps are stored as REAL UTC epoch seconds and JSON as text. Other processes (the
CLI) may open the same file: WAL lets them read, BEGIN IMMEDIATE plus a busy timeout
makes writers take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from tokend import crypto, store
from tokend.store import queries

_Q = queries.load("sqlite")

# How long a write waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 10.0

_ACCOUNT_TIMES = ("access_expires_at", "refresh_expires_at", "last_refresh_at",
                  "next_attempt_at", "lease_expires_at", "created_at", "updated_at")
_ENTRY_JSON = ("request", "response", "error", "details")


async def connect(path: str) -> SQLiteStore:
    try:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise store.StoreError(f"cannot open SQLite database {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        await conn.close()
        raise store.StoreError(f"cannot open SQLite database {path}: {exc}") from exc
    return SQLiteStore(conn)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _account(row: sqlite3.Row) -> store.Account:
    data = dict(row)
    for key in _ACCOUNT_TIMES:
        data[key] = _dt(data[key])
    data["scopes"] = tuple(orjson.loads(data["scopes"]))
    return store.Account(**data)


def _entry(row: sqlite3.Row) -> store.Entry:
    data = dict(row)
    data["created_at"] = _dt(data["created_at"])
    for key in _ENTRY_JSON:
        data[key] = _unjson(data[key])
    return store.Entry(**data)


def _entry_args(entry: store.Entry) -> tuple[Any, ...]:
    return (_ts(entry.created_at), entry.action, entry.source, entry.account_id, entry.org_id,
            entry.provider, entry.environment, entry.duration_ms, _json(entry.request),
            _json(entry.response), _json(entry.error), entry.message, _json(entry.details))


def _statements(script: str) -> Iterator[str]:
    """Split a migration file into statements the way SQLite's own tokenizer sees them."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""


class SQLiteStore(store.Store):
    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # One connection: transactions from concurrent tasks must not interleave on it.
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(self, *, write: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                # IMMEDIATE takes the write lock up front, so a read-then-write
                # transaction never fails halfway on another process's lock.
                await self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._conn
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                await self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise store.StoreError(f"SQLite: {exc}") from exc

    async def _one(self, name: str, *args: Any, write: bool = False) -> sqlite3.Row | None:
        async with self._transaction(write=write) as db:
            rows = await db.execute_fetchall(_Q[name], args)
        return rows[0] if rows else None

    async def _all(self, name: str, *args: Any) -> list[sqlite3.Row]:
        async with self._transaction() as db:
            return list(await db.execute_fetchall(_Q[name], args))

    async def ping(self) -> None:
        await self._one("ping")

    # -- schema -----------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        # All pending migrations in one write transaction: the write lock is what makes
        # concurrent `tokend migrate` runs take turns.
        done = []
        async with self._transaction(write=True) as db:
            await db.execute(_Q["create_migrations_table"])
            applied = {row[0] for row in await db.execute_fetchall(_Q["applied_migrations"])}
            for name, script in queries.pending(self.backend, applied):
                for statement in _statements(script):
                    await db.execute(statement)
                await db.execute(_Q["record_migration"], (name, datetime.now(UTC).timestamp()))
                done.append(name)
        return done

    async def check_schema(self) -> None:
        applied = None
        async with self._transaction() as db:
            [(exists,)] = await db.execute_fetchall(_Q["migrations_table_exists"])
            if exists:
                rows = await db.execute_fetchall(_Q["applied_migrations"])
                applied = {row[0] for row in rows}
        queries.check_applied(self.backend, applied)

    # -- accounts ---------------------------------------------------------------------
    async def add_account(self, new: store.NewAccount, now: datetime) -> store.Account:
        try:
            row = await self._one(
                "insert_account", new.id, new.org, new.provider, new.name,
                _json(list(new.scopes)), new.refresh_token, _ts(new.refresh_expires_at),
                _ts(now), write=True)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc):
                raise
            raise store.DuplicateAccount(
                f"an account with id {new.id!r} or provider/org/name "
                f"{new.provider}/{new.org}/{new.name} already exists") from None
        assert row is not None
        return _account(row)

    async def get_account(self, account_id: str) -> store.Account | None:
        row = await self._one("get_account", account_id)
        return None if row is None else _account(row)

    async def list_accounts(self, org: str | None = None) -> list[store.Account]:
        return [_account(row) for row in await self._all("list_accounts", org)]

    async def reauth_account(
        self, account_id: str, refresh_token: str, refresh_expires_at: datetime | None,
        now: datetime,
    ) -> store.Account | None:
        row = await self._one("reauth_account", account_id, refresh_token,
                              _ts(refresh_expires_at), _ts(now), write=True)
        return None if row is None else _account(row)

    async def set_state(self, account_id: str, state: str, now: datetime) -> store.Account | None:
        row = await self._one("set_state", account_id, state, _ts(now), write=True)
        return None if row is None else _account(row)

    async def account_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(store.STATES, 0)
        counts.update({row["state"]: row["n"] for row in await self._all("account_counts")})
        return counts

    async def active_by_provider(self) -> dict[str, int]:
        return {row["provider"]: row["n"] for row in await self._all("active_by_provider")}

    async def failing_counts(self) -> dict[str, int]:
        return {row["error_code"]: row["n"] for row in await self._all("failing_counts")}

    # -- the refresh cycle ------------------------------------------------------------
    async def claim_due(
        self, owner: str, now: datetime, *, limit: int, lease_seconds: float,
        expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> list[store.Account]:
        when = now.timestamp()
        async with self._transaction(write=True) as db:
            rows = await db.execute_fetchall(_Q["claim_due"], (
                owner, when, limit, when + lease_seconds, when + expiry_threshold_seconds,
                when - max_age_seconds))
        return [_account(row) for row in rows]

    async def claim_account(
        self, account_id: str, owner: str, now: datetime, *, lease_seconds: float,
    ) -> store.Account | None:
        when = now.timestamp()
        row = await self._one("claim_account", account_id, owner, when, when + lease_seconds,
                              write=True)
        return None if row is None else _account(row)

    async def finish(
        self, claimed: store.Account, owner: str, outcome: store.Success | store.Failure,
        attempt: store.Attempt, entry: store.Entry, now: datetime,
    ) -> tuple[bool, store.Entry]:
        guard = (claimed.id, claimed.version, owner)
        async with self._transaction(write=True) as db:
            if isinstance(outcome, store.Success):
                applied = await db.execute_fetchall(_Q["finish_success"], (
                    *guard, outcome.access_token, _ts(outcome.access_expires_at),
                    outcome.refresh_token, _ts(outcome.refresh_expires_at),
                    _ts(outcome.refreshed_at), _ts(outcome.next_attempt_at), _ts(now)))
            else:
                applied = await db.execute_fetchall(_Q["finish_failure"], (
                    *guard, outcome.error_code, _ts(outcome.next_attempt_at), outcome.state,
                    _ts(now)))
            await db.execute(_Q["insert_attempt"], (
                attempt.account_id, attempt.source, _ts(attempt.started_at),
                _ts(attempt.finished_at), attempt.success, attempt.error_code,
                attempt.error_message))
            [(entry_id,)] = await db.execute_fetchall(_Q["insert_entry"], _entry_args(entry))
        return bool(applied), dataclasses.replace(entry, id=entry_id)

    async def release(self, claimed: store.Account, owner: str, now: datetime) -> bool:
        row = await self._one("release", claimed.id, claimed.version, owner, _ts(now),
                              write=True)
        return row is not None

    async def next_due_at(self, now: datetime) -> datetime | None:
        row = await self._one("next_due_at", _ts(now))
        return None if row is None else _dt(row[0])

    async def count_due(
        self, now: datetime, *, expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> int:
        when = now.timestamp()
        row = await self._one("count_due", when, when + expiry_threshold_seconds,
                              when - max_age_seconds)
        assert row is not None
        return row[0]

    async def pause_provider(self, provider: str, until: datetime, reason: str) -> None:
        async with self._transaction(write=True) as db:
            await db.execute(_Q["pause_provider"], (provider, _ts(until), reason))

    async def paused_providers(self, now: datetime) -> dict[str, datetime]:
        return {row["provider"]: _dt(row["paused_until"])
                for row in await self._all("paused_providers", _ts(now))}

    # -- logs -------------------------------------------------------------------------
    async def add_entry(self, entry: store.Entry) -> store.Entry:
        row = await self._one("insert_entry", *_entry_args(entry), write=True)
        assert row is not None
        return dataclasses.replace(entry, id=row[0])

    async def list_entries(
        self, *, source: Sequence[str] | None = None, action: str | None = None,
        account_id: str | None = None, org: str | None = None,
        after_id: int | None = None, before_id: int | None = None, limit: int = 200,
    ) -> list[store.Entry]:
        sources = None if source is None else _json(list(source))
        if after_id is not None:
            rows = await self._all("list_entries_after", sources, action, account_id, org,
                                   after_id, limit)
        else:
            rows = await self._all("list_entries_before", sources, action, account_id, org,
                                   before_id, limit)
        return [_entry(row) for row in rows]

    async def get_entries(self, ids: Sequence[int]) -> list[store.Entry]:
        """The entries with these ids that exist, oldest first."""
        return [_entry(row) for row in await self._all("get_entries", _json(list(ids)))]

    async def list_attempts(self, account_id: str, limit: int = 50) -> list[store.Attempt]:
        rows = await self._all("list_attempts", account_id, limit)
        return [store.Attempt(**{**row, "started_at": _dt(row["started_at"]),
                                 "finished_at": _dt(row["finished_at"]),
                                 "success": bool(row["success"])})
                for row in map(dict, rows)]

    async def prune_logs(self, before: datetime, limit: int) -> int:
        args = (before.timestamp(), limit)
        async with self._transaction(write=True) as db:
            entries = await db.execute_fetchall(_Q["prune_http_log"], args)
            attempts = await db.execute_fetchall(_Q["prune_refresh_log"], args)
        return len(entries) + len(attempts)

    # -- workers ----------------------------------------------------------------------
    async def worker_started(
        self, name: str, instance: str, interval_seconds: float, now: datetime,
    ) -> None:
        async with self._transaction(write=True) as db:
            await db.execute(_Q["worker_started"], (name, instance, interval_seconds, _ts(now)))

    async def worker_finished(
        self, name: str, instance: str, now: datetime, status: str,
        summary: Mapping[str, Any],
    ) -> None:
        async with self._transaction(write=True) as db:
            await db.execute(_Q["worker_finished"],
                             (name, instance, _ts(now), status, _json(summary)))

    async def list_workers(self) -> list[store.Worker]:
        return [store.Worker(**{**row, "last_started_at": _dt(row["last_started_at"]),
                                "last_finished_at": _dt(row["last_finished_at"]),
                                "last_summary": _unjson(row["last_summary"])})
                for row in map(dict, await self._all("list_workers"))]

    # -- key rotation -----------------------------------------------------------------
    async def accounts_to_rotate(
        self, primary_kid: str, limit: int, *, after_id: str | None = None,
    ) -> list[store.Account]:
        rows = await self._all("accounts_to_rotate", f"{crypto.PREFIX}{primary_kid}:", limit,
                               after_id)
        return [_account(row) for row in rows]

    async def replace_secrets(
        self, account_id: str, version: int, refresh_token: str, access_token: str | None,
    ) -> bool:
        row = await self._one("replace_secrets", account_id, version, refresh_token,
                              access_token, write=True)
        return row is not None
