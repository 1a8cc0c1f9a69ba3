"""The PostgreSQL connector: an asyncpg pool that runs named statements, for production and
several processes at once. New log entries are announced on `tokend_entries` (LISTEN)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import orjson
import structlog

from tokend import store
from tokend.store import queries

CONNECT_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 10.0
LISTEN_RETRY_SECONDS = 1.0

log = structlog.get_logger("tokend.store")

_STATEMENTS = {name: queries.to_numbered(sql) for name, sql in queries.load("postgresql").items()}

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


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise store.DuplicateKey(exc.constraint_name or "unique") from None
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="text",
                              encoder=lambda value: orjson.dumps(value).decode(),
                              decoder=orjson.loads)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing beyond asyncpg's own
    rollback of an open transaction. tokend leaves no session state on pooled connections
    (no SET, no cursor, no LISTEN: the feed has its own connection; the migration lock is
    transaction-level), so asyncpg's default reset would only add a round trip per call."""


class Session:
    """Named statements on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]:
        sql, names = _STATEMENTS[query]
        with _translated():
            return await self._conn.fetch(sql, *[params[n] for n in names])

    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None:
        sql, names = _STATEMENTS[query]
        with _translated():
            return await self._conn.fetchrow(sql, *[params[n] for n in names])

    async def script(self, sql: str) -> None:
        with _translated():
            await self._conn.execute(sql)


class Connector:
    """`feed_mode` is how other processes' entries are heard: "notify" (`listen`: LISTEN on
    a direct connection, `url` or `listen_url`) or, behind PgBouncer without `listen_url`,
    "poll" (`listen` is None; the Store polls the http_log table)."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, listen_url: str | None) -> None:
        self._pool = pool
        self._listen_url = listen_url
        self.listen = self._listen_notify if listen_url is not None else None
        self.feed_mode = "notify" if listen_url is not None else "poll"

    @classmethod
    async def open(cls, url: str, *, pool_max_size: int, pgbouncer: bool = False,
                   listen_url: str | None = None) -> Connector:
        """`pgbouncer`: `url` goes through PgBouncer's transaction pooling, where a server
        connection changes between transactions, so no named prepared statement can be
        kept (asyncpg's unnamed ones live within one Parse/Bind/Sync and are fine), and
        LISTEN, a session's state, needs `listen_url`."""
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_max_size, init=_init_connection,
                reset=_keep_session, timeout=CONNECT_TIMEOUT_SECONDS,
                statement_cache_size=0 if pgbouncer else 100)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise _unavailable(exc) from exc
        return cls(pool, listen_url if pgbouncer else (listen_url or url))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            # A connection still busy after the grace time: shutdown must not hang on it.
            self._pool.terminate()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        with _translated():
            async with self._pool.acquire() as conn:
                yield Session(conn)

    @contextlib.asynccontextmanager
    async def transaction(self, *, schema_change: bool = False) -> AsyncIterator[Session]:
        with _translated():
            async with self._pool.acquire() as conn, conn.transaction():
                yield Session(conn)

    # One statement is a transaction of its own (PostgreSQL wraps it): BEGIN and COMMIT
    # around it would only add two round trips, and each one waits its turn on a busy loop.
    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]:
        async with self.session() as s:
            return await s.all(query, **params)

    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None:
        async with self.session() as s:
            return await s.one(query, **params)

    async def _listen_notify(
        self, channel: str, callback: Callable[[str], None],
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback(payload)` for every NOTIFY on `channel`; returns `stop`.

        Uses its own connection, not a pool slot: a LISTEN lives as long as its session.
        A lost connection is reopened in the background; what was announced meanwhile is
        missed (stream clients catch up by id).
        """
        lost = asyncio.Event()

        def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        def terminated(_conn: object) -> None:
            lost.set()

        async def open_listener() -> asyncpg.Connection:
            try:
                conn = await asyncpg.connect(self._listen_url, timeout=CONNECT_TIMEOUT_SECONDS)
                await conn.add_listener(channel, notified)
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

