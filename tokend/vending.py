"""Access tokens for apps: the stored one when it lives long enough, else one refresh first.

Concurrent callers for one account share a single refresh in this process. Across
replicas the account's lease decides: a loser waits for the lease to be released, then
takes what the winner stored. A refresh is never spent only to refuse its result: when
the provider's tokens live shorter than asked, the fresh one is returned with its real
expiry, and a token in the first half of such a short life is not refreshed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import datetime

import structlog

from tokend import (
    accountcache,
    budget,
    clock,
    config,
    crypto,
    metrics,
    model,
    refresher,
    rejected,
    singleflight,
    store,
    vocabulary,
)

log = structlog.get_logger("tokend.vending")

POLL_SECONDS = 0.1
VEND_MARK_SECONDS = 60.0  # how stale accounts.last_vended_at may get
LEASE_WAIT_MARGIN_SECONDS = 5.0  # beyond the provider call: the holder's save and release


class Refusal(Exception):
    """Why no token is handed out: one of the three below."""


class NotFound(Refusal):
    """No account with this id is visible to the caller."""


class NotActive(Refusal):
    def __init__(self, state: str) -> None:
        super().__init__(f"account is {state}")
        self.state = state


class Unavailable(Refusal):
    """No token good for long enough could be had now; the message says why."""


@dataclasses.dataclass(slots=True)  # not frozen: made on every vend, and frozen costs
class Vended:
    access_token: str = dataclasses.field(repr=False)
    expires_at: datetime
    refreshed: bool
    expires_in: int = 0  # whole seconds left when it was vended: may be less than asked


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """What came of an app's rejected-token report: the verdict, the account as it stands
    after it, and the refresh's error code when the refresh it forced failed."""

    verdict: rejected.Verdict
    account: model.Account
    error_code: str | None = None


