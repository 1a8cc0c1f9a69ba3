"""What a backend is to the store: a connector that runs named statements, opens
transactions and may listen, and the bounds it keeps. The connectors implement it; the
store's modules are written against it and never against a driver."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """How long the database may keep tokend waiting. A cloud failover or a partition does
    not refuse connections, it leaves them hanging: every call is bounded, and a connection
    that did not answer in time is dropped and replaced (PostgreSQL; see config.example.toml)."""

    connect_timeout_seconds: float = 10.0
    statement_timeout_seconds: float = 10.0  # each statement, pool checkout, BEGIN, COMMIT
    idle_in_transaction_timeout_seconds: float = 30.0  # the server ends a transaction left idle
    health_check_seconds: float = 5.0  # the LISTEN connection is pinged this often


DEFAULT_TIMEOUTS = Timeouts()

# listen(channel, callback, on_restored) -> stop: on_restored runs after a lost connection
# is replaced, for the caller to read back what was announced meanwhile.
Listen = Callable[[str, Callable[[str], None], Callable[[], Awaitable[None]] | None],
                  Awaitable[Callable[[], Awaitable[None]]]]


class Session(Protocol):
    """Named statements on one connection (see sql/queries.sql)."""

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]: ...
    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None: ...
    async def script(self, sql: str) -> None: ...


class Connector(Protocol):
    """A backend: runs named statements, opens transactions, and may listen."""

    dialect: str
    listen: Listen | None
    feed_mode: str | None  # "notify" | "poll" | None, matching `listen`

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]: ...
    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None: ...
    def transaction(
        self, *, schema_change: bool = False,
    ) -> contextlib.AbstractAsyncContextManager[Session]: ...
    async def close(self, timeout_seconds: float) -> None: ...
    async def ping(self, timeout_seconds: float) -> None: ...
