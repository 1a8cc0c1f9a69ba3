"""The data model: accounts, their refresh outcomes, log entries, events and the other
records the store reads and writes, as frozen dataclasses. Timestamps are aware UTC
`datetime`s; a token field holds an `ENC:v1:` envelope (see `tokend.crypto`), never a
plaintext secret."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from tokend.ebay import profile as ebay_profile


def _json_ready(record: Any) -> dict[str, Any]:
    """A record's fields as JSON values: timestamps in ISO 8601, tuples as lists."""
    return {key: value.isoformat() if isinstance(value, datetime)
            else list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(record).items()}


ACTIVE = "active"
REAUTH_REQUIRED = "reauth_required"
DISABLED = "disabled"
DELETED = "deleted"  # a tombstone: tokens and personal fields purged
STATES = (ACTIVE, REAUTH_REQUIRED, DISABLED, DELETED)
# A loop or worker is stale (wedged, or gone) when no cycle ended within this many of
# its intervals: /health, /livez, the loop status and the workers table all say so.
STALE_AFTER_INTERVALS = 3
BUDGET_EXHAUSTED = "daily_budget_exhausted"  # a provider pause's reason at the daily limit
GRANT_TYPES = ("refresh_token", "authorization_code", "client_credentials")
REFRESH_TOKEN_GRANT = GRANT_TYPES[0]


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
    last_vended_at: datetime | None = None  # when an app last had its access token

    def public(self) -> dict[str, Any]:
        """Everything an operator may see: no token, not even encrypted."""
        out = _json_ready(self)
        del out["refresh_token"], out["access_token"]
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
class Event:
    """An outbox row (SPEC 10.2): `type` from `vocabulary.EVENT_TYPES`; `data` carries ids,
    org, provider, state and reason, never a token."""

    type: str
    data: Mapping[str, Any]
    id: int | None = None
    created_at: datetime | None = None

    @classmethod
    def about(cls, type: str, account: Account, *, state: str, reason: str | None,
              ) -> Event:
        return cls(type, {"account_id": account.id, "org": account.org,
                          "provider": account.provider, "state": state, "reason": reason})


PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
DELIVERY_STATES = (PENDING, DELIVERED, DEAD)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one webhook endpoint (tokend/webhooks.py)."""

    id: int
    event_id: int
    endpoint: str
    type: str
    data: Mapping[str, Any]
    event_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    def public(self) -> dict[str, Any]:
        return _json_ready(self)


@dataclasses.dataclass(frozen=True, slots=True)
class AppToken:
    """A cached client_credentials token (an envelope) and who is renewing it."""

    id: str
    provider: str
    scope: str  # space-separated, sorted
    access_token: str | None
    expires_at: datetime | None
    issued_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """A verified eBay notification as the store applies it: eBay's ids, never a name."""

    DELETION: ClassVar[str] = ebay_profile.ACCOUNT_DELETION
    REVOCATION: ClassVar[str] = ebay_profile.AUTHORIZATION_REVOCATION

    notification_id: str
    topic: str
    provider: str
    user_id: str | None
    reason: str  # the state_reason it sets

    @property
    def known(self) -> bool:
        """A topic tokend acts on, naming a seller."""
        return self.topic in (self.DELETION, self.REVOCATION) and bool(self.user_id)

    @property
    def outcome_without_account(self) -> str:
        return "no_account" if self.known else "ignored"


PURGE = "purge"  # a notice's change: secrets and personal fields dropped, state deleted
REVOKE = "revoke"  # a notice's change: state reauth_required


