"""One account's refresh: decrypt, call the provider, save and log, under the claim's lease."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from tokend import (
    clock,
    config,
    crypto,
    groupcommit,
    metrics,
    model,
    providers,
    recorder,
    schedule,
    store,
    stream,
    vocabulary,
)

log = structlog.get_logger("tokend.refresher")

SAVE_RETRY_SECONDS = 0.5
METRIC_CODES = frozenset({
    providers.DECRYPT_FAILED, providers.INVALID_GRANT, providers.INVALID_CLIENT,
    providers.UNAUTHORIZED_CLIENT, providers.INVALID_SCOPE, providers.INVALID_REQUEST,
    providers.UNSUPPORTED_GRANT_TYPE, providers.UNSUPPORTED_TOKEN_TYPE, providers.RATE_LIMITED,
    providers.SERVER_ERROR,
    providers.TIMEOUT, providers.CONNECTION_ERROR, providers.BAD_RESPONSE, "provider_unknown",
    model.REFRESH_TOKEN_EXPIRED,
})


def decide(
    account: model.Account, result: providers.Result, s: config.RefreshConfig, now: datetime,
    *, jitter: float, seal: Callable[[str, str], str],
) -> model.Success | model.Failure:
    """What a provider's answer means for the account: the tokens to keep and when to
    refresh next, or when to retry, whether it needs a new sign-in, and whether the whole
    provider pauses. Pure: `store.Store.finish` writes all of it in one transaction, and
    only while the claim still holds, which also rules out an invalid_grant for a refresh
    token somebody replaced meanwhile."""
    if result.ok:
        grant = result.grant
        recovered = account.consecutive_failures > 0 or account.state_reason is not None
        return model.Success(
            access_token=seal(grant.access_token, "access_token"),
            access_expires_at=result.sent_at + timedelta(seconds=grant.expires_in),
            refresh_token=None if grant.refresh_token is None
            else seal(grant.refresh_token, "refresh_token"),
            refresh_expires_at=None if grant.refresh_token_expires_in is None
            else result.sent_at + timedelta(seconds=grant.refresh_token_expires_in),
            refreshed_at=result.sent_at,
            next_attempt_at=schedule.next_refresh_at(
                result.sent_at, grant.expires_in,
                expiry_threshold_seconds=s.expiry_threshold_seconds,
                max_age_seconds=s.max_age_seconds),
            events=(model.Event.about(vocabulary.ACCOUNT_RECOVERED, account, state=model.ACTIVE,
                                      reason=account.last_error or account.state_reason),
                    ) if recovered else (),
        )
    state, pause_until = None, None
    delay = schedule.backoff_seconds(
        account.consecutive_failures, base_seconds=s.backoff_base_seconds,
        max_seconds=s.backoff_max_seconds, retry_after_seconds=result.retry_after_seconds,
        jitter=jitter)
    if result.kind == providers.REAUTH:
        state = model.REAUTH_REQUIRED
    elif (result.error_code == providers.INVALID_SCOPE
          and account.last_error == providers.INVALID_SCOPE):
        # Refused twice in a row: the scopes configured or consented are wrong, and retrying
        # will not fix them. Stop until someone reconnects the account.
        state = model.REAUTH_REQUIRED
    elif result.kind == providers.PROVIDER:
        delay = s.provider_pause_seconds
        pause_until = now + timedelta(seconds=delay)
    elif result.kind in (providers.CONFIG, providers.DECRYPT):
        delay = s.backoff_max_seconds
    if pause_until is None and schedule.backoff_is_long(
            account.consecutive_failures, base_seconds=s.backoff_base_seconds,
            max_seconds=s.backoff_max_seconds):
        # An account that keeps failing spends the daily budget healthy ones need.
        delay = max(delay, schedule.failing_retry_seconds(jitter))
    code = result.error_code or "error"
    events = []
    if state is not None:
        events.append(model.Event.about(vocabulary.ACCOUNT_REAUTH_REQUIRED, account,
                                        state=state, reason=code))
    if pause_until is not None:
        events.append(model.Event(vocabulary.PROVIDER_PAUSED, {
            "provider": account.provider, "until": pause_until.isoformat(), "reason": code}))
    return model.Failure(
        error_code=code, error_message=result.error_description or "",
        next_attempt_at=now + timedelta(seconds=delay), state=state, pause_until=pause_until,
        events=tuple(events))


class NotFound(Exception):
    """No account has this id."""


class Busy(Exception):
    """The account cannot be refreshed now: leased by someone else, or not active."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    account_id: str
    success: bool
    error_code: str | None
    error_description: str | None
    request: Mapping[str, Any] | None
    response: Mapping[str, Any] | None
    entry: model.Entry
    applied: bool


