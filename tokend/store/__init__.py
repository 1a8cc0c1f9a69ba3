"""The only code that runs SQL: one interface, a SQLite and a PostgreSQL implementation.

Every timestamp crosses this boundary as an aware UTC `datetime`; every secret as an
`ENC:v1:` envelope (see `tokend.crypto`). The store never sees a plaintext token.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

ACTIVE = "active"
REAUTH_REQUIRED = "reauth_required"
DISABLED = "disabled"
STATES = (ACTIVE, REAUTH_REQUIRED, DISABLED)
MAX_ENTRY_ID = 2**63 - 1  # entry ids are 64-bit on both backends


class StoreError(Exception):
    """A storage problem worth one clear line to the operator."""


class SchemaError(StoreError):
    """The database schema is missing, behind, or ahead of this program."""


class DuplicateAccount(StoreError):
    """An account with this id, or this provider/org/name, already exists."""


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    id: str
    org: str
    provider: str
    name: str
    scopes: tuple[str, ...]
    state: str
    refresh_token: str
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
    """A failed attempt: when to try again, and the new state when it changes."""

    error_code: str
    error_message: str
    next_attempt_at: datetime
    state: str | None = None


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


class Store(abc.ABC):
    """What the daemon needs from a database. Each method is one short transaction."""

    backend: str

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """A trivial round trip; raises StoreError when the database is unreachable."""

    # -- schema -----------------------------------------------------------------------
    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns their names. Safe with several processes."""

    @abc.abstractmethod
    async def check_schema(self) -> None:
        """Raise SchemaError naming `tokend migrate` unless the schema is exactly current."""

    # -- accounts ---------------------------------------------------------------------
    @abc.abstractmethod
    async def add_account(self, new: NewAccount, now: datetime) -> Account: ...

    @abc.abstractmethod
    async def get_account(self, account_id: str) -> Account | None: ...

    @abc.abstractmethod
    async def list_accounts(self, org: str | None = None) -> list[Account]: ...

    @abc.abstractmethod
    async def reauth_account(
        self, account_id: str, refresh_token: str, refresh_expires_at: datetime | None,
        now: datetime,
    ) -> Account | None:
        """New refresh token, state back to active, failures cleared, due now."""

    @abc.abstractmethod
    async def set_state(self, account_id: str, state: str, now: datetime) -> Account | None: ...

    @abc.abstractmethod
    async def account_counts(self) -> dict[str, int]:
        """Accounts by state."""

    @abc.abstractmethod
    async def active_by_provider(self) -> dict[str, int]:
        """Active accounts by provider."""

    @abc.abstractmethod
    async def failing_counts(self) -> dict[str, int]:
        """Active accounts with consecutive failures, by their last error code."""

    # -- the refresh cycle ------------------------------------------------------------
    @abc.abstractmethod
    async def claim_due(
        self, owner: str, now: datetime, *, limit: int, lease_seconds: float,
        expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> list[Account]:
        """Lease up to `limit` due accounts to `owner` in one statement and return them.

        Due: active, provider not paused, next_attempt_at <= now, not leased by anyone,
        and the access token expires within the threshold, or the last refresh is older
        than max_age, or there was none. Claiming bumps `version`, sets the lease and
        moves next_attempt_at to the lease expiry, so a crashed owner's accounts come due
        again once the lease runs out.
        """

    @abc.abstractmethod
    async def claim_account(
        self, account_id: str, owner: str, now: datetime, *, lease_seconds: float,
    ) -> Account | None:
        """Lease one account regardless of due time (manual refresh); None if leased/absent."""

    @abc.abstractmethod
    async def finish(
        self, claimed: Account, owner: str, outcome: Success | Failure,
        attempt: Attempt, entry: Entry, now: datetime,
    ) -> tuple[bool, Entry]:
        """Write the outcome, the refresh-log row and the entry in one transaction.

        The outcome applies only while `claimed.version` and the lease are still
        `owner`'s; the log rows are written either way. Returns (applied, entry with id).
        """

    @abc.abstractmethod
    async def release(self, claimed: Account, owner: str, now: datetime) -> bool:
        """Give a lease back untouched (due again at once); False if no longer ours."""

    @abc.abstractmethod
    async def next_due_at(self, now: datetime) -> datetime | None:
        """Earliest next_attempt_at of an active account of an unpaused provider."""

    @abc.abstractmethod
    async def count_due(
        self, now: datetime, *, expiry_threshold_seconds: float, max_age_seconds: float,
    ) -> int: ...

    @abc.abstractmethod
    async def pause_provider(self, provider: str, until: datetime, reason: str) -> None: ...

    @abc.abstractmethod
    async def paused_providers(self, now: datetime) -> dict[str, datetime]: ...

    # -- logs -------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_entry(self, entry: Entry) -> Entry:
        """Store a log entry that is not part of a refresh; returns it with its id."""

    @abc.abstractmethod
    async def list_entries(
        self, *, source: Sequence[str] | None = None, action: str | None = None,
        account_id: str | None = None, org: str | None = None,
        after_id: int | None = None, before_id: int | None = None, limit: int = 200,
    ) -> list[Entry]:
        """Entries, newest first, except with `after_id`: then the oldest after it first."""

    @abc.abstractmethod
    async def get_entries(self, ids: Sequence[int]) -> list[Entry]:
        """These entries, oldest first (missing ids are skipped)."""

    @abc.abstractmethod
    async def list_attempts(self, account_id: str, limit: int = 50) -> list[Attempt]: ...

    @abc.abstractmethod
    async def prune_logs(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` HTTP-log and refresh-log rows older than `before` each."""

    # -- workers ----------------------------------------------------------------------
    @abc.abstractmethod
    async def worker_started(
        self, name: str, instance: str, interval_seconds: float, now: datetime,
    ) -> None: ...

    @abc.abstractmethod
    async def worker_finished(
        self, name: str, instance: str, now: datetime, status: str,
        summary: Mapping[str, Any],
    ) -> None: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[Worker]: ...

    # -- key rotation -----------------------------------------------------------------
    @abc.abstractmethod
    async def accounts_to_rotate(
        self, primary_kid: str, limit: int, *, after_id: str | None = None,
    ) -> list[Account]:
        """Accounts with a secret not under `primary_kid`, by id, after `after_id`."""

    @abc.abstractmethod
    async def replace_secrets(
        self, account_id: str, version: int, refresh_token: str, access_token: str | None,
    ) -> bool:
        """Swap re-encrypted secrets if the row is still at `version` (bumps it)."""


async def connect(url: str, *, pool_max_size: int = 10) -> Store:
    """Open the store that `url` names; the caller owns it and must `close()` it."""
    if url.startswith("sqlite://"):
        from tokend.store import sqlite

        return await sqlite.connect(url.removeprefix("sqlite://"))
    if url.startswith(("postgresql://", "postgres://")):
        from tokend.store import postgres

        return await postgres.connect(url, pool_max_size=pool_max_size)
    raise StoreError(f"unsupported database url scheme: {url.split(':', 1)[0]!r}")