@dataclasses.dataclass(frozen=True, slots=True)
class NoticeChange:
    """What a provider's notice does to one account, decided by a pure function (eBay's:
    `ebay.notifications.decide`) and applied by the store in the notice's transaction, which
    knows nothing of the provider's topics. `outcome` is the log entry's."""

    outcome: str
    action: str | None = None  # PURGE, REVOKE, or None: the account stays as it is
    events: tuple[Event, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Success:
    """A provider answer to persist: tokens are envelopes; `refresh_token` None keeps the old."""

    access_token: str
    access_expires_at: datetime
    refresh_token: str | None
    refresh_expires_at: datetime | None
    refreshed_at: datetime
    next_attempt_at: datetime
    events: tuple[Event, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: when to try again, the new state when it changes, and until when
    the whole provider pauses when the failure is the provider's credentials."""

    error_code: str
    error_message: str
    next_attempt_at: datetime
    state: str | None = None
    pause_until: datetime | None = None
    events: tuple[Event, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One refresh-log row. `save_id` names the save that writes it: a save retried after
    its COMMIT was cut off finds out by it whether the first one landed."""

    account_id: str
    source: str
    started_at: datetime
    finished_at: datetime
    success: bool
    error_code: str | None
    error_message: str | None
    save_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


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

    @classmethod
    def about(cls, account: Account | None, *, action: str, source: str,
              created_at: datetime, **fields: Any) -> Entry:
        """An entry about `account`: its id, org and provider are copied here, never by
        hand (without an account, `fields` may name an org or provider)."""
        who = {} if account is None else {
            "account_id": account.id, "org_id": account.org, "provider": account.provider}
        return cls(action=action, source=source, created_at=created_at, **who, **fields)

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
        return (now - reference).total_seconds() > STALE_AFTER_INTERVALS * self.interval_seconds


# -- connect and reconnect ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class NewConnectLink:
    id: str
    token_hash: str  # sha256 of the link's token; the token itself is never stored
    provider: str
    org: str
    account_id: str | None  # a reconnect link
    scopes: tuple[str, ...]
    expires_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectLink:
    id: str
    token_hash: str
    provider: str
    org: str
    account_id: str | None
    scopes: Sequence[str]
    created_at: datetime
    expires_at: datetime
    opened_at: datetime | None
    state_hash: str | None
    code_verifier: str | None  # ENC:v1 envelope bound to the link id
    state_expires_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    provider_user_id: str | None = None  # who signed in, once the provider said


@dataclasses.dataclass(frozen=True, slots=True)
class Connected(NewAccount):
    """What a code exchange gives an account: a new account's fields, its first access
    token (an envelope) and who it is at the provider."""

    access_token: str
    access_expires_at: datetime
    provider_user_id: str | None
    provider_user_name: str | None
    next_attempt_at: datetime


# Refresh-token expiry notices, in days before the expiry (largest first).
REFRESH_NOTICE_DAYS = (30, 7, 1)
REFRESH_TOKEN_EXPIRED = "refresh_token_expired"  # noqa: S105 - a reason, not a secret



@dataclasses.dataclass(frozen=True, slots=True)
class Save:
    """One refresh's result to persist: the arguments of `Store.finish`."""

    claimed: Account
    owner: str
    outcome: Success | Failure
    attempt: Attempt
    entry: Entry
    now: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class AccountPage:
    """What the console asks for: filters (None: any), a sort key, and the keyset cursor
    (the last row's sort value and id) of the page before."""

    sort: str = "name"
    descending: bool = False
    limit: int = 100
    org: str | None = None
    provider: str | None = None
    state: str | None = None
    healthy: bool = False  # only accounts without failures (the console's `active`)
    failing: bool = False  # only accounts with failures (the console's `failing`)
    q: str | None = None
    after_key: Any = None
    after_id: str | None = None



@dataclasses.dataclass(frozen=True, slots=True)
class SigningKey:
    """An eBay signing key: eBay's signingKeyId, the private key as an envelope, the public
    key as eBay's JWE; in use when it is its provider's newest activated key."""

    id: str
    provider: str
    cipher: str  # ED25519 | RSA
    private_key: str = dataclasses.field(repr=False)  # ENC:v1
    public_key: str | None
    jwe: str
    created_at: datetime
    expires_at: datetime | None
    activated_at: datetime | None
    renewal_owner: str | None
    renewal_until: datetime | None
    stored_at: datetime

    def public(self, *, in_use: bool) -> dict[str, Any]:
        """What `signing-key list` shows: never the private key."""
        return {"signing_key_id": self.id, "provider": self.provider, "cipher": self.cipher,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "activated_at": self.activated_at.isoformat() if self.activated_at else None,
                "in_use": in_use}
