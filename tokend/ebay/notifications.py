"""eBay's Notification API on our side: the endpoint challenge, the `X-EBAY-SIGNATURE`
check and the public keys it needs (SPEC 10.1).

What is signed follows eBay's own event-notification SDKs (Node `validator.js`, Java
`SignatureValidator`): the message is parsed and serialised again as compact JSON, keys
in the order received (`JSON.stringify(message)`), and that text is verified with
ECDSA over the key's digest (SHA1 today), the signature being DER, base64-encoded.
So a body re-indented in transit still verifies, and any change to a value does not.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tokend import (
    apptokens,
    clock,
    config,
    masking,
    model,
    recorder,
    singleflight,
    store,
    stream,
    throttle,
    vocabulary,
)
from tokend.ebay import profile as ebay_profile
from tokend.providers import client as provider_client

log = structlog.get_logger("tokend.ebay.notifications")

KEY_CACHE_SECONDS = 3600.0  # eBay: cache a public key for an hour
UNKNOWN_KID_CACHE_SECONDS = 300.0  # a key id eBay does not know is asked again after this
# Key ids come from the unauthenticated request, so getPublicKey calls are bounded: eBay has
# a handful of keys, each asked for once an hour; beyond the bound the answer is a 503 and
# eBay delivers again later.
NEW_KID_LOOKUPS_BURST = 10
NEW_KID_LOOKUPS_PER_SECOND = 1 / 30
REASON_LIMIT = 100
SIGNATURE_HEADER = "X-EBAY-SIGNATURE"
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", re.DOTALL)
_DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1, "SHA256": hashes.SHA256, "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512}


class Refused(Exception):
    """The notification is not proven to come from eBay (412), or is malformed (400).
    The message names the problem, never the body."""

    def __init__(self, code: str, message: str, status: int = 412) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class KeyUnavailable(Exception):
    """getPublicKey could not be asked now (network, eBay down, no app token): retryable."""


def challenge_response(challenge_code: str, verification_token: str, endpoint: str) -> str:
    """hex(sha256(challengeCode + verificationToken + endpoint)), as eBay checks it."""
    digest = hashlib.sha256()
    for part in (challenge_code, verification_token, endpoint):
        digest.update(part.encode())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Signature:
    kid: str
    signature: bytes
    alg: str | None
    digest: str | None


def parse_signature(header: str | None) -> Signature:
    """The `X-EBAY-SIGNATURE` header: base64 of JSON {alg, kid, signature, digest}."""
    if not header:
        raise Refused("signature_missing", f"no {SIGNATURE_HEADER} header")
    try:
        data = json.loads(base64.b64decode(header.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):
        raise Refused("signature_malformed",
                      f"{SIGNATURE_HEADER} is not base64-encoded JSON") from None
    if not isinstance(data, dict):
        raise Refused("signature_malformed", f"{SIGNATURE_HEADER} is not a JSON object")
    kid, signature = data.get("kid"), data.get("signature")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise Refused("signature_malformed", f"{SIGNATURE_HEADER} has no usable kid")
    try:
        raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise Refused("signature_malformed", f"{SIGNATURE_HEADER} has no base64 signature")
    alg, digest = data.get("alg"), data.get("digest")
    return Signature(kid=kid, signature=raw, alg=alg if isinstance(alg, str) else None,
                     digest=digest if isinstance(digest, str) else None)


def _number(literal: str) -> float | int:
    """JSON numbers read so that writing them again matches JavaScript's: an integral
    float is an integer there (`1.0` -> `1`)."""
    value = float(literal)
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_message(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or Refused(400)."""
    try:
        message = json.loads(body, parse_float=_number, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Refused("malformed_body", "the body is not JSON", status=400) from None
    if not isinstance(message, dict):
        raise Refused("malformed_body", "the body is not a JSON object", status=400)
    return message


def signed_bytes(message: Any) -> bytes:
    """What eBay signs: `JSON.stringify(message)` of the parsed body."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", errors="surrogatepass")


@dataclasses.dataclass(frozen=True, slots=True)
class PublicKey:
    kid: str
    key: ec.EllipticCurvePublicKey
    digest: str


def normalise_pem(key: str) -> bytes:
    """eBay's key, often without line breaks inside, as a PEM a parser takes."""
    match = _PEM.search(key)
    body = match.group(1) if match else key
    body = re.sub(r"\s+", "", body)
    lines = "\n".join(textwrap.wrap(body, 64))
    return f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n".encode()


def load_public_key(kid: str, answer: Any) -> PublicKey:
    """getPublicKey's answer {algorithm, digest, key}; ValueError when unusable."""
    if not isinstance(answer, dict):
        raise ValueError("getPublicKey answered no JSON object")
    algorithm, digest, key = answer.get("algorithm"), answer.get("digest"), answer.get("key")
    if not isinstance(algorithm, str) or algorithm.upper() != "ECDSA":
        raise ValueError(f"unsupported key algorithm {str(algorithm)[:20]!r}")
    if not isinstance(digest, str) or digest.upper() not in _DIGESTS:
        raise ValueError(f"unsupported digest {str(digest)[:20]!r}")
    if not isinstance(key, str):
        raise ValueError("getPublicKey answered no key")
    loaded = serialization.load_pem_public_key(normalise_pem(key))
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise ValueError("the key is not an elliptic-curve key")
    return PublicKey(kid=kid, key=loaded, digest=digest.upper())


def verify(key: PublicKey, signature: Signature, message: Any) -> bool:
    try:
        key.key.verify(signature.signature, signed_bytes(message),
                       ec.ECDSA(_DIGESTS[key.digest]()))
    except InvalidSignature:
        return False
    return True


def _fresh(cached: tuple[float, PublicKey | None], now: float) -> bool:
    fetched_at, key = cached
    return now - fetched_at < (KEY_CACHE_SECONDS if key is not None
                               else UNKNOWN_KID_CACHE_SECONDS)


class PublicKeys:
    """getPublicKey by key id, with an application token, each key cached an hour.
    Concurrent lookups of one kid share one call."""

    def __init__(
        self, *, url: str, provider: str, tokens: apptokens.AppTokens,
        session: aiohttp.ClientSession, db: store.Store, hub: stream.Hub,
        timeout_seconds: float, clock: Callable[[], datetime] = clock.now,
    ) -> None:
        self.url, self.provider, self.tokens, self.session = url, provider, tokens, session
        self.db, self.hub, self.clock = db, hub, clock
        self.entries = recorder.Recorder(db, hub)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._cache: dict[str, tuple[float, PublicKey | None]] = {}
        self._fetches: singleflight.SingleFlight[PublicKey | None] = (
            singleflight.SingleFlight("ebay-public-key"))
        self.lookups = throttle.Throttle(NEW_KID_LOOKUPS_PER_SECOND, NEW_KID_LOOKUPS_BURST)

    async def get(self, kid: str) -> PublicKey | None:
        """The key, or None when eBay has none by this id; KeyUnavailable otherwise."""
        cached = self._cache.get(kid)
        if cached is not None and _fresh(cached, time.monotonic()):
            return cached[1]
        if not self._fetches.running(kid) and self.lookups.take() is None:
            raise KeyUnavailable("too many key lookups at once: asked again later")
        return await self._fetches.run(kid, lambda: self._fetch(kid))

    async def _fetch(self, kid: str) -> PublicKey | None:
        try:
            issued = await self.tokens.get(self.provider, source=vocabulary.EBAY)
        except apptokens.Unavailable as exc:
            raise KeyUnavailable(str(exc)) from None
        url = self.url + kid
        headers = {"Authorization": f"Bearer {issued.access_token}",
                   "Accept": "application/json"}
        started, sent_at = time.monotonic(), self.clock()
        status, body, error = None, None, None
        try:
            async with self.session.get(url, headers=headers, timeout=self._timeout,
                                        allow_redirects=False) as response:
                raw, too_big = await provider_client.read_limited(response.content,
                                                                  response.content_length)
                status = response.status
            body = None if too_big else json.loads(raw) if raw.strip() else None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: getPublicKey unreachable"
        except (ValueError, RecursionError):
            error = f"getPublicKey answered HTTP {status} without JSON"
        key, outcome = None, None
        if error is None and status == 200:
            try:
                key = load_public_key(kid, body)
            except ValueError as exc:
                error = f"getPublicKey answered an unusable key: {exc}"
        elif error is None and status == 404:
            outcome = "unknown_kid"
        elif error is None:
            error = f"getPublicKey answered HTTP {status}"
        await self._log(kid, url, headers, status, body, error, outcome, started, sent_at)
        if error is not None:
            raise KeyUnavailable(error)
        now = time.monotonic()
        # Forget what has run out, so ids nobody sends again do not pile up.
        self._cache = {k: v for k, v in self._cache.items() if _fresh(v, now)}
        self._cache[kid] = (now, key)
        return key

    async def _log(
        self, kid: str, url: str, headers: dict[str, str], status: int | None, body: Any,
        error: str | None, outcome: str | None, started: float, sent_at: datetime,
    ) -> None:
        await self.entries.record(model.Entry(
            action=vocabulary.EBAY_PUBLIC_KEY_FETCHED, source=vocabulary.EBAY,
            created_at=sent_at, provider=self.provider,
            duration_ms=round((time.monotonic() - started) * 1000.0, 1),
            request={"method": "GET", "url": url, "headers": masking.mask_headers(headers)},
            response=None if status is None else {"status": status,
                                                  "body": masking.mask(body)},
            error=None if error is None else vocabulary.error("public_key_unavailable",
                                                              error),
            message=error or ("no such key id" if outcome else f"public key {kid} cached"),
            details={"kid": kid}))


def _text(value: Any, limit: int = 200) -> str | None:
    """A field from a verified message, if it is a short printable string."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        return None
    return value


def decide(notice: model.Notice, account: model.Account) -> model.NoticeChange:
    """What a verified notice means for one of the seller's accounts: a deletion purges its
    secrets and personal fields (a tombstone stays), a revocation asks for a new sign-in,
    and an account already there is unchanged. Pure, like `refresher.decide`:
    `store.Store.apply_ebay_notification` applies it in the notice's transaction."""
    if notice.topic == ebay_profile.ACCOUNT_DELETION:
        if account.state == model.DELETED:
            return model.NoticeChange("unchanged")
        return model.NoticeChange(model.DELETED, model.PURGE, (model.Event.about(
            vocabulary.ACCOUNT_DELETED, account, state=model.DELETED, reason=notice.reason),))
    if notice.topic != ebay_profile.AUTHORIZATION_REVOCATION or account.state in (
            model.DELETED, model.REAUTH_REQUIRED):
        return model.NoticeChange("unchanged")
    return model.NoticeChange(model.REAUTH_REQUIRED, model.REVOKE, (model.Event.about(
        vocabulary.ACCOUNT_REAUTH_REQUIRED, account, state=model.REAUTH_REQUIRED,
        reason=notice.reason),))


class Receiver:
    """`GET|POST /ebay/notifications`: answer the challenge, verify, then apply."""

    def __init__(
        self, *, settings: config.EbayNotificationsConfig, keys: PublicKeys, db: store.Store,
        hub: stream.Hub, clock: Callable[[], datetime] = clock.now,
    ) -> None:
        self.settings, self.keys, self.db, self.hub, self.clock = (
            settings, keys, db, hub, clock)
        self.entries = recorder.Recorder(db, hub)
        self.refusals = throttle.refusals()

    def challenge(self, challenge_code: str) -> str:
        return challenge_response(challenge_code, self.settings.verification_token,
                                  self.settings.endpoint)

    async def receive(self, header: str | None, body: bytes) -> str:
        """Verify, then apply once; returns the outcome. Refused (nothing changed, an entry
        logged) or KeyUnavailable (nothing changed; eBay delivers again)."""
        try:
            signature = parse_signature(header)
            message = parse_message(body)
            key = await self.keys.get(signature.kid)
            if key is None:
                raise Refused("unknown_kid", "eBay has no public key by this key id")
            if not verify(key, signature, message):
                raise Refused("signature_invalid", "the signature does not match the message")
            notice = self._notice(message)
        except Refused as exc:
            await self._refused(exc)
            raise
        stored = await self.db.apply_ebay_notification(
            notice, lambda account, outcome: self._entry(notice, account, outcome), self.clock(),
            decide=lambda account: decide(notice, account),
            # The seller is gone: so are the connect links they signed in through.
            forget_user=notice.topic == ebay_profile.ACCOUNT_DELETION)
        outcome = "applied"
        if stored is None:  # this notificationId was applied before: nothing changes
            outcome = "replay"
            await self.entries.record(self._entry(notice, None, outcome))
        else:
            self.entries.publish(*stored)
        log.info("ebay_notification", topic=notice.topic,
                 notification_id=notice.notification_id, outcome=outcome)
        return outcome

    def _notice(self, message: dict[str, Any]) -> model.Notice:
        metadata = message.get("metadata")
        notification = message.get("notification")
        topic = _text(metadata.get("topic"), 64) if isinstance(metadata, dict) else None
        if topic is None or not isinstance(notification, dict):
            raise Refused("malformed_notification", "no metadata.topic or notification",
                          status=400)
        notification_id = _text(notification.get("notificationId"))
        if notification_id is None:
            raise Refused("malformed_notification", "no notification.notificationId",
                          status=400)
        data = notification.get("data")
        data = data if isinstance(data, dict) else {}
        user_id = _text(data.get("userId"))
        if topic in (ebay_profile.ACCOUNT_DELETION, ebay_profile.AUTHORIZATION_REVOCATION) \
                and user_id is None:
            raise Refused("malformed_notification", "no notification.data.userId", status=400)
        if topic == ebay_profile.ACCOUNT_DELETION:
            reason = "marketplace_account_deletion"
        else:
            reason = _text(data.get("revokeReason"), REASON_LIMIT) or "authorization_revoked"
        return model.Notice(notification_id=notification_id, topic=topic,
                            provider=self.settings.provider, user_id=user_id, reason=reason)

    def _entry(self, notice: model.Notice, account: model.Account | None,
               outcome: str) -> model.Entry:
        """What the log keeps: eBay's notification id and topic and tokend's account id;
        never the seller's user id, name or anything else from the message."""
        details = {"topic": notice.topic, "notification_id": notice.notification_id,
                   "outcome": outcome}
        if notice.topic == ebay_profile.AUTHORIZATION_REVOCATION:
            details["revoke_reason"] = notice.reason
        return model.Entry.about(
            account, action=vocabulary.EBAY_NOTIFICATION, source=vocabulary.EBAY,
            created_at=self.clock(), **({} if account else {"provider": notice.provider}),
            request={"method": "POST", "url": self.settings.endpoint},
            response={"status": 204}, details=details,
            message=f"{notice.topic}: {outcome}")

    async def _refused(self, exc: Refused) -> None:
        left_out = self.refusals.take()
        if left_out is None:  # a flood: the answer is still a 4xx, but not a row each
            return
        await self.entries.record(model.Entry(
            action=vocabulary.EBAY_NOTIFICATION_REFUSED, source=vocabulary.EBAY,
            created_at=self.clock(), provider=self.settings.provider,
            request={"method": "POST", "url": self.settings.endpoint},
            response={"status": exc.status},
            error=vocabulary.error(exc.code, exc.message), message=exc.message,
            details={"refusals_not_logged": left_out} if left_out else None))
        log.warning("ebay_notification_refused", error_code=exc.code, status=exc.status,
                    refusals_not_logged=left_out)
