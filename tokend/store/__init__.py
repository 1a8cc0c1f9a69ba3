"""The only code that runs SQL: the domain's queries, once, over a thin connector per
backend (`postgres.Connector`, `sqlite.Connector`) that runs named statements.

Every timestamp crosses this boundary as an aware UTC `datetime`; every secret as an
`ENC:v1:` envelope (see `tokend.crypto`). The store never sees a plaintext token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from tokend.store import queries

_log = structlog.get_logger("tokend.store")

ACTIVE = "active"
REAUTH_REQUIRED = "reauth_required"
DISABLED = "disabled"
DELETED = "deleted"  # a tombstone: tokens and personal fields purged
STATES = (ACTIVE, REAUTH_REQUIRED, DISABLED, DELETED)
MAX_ENTRY_ID = 2**63 - 1  # entry ids are 64-bit on both backends
ENTRIES_CHANNEL = "tokend_entries"  # NOTIFY channel of new entry ids (sql insert_entry)
# Without LISTEN (PgBouncer, no listen_url), new entry ids are polled this often.
POLL_INTERVAL_SECONDS = 0.5
POLL_BATCH = 1000
# Entry ids come from a sequence at INSERT but become visible at COMMIT, so a lower id can
# appear after a higher one was seen: each poll looks this many ids back (each announced once).
POLL_LOOKBACK_IDS = 2000


class StoreError(Exception):
    """A storage problem worth one clear line to the operator."""


class SchemaError(StoreError):
    """The database schema is missing, behind, or ahead of this program."""


class DuplicateKey(StoreError):
    """A row with this unique key already exists (raised by the connectors)."""


class DuplicateAccount(DuplicateKey):
    """An account with this id, or this provider/org/name, already exists."""


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    id: str
    org: str
    provider: str
    name: str
    scopes: tuple[str, ...]
    state: str
    refresh_token: str | None  # None only once deleted
    access_token: str | None
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    last_refresh_at: datetime | None
    consecutive_failures: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    version: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    provider_user_id: str | None = None  # the provider's immutable id (eBay userId)
    provider_user_name: str | None = None  # e.g. the eBay username
    state_reason: str | None = None  # why the account left `active`
    refresh_expiry_notice_days: int | None = None  # the last expiry notice given (30/7/1)

    def public(self) -> dict[str, Any]:
        """Everything an operator may see: no token, not even encrypted."""
        out = dataclasses.asdict(self)
        del out["refresh_token"], out["access_token"]
        out["scopes"] = list(self.scopes)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class NewAccount:
    id: str
    org: str
    provider: str
    name: str
    scopes: tuple[str, ...]
    refresh_token: str
    refresh_expires_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class Success:
    """A provider answer to persist: tokens are envelopes; `refresh_token` None keeps the old."""

    access_token: str
    access_expires_at: datetime
    refresh_token: str | None
    refresh_expires_at: datetime | None
    refreshed_at: datetime
    next_attempt_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: when to try again, the new state when it changes, and until when
    the whole provider pauses when the failure is the provider's credentials."""

    error_code: str
    error_message: str
    next_attempt_at: datetime
    state: str | None = None
    pause_until: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One refresh-log row."""

    account_id: str
    source: str
    started_at: datetime
    finished_at: datetime
    success: bool
    error_code: str | None
    error_message: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One HTTP-log entry: what the terminal, the stream and `/api/logs` show.

    `request` and `response` are already masked when they reach the store.
    """

    action: str
    source: str
    created_at: datetime
    account_id: str | None = None
    org_id: str | None = None
    provider: str | None = None
    environment: str | None = None
    duration_ms: float | None = None
    request: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    message: str | None = None
    details: Mapping[str, Any] | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Worker:
    name: str
    instance: str
    interval_seconds: float
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_status: str | None
    last_summary: Mapping[str, Any] | None

    def stale(self, now: datetime) -> bool:
        """No finished cycle within three intervals."""
        reference = self.last_finished_at or self.last_started_at
        if reference is None:
            return True
        return (now - reference).total_seconds() > 3 * self.interval_seconds


