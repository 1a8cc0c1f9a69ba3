"""Application tokens (the client_credentials grant): one cached per provider and scope
set, renewed before it expires, and asked for by one caller at a time everywhere.

eBay allows 1,000 of these grants per app and day, so the token lives in the database
(sealed like every token) and is shared by all replicas. In this process concurrent
callers share one renewal; across replicas the row's lease decides who calls the
provider, and the others wait for the lease to end and take what it stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import aiohttp
import structlog

from tokend import (
    clock,
    config,
    crypto,
    model,
    providers,
    recorder,
    singleflight,
    store,
    stream,
    vocabulary,
)

log = structlog.get_logger("tokend.apptokens")

POLL_SECONDS = 0.1
LEASE_WAIT_MARGIN_SECONDS = 5.0  # beyond the provider call: the holder's save and release
_COLUMN = "access_token"


class UnknownProvider(Exception):
    """No provider by this name is configured."""


class Unavailable(Exception):
    """No application token could be had now; the message says why (never a secret)."""


class BadScope(Exception):
    """The provider refused the scopes asked for (`invalid_scope`): asking again will not
    help, so the caller hears it was their request."""


@dataclasses.dataclass(frozen=True, slots=True)
class Issued:
    access_token: str = dataclasses.field(repr=False)
    expires_at: datetime
    renewed: bool


def scope_set(scopes: Sequence[str]) -> str:
    """The scope set as stored: each scope once, sorted, space-separated."""
    return " ".join(sorted(set(scopes)))


def token_id(provider: str, scopes: str) -> str:
    """A stable, fixed-length row id (scope lists are long URLs); the sealed token is bound
    to it, so a ciphertext copied to another provider's row does not open."""
    return f"{provider}:" + hashlib.sha256(scopes.encode()).hexdigest()[:32]


def default_scopes(client: providers.Provider) -> tuple[str, ...]:
    return client.config.profile.app_scopes


class AppTokens:
    def __init__(
        self, *, db: store.Store, keyring: crypto.Keyring,
        clients: Mapping[str, providers.Provider], session: aiohttp.ClientSession,
        hub: stream.Hub, settings: config.RefreshConfig, owner: str,
        clock: Callable[[], datetime] = clock.now,
    ) -> None:
        self.db, self.keyring, self.clients, self.session = db, keyring, clients, session
        self.hub, self.settings, self.owner, self.clock = hub, settings, owner, clock
        self.entries = recorder.Recorder(db, hub)
        self.wait_seconds = settings.request_timeout_seconds + LEASE_WAIT_MARGIN_SECONDS
        self._renewals: singleflight.SingleFlight[Issued] = singleflight.SingleFlight(
            "app-token")
        self._saves: set[asyncio.Task] = set()

    async def get(
        self, provider: str, scopes: Sequence[str] = (), *, source: str = vocabulary.VEND,
    ) -> Issued:
        """A token for `scopes` (none: the provider's default) that outlives the renewal
        margin; renews it first when it does not."""
        client = self.clients.get(provider)
        if client is None:
            raise UnknownProvider(provider)
        scopes_text = scope_set(scopes or default_scopes(client))
        key = token_id(provider, scopes_text)
        issued = self._usable(await self.db.get_app_token(key))
        if issued is not None:
            return issued
        return await self._renewals.run(
            key, lambda: self._renew(client, key, scopes_text, source))

    def _usable(self, row: model.AppToken | None) -> Issued | None:
        """The stored token if it is valid beyond the renewal margin (the refresh loop's
        expiry threshold, or half its life when the provider's tokens live shorter) and
        opens; otherwise None, and a new one is fetched: it is only a cache."""
        if (row is None or row.access_token is None or row.expires_at is None
                or row.issued_at is None):
            return None
        left = (row.expires_at - self.clock()).total_seconds()
        lifetime = (row.expires_at - row.issued_at).total_seconds()
        if left <= min(self.settings.expiry_threshold_seconds, lifetime / 2):
            return None
        try:
            token = self.keyring.decrypt(row.access_token, account_id=aad_id(row.id),
                                         column=_COLUMN)
        except crypto.DecryptError:
            log.warning("app_token_undecryptable", token_id=row.id)
            return None
        return Issued(access_token=token, expires_at=row.expires_at, renewed=False)

    async def _renew(
        self, client: providers.Provider, key: str, scopes_text: str, source: str,
    ) -> Issued:
        deadline = asyncio.get_running_loop().time() + self.wait_seconds
        while True:
            issued = self._usable(await self.db.get_app_token(key))
            if issued is not None:  # another replica renewed it meanwhile
                return issued
            claimed = await self.db.claim_app_token(
                key, client.name, scopes_text, self.owner, self.clock(),
                lease_seconds=self.settings.lease_seconds)
            if claimed is not None:
                break
            if asyncio.get_running_loop().time() >= deadline:
                raise Unavailable("the application token is being renewed by another worker; "
                                  "try again")
            await asyncio.sleep(POLL_SECONDS)
        issued = self._usable(claimed)
        if issued is not None:  # renewed between our read and our claim
            await self._save(key, None, None, None)
            return issued
        result = await client.send(self.session,
                                   client.prepare_client_credentials(scopes_text.split()))
        await self.db.count_token_call(client.name, "client_credentials", clock.now())
        sealed = expires_at = None
        if result.ok:
            sealed = self.keyring.encrypt(result.grant.access_token, account_id=aad_id(key),
                                          column=_COLUMN)
            expires_at = result.sent_at + timedelta(seconds=result.grant.expires_in)
        entry = await self._save(key, sealed, expires_at,
                                 self._entry(client, scopes_text, source, result))
        self.entries.publish(entry)
        if not result.ok:
            log.warning("app_token_failed", provider=client.name, error_code=result.error_code,
                        error_description=result.error_description)
            problem = (f"the provider refused the application token: "
                       f"{result.error_code}: {result.error_description}")
            raise BadScope(problem) if result.error_code == "invalid_scope" else Unavailable(
                problem)
        log.info("app_token_issued", provider=client.name, expires_in=result.grant.expires_in)
        assert expires_at is not None
        return Issued(access_token=result.grant.access_token, expires_at=expires_at,
                      renewed=True)

    async def _save(
        self, key: str, sealed: str | None, expires_at: datetime | None,
        entry: model.Entry | None,
    ) -> model.Entry | None:
        """Store and release, shielded: a token fetched and not saved costs one more grant."""
        task = asyncio.ensure_future(self.db.finish_app_token(
            key, self.owner, access_token=sealed, expires_at=expires_at, entry=entry,
            now=self.clock()))
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)
        _, stored = await asyncio.shield(task)
        return stored

    async def drain(self) -> None:
        """Wait for saves still running after their callers were cancelled."""
        if self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)

    def _entry(
        self, client: providers.Provider, scopes_text: str, source: str,
        result: providers.Result,
    ) -> model.Entry:
        if result.ok:
            action = vocabulary.APP_TOKEN_ISSUED
            message = f"application token issued, valid for {result.grant.expires_in:g} s"
        else:
            action, message = vocabulary.APP_TOKEN_FAILED, result.error_description
        return model.Entry(
            action=action, source=source, created_at=self.clock(), provider=client.name,
            environment=client.environment, duration_ms=result.duration_ms,
            request=result.request, response=result.response, error=result.error,
            message=message, details={"grant_type": "client_credentials",
                                      "scopes": scopes_text.split()})


def aad_id(key: str) -> str:
    """What the keyring binds an application token to (accounts use their own id)."""
    return f"app-token:{key}"
