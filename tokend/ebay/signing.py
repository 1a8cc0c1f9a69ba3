"""eBay signing keys kept like tokens, and requests signed for apps with them.

A key comes from eBay's Key Management API (`createSigningKey`, with the provider's
application token) or from an operator (`import`); its private key is sealed with the
keyring, bound to the key's id, and never leaves tokend: apps send a request's method,
URL and `Content-Digest` and get the four headers back.

Signing is on the path of every signed call, so it touches no database: each process
opens the key in use once and keeps it in memory, and looks again every
`RELOAD_SECONDS` for a newer one (a renewal or an import on another replica). When the
key in use comes within `RENEW_BEFORE_SECONDS` of its expiry, one replica (the renewal
lease decides) asks eBay for a new one and puts it in use; the old one is kept, and stays
valid at eBay until it expires, so a replica that still signs with it meanwhile is fine.
The log entries of signatures are written in batches, off the caller's path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import structlog

from tokend import (
    apptokens,
    clock,
    config,
    crypto,
    masking,
    metrics,
    model,
    recorder,
    singleflight,
    store,
    stream,
    vocabulary,
)
from tokend.ebay import signatures

log = structlog.get_logger("tokend.ebay.signing")

RELOAD_SECONDS = 30.0
RENEW_BEFORE_SECONDS = 30 * 86400.0  # eBay's keys live three years
RENEWAL_LEASE_SECONDS = 120.0
ENTRY_BACKLOG_MAX = 10_000  # signature entries waiting to be written; beyond: dropped
COLUMN = "private_key"
_ANSWER_LIMIT_BYTES = 256 * 1024


class UnknownProvider(Exception):
    """No eBay provider by this name is configured."""


class NoKey(Exception):
    """The provider has no signing key yet."""


class Unavailable(Exception):
    """createSigningKey failed; the message says why (never a key)."""


class ImportRefused(ValueError):
    """An import that cannot be kept; the message says why (never the key)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    headers: dict[str, str]
    signing_key_id: str


@dataclasses.dataclass(slots=True)
class _Loaded:
    key_id: str
    private: signatures.PrivateKey = dataclasses.field(repr=False)
    jwe: str
    expires_at: datetime | None
    checked: float  # time.monotonic() of the last look at the database


def aad_id(key_id: str) -> str:
    """What the keyring binds a private key to (accounts use their own id)."""
    return f"signing-key:{key_id}"


def seal(keyring: crypto.Keyring, key_id: str, private: signatures.PrivateKey) -> str:
    return keyring.encrypt(signatures.private_key_text(private), account_id=aad_id(key_id),
                           column=COLUMN)


