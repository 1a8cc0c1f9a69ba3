"""The PostgreSQL store: an asyncpg pool, for production and several processes at once.

Every method acquires one connection and runs one short transaction. New log entries are
announced with NOTIFY on `tokend_entries` so every replica can stream them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import structlog

from tokend import crypto, store
from tokend.store import queries

_Q = queries.load("postgresql")

CHANNEL = "tokend_entries"
CONNECT_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 10.0
LISTEN_RETRY_SECONDS = 1.0

log = structlog.get_logger("tokend.store")

# What a database outage looks like from asyncpg: callers see StoreError and carry on.
_UNAVAILABLE = (
    OSError,  # includes ConnectionError and TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def _unavailable(exc: BaseException) -> store.StoreError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return store.StoreError(f"PostgreSQL unavailable: {reason}")


def _unmatchable(*values: object) -> bool:
    """PostgreSQL text cannot hold NUL (it refuses the parameter): no row can match such a
    value, so a lookup by one finds nothing, as it does on SQLite."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="text",
                              encoder=lambda value: orjson.dumps(value).decode(),
                              decoder=orjson.loads)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing beyond asyncpg's own
    rollback of an open transaction. tokend leaves no session state on pooled connections
    (no SET, no cursor, no LISTEN: the feed has its own connection; the migration lock is
    released in a `finally`), so asyncpg's default reset (`pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`) would only add a round trip to every store call."""


async def connect(url: str, *, pool_max_size: int = 10) -> PostgresStore:
    try:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=pool_max_size, init=_init_connection,
            reset=_keep_session, timeout=CONNECT_TIMEOUT_SECONDS)
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        raise _unavailable(exc) from exc
    return PostgresStore(pool, url)


def _account(row: asyncpg.Record) -> store.Account:
    return store.Account(**{**row, "scopes": tuple(row["scopes"])})


def _entry(row: asyncpg.Record) -> store.Entry:
    return store.Entry(**row)


def _entry_args(entry: store.Entry) -> tuple[Any, ...]:
    return (entry.created_at, entry.action, entry.source, entry.account_id, entry.org_id,
            entry.provider, entry.environment, entry.duration_ms, entry.request,
            entry.response, entry.error, entry.message, entry.details)


