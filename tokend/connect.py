"""The authorization-code grant: connect links, state, code exchange, reconnect.

Provider-neutral: a link (`create_link`) is opened once (`open_link`), which binds a fresh
random `state` (and, except for eBay, a PKCE S256 verifier) to it and sends the browser to
the provider's configured authorize URL, never anywhere else. The provider sends the
browser back to `/oauth/callback` (`callback`): the state is taken once, the code is
exchanged through the same provider client as every refresh, and eBay's Identity API says
who signed in. Only then is anything written, in one transaction with its event.

The link token and the state are kept as SHA-256 hashes (they are 256-bit random values,
so a hash is enough), the verifier as an ENC:v1 envelope bound to the link id.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from tokend import (
    clock,
    config,
    crypto,
    masking,
    model,
    providers,
    recorder,
    schedule,
    store,
    stream,
    throttle,
    vocabulary,
)
from tokend.ebay import identity

log = structlog.get_logger("tokend.connect")

LINK_LIFETIME_SECONDS = 900.0  # a link works once, for at most 15 minutes
STATE_LIFETIME_SECONDS = 900.0  # from opening the link to coming back with the code
CALLBACK_PATH = "/oauth/callback"
CONNECT_PATH = "/connect/"


class LinkError(Exception):
    """A link that cannot be made (bad provider, account, configuration): a 4xx answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Refused(Exception):
    """A link or callback refused: a 4xx page; nothing was stored."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    id: str
    url: str
    expires_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    """A successful callback: the account, whether it was a reconnect, and the scopes
    asked for that the provider did not grant."""

    account: model.Account
    reconnected: bool
    not_granted: tuple[str, ...]


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _masked_url(url: str, secret_params: Sequence[str]) -> str:
    """`url` with the values of `secret_params` masked, for the HTTP log."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, masking.mask_secret(v) if k in secret_params else v)
             for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


