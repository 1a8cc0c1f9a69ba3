"""The only code that runs SQL: the domain's queries, once, over a thin connector per
backend (`postgres.Connector`, `sqlite.Connector`) that runs named statements.

Every timestamp crosses this boundary as an aware UTC `datetime`; every secret as an
`ENC:v1:` envelope (see `tokend.crypto`). The store never sees a plaintext token.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import structlog

from tokend import model, vocabulary
from tokend.store import queries, signing_keys

_log = structlog.get_logger("tokend.store")

MAX_ENTRY_ID = 2**63 - 1  # entry ids are 64-bit on both backends
ENTRIES_CHANNEL = "tokend_entries"  # NOTIFY channel of new entry ids (sql insert_entry)
EVENTS_CHANNEL = "tokend_events"  # NOTIFY channel of new outbox events (sql insert_event)
# Without LISTEN (PgBouncer, no listen_url), new entry ids are polled this often.
POLL_INTERVAL_SECONDS = 0.5
POLL_BATCH = 1000
# Entry ids come from a sequence at INSERT but become visible at COMMIT, so a lower id can
# appear after a higher one was seen: each poll looks this many ids back (each announced once).
POLL_LOOKBACK_IDS = 2000


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


class StoreError(Exception):
    """A storage problem worth one clear line to the operator."""


class SchemaError(StoreError):
    """The database schema is missing, behind, or ahead of this program."""


class DuplicateKey(StoreError):
    """A row with this unique key already exists (raised by the connectors)."""


class DuplicateAccount(DuplicateKey):
    """An account with this id, or this provider/org/name, already exists."""


# Builds an account's events and log entry for a change the store makes in bulk.
Describe = Callable[[model.Account], tuple[Sequence[model.Event], model.Entry]]


def _notice_params(now: datetime) -> dict[str, Any]:
    return {"now": now, **{f"within_{days}": now + timedelta(days=days)
                           for days in model.REFRESH_NOTICE_DAYS}}


# Bounds for the due rule's coalesce (see sql/queries.sql): beyond any real timestamp.
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_FAR_PAST = datetime(1970, 1, 2, tzinfo=UTC)
# next_attempt_at of an idle account (demand-aware scheduling): due only once an app asks.
PARKED = datetime(9000, 1, 1, tzinfo=UTC)


def _unmatchable(*values: object) -> bool:
    """Text cannot hold NUL on PostgreSQL (it refuses the parameter) and tokend never stores
    one: no row can match such a value, so a lookup by one finds nothing on either backend."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


def due_params(now: datetime, expiry_threshold_seconds: float, max_age_seconds: float,
               reserved: Sequence[str] = (), idle_after: Mapping[str, float] | None = None,
               ) -> dict[str, Any]:
    """The parameters of the due rule (sql/queries.sql, fragment `due`); `reserved` names
    the providers past their daily budget's reserve line, `idle_after` the demand-aware
    providers and their idle_after_seconds."""
    return {"now": now, "far_future": _FAR_FUTURE, "far_past": _FAR_PAST,
            "expiring_before": now + timedelta(seconds=expiry_threshold_seconds),
            "refreshed_before": now - timedelta(seconds=max_age_seconds),
            "reserved": list(reserved), **_idle_params(idle_after)}


def _idle_params(idle_after: Mapping[str, float] | None) -> dict[str, Any]:
    pairs = sorted((idle_after or {}).items())
    return {"idle_providers": [p for p, _ in pairs],
            "idle_seconds": [float(s) for _, s in pairs]}


async def emit(tx: Session, events: Sequence[model.Event], now: datetime) -> None:
    """Write `events` to the outbox inside the transaction `tx` that makes their change."""
    for event in events:
        await tx.one("insert_event", type=event.type, data=event.data, created_at=now)


async def _described(
    tx: Session, rows: Sequence[Mapping[str, Any]], now: datetime,
    describe: Describe,
) -> list[model.Entry]:
    """Write each changed account's events and entry in `tx`; the entries with their ids."""
    entries = []
    for row in rows:
        events, entry = describe(_account(row))
        await emit(tx, events, now)
        entries.append(await _stored(tx, entry))
    return entries


async def _forget_links(tx: Session, provider: str, provider_user_id: str) -> None:
    """Remove the connect links this provider user signed in through, and empty their log
    entries: some name the user, and none need carry an account id."""
    for row in await tx.all("forget_provider_user_links", provider=provider,
                            provider_user_id=provider_user_id):
        await tx.all("purge_link_entries", link_id=row["id"])


def utc_day(moment: datetime) -> str:
    """The UTC day a call counts against, as the budget tables store it."""
    return moment.astimezone(UTC).date().isoformat()


def _account(row: Mapping[str, Any]) -> model.Account:
    return model.Account(**{**row, "scopes": tuple(row["scopes"])})


def _maybe_account(row: Mapping[str, Any] | None) -> model.Account | None:
    return None if row is None else _account(row)


# Field names once, not per save: dataclasses.asdict deep-copies and walks every field.
_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(model.Entry) if f.name != "id")
# What finish_successes writes; the events go to the outbox.
_SUCCESS_FIELDS = tuple(f.name for f in dataclasses.fields(model.Success) if f.name != "events")
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(model.Attempt))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _row(record: Any, fields: Sequence[str], **extra: Any) -> dict[str, Any]:
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


async def _store_entries(db: Session | Connector, entries: Sequence[model.Entry],
                         ) -> list[model.Entry]:
    """Insert log entries in one statement; returns them with their ids, in order."""
    rows = [_row(entry, _ENTRY_FIELDS, n=n) for n, entry in enumerate(entries)]
    ids = sorted(row["id"] for row in await db.all("insert_entries", rows=rows))
    return [dataclasses.replace(e, id=i) for e, i in zip(entries, ids, strict=True)]