class Vendor:
    def __init__(
        self, *, db: store.Store, keyring: crypto.Keyring, worker: refresher.Refresher,
        stats: metrics.Metrics, settings: config.RefreshConfig,
        providers: Mapping[str, config.ProviderConfig] | None = None,
        clock: Callable[[], datetime] = clock.now,
        rejected_window_seconds: float = rejected.WINDOW_SECONDS,
    ) -> None:
        """`providers`: their daily budgets bound the refreshes a rejected-token report
        forces (a paused provider is never called either way)."""
        self.db, self.keyring, self.worker, self.stats = db, keyring, worker, stats
        self.providers = providers or {}
        self.clock = clock
        self.lease_seconds = settings.lease_seconds
        self.rejected_window_seconds = rejected_window_seconds
        self._reports: singleflight.SingleFlight[Report] = singleflight.SingleFlight(
            "rejected-report")
        self.wait_seconds = settings.request_timeout_seconds + LEASE_WAIT_MARGIN_SECONDS
        self._refreshes: singleflight.SingleFlight[
            tuple[model.Account | None, str | None]] = singleflight.SingleFlight("vend-refresh")
        self._short_lived: set[str] = set()  # ids whose fresh tokens came back shorter
        self.rows = accountcache.AccountCache(db)
        self._marked: dict[str, datetime] = {}  # id -> when this process last marked it

    async def vend(
        self, account_id: str, *, min_valid_seconds: float, org: str | None = None,
    ) -> Vended:
        """A token valid for at least `min_valid_seconds`; `org` limits what is visible."""
        started = time.monotonic()
        try:
            account = _visible(await self.rows.get(account_id), org)
            now = self.clock()
            refreshed = not self._good_enough(account, min_valid_seconds, now)
            if refreshed:
                account = await self._refreshed(account, min_valid_seconds, org)
                now = self.clock()
            if self._mark_due(account, now):
                await self.db.touch_vended(account.id, now)
            vended = self._hand_out(account, now, refreshed)
        except NotFound:
            self.stats.vends.refused("not_found")
            raise
        except NotActive:
            self.stats.vends.refused("not_active")
            raise
        except Unavailable as exc:
            self.stats.vends.refused("unavailable")
            log.warning("token_vend_failed", account_id=account_id, error=str(exc))
            raise
        if not refreshed:  # the busy path: counted, no log line per request
            self.stats.vends.answered("stored", time.monotonic() - started)
            return vended
        self.stats.vends.answered("refreshed", time.monotonic() - started)
        log.info("token_vended", account_id=account_id, refreshed=True,
                 expires_at=vended.expires_at.isoformat())
        return vended

    async def _refreshed(self, account: model.Account, min_valid_seconds: float,
                         org: str | None) -> model.Account:
        """The stored token will not do: the account after a refresh (joined or started)."""
        seen = account.access_token
        latest, error_code = await self._shared_refresh(account.id, min_valid_seconds, seen)
        self.rows.forget(account.id)
        account = _visible(latest, org)
        renewed = account.access_token != seen and self._valid(account)
        if not (renewed or self._good_enough(account, min_valid_seconds)):
            raise Unavailable(f"refresh failed: {error_code}" if error_code else
                              f"no access token valid for {min_valid_seconds:g} s")
        self._learn(account, min_valid_seconds)
        return account

    def _hand_out(self, account: model.Account, now: datetime, refreshed: bool) -> Vended:
        """The plaintext of a token `_good_enough` accepted, for this request only."""
        expires_at = account.access_expires_at
        assert account.access_token is not None and expires_at is not None
        try:
            token = self.keyring.decrypt(account.access_token, account_id=account.id,
                                         column="access_token", keep=True)
        except crypto.DecryptError:
            raise Unavailable("stored access token cannot be decrypted") from None
        return Vended(access_token=token, expires_at=expires_at, refreshed=refreshed,
                      expires_in=max(0, int((expires_at - now).total_seconds())))

    def _mark_due(self, account: model.Account, now: datetime) -> bool:
        """Whether to mark the account in demand, keeping it on the schedule of a
        demand-aware provider: one write a minute at most per account, so a busy app costs
        no write (and no coroutine) per vend."""
        last = self._marked.get(account.id, account.last_vended_at)
        if last is None or (now - last).total_seconds() >= VEND_MARK_SECONDS:
            self._marked[account.id] = now
            return True
        return False

    def _learn(self, account: model.Account, min_valid_seconds: float) -> None:
        """Remember which accounts' providers hand out tokens shorter than apps ask for,
        so the next vend does not refresh a token that a refresh could not better."""
        assert account.access_expires_at is not None
        if (account.access_expires_at - self.clock()).total_seconds() >= min_valid_seconds:
            self._short_lived.discard(account.id)
        else:
            self._short_lived.add(account.id)

    def _valid(self, account: model.Account) -> bool:
        return (account.access_token is not None and account.access_expires_at is not None
                and account.access_expires_at > self.clock())

    def _good_enough(self, account: model.Account, min_valid_seconds: float,
                     now: datetime | None = None) -> bool:
        """Valid for `min_valid_seconds`, or as good as a refresh could make it: when the
        provider's tokens live shorter than asked, one in the first half of its life."""
        expires_at = account.access_expires_at
        if account.access_token is None or expires_at is None:
            return False
        left = (expires_at - (now or self.clock())).total_seconds()
        if left <= 0:
            return False
        if left >= min_valid_seconds:
            return True
        if account.last_refresh_at is None or account.id not in self._short_lived:
            return False
        lifetime = (account.access_expires_at - account.last_refresh_at).total_seconds()
        return lifetime < min_valid_seconds and left >= lifetime / 2

    async def _shared_refresh(
        self, account_id: str, min_valid_seconds: float, seen: str | None,
    ) -> tuple[model.Account | None, str | None]:
        """Join the refresh in flight for this account, or start one."""
        return await self._refreshes.run(
            account_id, lambda: self._ensure_fresh(account_id, min_valid_seconds, seen))

    async def _ensure_fresh(
        self, account_id: str, min_valid_seconds: float, seen: str | None,
    ) -> tuple[model.Account | None, str | None]:
        """Refresh unless someone just did; wait out another owner's lease. Re-reads first,
        so a caller arriving after another refresh finished (here or on another replica)
        takes its token instead of spending one more."""
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while True:
            account = await self.db.get_account(account_id)
            if (account is None or account.state != model.ACTIVE
                    or self._good_enough(account, min_valid_seconds)
                    or (account.access_token != seen and self._valid(account))):
                return account, None
            try:
                outcome = await self.worker.refresh_now(account_id, source=vocabulary.VEND)
            except refresher.NotFound:
                return None, None
            except refresher.Busy:
                await self._wait_for_lease(account_id, deadline)
                continue
            return await self.db.get_account(account_id), outcome.error_code

    async def _wait_for_lease(self, account_id: str, deadline: float) -> None:
        event_loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if event_loop.time() >= deadline:
                raise Unavailable("account is being refreshed by another worker; try again")
            account = await self.db.get_account(account_id)
            if account is None or account.state != model.ACTIVE or not _leased(
                    account, self.clock()):
                return


    async def close(self) -> None:
        await self.rows.close()

    async def report_rejected(self, account_id: str, sha256: str, *,
                              org: str | None = None) -> Report:
        """An app says the provider refused the token whose hash is `sha256`: refresh once
        when it is still the current token (rejected.decide). Reports of one token in this
        process share one judgement; across replicas the version-guarded claim decides."""
        _visible(await self.db.get_account(account_id), org)
        return await self._reports.run(f"{account_id}:{sha256}",
                                       lambda: self._judge(account_id, sha256))

    async def _judge(self, account_id: str, sha256: str) -> Report:
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while True:
            account = _visible(await self.db.get_account(account_id), None)
            now = self.clock()
            verdict = rejected.decide(
                account, reported=sha256, current=self._digest(account), now=now,
                blocked_until=await self._blocked_until(account.provider, now),
                window_seconds=self.rejected_window_seconds)
            if verdict.kind == rejected.WAIT:
                await self._wait_for_lease(account_id, deadline)
                continue
            if verdict.kind != rejected.REFRESH:
                return Report(verdict, account)
            claimed = await self.db.claim_account_version(
                account_id, account.version, self.worker.owner, now,
                lease_seconds=self.lease_seconds)
            if claimed is None:  # changed since it was read: judge the new row
                if asyncio.get_running_loop().time() >= deadline:
                    raise Unavailable("the account keeps changing; try again")
                continue
            outcome = await self.worker.refresh_claimed(claimed, vocabulary.VEND)
            self.rows.forget(account_id)
            latest = await self.db.get_account(account_id)
            return Report(verdict, latest or claimed,
                          None if outcome.success else outcome.error_code or "error")

    def _digest(self, account: model.Account) -> str | None:
        """The stored token's hash; the plaintext lives only in this call."""
        if account.access_token is None:
            return None
        try:
            return rejected.digest(self.keyring.decrypt(
                account.access_token, account_id=account.id, column="access_token"))
        except crypto.DecryptError:
            return None

    async def _blocked_until(self, provider: str, now: datetime) -> datetime | None:
        """When a paused provider (invalid_client, or its daily budget spent) may be called
        again; None when it may be called now."""
        until = (await self.db.paused_providers(now)).get(provider)
        limits = {provider: self.providers[provider]} if provider in self.providers else {}
        for standing in await budget.standings(self.db, limits, now):
            if standing.state == budget.EXHAUSTED:
                until = max(until or now, budget.day_ends(now))
        return until


def _visible(account: model.Account | None, org: str | None) -> model.Account:
    if account is None or (org is not None and account.org != org):
        raise NotFound
    if account.state != model.ACTIVE:
        raise NotActive(account.state)
    return account


def _leased(account: model.Account, now: datetime) -> bool:
    return (account.lease_owner is not None and account.lease_expires_at is not None
            and account.lease_expires_at > now)