# Bounds for the due rule's coalesce (see sql/queries.sql): beyond any real timestamp.
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_FAR_PAST = datetime(1970, 1, 2, tzinfo=UTC)


def _unmatchable(*values: object) -> bool:
    """Text cannot hold NUL on PostgreSQL (it refuses the parameter) and tokend never stores
    one: no row can match such a value, so a lookup by one finds nothing on either backend."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


def due_params(now: datetime, expiry_threshold_seconds: float, max_age_seconds: float,
               ) -> dict[str, Any]:
    """The parameters of the due rule (sql/queries.sql, fragment `due`)."""
    return {"now": now, "far_future": _FAR_FUTURE, "far_past": _FAR_PAST,
            "expiring_before": now + timedelta(seconds=expiry_threshold_seconds),
            "refreshed_before": now - timedelta(seconds=max_age_seconds)}


def _account(row: Mapping[str, Any]) -> Account:
    return Account(**{**row, "scopes": tuple(row["scopes"])})


def _maybe_account(row: Mapping[str, Any] | None) -> Account | None:
    return None if row is None else _account(row)


# Field names once, not per save: dataclasses.asdict deep-copies and walks every field.
_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(Entry) if f.name != "id")
_SUCCESS_FIELDS = tuple(f.name for f in dataclasses.fields(Success))
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(Attempt))


def _entry_params(entry: Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in _ENTRY_FIELDS}


def _success_params(outcome: Success) -> dict[str, Any]:
    return {name: getattr(outcome, name) for name in _SUCCESS_FIELDS}


def _attempt_params(attempt: Attempt) -> dict[str, Any]:
    return {name: getattr(attempt, name) for name in _ATTEMPT_FIELDS}


@dataclasses.dataclass(frozen=True, slots=True)
class Save:
    """One refresh's result to persist: the arguments of `Store.finish`."""

    claimed: Account
    owner: str
    outcome: Success | Failure
    attempt: Attempt
    entry: Entry
    now: datetime


