"""The refresh cycle: claim due accounts under a lease, save what the provider answered
under the lease and version guard (`refresher.decide` has decided it), ask whether a save
whose commit was cut off landed, and pause a provider."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from tokend import model
from tokend.store import errors, ports, records

_log = structlog.get_logger("tokend.store")

# Bounds for the due rule's coalesce (see sql/queries.sql): beyond any real timestamp.
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
_FAR_PAST = datetime(1970, 1, 2, tzinfo=UTC)
# What finish_successes writes; the events go to the outbox.
_SUCCESS_FIELDS = tuple(f.name for f in dataclasses.fields(model.Success) if f.name != "events")
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(model.Attempt))


def due_params(now: datetime, expiry_threshold_seconds: float, max_age_seconds: float,
               reserved: Sequence[str] = (), idle_after: Mapping[str, float] | None = None,
               ) -> dict[str, Any]:
    """The parameters of the due rule (sql/queries.sql, fragment `due`); `reserved` names
    the providers past their daily budget's reserve line, `idle_after` the demand-aware
    providers and their idle_after_seconds."""
    return {"now": now, "far_future": FAR_FUTURE, "far_past": _FAR_PAST,
            "expiring_before": now + timedelta(seconds=expiry_threshold_seconds),
            "refreshed_before": now - timedelta(seconds=max_age_seconds),
            "reserved": list(reserved), **idle_params(idle_after)}


def idle_params(idle_after: Mapping[str, float] | None) -> dict[str, Any]:
    pairs = sorted((idle_after or {}).items())
    return {"idle_providers": [p for p, _ in pairs],
            "idle_seconds": [float(s) for _, s in pairs]}


class Refresh:
    _db: ports.Connector
    # Claims of accounts whose answer never came: (owner, lease expiry), see `_claim`.
    _claims_in_doubt: list[tuple[str, datetime]]
    _last_lease_until: dict[str, datetime]  # owner -> its latest claim's

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
        return [records.account(row) for row in rows]

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
        if records.unmatchable(account_id):
            return None
        rows = await self._claim("claim_account", lease_seconds, owner=owner, now=now,
                                 id=account_id)
        return records.account(rows[0]) if rows else None

    async def claim_account_version(
        self, account_id: str, version: int, owner: str, now: datetime, *,
        lease_seconds: float,
    ) -> model.Account | None:
        """`claim_account`, only while the row is still at `version`; None otherwise."""
        if records.unmatchable(account_id):
            return None
        rows = await self._claim("claim_account_version", lease_seconds, owner=owner, now=now,
                                 id=account_id, version=version)
        return records.account(rows[0]) if rows else None

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
        except errors.StoreError:
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
        self, tx: ports.Session, saves: Sequence[model.Save],
    ) -> list[tuple[bool, model.Entry]]:
        """The saves' writes on the caller's transaction: what `finish` and `finish_many`
        commit, a statement per kind of write rather than per save (a round trip each waits
        its turn on a busy event loop). Anything else a save must write atomically with the
        account belongs here."""
        applied: set[str] = set()
        succeeded = [s for s in saves if isinstance(s.outcome, model.Success)]
        if succeeded:
            rows = [records.row(s.outcome, _SUCCESS_FIELDS, id=s.claimed.id,
                                version=s.claimed.version, owner=s.owner, now=s.now)
                    for s in succeeded]
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
                await records.emit(tx, outcome.events, save.now)
        # The token endpoint was called (the entry has a request): the call counts.
        calls = collections.Counter((s.claimed.provider, records.utc_day(s.attempt.started_at))
                                    for s in saves if s.entry.request is not None)
        for (provider, day), n in sorted(calls.items()):
            await tx.one("count_token_calls", provider=provider,
                         grant_type=model.REFRESH_TOKEN_GRANT, day=day, calls=n)
        entries = await records.store_entries(tx, [s.entry for s in saves])
        results = [(s.claimed.id in applied, e) for s, e in zip(saves, entries, strict=True)]
        # With their entries' ids. A save already written (its save_id is unique) fails here.
        await tx.all("insert_attempts", rows=[
            records.row(s.attempt, _ATTEMPT_FIELDS, applied=ok, entry_id=e.id)
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