async def _stored(db: Session | Connector, entry: model.Entry) -> model.Entry:
    """Insert a log entry; returns it with its id."""
    return (await _store_entries(db, [entry]))[0]


# The sort keys of the console's accounts table and the statement walking each one's index.
_PAGES: dict[tuple[str, bool], Callable[[Session, dict[str, Any]],
                                        Awaitable[list[Mapping[str, Any]]]]] = {
    ("name", False): lambda db, p: db.all("console_page_name_asc", **p),
    ("name", True): lambda db, p: db.all("console_page_name_desc", **p),
    ("next_attempt_at", False): lambda db, p: db.all("console_page_next_attempt_asc", **p),
    ("next_attempt_at", True): lambda db, p: db.all("console_page_next_attempt_desc", **p),
    ("consecutive_failures", False): lambda db, p: db.all("console_page_failures_asc", **p),
    ("consecutive_failures", True): lambda db, p: db.all("console_page_failures_desc", **p),
    ("access_expires_at", False): lambda db, p: db.all("console_page_access_expiry_asc", **p),
    ("access_expires_at", True): lambda db, p: db.all("console_page_access_expiry_desc", **p),
    ("refresh_expires_at", False): lambda db, p: db.all("console_page_refresh_expiry_asc", **p),
    ("refresh_expires_at", True): lambda db, p: db.all("console_page_refresh_expiry_desc",
                                                        **p),
    ("last_refresh_at", False): lambda db, p: db.all("console_page_last_refresh_asc", **p),
    ("last_refresh_at", True): lambda db, p: db.all("console_page_last_refresh_desc", **p),
}
SORT_KEYS = tuple(dict.fromkeys(key for key, _ in _PAGES))
NEVER = _FAR_FUTURE  # an absent expiry's sort value (sql fragment `never`)


class _NewEntryIds:
    """Entry ids any replica committed, each handed to `callback` once: announced by NOTIFY
    (`seen`), or read back from http_log (`catch_up`) by the poller behind PgBouncer and
    after a LISTEN connection was replaced. Ids come from a sequence at INSERT but become
    visible at COMMIT, so a lower id can appear after a higher one: each read looks
    POLL_LOOKBACK_IDS back."""

    def __init__(self, db: Connector, callback: Callable[[int], None], start: int) -> None:
        self._db, self._callback = db, callback
        self._start = self._high = start  # ids up to `start` were there before: history
        self._announced: set[int] = set()

    def seen(self, entry_id: int) -> None:
        if entry_id in self._announced:
            return
        self._announced.add(entry_id)
        self._high = max(self._high, entry_id)
        if len(self._announced) > 2 * POLL_LOOKBACK_IDS:
            self._forget_old()
        self._callback(entry_id)

    def _forget_old(self) -> None:
        floor = self._high - POLL_LOOKBACK_IDS
        self._announced.difference_update([i for i in self._announced if i <= floor])

    async def catch_up(self) -> None:
        after = max(self._high - POLL_LOOKBACK_IDS, self._start)
        while True:
            rows = await self._db.all("entry_ids_after", after_id=after, limit=POLL_BATCH)
            for r in rows:
                self.seen(r["id"])
            if rows:
                after = rows[-1]["id"]
            if len(rows) < POLL_BATCH:
                break
        self._forget_old()

    async def poll(self) -> Callable[[], Awaitable[None]]:
        """`catch_up` every POLL_INTERVAL_SECONDS, in a task; returns `stop`."""

        async def poll() -> None:
            failing = False
            while True:
                await asyncio.sleep(POLL_INTERVAL_SECONDS)
                try:
                    await self.catch_up()
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