class Signer:
    def __init__(
        self, *, db: store.Store, keyring: crypto.Keyring,
        providers: Mapping[str, config.ProviderConfig], app_tokens: apptokens.AppTokens,
        session: aiohttp.ClientSession, hub: stream.Hub, stats: metrics.Metrics,
        settings: config.RefreshConfig, owner: str,
        clock: Callable[[], datetime] = clock.now, reload_seconds: float = RELOAD_SECONDS,
    ) -> None:
        self.db, self.keyring, self.app_tokens, self.session = db, keyring, app_tokens, session
        self.providers = {n: p for n, p in providers.items() if p.profile.signing_keys}
        self.hub, self.stats, self.owner, self.clock = hub, stats, owner, clock
        self.entries = recorder.Recorder(db, hub)
        self.reload_seconds = reload_seconds
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout_seconds)
        self._keys: dict[str, _Loaded] = {}
        self._loads: singleflight.SingleFlight[_Loaded] = singleflight.SingleFlight(
            "signing-key")
        self._backlog: list[model.Entry] = []
        self._writer: asyncio.Task[None] | None = None
        self._renewals: set[asyncio.Task[Any]] = set()
        self.entries_dropped = 0

    def _provider(self, name: str) -> config.ProviderConfig:
        provider = self.providers.get(name)
        if provider is None:
            raise UnknownProvider(name)
        return provider

    # -- signing ----------------------------------------------------------------------
    async def sign(self, provider: str, method: str, url: str,
                   content_digest: str | None) -> Signed:
        """The headers eBay wants on this request; SigningError for a request that cannot
        be signed, NoKey when the provider has no key."""
        settings = self._provider(provider)
        try:
            request = signatures.target(method, url)
            if content_digest is not None:
                signatures.check_digest(content_digest)
        except signatures.SigningError:
            self.stats.signatures.labels(provider, "bad_request").inc()
            raise
        try:
            loaded = await self._key(provider)
        except NoKey:
            self.stats.signatures.labels(provider, "no_key").inc()
            self._record(self._entry(
                settings, vocabulary.REQUEST_SIGNING_REFUSED, request, None,
                error=vocabulary.error("no_signing_key", "the provider has no signing key; "
                                       "run `tokend ebay signing-key create`")))
            raise
        headers = signatures.headers(loaded.private, loaded.jwe, request,
                                     created=int(self.clock().timestamp()), digest=content_digest)
        self.stats.signatures.labels(provider, "signed").inc()
        self._record(self._entry(settings, vocabulary.REQUEST_SIGNED, request, loaded.key_id,
                                 digest=content_digest is not None))
        return Signed(headers=headers, signing_key_id=loaded.key_id)

    async def _key(self, provider: str) -> _Loaded:
        loaded = self._keys.get(provider)
        if loaded is not None and time.monotonic() - loaded.checked < self.reload_seconds:
            return loaded
        return await self._loads.run(provider, lambda: self._load(provider))

    async def _load(self, provider: str) -> _Loaded:
        """The key in use, opened once per process and kept while it stays in use."""
        row = await self.db.signing_key_in_use(provider)
        if row is None:
            self._keys.pop(provider, None)
            raise NoKey(provider)
        loaded = self._keys.get(provider)
        if loaded is None or loaded.key_id != row.id:
            loaded = self._open(row)
            log.info("signing_key_loaded", provider=provider, signing_key_id=row.id)
        loaded.checked = time.monotonic()
        self._keys[provider] = loaded
        if self._renewal_due(row):
            task = asyncio.ensure_future(self.renew(provider))
            self._renewals.add(task)
            task.add_done_callback(self._renewed)
        return loaded

    def _open(self, row: model.SigningKey) -> _Loaded:
        try:
            text = self.keyring.decrypt(row.private_key, account_id=aad_id(row.id),
                                        column=COLUMN)
            private, _ = signatures.load_private_key(text)
        except (crypto.DecryptError, signatures.KeyFormatError) as exc:
            log.error("signing_key_unusable", provider=row.provider, signing_key_id=row.id,
                      error=type(exc).__name__)
            raise NoKey(row.provider) from None
        return _Loaded(key_id=row.id, private=private, jwe=row.jwe, expires_at=row.expires_at,
                       checked=0.0)

    def _renewal_due(self, row: model.SigningKey) -> bool:
        return (row.expires_at is not None and row.provider in self.providers
                and row.expires_at - self.clock() <= timedelta(seconds=RENEW_BEFORE_SECONDS)
                and (row.renewal_until is None or row.renewal_until <= self.clock()))

    def _renewed(self, task: asyncio.Task[Any]) -> None:
        self._renewals.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("signing_key_renewal_failed", error=str(task.exception()))

    # -- keys -------------------------------------------------------------------------
    async def renew(self, provider: str) -> model.SigningKey | None:
        """A new key in place of the one in use, by whichever replica leases its renewal;
        None when there is nothing to renew or another replica is at it."""
        current = await self.db.signing_key_in_use(provider)
        if current is None or not self._renewal_due(current):
            return None
        if not await self.db.claim_signing_key_renewal(
                current, self.owner, self.clock(), lease_seconds=RENEWAL_LEASE_SECONDS):
            return None
        # A failure keeps the lease: replicas ask eBay again only once it has run out.
        key = await self.create(provider, current.cipher, source=vocabulary.VEND,
                                renews=current.id)
        await self.db.release_signing_key_renewal(current.id, self.owner)
        return key

    async def create(self, provider: str, cipher: str = signatures.ED25519, *,
                     source: str = vocabulary.ADMIN, renews: str | None = None,
                     ) -> model.SigningKey:
        """createSigningKey with the provider's application token; the key is kept sealed
        and put in use at once. Unavailable when eBay does not answer a usable key."""
        settings = self._provider(provider)
        if cipher not in signatures.CIPHERS:
            raise ValueError(f"cipher must be one of {', '.join(signatures.CIPHERS)}")
        try:
            token = await self.app_tokens.get(provider, source=source)
        except apptokens.Unavailable as exc:
            raise Unavailable(f"no application token: {exc}") from None
        url = settings.key_management_url.rstrip("/") + "/signing_key"
        body = {"signingKeyCipher": cipher}
        request = {"method": "POST", "url": url,
                   "headers": {"Authorization": "Bearer ****",
                               "Content-Type": "application/json"}, "body": body}
        started = time.perf_counter()
        status, reason, answer, error = None, None, None, None
        try:
            async with self.session.post(
                    url, data=orjson.dumps(body), timeout=self._timeout,
                    headers={"Authorization": f"Bearer {token.access_token}",
                             "Content-Type": "application/json",
                             "Accept": "application/json"}) as response:
                status, reason = response.status, response.reason
                raw = await response.content.read(_ANSWER_LIMIT_BYTES)
            answer = orjson.loads(raw) if raw else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"createSigningKey did not answer: {type(exc).__name__}"
        except orjson.JSONDecodeError:
            error = f"createSigningKey answered {status} with a body that is not JSON"
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        kept: model.SigningKey | None = None
        if error is None:
            try:
                kept = await self._keep_answer(provider, cipher, status, answer)
            except Unavailable as exc:
                error = str(exc)
        if kept is not None:
            self._keys.pop(provider, None)  # in use here at once; elsewhere at the next look
        outcome = "created" if kept is not None else "failed"
        self.stats.signing_keys_created.labels(provider, outcome).inc()
        await self.entries.record(model.Entry(
            action=vocabulary.SIGNING_KEY_CREATED if kept else vocabulary.SIGNING_KEY_FAILED,
            source=source, created_at=self.clock(), provider=provider,
            environment=settings.environment, duration_ms=duration_ms, request=request,
            response=None if status is None else {
                "status": status, "reason": reason, "body": _summary(answer)},
            error=None if kept else vocabulary.error("signing_key_failed", error),
            message=(f"signing key {kept.id} ({kept.cipher}) created" + (
                f", renewing {renews}" if renews else "")) if kept else error,
            details={"signing_key_id": kept.id if kept else None, "cipher": cipher,
                     **({"renews": renews} if renews else {})}))
        if kept is None:
            log.warning("signing_key_failed", provider=provider, error=error)
            raise Unavailable(error or "createSigningKey failed")
        log.info("signing_key_created", provider=provider, signing_key_id=kept.id,
                 cipher=kept.cipher, renews=renews)
        return kept

    async def _keep_answer(self, provider: str, cipher: str, status: int | None,
                           answer: Any) -> model.SigningKey:
        if status != 200 and status != 201:
            raise Unavailable(f"createSigningKey answered {status}: {_errors(answer)}")
        if not isinstance(answer, dict):
            raise Unavailable("createSigningKey answered no key")
        key_id, jwe = answer.get("signingKeyId"), answer.get("jwe")
        if not (isinstance(key_id, str) and key_id and isinstance(jwe, str) and jwe):
            raise Unavailable("createSigningKey answered no signingKeyId or jwe")
        try:
            private, found = signatures.load_private_key(str(answer.get("privateKey", "")))
        except signatures.KeyFormatError as exc:
            raise Unavailable(f"createSigningKey answered an unusable private key: {exc}") \
                from None
        if found != cipher:
            raise Unavailable(f"createSigningKey answered a {found} key, not {cipher}")
        now = self.clock()
        try:
            return await self.db.add_signing_key(
                id=key_id, provider=provider, cipher=found, private_key=seal(
                    self.keyring, key_id, private),
                public_key=signatures.public_key_text(private), jwe=jwe,
                created_at=_epoch(answer.get("creationTime")) or now,
                expires_at=_epoch(answer.get("expirationTime")), activated_at=now, now=now)
        except store.DuplicateKey:
            raise Unavailable(f"signing key {key_id} is kept already") from None

    async def import_key(self, provider: str, key_id: str, jwe: str, private_text: str, *,
                         expires_at: datetime | None = None) -> model.SigningKey:
        """Keep a key made elsewhere and put it in use."""
        settings = self._provider(provider)
        key_id, jwe = key_id.strip(), jwe.strip()
        if not key_id or len(key_id) > 200 or not key_id.isprintable():
            raise ImportRefused("the signing key id must be 1-200 printable characters")
        if jwe.count(".") != 4 or any(c.isspace() for c in jwe):
            raise ImportRefused("the JWE must be eBay's compact JWE (five dot-separated parts)")
        try:
            private, cipher = signatures.load_private_key(private_text)
        except signatures.KeyFormatError as exc:
            raise ImportRefused(f"the private key on standard input: {exc}") from None
        now = self.clock()
        try:
            kept = await self.db.add_signing_key(
                id=key_id, provider=provider, cipher=cipher,
                private_key=seal(self.keyring, key_id, private),
                public_key=signatures.public_key_text(private), jwe=jwe, created_at=now,
                expires_at=expires_at, activated_at=now, now=now)
        except store.DuplicateKey:
            raise ImportRefused(f"signing key {key_id} is kept already") from None
        self._keys.pop(provider, None)
        await self.entries.record(model.Entry(
            action=vocabulary.SIGNING_KEY_IMPORTED, source=vocabulary.ADMIN, created_at=now,
            provider=provider, environment=settings.environment,
            message=f"signing key {key_id} ({cipher}) imported and in use",
            details={"signing_key_id": key_id, "cipher": cipher}))
        return kept

    async def listing(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Every kept key, without secrets, and which one each provider uses."""
        keys = await self.db.list_signing_keys(provider)
        in_use = {}
        for key in keys:
            if key.activated_at is not None:
                best = in_use.get(key.provider)
                if best is None or (key.activated_at, key.id) > (best.activated_at, best.id):
                    in_use[key.provider] = key
        return [key.public(in_use=in_use.get(key.provider) is key) for key in keys]

    # -- the entries --------------------------------------------------------------------
    def _entry(self, settings: config.ProviderConfig, action: str, request: signatures.Target,
               key_id: str | None, *, digest: bool = False,
               error: dict[str, Any] | None = None) -> model.Entry:
        return model.Entry(
            action=action, source=vocabulary.VEND, created_at=self.clock(),
            provider=settings.name, environment=settings.environment, error=error,
            message=(f"signed {request.method} {request.authority}{request.path}"
                     if key_id else f"cannot sign {request.method} {request.path}: no key"),
            details={"signing_key_id": key_id, "method": request.method,
                     "authority": request.authority, "path": request.path[:500],
                     "content_digest": digest})

    def _record(self, entry: model.Entry) -> None:
        """Queue a signature's entry; a writer task stores the backlog in batches."""
        if len(self._backlog) >= ENTRY_BACKLOG_MAX:
            self.entries_dropped += 1
            return
        self._backlog.append(entry)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        try:
            while self._backlog:
                batch, self._backlog = self._backlog, []
                try:
                    stored = await self.db.add_signature_entries(batch)
                except Exception as exc:  # an outage loses log lines, never a signature
                    self.entries_dropped += len(batch)
                    log.warning("signature_entries_lost", count=len(batch),
                                error=type(exc).__name__)
                    continue
                self.entries.publish(*stored)
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Write what is queued and wait for renewals under way (shutdown)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._backlog:
            await self._write()
        if self._renewals:
            await asyncio.gather(*self._renewals, return_exceptions=True)


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def _errors(answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("errors"), list) and answer["errors"]:
        first = answer["errors"][0]
        if isinstance(first, dict):
            return str(first.get("longMessage") or first.get("message") or first)[:300]
    return "no usable answer"


def _summary(answer: Any) -> Any:
    """What the log keeps of eBay's answer: never the private key, nor the long public
    halves (the key id names them)."""
    if not isinstance(answer, dict):
        return masking.mask(answer)
    return {k: ("(sealed, kept)" if k == "privateKey" else "..." if k in ("publicKey", "jwe")
                else masking.mask(v)) for k, v in answer.items()}
