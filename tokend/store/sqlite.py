"""The SQLite connector: one aiosqlite connection in WAL mode, the embedded default.

Its codec stores timestamps as REAL UTC epoch seconds (columns named `*_at`, `*_until`) and
lists and objects as JSON text. Other processes (the CLI) may open the same file: WAL lets
them read, BEGIN IMMEDIATE plus a busy timeout makes writers take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from tokend.store import errors, queries

# How long a write waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 10.0

_STATEMENTS = queries.load("sqlite")
_JSON_COLUMNS = frozenset({"scopes", "request", "response", "error", "details", "last_summary",
                           "data", "account_ids"})
_BOOL_COLUMNS = frozenset({"success", "present"})


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value).decode()
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if value is None:
            continue
        if key.endswith(("_at", "_until")):
            out[key] = datetime.fromtimestamp(value, UTC)
        elif key in _JSON_COLUMNS:
            out[key] = orjson.loads(value)
        elif key in _BOOL_COLUMNS:
            out[key] = bool(value)
    return out


def _statements(script: str) -> list[str]:
    """Split a migration file into statements the way SQLite's own tokenizer sees them."""
    found, statement = [], ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            found.append(statement)
            statement = ""
    return found


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" not in str(exc):
            raise
        raise errors.DuplicateKey(str(exc)) from None
    except sqlite3.OperationalError as exc:
        raise errors.StoreError(f"SQLite: {exc}") from exc


class Session:
    """Named statements on the connection (the caller holds the connector's lock)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]:
        args = {key: _encode(value) for key, value in params.items()}
        with _translated():
            return [_decode(row) for row in
                    await self._conn.execute_fetchall(_STATEMENTS[query], args)]

    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None:
        rows = await self.all(query, **params)
        return rows[0] if rows else None

    async def script(self, sql: str) -> None:
        with _translated():
            for statement in _statements(sql):
                await self._conn.execute(statement)


class Connector:
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # One connection: statements from concurrent tasks must not interleave on it.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> Connector:
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise errors.StoreError(f"cannot open SQLite database {path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            await conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a commit is fsynced before it returns, so a power loss or OS crash
            # cannot roll back a saved refresh (a rotated token the provider already
            # switched to). NORMAL in WAL mode only survives a crash of this process.
            await conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            await conn.close()
            raise errors.StoreError(f"cannot open SQLite database {path}: {exc}") from exc
        return cls(conn)

    async def close(self, timeout_seconds: float = BUSY_TIMEOUT_SECONDS) -> None:
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._conn.close()
        except TimeoutError:
            # A statement still waiting on another process's lock: shutdown goes on without
            # it (its thread ends with the process).
            pass

    @contextlib.asynccontextmanager
    async def transaction(self, *, schema_change: bool = False) -> AsyncIterator[Session]:
        async with self._lock:
            with _translated():
                if schema_change:  # a table rebuild must not cascade; checked after
                    await self._conn.execute("PRAGMA foreign_keys = OFF")
                # IMMEDIATE takes the write lock up front, so a read-then-write
                # transaction never fails halfway on another process's lock.
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield Session(self._conn)
                    if schema_change and await self._conn.execute_fetchall(
                            "PRAGMA foreign_key_check"):
                        raise errors.StoreError("a migration left broken foreign keys")
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                finally:
                    if schema_change:
                        await self._conn.execute("PRAGMA foreign_keys = ON")
                await self._conn.execute("COMMIT")

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]:
        async with self._lock:
            return await Session(self._conn).all(query, **params)

    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None:
        async with self._lock:
            return await Session(self._conn).one(query, **params)

    async def ping(self, timeout_seconds: float) -> None:
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.one("ping")
        except TimeoutError as exc:
            raise errors.StoreError(f"SQLite: no answer within {timeout_seconds:g} s") from exc

    listen = None  # one process: the hub sees every entry this process writes
    feed_mode = None