class Store(signing_keys.SigningKeys):
    """What the daemon needs from a database. Each method is one short transaction (or one
    statement), and no method holds a connection while it waits on anything else."""

    def __init__(self, db: Connector) -> None:
        self._db = db
        self.backend = db.dialect
        # Claims of accounts whose answer never came: (owner, lease expiry), see `_claim`.
        self._claims_in_doubt: list[tuple[str, datetime]] = []
        self._last_lease_until: dict[str, datetime] = {}  # owner -> its latest claim's

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Close every connection; one still busy after `timeout_seconds` is cut."""
        await self._db.close(timeout_seconds)

    async def ping(self, timeout_seconds: float = 1.0) -> None:
        """A trivial round trip; raises StoreError when the database is unreachable or does
        not answer within `timeout_seconds` (the connection is then replaced)."""
        await self._db.ping(timeout_seconds)

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
    async def add_account(self, new: model.NewAccount, now: datetime) -> model.Account:
        try:
            row = await self._db.one("insert_account", **dataclasses.asdict(new), now=now)
        except DuplicateKey:
            raise DuplicateAccount(
                f"an account with id {new.id!r} or provider/org/name "
                f"{new.provider}/{new.org}/{new.name} already exists") from None
        return _account(row)

    async def get_account(self, account_id: str) -> model.Account | None:
        if _unmatchable(account_id):
            return None
        return _maybe_account(await self._db.one("get_account", id=account_id))

    async def get_accounts(self, account_ids: Sequence[str]) -> list[model.Account]:
        """These accounts, in one query (missing ids are skipped)."""
        ids = [i for i in account_ids if not _unmatchable(i)]
        if not ids:
            return []
        return [_account(row) for row in await self._db.all("get_accounts", ids=ids)]

    async def account_versions(self, account_ids: Sequence[str]) -> dict[str, int]:
        """id -> version of these accounts (missing ids are left out)."""
        ids = [i for i in account_ids if not _unmatchable(i)]
        if not ids:
            return {}
        return {row["id"]: row["version"]
                for row in await self._db.all("account_versions", ids=ids)}

    async def list_accounts(self, org: str | None = None) -> list[model.Account]:
        return [_account(row) for row in await self._db.all("list_accounts", org=org)]

    async def reauth_account(
        self, account_id: str, refresh_token: str, refresh_expires_at: datetime | None,
        now: datetime,
    ) -> model.Account | None:
        """New refresh token, state back to active, failures cleared, due now."""
        return _maybe_account(await self._db.one(
            "reauth_account", id=account_id, refresh_token=refresh_token,
            refresh_expires_at=refresh_expires_at, now=now))

    async def set_state(self, account_id: str, state: str, now: datetime) -> model.Account | None:
        return _maybe_account(await self._db.one("set_state", id=account_id, state=state,
                                                 now=now))

    async def account_counts(self) -> dict[str, int]:
        """Accounts by state."""
        counts = dict.fromkeys(model.STATES, 0)
        counts.update({row["state"]: row["n"] for row in await self._db.all("account_counts")})
        return counts

    async def active_by_provider(self, org: str | None = None) -> dict[str, int]:
        return {row["provider"]: row["n"]
                for row in await self._db.all("active_by_provider", org=org)}

    async def failing_counts(self) -> dict[str, int]:
        """Active accounts with consecutive failures, by their last error code."""
        return {row["error_code"]: row["n"] for row in await self._db.all("failing_counts")}

    # -- the refresh cycle ------------------------------------------------------------
    async def claim_due(
        self, owner: str, now: datetime, *, limit: int, lease_seconds: float,
        expiry_threshold_seconds: float, max_age_seconds: float, reserved: Sequence[str] = (),
        idle_after: Mapping[str, float] | None = None,
    ) -> list[model.Account]:
        """Lease up to `limit` due accounts (sql/queries.sql, fragment `due`) to `owner` in
        one statement and return them. Claiming bumps `version`, sets the lease and moves
        next_attempt_at to the lease expiry, so a crashed owner's accounts come due again
        once the lease runs out."""
        rows = await self._claim(
            "claim_due", lease_seconds, owner=owner, limit=limit,
            **due_params(now, expiry_threshold_seconds, max_age_seconds, reserved, idle_after))
        return [_account(row) for row in rows]

    async def count_due(
        self, now: datetime, *, expiry_threshold_seconds: float, max_age_seconds: float,
        reserved: Sequence[str] = (), idle_after: Mapping[str, float] | None = None,
    ) -> int:
        row = await self._db.one("count_due", **due_params(
            now, expiry_threshold_seconds, max_age_seconds, reserved, idle_after))
        return row["n"]

    async def claim_account(
        self, account_id: str, owner: str, now: datetime, *, lease_seconds: float,
    ) -> model.Account | None:
        """Lease one account regardless of due time (manual refresh); None if leased/absent."""
        if _unmatchable(account_id):
            return None
        rows = await self._claim("claim_account", lease_seconds, owner=owner, now=now,
                                 id=account_id)
        return _account(rows[0]) if rows else None

    async def claim_account_version(
        self, account_id: str, version: int, owner: str, now: datetime, *,
        lease_seconds: float,
    ) -> model.Account | None:
        """`claim_account`, only while the row is still at `version`; None otherwise."""
        if _unmatchable(account_id):
            return None
        rows = await self._claim("claim_account_version", lease_seconds, owner=owner, now=now,
                                 id=account_id, version=version)
        return _account(rows[0]) if rows else None

    async def _claim(self, statement: str, lease_seconds: float, /,
                     **params: Any) -> list[Mapping[str, Any]]:
        """Run a claim of accounts (`params`: the statement's, `owner` and `now` among them).
        A claim whose answer is lost (the connection died after its commit) may have leased
        rows that nobody here works on: before the next claim, they are given back, due at
        once, instead of waiting out their lease. No other claim of this store for the same
        owner has the same lease expiry, so (owner, expiry) names that claim's rows."""
        owner, now = params["owner"], params["now"]
        for doubt in list(self._claims_in_doubt):
            doubt_owner, doubt_until = doubt
            released = await self._db.all("release_claim", owner=doubt_owner,
                                          lease_until=doubt_until, now=now)
            if released:
                _log.warning("claim_released", owner=doubt_owner, accounts=len(released))
            with contextlib.suppress(ValueError):  # a concurrent claim gave it back too
                self._claims_in_doubt.remove(doubt)
        lease_until = now + timedelta(seconds=lease_seconds)
        if (last := self._last_lease_until.get(owner)) is not None and lease_until <= last:
            lease_until = last + timedelta(microseconds=1)
        self._last_lease_until[owner] = lease_until
        try:
            return await self._db.all(statement, lease_until=lease_until, **params)
        except StoreError:
            self._claims_in_doubt.append((owner, lease_until))
            raise

    async def finish(
        self, claimed: model.Account, owner: str, outcome: model.Success | model.Failure,
        attempt: model.Attempt, entry: model.Entry, now: datetime,
    ) -> tuple[bool, model.Entry]:
        """Write the outcome, the refresh-log row and the entry in one transaction.

        The outcome (and the provider pause it may carry) applies only while
        `claimed.version` and the lease are still `owner`'s: any other write to the row
        since the claim (a new refresh token, another refresher) bumped the version. The log
        rows are written either way. Returns (applied, entry with id).
        """
        [result] = await self.finish_many([model.Save(claimed, owner, outcome, attempt, entry,
                                                      now)])
        return result

    async def finish_many(self, saves: Sequence[model.Save]) -> list[tuple[bool, model.Entry]]:
        """`finish` for several saves in ONE transaction (one commit, one fsync): all of
        them are saved or none. Each keeps its own lease and version guard."""
        async with self._db.transaction() as tx:
            return await self.write_finishes(tx, saves)

    async def write_finishes(
        self, tx: Session, saves: Sequence[model.Save],
    ) -> list[tuple[bool, model.Entry]]:
        """The saves' writes on the caller's transaction: what `finish` and `finish_many`
        commit, a statement per kind of write rather than per save (a round trip each waits
        its turn on a busy event loop). Anything else a save must write atomically with the
        account belongs here."""
        applied: set[str] = set()
        succeeded = [s for s in saves if isinstance(s.outcome, model.Success)]
        if succeeded:
            rows = [_row(s.outcome, _SUCCESS_FIELDS, id=s.claimed.id, version=s.claimed.version,
                         owner=s.owner, now=s.now) for s in succeeded]
            applied = {row["id"] for row in await tx.all("finish_successes", rows=rows)}
        for save in saves:  # failures are few, and one may pause its provider
            claimed, outcome = save.claimed, save.outcome
            if isinstance(outcome, model.Failure) and await tx.one(
                    "finish_failure", id=claimed.id, version=claimed.version, owner=save.owner,
                    now=save.now, error_code=outcome.error_code,
                    next_attempt_at=outcome.next_attempt_at, state=outcome.state):
                applied.add(claimed.id)
                if outcome.pause_until is not None:
                    await tx.one("pause_provider", provider=claimed.provider,
                                 until=outcome.pause_until, reason=outcome.error_code)
            if claimed.id in applied:
                await emit(tx, outcome.events, save.now)
        # The token endpoint was called (the entry has a request): the call counts.
        calls = collections.Counter((s.claimed.provider, utc_day(s.attempt.started_at))
                                    for s in saves if s.entry.request is not None)
        for (provider, day), n in sorted(calls.items()):
            await tx.one("count_token_calls", provider=provider,
                         grant_type=model.REFRESH_TOKEN_GRANT, day=day, calls=n)
        entries = await _store_entries(tx, [s.entry for s in saves])
        results = [(s.claimed.id in applied, e) for s, e in zip(saves, entries, strict=True)]
        # With their entries' ids. A save already written (its save_id is unique) fails here.
        await tx.all("insert_attempts", rows=[
            _row(s.attempt, _ATTEMPT_FIELDS, applied=ok, entry_id=e.id)
            for s, (ok, e) in zip(saves, results, strict=True)])
        return results

    async def saved(self, save_id: str) -> tuple[bool, int] | None:
        """Whether the save `save_id` committed: (whether the account took it, the id of its
        HTTP-log entry), or None. A save whose COMMIT was cut off (the connection or the
        server died) may have landed; its retry asks this before writing it all again."""
        row = await self._db.one("saved_attempt", save_id=save_id)
        return None if row is None else (bool(row["applied"]), row["entry_id"])

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
    async def add_entry(self, entry: model.Entry) -> model.Entry:
        """Store a log entry that is not part of a refresh; returns it with its id."""
        return await _stored(self._db, entry)

    async def list_entries(
        self, *, source: Sequence[str] | None = None, action: str | None = None,
        account_id: str | None = None, org: str | None = None,
        after_id: int | None = None, before_id: int | None = None, limit: int = 200,
    ) -> list[model.Entry]:
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
        return [model.Entry(**row) for row in rows]

    async def get_entries(self, ids: Sequence[int]) -> list[model.Entry]:
        """These entries, oldest first (missing ids are skipped)."""
        return [model.Entry(**row) for row in await self._db.all("get_entries", ids=list(ids))]

    async def list_attempts(self, account_id: str, limit: int = 50) -> list[model.Attempt]:
        """An account's refresh-log rows, newest first."""
        rows = await self._db.all("list_attempts", account_id=account_id, limit=limit)
        return [model.Attempt(**row) for row in rows]

    async def prune_logs(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` rows of each history older than `before`: HTTP-log and
        refresh-log rows, applied eBay notification ids and connect links."""
        async with self._db.transaction() as tx:
            entries = await tx.all("prune_http_log", before=before, limit=limit)
            attempts = await tx.all("prune_refresh_log", before=before, limit=limit)
            notices = await tx.all("prune_ebay_notifications", before=before, limit=limit)
            links = await tx.all("prune_connect_links", before=before, limit=limit)
        return len(entries) + len(attempts) + len(notices) + len(links)

    async def list_events(self, *, after_id: int = 0, limit: int = 100) -> list[model.Event]:
        """Outbox events after `after_id`, oldest first."""
        rows = await self._db.all("list_events", after_id=after_id, limit=limit)
        return [model.Event(**row) for row in rows]

    # -- webhooks: the outbox's deliveries ---------------------------------------------
    async def dispatch_events(
        self, targets: Callable[[str], Sequence[str]], now: datetime, *, limit: int,
    ) -> int:
        """Fan up to `limit` undispatched events out to the endpoints `targets(type)` names,
        in one transaction (replicas skip each other's batches); returns how many."""
        async with self._db.transaction() as tx:
            rows = await tx.all("dispatch_events", now=now, limit=limit)
            for row in rows:
                for endpoint in targets(row["type"]):
                    await tx.one("insert_delivery", event_id=row["id"], endpoint=endpoint,
                                 type=row["type"], data=row["data"],
                                 event_at=row["created_at"], now=now)
        return len(rows)

    async def claim_deliveries(
        self, endpoint: str, owner: str, now: datetime, *, limit: int, lease_seconds: float,
    ) -> list[model.Delivery]:
        """Lease up to `limit` due deliveries of `endpoint`, oldest due first."""
        rows = await self._db.all(
            "claim_deliveries", endpoint=endpoint, owner=owner, now=now, limit=limit,
            lease_until=now + timedelta(seconds=lease_seconds))
        return [model.Delivery(**row) for row in rows]

    async def finish_delivery(
        self, delivery: model.Delivery, owner: str, now: datetime, *, state: str,
        next_attempt_at: datetime, status: int | None, error: str | None,
    ) -> bool:
        """Record one attempt; False when the lease was lost meanwhile."""
        row = await self._db.one(
            "finish_delivery", id=delivery.id, owner=owner, state=state,
            next_attempt_at=next_attempt_at, status=status, error=error,
            finished_at=None if state == model.PENDING else now)
        return row is not None

    async def list_deliveries(
        self, *, endpoint: str | None = None, state: str | None = None,
        type: str | None = None, event_id: int | None = None, before_id: int | None = None,
        limit: int = 100,
    ) -> list[model.Delivery]:
        """Deliveries, newest first."""
        if _unmatchable(endpoint, state, type):
            return []
        rows = await self._db.all("list_deliveries", endpoint=endpoint, state=state,
                                  type=type, event_id=event_id, before_id=before_id,
                                  limit=limit)
        return [model.Delivery(**row) for row in rows]

    async def delivery_counts(self) -> dict[str, dict[str, int]]:
        """Deliveries per endpoint and state."""
        out: dict[str, dict[str, int]] = {}
        for row in await self._db.all("delivery_counts"):
            out.setdefault(row["endpoint"], dict.fromkeys(model.DELIVERY_STATES, 0))[
                row["state"]] = row["n"]
        return out

    async def prune_deliveries(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` finished deliveries and dispatched events older than
        `before` each."""
        async with self._db.transaction() as tx:
            deliveries = await tx.all("prune_deliveries", before=before, limit=limit)
            events = await tx.all("prune_events", before=before, limit=limit)
        return len(deliveries) + len(events)

    async def notice_changes(self, now: datetime) -> list[model.Event]:
        """Emit what time alone changes, once across replicas: pauses that ran out
        (provider.resumed) and worker rows crossing three intervals (loop.stale,
        loop.recovered). Returns the events written."""
        events = []
        async with self._db.transaction() as tx:
            for row in await tx.all("resume_providers", now=now):
                events.append(model.Event(vocabulary.PROVIDER_RESUMED,
                                    {"provider": row["provider"], "reason": "pause_ended"}))
            stale = await tx.all("mark_stale_workers", now=now)
            recovered = await tx.all("mark_recovered_workers", now=now)
            for kind, rows in ((vocabulary.LOOP_STALE, stale),
                               (vocabulary.LOOP_RECOVERED, recovered)):
                for row in rows:
                    finished = row["last_finished_at"]
                    events.append(model.Event(kind, {
                        "worker": row["name"], "instance": row["instance"],
                        "last_finished_at": finished and finished.isoformat()}))
            await emit(tx, events, now)
        return events

    async def clear_provider_pause(self, provider: str, now: datetime) -> bool:
        """End a provider's pause now (an operator's action); emits provider.resumed."""
        async with self._db.transaction() as tx:
            row = await tx.one("clear_provider_pause", provider=provider, now=now)
            if row is not None:
                await emit(tx, [model.Event(vocabulary.PROVIDER_RESUMED,
                                      {"provider": provider, "reason": "cleared"})], now)
        return row is not None

    async def listen_events(
        self, callback: Callable[[], None],
    ) -> Callable[[], Awaitable[None]]:
        """Call `callback()` whenever any replica commits an event; returns `stop`.
        Only where `can_listen`."""
        if self._db.listen is None:
            raise StoreError(f"the {self.backend} store cannot listen")
        async def restored() -> None:  # events may have been committed meanwhile
            callback()

        return await self._db.listen(EVENTS_CHANNEL, lambda _payload: callback(), restored)

    # -- the daily budget: token-endpoint calls per provider, grant and UTC day ----------
    async def count_token_call(self, provider: str, grant: str, now: datetime) -> int:
        """Count one call to `provider`'s token endpoint with `grant` (one of model.GRANT_TYPES)
        on `now`'s UTC day; returns the day's count so far. Refreshes are counted by
        `finish`; the other grants' callers call this after their HTTP call."""
        if grant not in model.GRANT_TYPES:
            raise ValueError(f"unknown grant type {grant!r}")
        row = await self._db.one("count_token_calls", provider=provider, grant_type=grant,
                                 day=utc_day(now), calls=1)
        assert row is not None
        return row["calls"]

    async def budget_usage(self, day: date) -> dict[str, dict[str, int]]:
        """Token-endpoint calls on `day` (UTC): provider -> grant type -> calls."""
        out: dict[str, dict[str, int]] = {}
        for row in await self._db.all("budget_usage", day=day.isoformat()):
            out.setdefault(row["provider"], {})[row["grant_type"]] = row["calls"]
        return out

    async def budget_reached(
        self, provider: str, now: datetime, *, day_ends: datetime, warning: model.Event | None,
        exhausted: model.Event | None,
    ) -> list[model.Event]:
        """Record what the day's use of `provider` crossed, once across replicas: the
        reserve line (`warning`: budget.warning, once per provider and day) and the limit
        (`exhausted`: scheduled refreshes pause until `day_ends`). Returns what it emitted."""
        emitted = []
        async with self._db.transaction() as tx:
            if warning is not None and await tx.one(
                    "record_budget_warning", provider=provider, day=utc_day(now), now=now):
                emitted.append(warning)
            if exhausted is not None:
                row = await tx.one("provider_paused_until", provider=provider)
                if row is None or row["paused_until"] < day_ends:
                    await tx.one("pause_provider", provider=provider, until=day_ends,
                                 reason=model.BUDGET_EXHAUSTED)
                    emitted.append(exhausted)
            await emit(tx, emitted, now)
        return emitted

    # -- demand-aware scheduling --------------------------------------------------------
    async def touch_vended(self, account_id: str, now: datetime) -> None:
        """An app just had this account's access token: it stays on (or returns to) the
        schedule."""
        await self._db.one("touch_vended", id=account_id, now=now, parked=PARKED)

    async def park_idle(self, now: datetime, idle_after: Mapping[str, float]) -> None:
        """Move idle accounts that came due to `PARKED` until an app asks for them."""
        await self._db.one("park_idle_accounts", now=now, parked=PARKED,
                           **_idle_params(idle_after))

    async def demand_split(
        self, idle_after: Mapping[str, float], now: datetime, org: str | None = None,
    ) -> dict[str, dict[str, int]]:
        """Active accounts per provider (of one org, or of all): {"scheduled": n,
        "idle": m}."""
        rows = await self._db.all("demand_split", now=now, org=org,
                                  **_idle_params(idle_after))
        return {row["provider"]: {"scheduled": int(row["scheduled"]),
                                  "idle": row["n"] - int(row["scheduled"])} for row in rows}

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
        Only where `can_listen`. Entries committed while a LISTEN connection was being
        replaced are read back once it is, so each still reaches `callback` once."""
        if not self.can_listen:
            raise StoreError(f"the {self.backend} store cannot listen")
        row = await self._db.one("latest_entry_id")
        ids = _NewEntryIds(self._db, callback, start=row["id"] or 0)
        if self._db.feed_mode == "poll":
            return await ids.poll()
        assert self._db.listen is not None
        stop = await self._db.listen(ENTRIES_CHANNEL, lambda payload: ids.seen(int(payload)),
                                     ids.catch_up)
        try:  # what was committed between reading `start` and the LISTEN taking effect
            await ids.catch_up()
        except BaseException:
            await stop()
            raise
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

    async def list_workers(self) -> list[model.Worker]:
        return [model.Worker(**row) for row in await self._db.all("list_workers")]

    # -- key rotation -----------------------------------------------------------------
    async def accounts_to_rotate(
        self, current_prefix: str, limit: int, *, after_id: str | None = None,
    ) -> list[model.Account]:
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

    async def app_tokens_to_rotate(self, current_prefix: str) -> list[model.AppToken]:
        """Cached application tokens sealed under another key than `current_prefix`'s."""
        rows = await self._db.all("app_tokens_to_rotate", prefix=current_prefix)
        return [model.AppToken(**row) for row in rows]

    async def reseal_app_token(self, token_id: str, old: str, sealed: str) -> bool:
        """Swap the envelope if it is still `old`."""
        return await self._db.one("reseal_app_token", id=token_id, old=old,
                                  sealed=sealed) is not None

    async def connect_links_to_rotate(self, current_prefix: str) -> list[model.ConnectLink]:
        """Connect links whose PKCE verifier is sealed under another key."""
        rows = await self._db.all("connect_links_to_rotate", prefix=current_prefix)
        return [model.ConnectLink(**row) for row in rows]

    async def reseal_code_verifier(self, link_id: str, old: str, sealed: str) -> bool:
        """Swap the envelope if it is still `old`."""
        return await self._db.one("reseal_code_verifier", id=link_id, old=old,
                                  sealed=sealed) is not None

    # -- application tokens ---------------------------------------------------------
    async def get_app_token(self, token_id: str) -> model.AppToken | None:
        row = await self._db.one("get_app_token", id=token_id)
        return None if row is None else model.AppToken(**row)

    async def claim_app_token(
        self, token_id: str, provider: str, scope: str, owner: str, now: datetime, *,
        lease_seconds: float,
    ) -> model.AppToken | None:
        """Lease the app token's row to `owner` (creating it on first use); None while
        another owner's lease runs."""
        row = await self._db.one("claim_app_token", id=token_id, provider=provider,
                                 scope=scope, owner=owner, now=now,
                                 lease_until=now + timedelta(seconds=lease_seconds))
        return None if row is None else model.AppToken(**row)

    async def finish_app_token(
        self, token_id: str, owner: str, *, access_token: str | None,
        expires_at: datetime | None, entry: model.Entry | None, now: datetime,
    ) -> tuple[bool, model.Entry | None]:
        """Store the new token (an envelope; None keeps the old) and release the lease,
        with the exchange's log entry (if any), in one transaction."""
        async with self._db.transaction() as tx:
            applied = await tx.one("finish_app_token", id=token_id, owner=owner,
                                   access_token=access_token, expires_at=expires_at, now=now)
            if entry is not None:
                entry = await _stored(tx, entry)
        return applied is not None, entry

    # -- eBay notifications -----------------------------------------------------------
    async def set_provider_user(
        self, account_id: str, provider_user_id: str | None, provider_user_name: str | None,
        now: datetime,
    ) -> model.Account | None:
        """Who the account is at the provider (eBay's userId and username)."""
        return _maybe_account(await self._db.one(
            "set_provider_user", id=account_id, provider_user_id=provider_user_id,
            provider_user_name=provider_user_name, now=now))

    async def apply_ebay_notification(
        self, notice: model.Notice, entry: Callable[[model.Account | None, str], model.Entry],
        now: datetime,
    ) -> list[model.Entry] | None:
        """Apply one verified notification in one transaction: record its id, change the
        seller's accounts, emit their events, write the log entries (`entry(account,
        outcome)` builds each). None when this notificationId was applied before."""
        if _unmatchable(notice.notification_id, notice.user_id, notice.reason):
            raise StoreError("a notification field holds a NUL character")
        async with self._db.transaction() as tx:
            fresh = await tx.one("record_ebay_notification",
                                 notification_id=notice.notification_id, topic=notice.topic,
                                 provider=notice.provider, account_ids=[], now=now)
            if fresh is None:
                return None
            found = [] if not notice.known else [_account(row) for row in await tx.all(
                "accounts_of_provider_user", provider=notice.provider,
                provider_user_id=notice.user_id)]
            if notice.known and notice.topic == model.Notice.DELETION:
                await _forget_links(tx, notice.provider, notice.user_id)
            entries, events = [], []
            for account in found:
                outcome = await self._apply_notice(tx, notice, account, events, now)
                entries.append(entry(account, outcome))
            outcome = notice.outcome_without_account if not found else (
                "applied" if events else "unchanged")
            if not found:
                entries.append(entry(None, outcome))
            await tx.one("finish_ebay_notification", notification_id=notice.notification_id,
                         outcome=outcome, account_ids=[a.id for a in found])
            await emit(tx, events, now)
            return await _store_entries(tx, entries)

    async def _apply_notice(
        self, tx: Session, notice: model.Notice, account: model.Account, events: list[model.Event],
        now: datetime,
    ) -> str:
        if notice.topic == model.Notice.DELETION:
            if account.state == model.DELETED:
                return "unchanged"
            await tx.one("purge_account", id=account.id, reason=notice.reason, now=now)
            await tx.all("purge_account_entries", account_id=account.id)
            events.append(model.Event.about(vocabulary.ACCOUNT_DELETED, account,
                                            state=model.DELETED, reason=notice.reason))
            return model.DELETED
        if account.state in (model.DELETED, model.REAUTH_REQUIRED):
            return "unchanged"
        await tx.one("revoke_account", id=account.id, reason=notice.reason, now=now)
        events.append(model.Event.about(vocabulary.ACCOUNT_REAUTH_REQUIRED, account,
                                  state=model.REAUTH_REQUIRED, reason=notice.reason))
        return model.REAUTH_REQUIRED

    # -- connect and reconnect ----------------------------------------------------------
    async def add_connect_link(
        self, link: model.NewConnectLink, now: datetime,
    ) -> model.ConnectLink:
        return model.ConnectLink(**await self._db.one(
            "insert_connect_link", **dataclasses.asdict(link), now=now))

    async def open_connect_link(
        self, token_hash: str, *, state_hash: str, code_verifier: str | None,
        state_expires_at: datetime, now: datetime,
    ) -> model.ConnectLink | None:
        """Bind a state to the link with this token hash; None unless it is unopened and
        unexpired (a link works once)."""
        row = await self._db.one("open_connect_link", token_hash=token_hash,
                                 state_hash=state_hash, code_verifier=code_verifier,
                                 state_expires_at=state_expires_at, now=now)
        return None if row is None else model.ConnectLink(**row)

    async def consume_connect_state(
        self, state_hash: str, now: datetime,
    ) -> model.ConnectLink | None:
        """Take the link bound to this state; None when unknown, used or expired."""
        row = await self._db.one("consume_connect_state", state_hash=state_hash, now=now)
        return None if row is None else model.ConnectLink(**row)

    async def find_connect_link(
        self, *, state_hash: str | None = None, token_hash: str | None = None,
    ) -> model.ConnectLink | None:
        row = await self._db.one("find_connect_link", state_hash=state_hash,
                                 token_hash=token_hash)
        return None if row is None else model.ConnectLink(**row)

    async def set_connect_outcome(self, link_id: str, outcome: str) -> None:
        await self._db.one("set_connect_outcome", id=link_id, outcome=outcome)

    async def set_connect_user(self, link_id: str, provider_user_id: str) -> None:
        """Who signed in through the link, so an account deletion can find what the
        connect flow logged about them before any account existed."""
        await self._db.one("set_connect_user", id=link_id, provider_user_id=provider_user_id)

    async def connect_account(
        self, connected: model.Connected, now: datetime, *, reconnect: bool,
        events: Callable[[model.Account], Sequence[model.Event]],
    ) -> model.Account | None:
        """Create the account (or, for a reconnect, renew it under its id) and write its
        events in the same transaction. A reconnect answers None when the account is gone,
        deleted, or belongs to another provider user; a new account may raise
        DuplicateAccount."""
        params = dataclasses.asdict(connected)
        async with self._db.transaction() as tx:
            if reconnect:
                row = await tx.one("reconnect_account", **params, now=now)
            else:
                try:
                    row = await tx.one("insert_connected_account", **params, now=now)
                except DuplicateKey:
                    raise DuplicateAccount(
                        f"{connected.provider}/{connected.org}/{connected.name} is already "
                        "connected") from None
            if row is None:
                return None
            account = _account(row)
            await emit(tx, events(account), now)
        return account

    # -- refresh-token expiry -----------------------------------------------------------
    async def expire_refresh_tokens(
        self, now: datetime, *, describe: Describe,
    ) -> list[model.Entry]:
        """Every active account whose refresh token has expired goes to reauth_required,
        with its events and log entry, in one transaction; returns the stored entries."""
        async with self._db.transaction() as tx:
            rows = await tx.all("expire_refresh_tokens", **_notice_params(now))
            return await _described(tx, rows, now, describe)

    async def note_refresh_expiry(
        self, now: datetime, *, describe: Describe,
    ) -> list[model.Entry]:
        """Every active account that crossed a notice threshold (REFRESH_NOTICE_DAYS) since
        its last notice records it, with its events and entry, in one transaction."""
        async with self._db.transaction() as tx:
            rows = await tx.all("note_refresh_expiry", **_notice_params(now))
            return await _described(tx, rows, now, describe)

    async def refresh_expiry_counts(self, now: datetime) -> dict[str, int]:
        """Active accounts whose refresh token expires within 30, 7 and 1 days."""
        row = await self._db.one("refresh_expiry_counts", **_notice_params(now))
        return {f"within_{days}_days": int(row[f"within_{days}"])
                for days in model.REFRESH_NOTICE_DAYS}

    # -- console ----------------------------------------------------------------------
    async def page_accounts(self, page: model.AccountPage) -> list[model.Account]:
        """One page of the console's accounts table: one statement walking the sort key's
        index from `page.after` (the previous page's last (key, id)); `page.limit` rows.
        `q` matches the start of the id, the name or the provider's user name, in any case:
        a prefix, so PostgreSQL answers it from an index (migration 0006_console)."""
        if _unmatchable(page.q, page.org, page.provider, page.state, page.after_id):
            return []
        low, high = (1, 2**31 - 1) if page.failing else (0, 0 if page.healthy else 2**31 - 1)
        pattern = None
        if page.q:
            escaped = page.q.lower().replace("\\", "\\\\").replace("%", "\\%")
            pattern = escaped.replace("_", "\\_") + "%"
        params = {"org": page.org, "provider": page.provider, "state": page.state,
                  "min_failures": low, "max_failures": high, "pattern": pattern,
                  "after_key": page.after_key, "after_id": page.after_id, "limit": page.limit}
        run = _PAGES[(page.sort, page.descending)]
        async with self._db.transaction() as tx:
            await tx.one("console_custom_plan")
            rows = await run(tx, params)
        return [_account(row) for row in rows]

    async def disable_account(self, account_id: str, reason: str, now: datetime,
                              ) -> model.Account | None:
        """Stop refreshing: None when there is no such account or it is deleted."""
        if _unmatchable(account_id):
            return None
        return _maybe_account(await self._db.one("disable_account", id=account_id,
                                                 reason=reason, now=now))

    async def enable_account(self, account_id: str, now: datetime) -> model.Account | None:
        """Back to active and due now: None unless the account is disabled."""
        if _unmatchable(account_id):
            return None
        return _maybe_account(await self._db.one("enable_account", id=account_id, now=now))

    async def clear_backoff(self, account_id: str, now: datetime) -> model.Account | None:
        """Due now: None unless the account is active and not leased."""
        if _unmatchable(account_id):
            return None
        return _maybe_account(await self._db.one("clear_backoff", id=account_id, now=now))

    async def provider_pauses(self, now: datetime) -> dict[str, tuple[datetime, str]]:
        """Paused providers: (until, reason)."""
        rows = await self._db.all("provider_pauses", now=now)
        return {row["provider"]: (row["paused_until"], row["reason"]) for row in rows}

    async def failing_by_error(self, org: str | None = None) -> dict[str, dict[str, int]]:
        """Accounts with failures (not deleted), provider -> last error code -> count."""
        out: dict[str, dict[str, int]] = {}
        for row in await self._db.all("failing_by_error", org=org):
            out.setdefault(row["provider"], {})[row["error_code"]] = row["n"]
        return out


class Session(Protocol):
    """Named statements on one connection (see sql/queries.sql)."""

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]: ...
    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None: ...
    async def script(self, sql: str) -> None: ...


