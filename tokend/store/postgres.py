"""The PostgreSQL connector: an asyncpg pool that runs named statements, for production and
several processes at once. New log entries are announced on `tokend_entries` (LISTEN).

A database that stops answering (a failover, a partition) leaves sockets hanging rather
than refusing them, so every call here is bounded (`ports.Timeouts`): a connection whose
call timed out is closed at once and never handed out again, and a second timeout soon
after retires every idle connection of the pool, which then reconnects on demand."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import orjson
import structlog

from tokend.store import errors, ports, queries

CLOSE_TIMEOUT_SECONDS = 5.0
LISTEN_RETRY_SECONDS = 1.0
# Migrations may build indexes over millions of rows: no statement timeout applies to them.
SCHEMA_CHANGE_TIMEOUT_SECONDS = 3600.0

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
    asyncpg.QueryCanceledError,  # the server's statement_timeout
    asyncpg.IdleInTransactionSessionTimeoutError,
)


def _unavailable(exc: BaseException) -> errors.StoreError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return errors.StoreError(f"PostgreSQL unavailable: {reason}")


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise errors.DuplicateKey(exc.constraint_name or "unique") from None
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


def _server_settings(timeouts: ports.Timeouts) -> dict[str, str]:
    """The server's side of the bounds: a statement this process gave up on stops running,
    and a transaction whose client vanished mid-way (a partition) lets go of its row locks
    instead of holding them until the server's TCP keepalive notices, hours later."""
    return {"statement_timeout": str(int(timeouts.statement_timeout_seconds * 1000)),
            "idle_in_transaction_session_timeout":
                str(int(timeouts.idle_in_transaction_timeout_seconds * 1000))}


class Session:
    """Named statements on one connection; `timeout` None is the pool's statement bound."""

    def __init__(self, conn: asyncpg.Connection, timeout: float | None = None) -> None:
        self._conn = conn
        self._timeout = timeout

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]:
        sql, names = _STATEMENTS[query]
        with _translated():
            return await self._conn.fetch(sql, *[params[n] for n in names],
                                          timeout=self._timeout)

    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None:
        sql, names = _STATEMENTS[query]
        with _translated():
            return await self._conn.fetchrow(sql, *[params[n] for n in names],
                                             timeout=self._timeout)

    async def script(self, sql: str) -> None:
        with _translated():
            await self._conn.execute(sql, timeout=self._timeout)