class Service:
    """Connect links for one daemon (built in `daemon.assemble`)."""

    def __init__(
        self, *, db: store.Store, keyring: crypto.Keyring, cfg: config.Config,
        clients: Mapping[str, providers.Provider], session: aiohttp.ClientSession | None,
        hub: stream.Hub | None,
    ) -> None:
        self.db, self.keyring, self.cfg, self.clients = db, keyring, cfg, clients
        self.session, self.hub = session, hub
        self.entries = recorder.Recorder(db, hub)
        self.refusals = throttle.refusals()  # anyone can send a browser here

    # -- links ------------------------------------------------------------------------
    def redirect_uri(self, provider: config.ProviderConfig) -> str:
        """eBay: the RuName; elsewhere the configured value or our callback URL."""
        if provider.redirect_uri:
            return provider.redirect_uri
        return self.cfg.server.public_url + CALLBACK_PATH

    async def create_link(
        self, *, provider: str, org: str, account_id: str | None = None,
        scopes: Sequence[str] = (),
    ) -> Link:
        if not self.cfg.server.public_url:
            raise LinkError(409, "server.public_url is not configured: connect links need it")
        p = self.cfg.providers.get(provider)
        if p is None:
            raise LinkError(400, f"no provider {provider!r} is configured")
        if not p.authorize_url:
            raise LinkError(409, f"providers.{provider}.authorize_url is not configured")
        if p.profile.redirect_uri_required and not p.redirect_uri:
            raise LinkError(409, f"providers.{provider}.redirect_uri (the app's RuName) "
                                 "is not configured")
        if account_id is not None:
            account = await self.db.get_account(account_id)
            if account is None or account.org != org:
                raise LinkError(404, "unknown account")
            if account.provider != provider:
                raise LinkError(400, f"account {account_id!r} is not a {provider} account")
            if account.state == model.DELETED:
                raise LinkError(409, "a deleted account cannot be reconnected")
        now = clock.now()
        token = secrets.token_urlsafe(32)
        link = await self.db.add_connect_link(model.NewConnectLink(
            id="link_" + secrets.token_hex(8), token_hash=token_hash(token), provider=provider,
            org=org, account_id=account_id, scopes=tuple(scopes),
            expires_at=now + timedelta(seconds=LINK_LIFETIME_SECONDS)), now)
        log.info("connect_link_created", link_id=link.id, provider=provider, org=org,
                 reconnect=account_id is not None)
        return Link(id=link.id, url=self.cfg.server.public_url + CONNECT_PATH + token,
                    expires_at=link.expires_at)

    async def open_link(self, token: str) -> str:
        """The provider's authorize URL for this link, with a fresh state bound to it."""
        now = clock.now()
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 allows 43-128
        link = await self.db.find_connect_link(token_hash=token_hash(token))
        if link is None or not _same(link.token_hash, token_hash(token)):
            raise await self._refuse(404, "Unknown link",
                                     "This connect link does not exist.", "unknown_link")
        p = self.cfg.providers.get(link.provider)
        if p is None:  # removed from the configuration since the link was made
            raise await self._refuse(409, "Unknown provider",
                                     f"No provider {link.provider!r} is configured.",
                                     "provider_unknown", link=link)
        pkce = p.profile.pkce
        opened = await self.db.open_connect_link(
            token_hash(token), state_hash=token_hash(state),
            code_verifier=self.keyring.encrypt(verifier, account_id=link.id,
                                               column="code_verifier") if pkce else None,
            state_expires_at=now + timedelta(seconds=STATE_LIFETIME_SECONDS), now=now)
        if opened is None:
            used = link.expires_at > now  # unexpired, so somebody opened it first
            raise await self._refuse(
                410, "Link already used" if used else "Link expired",
                "This connect link has already been used; ask for a new one." if used
                else "This connect link has expired; ask for a new one.",
                "link_used" if used else "link_expired", link=link)
        params = {"client_id": p.client_id, "redirect_uri": self.redirect_uri(p),
                  "response_type": "code", "scope": " ".join(link.scopes or p.scopes),
                  "state": state}
        if pkce:
            params |= {"code_challenge": pkce_challenge(verifier),
                       "code_challenge_method": "S256"}
        separator = "&" if urllib.parse.urlsplit(p.authorize_url).query else "?"
        url = p.authorize_url + separator + urllib.parse.urlencode(
            params, quote_via=urllib.parse.quote)
        await self._log(vocabulary.CONNECT_AUTHORIZE, link,
                        "browser sent to the provider's consent page",
                        request={"method": "GET",
                                 "url": _masked_url(url, ("state", "code_challenge"))},
                        response={"status": 302})
        return url

    # -- the callback -----------------------------------------------------------------
    async def callback(self, query: Mapping[str, str]) -> Connected:
        now = clock.now()
        state = query.get("state", "")
        if not state:
            raise await self._refuse(400, "Missing state",
                                     "The provider came back without a state.",
                                     "missing_state")
        link = await self.db.consume_connect_state(token_hash(state), now)
        if link is None or not _same(link.state_hash, token_hash(state)):
            raise await self._stale_state(state)
        if "error" in query:
            error = query["error"][:100]
            await self.db.set_connect_outcome(link.id, "declined" if error == "access_denied"
                                              else "provider_error")
            if error == "access_denied":
                raise await self._refuse(403, "Consent declined",
                                         "The sign-in was declined; nothing was connected.",
                                         "access_denied", link=link)
            raise await self._refuse(400, "Provider error",
                                     f"The provider answered {error!r}; nothing was "
                                     "connected.", error, link=link)
        code = query.get("code", "")
        if not code:
            await self.db.set_connect_outcome(link.id, "missing_code")
            raise await self._refuse(400, "Missing code",
                                     "The provider came back without a code.",
                                     "missing_code", link=link)
        try:
            return await self._finish(link, code)
        except Refused as refused:
            await self.db.set_connect_outcome(link.id, refused.title.lower().replace(" ", "_"))
            raise

    async def _stale_state(self, state: str) -> Refused:
        link = await self.db.find_connect_link(state_hash=token_hash(state))
        if link is None:
            return await self._refuse(400, "Unknown state",
                                      "This sign-in does not belong to any connect link.",
                                      "unknown_state")
        if link.finished_at is not None:
            return await self._refuse(409, "Already used",
                                      "This sign-in has already been used.", "state_used",
                                      link=link)
        return await self._refuse(410, "Sign-in expired",
                                  "This sign-in took too long; ask for a new link.",
                                  "state_expired", link=link)

    async def _finish(self, link: model.ConnectLink, code: str) -> Connected:
        p = self.cfg.providers.get(link.provider)
        client = self.clients.get(link.provider)
        if p is None or client is None:
            raise await self._refuse(400, "Unknown provider",
                                     f"No provider {link.provider!r} is configured.",
                                     "provider_unknown", link=link)
        verifier = None
        if link.code_verifier is not None:
            try:
                verifier = self.keyring.decrypt(link.code_verifier, account_id=link.id,
                                                column="code_verifier")
            except crypto.DecryptError as exc:  # e.g. its key was dropped meanwhile
                raise await self._refuse(400, "Link unusable", "This sign-in can no longer "
                                         "be completed; ask for a new link.",
                                         exc.code, link=link) from None
        result = await client.send(self.session, client.prepare_code(
            code, redirect_uri=self.redirect_uri(p), code_verifier=verifier))
        await self.db.count_token_call(link.provider, "authorization_code", clock.now())
        grant = result.grant
        problem = result.error_description or result.error_code
        if grant is not None and not grant.refresh_token:
            grant, problem = None, "the provider gave no refresh token"
        await self._log(vocabulary.CONNECT_EXCHANGE, link,
                        "code exchanged" if grant else f"code exchange failed: {problem}",
                        request=result.request, response=result.response,
                        duration_ms=result.duration_ms,
                        error=None if grant else result.error or vocabulary.error(
                            providers.BAD_RESPONSE, problem))
        if grant is None:
            raise Refused(400, "Exchange failed",
                          "The provider did not accept the sign-in; nothing was connected.")
        user = None
        if p.profile.identity_lookup and p.identity_url:
            user = await self._identify(link, p, grant.access_token)
        return await self._store(link, p, result, grant, user)

    async def _identify(self, link: model.ConnectLink, p: config.ProviderConfig,
                        access_token: str) -> identity.User:
        lookup = await identity.get_user(self.session, p.identity_url, access_token,
                                         timeout_seconds=self.cfg.refresh.request_timeout_seconds)
        if lookup.user is not None:  # first: what is logged next names them
            await self.db.set_connect_user(link.id, lookup.user.user_id)
        await self._log(vocabulary.CONNECT_IDENTITY, link,
                        f"signed in as {lookup.user.username or lookup.user.user_id}"
                        if lookup.user else f"identity lookup failed: {lookup.error}",
                        request=lookup.request, response=lookup.response,
                        duration_ms=lookup.duration_ms,
                        error=None if lookup.user else vocabulary.error(
                            "identity_failed", lookup.error))
        if lookup.user is None:
            raise Refused(400, "Identity failed",
                          "Could not tell which eBay user signed in; nothing was connected.")
        return lookup.user

    async def _store(
        self, link: model.ConnectLink, p: config.ProviderConfig, result: providers.Result,
        grant: providers.Grant, user: identity.User | None,
    ) -> Connected:
        now = clock.now()
        asked = tuple(link.scopes or p.scopes)
        granted = tuple(grant.scope.split()) if grant.scope else asked
        not_granted = tuple(s for s in asked if s not in granted)
        reconnect = link.account_id is not None
        account_id = link.account_id or "acct_" + secrets.token_hex(8)
        name = (user.username or user.user_id) if user else account_id

        def seal(value: str, column: str) -> str:
            return self.keyring.encrypt(value, account_id=account_id, column=column)

        assert grant.refresh_token is not None  # checked by _finish
        connected = model.Connected(
            id=account_id, org=link.org, provider=link.provider, name=name, scopes=granted,
            refresh_token=seal(grant.refresh_token, "refresh_token"),
            refresh_expires_at=None if grant.refresh_token_expires_in is None
            else result.sent_at + timedelta(seconds=grant.refresh_token_expires_in),
            access_token=seal(grant.access_token, "access_token"),
            access_expires_at=result.sent_at + timedelta(seconds=grant.expires_in),
            provider_user_id=user.user_id if user else None,
            provider_user_name=user.username if user else None,
            next_attempt_at=schedule.next_refresh_at(
                result.sent_at, grant.expires_in,
                expiry_threshold_seconds=self.cfg.refresh.expiry_threshold_seconds,
                max_age_seconds=self.cfg.refresh.max_age_seconds))

        def events(account: model.Account) -> list[model.Event]:
            return [model.Event.about(vocabulary.ACCOUNT_CONNECTED, account, state=model.ACTIVE,
                                      reason="reconnected" if reconnect else "connected")]

        try:
            account = await self.db.connect_account(connected, now, reconnect=reconnect,
                                                    events=events)
        except store.DuplicateAccount:
            raise await self._refuse(
                409, "Already connected",
                f"{name} is already connected in {link.org}; reconnect that account "
                "instead.", "already_connected", link=link) from None
        if account is None:
            raise await self._refuse(
                409, "Different user",
                "A different user signed in than the one this account belongs to; "
                "nothing was changed.", "different_user", link=link)
        await self.db.set_connect_outcome(link.id, "reconnected" if reconnect else "connected")
        message = (f"account {account.id} {'reconnected' if reconnect else 'connected'}"
                   + (f"; not granted: {' '.join(not_granted)}" if not_granted else ""))
        await self._log(vocabulary.ACCOUNT_CONNECTED_ACTION, link, message,
                        account_id=account.id,
                        details={"reconnected": reconnect, "scopes": list(granted),
                                 "not_granted": list(not_granted)})
        return Connected(account=account, reconnected=reconnect, not_granted=not_granted)

    # -- log ----------------------------------------------------------------------------
    async def _refuse(self, status: int, title: str, message: str, code: str, *,
                      link: model.ConnectLink | None = None) -> Refused:
        left_out = self.refusals.take()
        if left_out is not None:  # in a flood, the page is still answered but not logged
            await self._log(vocabulary.CONNECT_REFUSED, link, message,
                            error=vocabulary.error(code, message),
                            details={"refusals_not_logged": left_out} if left_out else None)
        return Refused(status, title, message)

    async def _log(
        self, action: str, link: model.ConnectLink | None, message: str, *,
        account_id: str | None = None, request: Mapping[str, Any] | None = None,
        response: Mapping[str, Any] | None = None, duration_ms: float | None = None,
        error: Mapping[str, Any] | None = None, details: Mapping[str, Any] | None = None,
    ) -> None:
        p = self.cfg.providers.get(link.provider) if link else None
        await self.entries.record(model.Entry(
            action=action, source=vocabulary.CONNECT, created_at=clock.now(),
            account_id=account_id or (link.account_id if link else None),
            org_id=link.org if link else None, provider=link.provider if link else None,
            environment=p.environment if p else None, duration_ms=duration_ms,
            request=request, response=response, error=error, message=message,
            details={"link_id": link.id, **(details or {})} if link else details))
        (log.warning if error else log.info)(action, link_id=link.id if link else None,
                                             message=message)