class Store:
    """What the daemon needs from a database. Each method is one short transaction (or one
    statement), and no method holds a connection while it waits on anything else."""

    def __init__(self, db: Connector) -> None:
        self._db = db
        self.backend = db.dialect

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        """A trivial round trip; raises StoreError when the database is unreachable."""
        await self._db.one("ping")

    # -- schema -----------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        """Apply every pending migration in one transaction under the migration lock, so an
        upgrade is whole or not at all and concurrent runs take turns; returns their names."""
        async with self._db.transaction(schema_change=True) as tx:
            await tx.one("lock_migrations")
            await tx.one("create_migrations_table")
            applied = {row["name"] for row in await tx.all("applied_migrations")}
            todo = queries.pending(self.backend, applied)
            for name, script in todo:
                await tx.script(script)
                await tx.one("record_migration", name=name, now=datetime.now(UTC))
        return [name for name, _ in todo]

    async def check_schema(self) -> None:
        """Raise SchemaError naming `tokend migrate` unless the schema is exactly current."""
        applied = None
        if (await self._db.one("migrations_table_exists"))["present"]:
            applied = {row["name"] for row in await self._db.all("applied_migrations")}
        queries.check_applied(self.backend, applied)

    # -- accounts ---------------------------------------------------------------------
    async def add_account(self, new: NewAccount, now: datetime) -> Account:
        try:
            row = await self._db.one("insert_account", **dataclasses.asdict(new), now=now)
        except DuplicateKey:
            raise DuplicateAccount(
                f"an account with id {new.id!r} or provider/org/name "
                f"{new.provider}/{new.org}/{new.name} already exists") from None
        return _account(row)

    async def get_account(self, account_id: str) -> Account | None:
        if _unmatchable(account_id):
            return None
        return _maybe_account(await self._db.one("get_account", id=account_id))

    async def list_accounts(self, org: str | None = None) -> list[Account]:
        return [_account(row) for row in await self._db.all("list_accounts", org=org)]

    async def reauth_account(
        self, account_id: str, refresh_token: str, refresh_expires_at: datetime | None,
        now: datetime,
    ) -> Account | None:
        """New refresh token, state back to active, failures cleared, due now."""
        return _maybe_account(await self._db.one(
            "reauth_account", id=account_id, refresh_token=refresh_token,
            refresh_expires_at=refresh_expires_at, now=now))

    async def set_state(self, account_id: str, state: str, now: datetime) -> Account | None:
        return _maybe_account(await self._db.one("set_state", id=account_id, state=state,
                                                 now=now))

    async def account_counts(self) -> dict[str, int]:
        """Accounts by state."""
        counts = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: row["n"] for row in await self._db.all("account_counts")})
        return counts

    async def active_by_provider(self) -> dict[str, int]:
        return {row["provider"]: row["n"] for row in await self._db.all("active_by_provider")}

    # -- the refresh cycle ------------------------------------------------------------
    async def claim_due(
        self, owner: str, now: datetime, *, limit: int, lease_seconds: float,
        expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> list[Account]:
        """Lease up to `limit` due accounts (sql/queries.sql, fragment `due`) to `owner` in
        one statement and return them. Claiming bumps `version`, sets the lease and moves
        next_attempt_at to the lease expiry, so a crashed owner's accounts come due again
        once the lease runs out."""
        rows = await self._db.all(
            "claim_due", owner=owner, limit=limit,
            lease_until=now + timedelta(seconds=lease_seconds),
            **due_params(now, expiry_threshold_seconds, max_age_seconds))
        return [_account(row) for row in rows]

    async def count_due(
        self, now: datetime, *, expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> int:
        row = await self._db.one("count_due",
                                 **due_params(now, expiry_threshold_seconds, max_age_seconds))
        return row["n"]

    async def claim_account(
        self, account_id: str, owner: str, now: datetime, *, lease_seconds: float,
    ) -> Account | None:
        """Lease one account regardless of due time (manual refresh); None if leased/absent."""
        if _unmatchable(account_id):
            return None
        return _maybe_account(await self._db.one(
            "claim_account", id=account_id, owner=owner, now=now,
            lease_until=now + timedelta(seconds=lease_seconds)))

    async def finish(
        self, claimed: Account, owner: str, outcome: Success | Failure,
        attempt: Attempt, entry: Entry, now: datetime,
    ) -> tuple[bool, Entry]:
        """Write the outcome, the refresh-log row and the entry in one transaction.

        The outcome (and the provider pause it may carry) applies only while
        `claimed.version` and the lease are still `owner`'s: any other write to the row
        since the claim (a new refresh token, another refresher) bumped the version. The log
        rows are written either way. Returns (applied, entry with id).
        """
        async with self._db.transaction() as tx:
            return await self.write_finish(tx, Save(claimed, owner, outcome, attempt, entry,
                                                    now))

    async def finish_many(self, saves: Sequence[Save]) -> list[tuple[bool, Entry]]:
        """`finish` for several saves in ONE transaction (one commit, one fsync): all of
        them are saved or none. Each keeps its own lease and version guard."""
        async with self._db.transaction() as tx:
            return [await self.write_finish(tx, save) for save in saves]

    async def write_finish(self, tx: Session, save: Save) -> tuple[bool, Entry]:
        """One save's writes on the caller's transaction: what `finish` and `finish_many`
        commit. Anything else a save must write atomically with the account belongs here."""
        claimed, outcome = save.claimed, save.outcome
        guard = {"id": claimed.id, "version": claimed.version, "owner": save.owner,
                 "now": save.now}
        if isinstance(outcome, Success):
            applied = await tx.one("finish_success", **guard, **_success_params(outcome))
        else:
            applied = await tx.one(
                "finish_failure", **guard, error_code=outcome.error_code,
                next_attempt_at=outcome.next_attempt_at, state=outcome.state)
            if applied is not None and outcome.pause_until is not None:
                await tx.one("pause_provider", provider=claimed.provider,
                             until=outcome.pause_until, reason=outcome.error_code)
        await tx.one("insert_attempt", **_attempt_params(save.attempt))
        row = await tx.one("insert_entry", **_entry_params(save.entry))
        return applied is not None, dataclasses.replace(save.entry, id=row["id"])

    async def next_due_at(self, now: datetime) -> datetime | None:
        """Earliest next_attempt_at of an active account of an unpaused provider."""
        row = await self._db.one("next_due_at", now=now)
        return None if row is None else row["next_attempt_at"]

    async def pause_provider(self, provider: str, until: datetime, reason: str) -> None:
        await self._db.one("pause_provider", provider=provider, until=until, reason=reason)

    async def paused_providers(self, now: datetime) -> dict[str, datetime]:
        rows = await self._db.all("paused_providers", now=now)
        return {row["provider"]: row["paused_until"] for row in rows}

    # -- logs -------------------------------------------------------------------------
    async def add_entry(self, entry: Entry) -> Entry:
        """Store a log entry that is not part of a refresh; returns it with its id."""
        row = await self._db.one("insert_entry", **_entry_params(entry))
        return dataclasses.replace(entry, id=row["id"])

    async def list_entries(
        self, *, source: Sequence[str] | None = None, action: str | None = None,
        account_id: str | None = None, org: str | None = None,
        after_id: int | None = None, before_id: int | None = None, limit: int = 200,
    ) -> list[Entry]:
        """Entries, newest first, except with `after_id`: then the oldest after it first."""
        sources = None if source is None else list(source)
        if _unmatchable(action, account_id, org, *(sources or ())):
            return []
        where = {"action": action, "account_id": account_id, "org": org, "limit": limit,
                 "sources": sources, "all_sources": sources is None}
        if after_id is not None:
            rows = await self._db.all("list_entries_after", after_id=after_id, **where)
        else:
            rows = await self._db.all("list_entries_before", before_id=before_id, **where)
        return [Entry(**row) for row in rows]

    async def get_entries(self, ids: Sequence[int]) -> list[Entry]:
        """These entries, oldest first (missing ids are skipped)."""
        return [Entry(**row) for row in await self._db.all("get_entries", ids=list(ids))]

    async def list_attempts(self, account_id: str, limit: int = 50) -> list[Attempt]:
        """An account's refresh-log rows, newest first."""
        rows = await self._db.all("list_attempts", account_id=account_id, limit=limit)
        return [Attempt(**row) for row in rows]

    async def prune_logs(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` HTTP-log and refresh-log rows older than `before` each."""
        async with self._db.transaction() as tx:
            entries = await tx.all("prune_http_log", before=before, limit=limit)
            attempts = await tx.all("prune_refresh_log", before=before, limit=limit)
        return len(entries) + len(attempts)

    @property
    def can_listen(self) -> bool:
        """Whether other processes' entries can be heard (`feed_mode` is not None)."""
        return self._db.feed_mode is not None

    @property
    def feed_mode(self) -> str | None:
        """How other processes' entries are heard: "notify" (PostgreSQL LISTEN), "poll"
        (PostgreSQL behind PgBouncer without a direct `listen_url`), or None (SQLite: one
        process sees its own writes)."""
        return self._db.feed_mode

    async def listen_entries(
        self, callback: Callable[[int], None],
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback(entry_id)` for every entry any replica commits; returns `stop`.
        Only where `can_listen`."""
        if self._db.feed_mode == "poll":
            return await self._poll_entries(callback)
        if self._db.listen is None:
            raise StoreError(f"the {self.backend} store cannot listen")
        return await self._db.listen(ENTRIES_CHANNEL, lambda payload: callback(int(payload)))

    async def _poll_entries(
        self, callback: Callable[[int], None],
    ) -> Callable[[], Awaitable[None]]:
        """`listen_entries` by reading new http_log ids every POLL_INTERVAL_SECONDS."""
        row = await self._db.one("latest_entry_id")
        high = row["id"] or 0
        announced: set[int] = set()

        async def poll_once() -> None:
            nonlocal high
            after = max(high - POLL_LOOKBACK_IDS, 0)
            while True:
                rows = await self._db.all("entry_ids_after", after_id=after, limit=POLL_BATCH)
                for r in rows:
                    if r["id"] not in announced:
                        announced.add(r["id"])
                        callback(r["id"])
                if rows:
                    after = rows[-1]["id"]
                    high = max(high, after)
                if len(rows) < POLL_BATCH:
                    break
            floor = high - POLL_LOOKBACK_IDS
            announced.difference_update([i for i in announced if i <= floor])

        async def poll() -> None:
            failing = False
            while True:
                await asyncio.sleep(POLL_INTERVAL_SECONDS)
                try:
                    await poll_once()
                except StoreError as exc:
                    if not failing:
                        _log.warning("entries_listener_lost", error=str(exc))
                    failing = True
                    continue
                if failing:
                    _log.info("entries_listener_restored")
                    failing = False

        task = asyncio.create_task(poll(), name="tokend-entries-poller")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return stop

    # -- workers ----------------------------------------------------------------------
    async def worker_started(
        self, name: str, instance: str, interval_seconds: float, now: datetime,
    ) -> None:
        await self._db.one("worker_started", name=name, instance=instance,
                           interval_seconds=interval_seconds, now=now)

    async def worker_finished(
        self, name: str, instance: str, now: datetime, status: str,
        summary: Mapping[str, Any],
    ) -> None:
        await self._db.one("worker_finished", name=name, instance=instance, now=now,
                           status=status, summary=summary)

    async def list_workers(self) -> list[Worker]:
        return [Worker(**row) for row in await self._db.all("list_workers")]

    # -- key rotation -----------------------------------------------------------------
    async def accounts_to_rotate(
        self, current_prefix: str, limit: int, *, after_id: str | None = None,
    ) -> list[Account]:
        """Accounts with a secret not starting with `current_prefix`, by id, after
        `after_id`."""
        rows = await self._db.all("accounts_to_rotate", prefix=current_prefix, limit=limit,
                                  after_id=after_id)
        return [_account(row) for row in rows]

    async def replace_secrets(
        self, account_id: str, version: int, refresh_token: str, access_token: str | None, *,
        now: datetime,
    ) -> bool:
        """Swap re-encrypted secrets if the row is still at `version` and not leased."""
        row = await self._db.one("replace_secrets", id=account_id, version=version,
                                 refresh_token=refresh_token, access_token=access_token,
                                 now=now)
        return row is not None


class Session(Protocol):
    """Named statements on one connection (see sql/queries.sql)."""

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]: ...
    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None: ...
    async def script(self, sql: str) -> None: ...


class Connector(Protocol):
    """A backend: runs named statements, opens transactions, and may listen."""

    dialect: str
    listen: Callable[[str, Callable[[str], None]],
                     Awaitable[Callable[[], Awaitable[None]]]] | None
    feed_mode: str | None  # "notify" | "poll" | None, matching `listen`

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]: ...
    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None: ...
    def transaction(
        self, *, schema_change: bool = False,
    ) -> contextlib.AbstractAsyncContextManager[Session]: ...
    async def close(self) -> None: ...


async def connect(url: str, *, pool_max_size: int = 10, pgbouncer: bool = False,
                  listen_url: str | None = None) -> Store:
    """Open the store that `url` names; the caller owns it and must `close()` it.
    `pgbouncer` and `listen_url` apply to PostgreSQL (see `postgres.Connector.open`)."""
    if url.startswith("sqlite://"):
        from tokend.store import sqlite

        return Store(await sqlite.Connector.open(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        from tokend.store import postgres

        return Store(await postgres.Connector.open(url, pool_max_size=pool_max_size,
                                                   pgbouncer=pgbouncer, listen_url=listen_url))
    raise StoreError(f"unsupported database url scheme: {url.split(':', 1)[0]!r}")


@contextlib.asynccontextmanager
async def open(
    url: str, *, pool_max_size: int = 10, check_schema: bool = True, pgbouncer: bool = False,
    listen_url: str | None = None,
) -> AsyncIterator[Store]:
    """The store for `url`, schema checked, closed on the way out."""
    db = await connect(url, pool_max_size=pool_max_size, pgbouncer=pgbouncer,
                       listen_url=listen_url)
    try:
        if check_schema:
            await db.check_schema()
        yield db
    finally:
        await db.close()