class Connector:
    """`feed_mode` is how other processes' entries are heard: "notify" (`listen`: LISTEN on
    a direct connection, `url` or `listen_url`) or, behind PgBouncer without `listen_url`,
    "poll" (`listen` is None; `stream.EntryIds` polls the http_log table)."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, listen_url: str | None,
                 timeouts: ports.Timeouts, server_settings: dict[str, str]) -> None:
        self._pool = pool
        self._listen_url = listen_url
        self._timeouts = timeouts
        self._server_settings = server_settings
        self._last_timeout = -float("inf")  # time.monotonic() of the last call that hung
        self.listen = self._listen_notify if listen_url is not None else None
        self.feed_mode = "notify" if listen_url is not None else "poll"

    @classmethod
    async def open(cls, url: str, *, pool_max_size: int, pgbouncer: bool = False,
                   listen_url: str | None = None,
                   timeouts: ports.Timeouts = ports.DEFAULT_TIMEOUTS) -> Connector:
        """`pgbouncer`: `url` goes through PgBouncer's transaction pooling, where a server
        connection changes between transactions, so no named prepared statement can be
        kept (asyncpg's unnamed ones live within one Parse/Bind/Sync and are fine), LISTEN,
        a session's state, needs `listen_url`, and PgBouncer refuses server settings in the
        startup packet (set them on the role there: see config.example.toml)."""
        settings = {} if pgbouncer else _server_settings(timeouts)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_max_size, init=_init_connection,
                reset=_keep_session, timeout=timeouts.connect_timeout_seconds,
                command_timeout=timeouts.statement_timeout_seconds, server_settings=settings,
                statement_cache_size=0 if pgbouncer else 100)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise _unavailable(exc) from exc
        return cls(pool, listen_url if pgbouncer else (listen_url or url), timeouts,
                   _server_settings(timeouts))

    async def close(self, timeout_seconds: float = CLOSE_TIMEOUT_SECONDS) -> None:
        # An idle connection to a primary that failed over never answers its goodbye.
        timeout_seconds = min(timeout_seconds, self._timeouts.statement_timeout_seconds)
        try:
            await asyncio.wait_for(self._pool.close(), timeout_seconds)
        except TimeoutError:
            # A connection still busy after the grace time: shutdown must not hang on it.
            self._pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self, wait_seconds: float | None = None,
                          ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, checked out within `wait_seconds` (the statement bound by
        default). One whose call timed out is closed before it goes back: it may be
        waiting on a dead socket."""
        with _translated():
            async with asyncio.timeout(wait_seconds or self._timeouts.statement_timeout_seconds):
                conn = await self._pool.acquire()
            try:
                yield conn
            except errors.StoreError as exc:
                if isinstance(exc.__cause__, TimeoutError):
                    await self._hung(conn)
                raise
            finally:
                await self._pool.release(conn, timeout=self._timeouts.statement_timeout_seconds)

    async def _hung(self, conn: asyncpg.Connection) -> None:
        # asyncpg may have closed it already, when its own cancel request went unanswered.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
        now = time.monotonic()
        if now - self._last_timeout < 2 * self._timeouts.statement_timeout_seconds + 1:
            # Two in a row: the server we were talking to is gone (a failover), and every
            # idle connection to it would hang the same way. Replace them all.
            log.warning("database_connections_replaced")
            await self._pool.expire_connections()
        self._last_timeout = now

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        async with self._connection() as conn:
            yield Session(conn)

    @contextlib.asynccontextmanager
    async def transaction(self, *, schema_change: bool = False) -> AsyncIterator[Session]:
        async with self._connection() as conn:
            with _translated():
                async with conn.transaction():
                    if not schema_change:
                        yield Session(conn)
                        return
                    await conn.execute("SET LOCAL statement_timeout = 0")
                    yield Session(conn, SCHEMA_CHANGE_TIMEOUT_SECONDS)

    # One statement is a transaction of its own (PostgreSQL wraps it): BEGIN and COMMIT
    # around it would only add two round trips, and each one waits its turn on a busy loop.
    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]:
        async with self.session() as s:
            return await s.all(query, **params)

    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None:
        async with self.session() as s:
            return await s.one(query, **params)

    async def ping(self, timeout_seconds: float) -> None:
        """One round trip within `timeout_seconds` (the probes' bound, below the pool's)."""
        async with self._connection(timeout_seconds) as conn:
            await Session(conn, timeout_seconds).one("ping")

    async def _listen_notify(
        self, channel: str, callback: Callable[[str], None],
        on_restored: Callable[[], Awaitable[None]] | None = None,
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback(payload)` for every NOTIFY on `channel`; returns `stop`.

        Uses its own connection, not a pool slot: a LISTEN lives as long as its session.
        The connection is pinged every `health_check_seconds`, so a silent death (a
        partition, a failover) is noticed within seconds, not when TCP gives up. A lost
        connection is reopened in the background and `on_restored` awaited: what was
        announced meanwhile was missed, and it is the caller's to catch up.
        """
        lost = asyncio.Event()
        check = self._timeouts.health_check_seconds

        def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        def terminated(_conn: object) -> None:
            lost.set()

        async def open_listener() -> asyncpg.Connection:
            try:
                conn = await asyncpg.connect(
                    self._listen_url, timeout=self._timeouts.connect_timeout_seconds,
                    command_timeout=self._timeouts.statement_timeout_seconds,
                    server_settings=self._server_settings)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                raise _unavailable(exc) from exc
            try:
                await conn.add_listener(channel, notified)
            except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
                conn.terminate()
                raise _unavailable(exc) from exc
            conn.add_termination_listener(terminated)
            return conn

        conn = await open_listener()

        async def alive() -> bool:
            try:
                await conn.fetchval("SELECT 1", timeout=check)
            except (*_UNAVAILABLE, asyncpg.PostgresError):
                return False
            return True

        async def keep_listening() -> None:
            nonlocal conn
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(check):
                        await lost.wait()
                if not lost.is_set() and await alive():
                    continue
                lost.clear()
                conn.remove_termination_listener(terminated)
                conn.terminate()
                log.warning("entries_listener_lost", channel=channel)
                while True:
                    await asyncio.sleep(LISTEN_RETRY_SECONDS)
                    try:
                        conn = await open_listener()
                        break
                    except errors.StoreError:
                        continue
                log.info("entries_listener_restored", channel=channel)
                while on_restored is not None:
                    try:  # on the pool, whose connections may have been lost with this one
                        await on_restored()
                        break
                    except errors.StoreError as exc:
                        log.warning("listener_catch_up_failed", channel=channel,
                                    error=str(exc))
                        await asyncio.sleep(LISTEN_RETRY_SECONDS)

        task = asyncio.create_task(keep_listening(), name="tokend-entries-listener")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            conn.remove_termination_listener(terminated)
            if not conn.is_closed():
                try:
                    await conn.close(timeout=check)
                except (*_UNAVAILABLE, asyncpg.PostgresError):
                    conn.terminate()

        return stop