class Connector(Protocol):
    """A backend: runs named statements, opens transactions, and may listen."""

    dialect: str
    # listen(channel, callback, on_restored): on_restored runs after a lost connection is
    # replaced, for the caller to read back what was announced meanwhile.
    listen: Callable[[str, Callable[[str], None], Callable[[], Awaitable[None]] | None],
                     Awaitable[Callable[[], Awaitable[None]]]] | None
    feed_mode: str | None  # "notify" | "poll" | None, matching `listen`

    async def all(self, query: str, /, **params: Any) -> list[Mapping[str, Any]]: ...
    async def one(self, query: str, /, **params: Any) -> Mapping[str, Any] | None: ...
    def transaction(
        self, *, schema_change: bool = False,
    ) -> contextlib.AbstractAsyncContextManager[Session]: ...
    async def close(self, timeout_seconds: float) -> None: ...
    async def ping(self, timeout_seconds: float) -> None: ...


async def connect(url: str, *, pool_max_size: int = 10, pgbouncer: bool = False,
                  listen_url: str | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> Store:
    """Open the store that `url` names; the caller owns it and must `close()` it.
    `pgbouncer` and `listen_url` apply to PostgreSQL (see `postgres.Connector.open`)."""
    if url.startswith("sqlite://"):
        from tokend.store import sqlite

        return Store(await sqlite.Connector.open(url.removeprefix("sqlite://")))
    if url.startswith(("postgresql://", "postgres://")):
        from tokend.store import postgres

        return Store(await postgres.Connector.open(url, pool_max_size=pool_max_size,
                                                   pgbouncer=pgbouncer, listen_url=listen_url,
                                                   timeouts=timeouts))
    raise StoreError(f"unsupported database url scheme: {url.split(':', 1)[0]!r}")


@contextlib.asynccontextmanager
async def open(
    url: str, *, pool_max_size: int = 10, check_schema: bool = True, pgbouncer: bool = False,
    listen_url: str | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> AsyncIterator[Store]:
    """The store for `url`, schema checked, closed on the way out."""
    db = await connect(url, pool_max_size=pool_max_size, pgbouncer=pgbouncer,
                       listen_url=listen_url, timeouts=timeouts)
    try:
        if check_schema:
            await db.check_schema()
        yield db
    finally:
        await db.close()