class Refresher:
    def __init__(
        self, *, db: store.Store, keyring: crypto.Keyring,
        clients: Mapping[str, providers.Provider], session: aiohttp.ClientSession,
        hub: stream.Hub, stats: metrics.Metrics, settings: config.RefreshConfig, owner: str,
        clock: Callable[[], datetime] = clock.now, commits: groupcommit.GroupCommit | None = None,
    ) -> None:
        """`commits`: saves go through group commit (the daemon's way); without it each
        save is a transaction of its own."""
        self.db, self.keyring, self.clients, self.session = db, keyring, clients, session
        self._finish = commits.finish if commits is not None else db.finish
        self.hub, self.stats, self.settings, self.owner = hub, stats, settings, owner
        self.entries = recorder.Recorder(db, hub)
        self.clock = clock
        self._saves: set[asyncio.Task] = set()

    async def refresh_now(self, account_id: str, *, source: str = vocabulary.MANUAL) -> Outcome:
        """A manual refresh through the same path as the loop's, under its own lease."""
        claimed = await self.db.claim_account(
            account_id, self.owner, self.clock(), lease_seconds=self.settings.lease_seconds)
        if claimed is None:
            account = await self.db.get_account(account_id)
            if account is None:
                raise NotFound(account_id)
            if account.state != model.ACTIVE:
                raise Busy(f"account is {account.state}")
            raise Busy("account is being refreshed by another worker")
        return await self.refresh_claimed(claimed, source)

    async def refresh_claimed(self, account: model.Account, source: str) -> Outcome:
        with structlog.contextvars.bound_contextvars(account_id=account.id, source=source):
            started = self.clock()
            client = self.clients.get(account.provider)
            if (account.refresh_expires_at is not None
                    and account.refresh_expires_at <= started):
                # eBay's clock starts at consent and refreshing never resets it: an expired
                # refresh token cannot work, so the provider is not asked.
                result = self._refused(model.REFRESH_TOKEN_EXPIRED,
                                       "the refresh token expired at "
                                       f"{account.refresh_expires_at.isoformat()}",
                                       providers.REAUTH)
            elif client is None:
                result = self._refused("provider_unknown",
                                       f"no provider {account.provider!r} is configured",
                                       providers.CONFIG)
            else:
                result = await self._call(client, account)
            outcome_row = decide(account, result, self.settings, self.clock(),
                                 jitter=random.random(), seal=self._sealer(account))
            if isinstance(outcome_row, model.Failure) and outcome_row.pause_until:
                log.error("provider_paused", provider=account.provider,
                          until=outcome_row.pause_until.isoformat(),
                          error_code=result.error_code)
            entry = self._entry(account, source, result, client)
            attempt = model.Attempt(
                account_id=account.id, source=source, started_at=started,
                finished_at=self.clock(), success=result.ok, error_code=result.error_code,
                error_message=result.error_description)
            applied, entry = await self._save(account, outcome_row, attempt, entry)
            self.entries.publish(entry)
            self._observe(account, source, result, applied)
            return Outcome(
                account_id=account.id, success=result.ok and applied,
                error_code=result.error_code if applied or not result.ok else "lease_lost",
                error_description=result.error_description, request=result.request,
                response=result.response, entry=entry, applied=applied)

    def _sealer(self, account: model.Account) -> Callable[[str, str], str]:
        return lambda value, column: self.keyring.encrypt(value, account_id=account.id,
                                                          column=column)

    async def _call(self, client: providers.Provider, account: model.Account) -> providers.Result:
        try:
            prepared = client.prepare(self._open_refresh_token(account), account.scopes,
                                      account_id=account.id)
        except providers.RefreshError as exc:
            return self._refused(exc.code, exc.message, exc.kind)
        return await client.send(self.session, prepared)

    def _open_refresh_token(self, account: model.Account) -> str:
        """The plaintext refresh token, decrypted exactly once per attempt."""
        if not isinstance(account.refresh_token, str) or not account.refresh_token:
            raise providers.RefreshError(
                providers.DECRYPT_FAILED, f"account {account.id!r} has no stored refresh_token")
        try:
            return self.keyring.decrypt(account.refresh_token, account_id=account.id,
                                        column="refresh_token")
        except crypto.DecryptError as exc:
            raise providers.RefreshError(providers.DECRYPT_FAILED, str(exc)) from None

    def _refused(self, code: str, message: str, kind: str) -> providers.Result:
        """A refresh stopped before any HTTP: nothing was sent."""
        return providers.Result(sent_at=self.clock(), duration_ms=0.0, request=None,
                                response=None, error_code=code, error_description=message,
                                kind=kind)

    async def _save(
        self, account: model.Account, outcome: model.Success | model.Failure,
        attempt: model.Attempt, entry: model.Entry,
    ) -> tuple[bool, model.Entry]:
        """Persist, shielded: a rotated refresh token received and not saved is lost for good."""
        task = asyncio.ensure_future(self._save_until_lease_ends(account, outcome, attempt, entry))
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)
        return await asyncio.shield(task)

    async def _save_until_lease_ends(
        self, account: model.Account, outcome: model.Success | model.Failure,
        attempt: model.Attempt, entry: model.Entry,
    ) -> tuple[bool, model.Entry]:
        deadline = account.lease_expires_at or self.clock()
        retry = False
        while True:
            try:
                # The last try's COMMIT may have landed with only its answer lost.
                if retry and (saved := await self.db.saved(attempt.save_id)) is not None:
                    applied, entry_id = saved
                    return applied, dataclasses.replace(entry, id=entry_id)
                return await self._finish(account, self.owner, outcome, attempt, entry,
                                          self.clock())
            except store.StoreError as exc:
                retry = True
                if self.clock() >= deadline:
                    log.error("refresh_result_lost", error=str(exc),
                              rotated=isinstance(outcome, model.Success)
                              and outcome.refresh_token is not None)
                    raise
                log.warning("refresh_save_retry", error=str(exc))
                await asyncio.sleep(SAVE_RETRY_SECONDS)

    async def drain(self) -> None:
        """Wait for saves still running after their callers were cancelled."""
        if self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)

    def _entry(
        self, account: model.Account, source: str, result: providers.Result,
        client: providers.Provider | None,
    ) -> model.Entry:
        if source == vocabulary.DEBUG:
            action = vocabulary.TOKEN_REFRESH_DEBUG
        else:
            action = vocabulary.TOKEN_REFRESHED if result.ok else vocabulary.TOKEN_REFRESH_FAILED
        if result.ok:
            message = f"access token refreshed, valid for {result.grant.expires_in:g} s"
            error = None
        else:
            message = result.error_description
            error = result.error
        return model.Entry.about(
            account, action=action, source=source, created_at=self.clock(),
            environment=client.config.environment if client else None,
            duration_ms=result.duration_ms, request=result.request, response=result.response,
            error=error, message=message)

    def _observe(
        self, account: model.Account, source: str, result: providers.Result, applied: bool,
    ) -> None:
        if result.ok:
            outcome = "success" if applied else "lease_lost"
        else:  # a provider's own codes are unbounded: keep the metric's label set small
            outcome = result.error_code if result.error_code in METRIC_CODES else "other"
        self.stats.refreshes.labels(account.provider, source, outcome).inc()
        if result.request is not None:  # refused before any HTTP: no latency to count
            self.stats.refresh_seconds.labels(account.provider).observe(result.duration_ms / 1000)
        if result.ok:
            log.info("token_refreshed", provider=account.provider,
                     duration_ms=result.duration_ms, expires_in=result.grant.expires_in,
                     rotated=result.grant.refresh_token is not None, applied=applied)
        else:
            log.warning("token_refresh_failed", provider=account.provider,
                        error_code=result.error_code, error_kind=result.kind,
                        error_description=result.error_description,
                        duration_ms=result.duration_ms)