class PostgresStore(store.Store):
    backend = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            # A connection still busy after the grace time: shutdown must not hang on it.
            self._pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    # One statement is a transaction of its own (PostgreSQL wraps it): BEGIN and COMMIT
    # around it would only add two round trips, and each one waits its turn on a busy loop.
    async def _one(self, name: str, *args: Any) -> asyncpg.Record | None:
        async with self._connection() as conn:
            return await conn.fetchrow(_Q[name], *args)

    async def _all(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return await conn.fetch(_Q[name], *args)

    async def ping(self) -> None:
        await self._one("ping")

    # -- schema -----------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        done = []
        async with self._connection() as conn:
            await conn.execute(_Q["lock_migrations"])
            try:
                await conn.execute(_Q["create_migrations_table"])
                applied = {row["name"] for row in await conn.fetch(_Q["applied_migrations"])}
                for name, script in queries.pending(self.backend, applied):
                    async with conn.transaction():
                        await conn.execute(script)
                        await conn.execute(_Q["record_migration"], name, datetime.now(UTC))
                    done.append(name)
            finally:
                await conn.execute(_Q["unlock_migrations"])
        return done

    async def check_schema(self) -> None:
        applied = None
        async with self._transaction() as conn:
            if await conn.fetchval(_Q["migrations_table_exists"]):
                applied = {row["name"] for row in await conn.fetch(_Q["applied_migrations"])}
        queries.check_applied(self.backend, applied)

    # -- accounts ---------------------------------------------------------------------
    async def add_account(self, new: store.NewAccount, now: datetime) -> store.Account:
        try:
            row = await self._one(
                "insert_account", new.id, new.org, new.provider, new.name, list(new.scopes),
                new.refresh_token, new.refresh_expires_at, now)
        except asyncpg.UniqueViolationError:
            raise store.DuplicateAccount(
                f"an account with id {new.id!r} or provider/org/name "
                f"{new.provider}/{new.org}/{new.name} already exists") from None
        assert row is not None
        return _account(row)

    async def get_account(self, account_id: str) -> store.Account | None:
        if _unmatchable(account_id):
            return None
        row = await self._one("get_account", account_id)
        return None if row is None else _account(row)

    async def list_accounts(self, org: str | None = None) -> list[store.Account]:
        return [_account(row) for row in await self._all("list_accounts", org)]

    async def reauth_account(
        self, account_id: str, refresh_token: str, refresh_expires_at: datetime | None,
        now: datetime,
    ) -> store.Account | None:
        row = await self._one("reauth_account", account_id, refresh_token, refresh_expires_at,
                              now)
        return None if row is None else _account(row)

    async def set_state(self, account_id: str, state: str, now: datetime) -> store.Account | None:
        row = await self._one("set_state", account_id, state, now)
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
        rows = await self._all(
            "claim_due", owner, now, limit, now + timedelta(seconds=lease_seconds),
            now + timedelta(seconds=expiry_threshold_seconds),
            now - timedelta(seconds=max_age_seconds))
        return [_account(row) for row in rows]

    async def claim_account(
        self, account_id: str, owner: str, now: datetime, *, lease_seconds: float,
    ) -> store.Account | None:
        if _unmatchable(account_id):
            return None
        row = await self._one("claim_account", account_id, owner, now,
                              now + timedelta(seconds=lease_seconds))
        return None if row is None else _account(row)

    async def finish(
        self, claimed: store.Account, owner: str, outcome: store.Success | store.Failure,
        attempt: store.Attempt, entry: store.Entry, now: datetime,
    ) -> tuple[bool, store.Entry]:
        guard = (claimed.id, claimed.version, owner)
        async with self._transaction() as conn:
            if isinstance(outcome, store.Success):
                applied = await conn.fetchval(
                    _Q["finish_success"], *guard, outcome.access_token,
                    outcome.access_expires_at, outcome.refresh_token,
                    outcome.refresh_expires_at, outcome.refreshed_at, outcome.next_attempt_at,
                    now)
            else:
                applied = await conn.fetchval(
                    _Q["finish_failure"], *guard, outcome.error_code, outcome.next_attempt_at,
                    outcome.state, now)
            await conn.execute(
                _Q["insert_attempt"], attempt.account_id, attempt.source, attempt.started_at,
                attempt.finished_at, attempt.success, attempt.error_code, attempt.error_message)
            entry_id = await conn.fetchval(_Q["insert_entry"], *_entry_args(entry))
        return applied is not None, dataclasses.replace(entry, id=entry_id)

    async def release(self, claimed: store.Account, owner: str, now: datetime) -> bool:
        row = await self._one("release", claimed.id, claimed.version, owner, now)
        return row is not None

    async def next_due_at(self, now: datetime) -> datetime | None:
        row = await self._one("next_due_at", now)
        return None if row is None else row[0]

    async def count_due(
        self, now: datetime, *, expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> int:
        row = await self._one("count_due", now, now + timedelta(seconds=expiry_threshold_seconds),
                              now - timedelta(seconds=max_age_seconds))
        assert row is not None
        return row[0]

    async def pause_provider(self, provider: str, until: datetime, reason: str) -> None:
        async with self._connection() as conn:
            await conn.execute(_Q["pause_provider"], provider, until, reason)

    async def paused_providers(self, now: datetime) -> dict[str, datetime]:
        return {row["provider"]: row["paused_until"]
                for row in await self._all("paused_providers", now)}

    # -- logs -------------------------------------------------------------------------
    async def add_entry(self, entry: store.Entry) -> store.Entry:
        row = await self._one("insert_entry", *_entry_args(entry))
        assert row is not None
        return dataclasses.replace(entry, id=row[0])

    async def list_entries(
        self, *, source: Sequence[str] | None = None, action: str | None = None,
        account_id: str | None = None, org: str | None = None,
        after_id: int | None = None, before_id: int | None = None, limit: int = 200,
    ) -> list[store.Entry]:
        sources = None if source is None else list(source)
        if _unmatchable(action, account_id, org, *(sources or ())):
            return []
        if after_id is not None:
            rows = await self._all("list_entries_after", sources, action, account_id, org,
                                   after_id, limit)
        else:
            rows = await self._all("list_entries_before", sources, action, account_id, org,
                                   before_id, limit)
        return [_entry(row) for row in rows]

    async def get_entries(self, ids: Sequence[int]) -> list[store.Entry]:
        """The entries with these ids that exist, oldest first."""
        return [_entry(row) for row in await self._all("get_entries", list(ids))]

    async def listen_entries(
        self, callback: Callable[[int], None],
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback(entry_id)` for every entry any replica commits; returns `stop`.

        Uses its own connection, not a pool slot: a LISTEN lives as long as its session.
        A lost connection is reopened in the background; what was announced meanwhile is
        missed (stream clients catch up by id).
        """
        lost = asyncio.Event()

        def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            callback(int(payload))

        def terminated(_conn: object) -> None:
            lost.set()

        async def open_listener() -> asyncpg.Connection:
            try:
                conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_SECONDS)
                await conn.add_listener(CHANNEL, notified)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                raise _unavailable(exc) from exc
            conn.add_termination_listener(terminated)
            return conn

        conn = await open_listener()

        async def keep_listening() -> None:
            nonlocal conn
            while True:
                await lost.wait()
                lost.clear()
                log.warning("entries_listener_lost")
                while True:
                    await asyncio.sleep(LISTEN_RETRY_SECONDS)
                    try:
                        conn = await open_listener()
                        break
                    except store.StoreError:
                        continue
                log.info("entries_listener_restored")

        task = asyncio.create_task(keep_listening(), name="tokend-entries-listener")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            conn.remove_termination_listener(terminated)
            if not conn.is_closed():
                try:
                    await conn.close(timeout=CONNECT_TIMEOUT_SECONDS)
                except _UNAVAILABLE:
                    conn.terminate()

        return stop

    async def list_attempts(self, account_id: str, limit: int = 50) -> list[store.Attempt]:
        return [store.Attempt(**row) for row in await self._all("list_attempts", account_id,
                                                                 limit)]

    async def prune_logs(self, before: datetime, limit: int) -> int:
        async with self._transaction() as conn:
            entries = await conn.fetch(_Q["prune_http_log"], before, limit)
            attempts = await conn.fetch(_Q["prune_refresh_log"], before, limit)
        return len(entries) + len(attempts)

    # -- workers ----------------------------------------------------------------------
    async def worker_started(
        self, name: str, instance: str, interval_seconds: float, now: datetime,
    ) -> None:
        async with self._connection() as conn:
            await conn.execute(_Q["worker_started"], name, instance, interval_seconds, now)

    async def worker_finished(
        self, name: str, instance: str, now: datetime, status: str,
        summary: Mapping[str, Any],
    ) -> None:
        async with self._connection() as conn:
            await conn.execute(_Q["worker_finished"], name, instance, now, status, summary)

    async def list_workers(self) -> list[store.Worker]:
        return [store.Worker(**row) for row in await self._all("list_workers")]

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
                              access_token)
        return row is not None
