"""An eBay identity endpoint on loopback: the refresh_token, client_credentials and
authorization_code grants, plus knobs for faults; the consent page (`/oauth2/authorize`,
an auto-consent form with Agree and Decline; RuName checked, codes single-use and 299 s
long), the Identity API's getUser, the Notification API's getPublicKey and signed
notifications.

Used by the demo, the tests and the benchmarks. Any refresh token starting with `v^1.1#`
is accepted until revoked, so nobody has to seed it. Steer a running simulator through
its attributes, or over HTTP with `POST /_sim/config` from another process.

Notifications are signed the way eBay signs them (its event-notification SDKs verify
this): ECDSA with SHA1 over `JSON.stringify(message)`, DER, base64, in the
`X-EBAY-SIGNATURE` header as base64 JSON {alg, kid, signature, digest}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import html
import json
import os
import random
import secrets
import signal
import socket
import struct
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tokend.ebay import profile as ebay_profile
from tokend.ebay import signatures as ebay_signatures
from tokend.testing import ebay_verifier

TOKEN_PATH = ebay_profile.TOKEN_PATH
PUBLIC_KEY_PATH = ebay_profile.PUBLIC_KEY_PATH
APP_TOKEN_PREFIX = ebay_profile.TOKEN_PREFIX + "1.1#i^1#p^1#f^0#I^3#t^"
# What an application token may ask for (eBay's public, non-user scopes).
APP_SCOPES = frozenset({*ebay_profile.APP_SCOPES,
                        "https://api.ebay.com/oauth/api_scope/buy.item.feed"})
AUTHORIZE_PATH = "/oauth2/authorize"
IDENTITY_PATH = "/commerce/identity/v1/user/"
KEY_MANAGEMENT_PATH = ebay_profile.KEY_MANAGEMENT_PATH
FINANCES_PATH = "/sell/finances/v1/"  # every call must be signed: a seller in the EU
SIGNING_KEY_LIFETIME_SECONDS = 3 * 365 * 86400  # what eBay documents
CODE_LIFETIME_SECONDS = 299.0  # what eBay documents for an authorization code
REFRESH_TOKEN_PREFIX = ebay_profile.TOKEN_PREFIX + "1.1#"
FAIL_MODES = (None, "500", "502_html", "429", "reset", "hang", "huge")
DEFAULT_CLIENT_ID = "tokend-sim"
DEFAULT_CLIENT_SECRET = "tokend-sim-secret"  # noqa: S105 - the simulator's well-known fake
# A token without its own consented scopes may ask for any subset of these.
DEFAULT_SCOPES = frozenset(ebay_profile.SELLER_SCOPES)
DEFAULT_EXPIRES_IN = int(ebay_profile.ACCESS_TOKEN_LIFETIME_SECONDS)
DEFAULT_REFRESH_TOKEN_EXPIRES_IN = int(ebay_profile.REFRESH_TOKEN_LIFETIME_SECONDS)
HUGE_BODY_BYTES = 10 * 1024 * 1024
_HUGE_CHUNK = b"x" * 65536
_BAD_GATEWAY_HTML = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
_CONFIG_KEYS = (
    "latency_seconds", "error_rate", "fail_mode", "fail_times", "retry_after_seconds",
    "rotate", "expires_in", "refresh_token_expires_in", "token_type",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Seller:
    """Who signs in on the consent page."""

    user_id: str
    username: str


DEFAULT_SELLER = Seller("sim-user-7QmZ2x", "sim-seller")


@dataclasses.dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    seller: Seller
    expires: float  # time.monotonic()
    challenge: str | None
    used: bool = False


def fingerprint(token: str) -> str:
    """How `/_sim/stats` names a refresh token without showing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _new_token(kind: str) -> str:
    return f"{REFRESH_TOKEN_PREFIX}i^1#{kind}^1#f^0#I^3#p^3#t^{secrets.token_urlsafe(48)}"


class Simulator:
    """The endpoint, its knobs and its counters. Knobs may be changed at any time."""

    def __init__(
        self, *, client_id: str = DEFAULT_CLIENT_ID, client_secret: str = DEFAULT_CLIENT_SECRET,
        allowed_scopes: Iterable[str] | None = DEFAULT_SCOPES, latency_seconds: float = 0.0,
        rotate: bool = False, expires_in: int = DEFAULT_EXPIRES_IN,
        refresh_token_expires_in: int = DEFAULT_REFRESH_TOKEN_EXPIRES_IN, body_auth: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        # None accepts any scope; otherwise a token without its own consent may ask for
        # any subset of these.
        self.allowed_scopes = None if allowed_scopes is None else frozenset(allowed_scopes)
        self.latency_seconds = latency_seconds
        self.error_rate = 0.0
        self.fail_mode: str | None = None
        # How many more requests fail_mode applies to; None means until it is changed.
        self.fail_times: int | None = None
        self.retry_after_seconds = 30
        # eBay never rotates: its answer to a refresh_token grant has no refresh_token and
        # the refresh token keeps its clock from consent. Generic RFC 6749 providers may.
        self.rotate = rotate
        self.expires_in = expires_in
        self.refresh_token_expires_in = refresh_token_expires_in
        # RFC 6749 also allows credentials in the form body; eBay does not.
        self.body_auth = body_auth
        self.token_type = "User Access Token"  # noqa: S105 - what eBay says; RFC 6749: Bearer
        self.hang_seconds = 3600.0
        self._revoked: set[str] = set()
        self._consent: dict[str, frozenset[str]] = {}
        self._app_tokens: dict[str, float] = {}  # issued application token -> expiry (epoch)
        # The Notification API's signing keys by key id; one exists from the start.
        self.notification_keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.default_kid = self.add_notification_key()
        # The consent page: RuName (or redirect URL) -> where the browser goes back to,
        # who signs in, and which scopes they grant (None: all that were asked for).
        self.redirects: dict[str, str] = {}
        self.seller = DEFAULT_SELLER
        self.grant_scopes: frozenset[str] | None = None
        self.code_lifetime_seconds = CODE_LIFETIME_SECONDS
        self.code_exchanges = 0
        self.identity_calls = 0
        self._codes: dict[str, _Code] = {}
        self._users: dict[str, Seller] = {}  # access and refresh tokens -> their seller
        # The Key Management API: its JWE master key, the keys it made (id -> cipher) and
        # the verdicts of the signed Finances endpoint.
        self.jwe_master_key = os.urandom(32)
        self.signing_keys: dict[str, str] = {}
        self.signing_key_lifetime_seconds = SIGNING_KEY_LIFETIME_SECONDS
        self.signed_calls: collections.Counter[str] = collections.Counter()
        self.last_signature_refusal: str | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url: str | None = None
        self.reset_stats()

    # -- steering ---------------------------------------------------------------------
    def revoke(self, token: str) -> None:
        """From now on this refresh token gets `invalid_grant`."""
        self._revoked.add(token)

    def consent(self, token: str, scopes: Iterable[str]) -> None:
        """The scopes this refresh token was granted; it may ask for no others."""
        self._consent[token] = frozenset(scopes)

    def register_redirect(self, redirect_uri: str, accept_url: str) -> None:
        """Accept `redirect_uri` (a RuName) and send the browser to `accept_url`."""
        self.redirects[redirect_uri] = accept_url

    def user_of(self, token: str) -> Seller | None:
        return self._users.get(token)

    def configure(self, **knobs: Any) -> None:
        """Set knobs by name, checking each; raises ValueError naming a bad one."""
        for key, value in knobs.items():
            if key not in _CONFIG_KEYS:
                raise ValueError(f"unknown knob {key!r}")
            if key == "fail_mode":
                if value not in FAIL_MODES:
                    raise ValueError(f"fail_mode must be one of {FAIL_MODES}")
            elif key == "rotate":
                if not isinstance(value, bool):
                    raise ValueError("rotate must be a boolean")
            elif key == "token_type":
                if not isinstance(value, str) or not value:
                    raise ValueError("token_type must be a non-empty string")
            elif key == "fail_times":
                if value is not None and (not isinstance(value, int) or value < 0):
                    raise ValueError("fail_times must be a non-negative integer or null")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
            setattr(self, key, value)

    def config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    # -- counters ---------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.app_token_grants = 0
        self.public_key_calls = 0
        self.calls = 0
        self.successes = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.by_error: collections.Counter[str] = collections.Counter()
        self.aborted = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_in_flight_per_token = 0
        self.token_calls: collections.Counter[str] = collections.Counter()
        self._in_flight_by_token: collections.Counter[str] = collections.Counter()

    def calls_for(self, token: str) -> int:
        return self.token_calls[token]

    def stats(self, *, tokens: bool = True) -> dict[str, Any]:
        """Counters; `token_calls` maps each token's fingerprint to its number of calls."""
        out = {
            "calls": self.calls,
            "successes": self.successes,
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "by_error": dict(self.by_error),
            "aborted": self.aborted,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_in_flight_per_token": self.max_in_flight_per_token,
            "tokens_seen": len(self.token_calls),
            "max_calls_per_token": max(self.token_calls.values(), default=0),
            "app_token_grants": self.app_token_grants,
            "public_key_calls": self.public_key_calls,
            "config": self.config(),
        }
        if tokens:
            out["token_calls"] = {fingerprint(t): n for t, n in self.token_calls.items()}
        return out

    # -- lifecycle --------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get(PUBLIC_KEY_PATH + "{kid}", self._public_key)
        app.router.add_get(AUTHORIZE_PATH, self._authorize_page)
        app.router.add_post(AUTHORIZE_PATH, self._authorize_decision)
        app.router.add_get(IDENTITY_PATH, self._get_user)
        app.router.add_post(KEY_MANAGEMENT_PATH + "/signing_key", self._create_signing_key)
        app.router.add_route("*", FINANCES_PATH + "{tail:.*}", self._finances)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_get("/_sim/config", self._get_config)
        app.router.add_post("/_sim/config", self._post_config)
        return app

    @property
    def public_key_url(self) -> str:
        """getPublicKey without the key id, as `[ebay_notifications] public_key_url`."""
        if self.base_url is None:
            raise RuntimeError("the simulator is not running")
        return self.base_url + PUBLIC_KEY_PATH

    @property
    def key_management_url(self) -> str:
        return self._base() + KEY_MANAGEMENT_PATH

    @property
    def finances_url(self) -> str:
        return self._base() + FINANCES_PATH

    @property
    def authorize_url(self) -> str:
        return self._base() + AUTHORIZE_PATH

    @property
    def identity_url(self) -> str:
        return self._base() + IDENTITY_PATH

    def _base(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the simulator is not running")
        return self.base_url

    @property
    def token_url(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the simulator is not running")
        return self.base_url + TOKEN_PATH

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port); returns the base URL."""
        self._stopping.clear()
        # handler_cancellation: a client that gives up (timeout) ends its hang at once.
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound = runner.addresses[0]
        self.base_url = f"http://{bound[0]}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the token endpoint -----------------------------------------------------------
    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            form = dict(urllib.parse.parse_qsl(await request.text(), keep_blank_values=True))
            token = form.get("refresh_token", "")
            with self._tracked(token):
                return await self._answer(request, form, token)
        finally:
            self.in_flight -= 1

    @contextlib.contextmanager
    def _tracked(self, token: str) -> Iterator[None]:
        """Count calls and concurrent refreshes per refresh token, latency included."""
        if not token:
            yield
            return
        self.token_calls[token] += 1
        self._in_flight_by_token[token] += 1
        self.max_in_flight_per_token = max(
            self.max_in_flight_per_token, self._in_flight_by_token[token])
        try:
            yield
        finally:
            self._in_flight_by_token[token] -= 1
            if not self._in_flight_by_token[token]:
                del self._in_flight_by_token[token]

    async def _answer(
        self, request: web.Request, form: dict[str, str], token: str,
    ) -> web.StreamResponse:
        if self.latency_seconds > 0:
            await asyncio.sleep(self.latency_seconds)
        fault = self._fault()
        if fault is not None:
            return await self._fail(request, fault)
        if not self._authenticated(request, form):
            return self._error(401, "invalid_client", "client authentication failed",
                               headers={"WWW-Authenticate": 'Basic realm="ebay"'})
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error(400, "invalid_request",
                               "Content-Type must be application/x-www-form-urlencoded")
        grant_type = form.get("grant_type")
        if not grant_type:
            return self._error(400, "invalid_request",
                               "request is missing a required parameter: grant_type")
        if grant_type == "client_credentials":
            return self._app_grant(form)
        if grant_type == "authorization_code":
            return self._code_grant(form)
        if grant_type != "refresh_token":
            return self._error(400, "unsupported_grant_type",
                               "grant type in request is not supported by the authorization server")
        if not token:
            return self._error(400, "invalid_request",
                               "request is missing a required parameter: refresh_token")
        if not token.startswith(REFRESH_TOKEN_PREFIX) or token in self._revoked:
            return self._error(400, "invalid_grant",
                               "the provided authorization refresh token is invalid "
                               "or was issued to another client")
        granted = self._consent.get(token, self.allowed_scopes)
        requested = frozenset(form.get("scope", "").split())
        if granted is not None and not requested <= granted:
            return self._error(400, "invalid_scope",
                               "the requested scope is invalid, unknown, malformed, "
                               "or exceeds the scope granted to the client")
        return self._grant(token)

    def _grant(self, token: str) -> web.Response:
        answer: dict[str, Any] = {
            "access_token": _new_token("r"),
            "expires_in": self.expires_in,
            "token_type": self.token_type,
        }
        seller = self._users.get(token)
        if seller is not None:
            self._users[answer["access_token"]] = seller
        if self.rotate:
            # The old token dies now: a second refresh of it is an invalid_grant.
            self._revoked.add(token)
            rotated = _new_token("r")
            if token in self._consent:
                self._consent[rotated] = self._consent[token]
            if seller is not None:
                self._users[rotated] = seller
            answer["refresh_token"] = rotated
            answer["refresh_token_expires_in"] = self.refresh_token_expires_in
        self.successes += 1
        self.by_status[200] += 1
        return web.Response(body=orjson.dumps(answer), content_type="application/json",
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _app_grant(self, form: dict[str, str]) -> web.Response:
        requested = frozenset(form.get("scope", "").split())
        if not requested or not requested <= APP_SCOPES:
            return self._error(400, "invalid_scope",
                               "the requested scope is invalid, unknown, malformed, "
                               "or exceeds the scope granted to the client")
        token = APP_TOKEN_PREFIX + secrets.token_urlsafe(48)
        self._app_tokens[token] = time.time() + self.expires_in
        self.app_token_grants += 1
        self.successes += 1
        self.by_status[200] += 1
        answer = {"access_token": token, "expires_in": self.expires_in,
                  "token_type": ebay_profile.APP_TOKEN_TYPE}
        return web.Response(body=orjson.dumps(answer), content_type="application/json",
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def app_token_valid(self, token: str) -> bool:
        expiry = self._app_tokens.get(token)
        return expiry is not None and expiry > time.time()

    # -- the Notification API -----------------------------------------------------------
    def add_notification_key(self, kid: str | None = None) -> str:
        """A new P-256 signing key served by getPublicKey under `kid`; returns the kid."""
        kid = kid or uuid.uuid4().hex
        self.notification_keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    async def _public_key(self, request: web.Request) -> web.Response:
        """getPublicKey: a Bearer application token, then the key as eBay serves it, the
        PEM without its line breaks."""
        self.public_key_calls += 1
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.app_token_valid(token.strip()):
            return _ebay_error(401, 1001, "Invalid access token",
                               "Invalid access token. Check the value of the Authorization "
                               "HTTP request header.")
        key = self.notification_keys.get(request.match_info["kid"])
        if key is None:
            return _ebay_error(404, 195001, "The public key was not found.",
                               "The specified key id was not found.")
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        flat = "".join(pem.decode().splitlines()[1:-1])
        body = {"algorithm": "ECDSA", "digest": "SHA1",
                "key": f"-----BEGIN PUBLIC KEY-----{flat}-----END PUBLIC KEY-----"}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def notification(self, topic: str, user_id: str, *, username: str = "seller",
                     notification_id: str | None = None, **data: Any) -> dict[str, Any]:
        """A notification as eBay sends it (`data` adds fields, e.g. revokeReason)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "metadata": {"topic": topic, "schemaVersion": "1.0", "deprecated": False},
            "notification": {
                "notificationId": notification_id or f"{uuid.uuid4()}_{uuid.uuid4()}",
                "eventDate": now, "publishDate": now, "publishAttemptCount": 1,
                "data": {"username": username, "userId": user_id,
                         "eiasToken": base64.b64encode(secrets.token_bytes(30)).decode(),
                         **data},
            },
        }

    def sign(self, message: Any, *, kid: str | None = None,
             key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """The X-EBAY-SIGNATURE header for `message`, by the key `kid` (or any `key`,
        announced as `kid`)."""
        kid = kid or self.default_kid
        key = key or self.notification_keys[kid]
        signed = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        signature = key.sign(signed, ec.ECDSA(hashes.SHA1()))  # noqa: S303 - eBay's digest
        header = {"alg": "ECDSA", "kid": kid, "signature": base64.b64encode(signature).decode(),
                  "digest": "SHA1"}
        return base64.b64encode(json.dumps(header).encode()).decode()

    async def deliver(self, url: str, message: Any, *, signature: str | None = None,
                      body: bytes | None = None) -> int:
        """POST a notification to `url` the way eBay does; returns the HTTP status.
        `signature` defaults to a valid one; `body` (default: the message, indented as a
        sender may) replaces what is sent, e.g. with a tampered copy."""
        headers = {"Content-Type": "application/json"}
        signature = self.sign(message) if signature is None else signature
        if signature:
            headers["X-EBAY-SIGNATURE"] = signature
        if body is None:
            body = json.dumps(message, indent=2, ensure_ascii=False).encode()
        async with aiohttp.ClientSession() as http, http.post(
                url, data=body, headers=headers) as response:
            await response.read()
            return response.status
    # -- the authorization-code grant ------------------------------------------------------
    # -- digital signatures -------------------------------------------------------------
    async def _create_signing_key(self, request: web.Request) -> web.Response:
        """createSigningKey: an application token, `{"signingKeyCipher": ...}`; the answer
        as eBay gives it, the private key as bare base64 PKCS#8 (and only here, once)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.app_token_valid(token.strip()):
            return _ebay_error(401, 1001, "Invalid access token",
                               "Invalid access token. Check the value of the Authorization "
                               "HTTP request header.")
        try:
            cipher = orjson.loads(await request.read()).get("signingKeyCipher")
        except (orjson.JSONDecodeError, AttributeError):
            cipher = None
        if cipher not in ebay_signatures.CIPHERS:
            return _ebay_error(400, 215114, "Invalid signingKeyCipher",
                               "The signingKeyCipher must be ED25519 or RSA.")
        private = (ed25519.Ed25519PrivateKey.generate() if cipher == ebay_signatures.ED25519
                   else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        key_id = uuid.uuid4().hex
        created = int(time.time())
        self.signing_keys[key_id] = cipher
        private_der = private.private_bytes(serialization.Encoding.DER,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
        return web.Response(body=orjson.dumps({
            "signingKeyId": key_id, "signingKeyCipher": cipher,
            "privateKey": base64.b64encode(private_der).decode(),
            "publicKey": base64.b64encode(der).decode(),
            "jwe": ebay_verifier.make_jwe(self.jwe_master_key, der, cipher, kid=key_id,
                                          app_id=self.client_id,
                                          lifetime_seconds=self.signing_key_lifetime_seconds),
            "creationTime": created,
            "expirationTime": created + self.signing_key_lifetime_seconds,
        }), content_type="application/json")

    async def _finances(self, request: web.Request) -> web.Response:
        """A Finances call for a seller in the EU: refused (403, errorId 215120, the
        reference verifier's reason in longMessage) unless signed right."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip().startswith(ebay_profile.TOKEN_PREFIX):
            return _ebay_error(401, 1001, "Invalid access token", "Invalid access token.")
        body = await request.read()
        uri = ebay_verifier.java_uri(request.url.scheme, request.url.host or "",
                                     request.url.port or 80, request.url.raw_path,
                                     request.url.raw_query_string)
        headers = {name.lower(): value for name, value in reversed(request.headers.items())}
        try:
            ebay_verifier.verify(self.jwe_master_key, body, headers, uri, request.method)
        except ebay_verifier.VerificationError as exc:
            self.signed_calls["refused"] += 1
            self.last_signature_refusal = str(exc)
            return _ebay_error(403, 215120, "Signature validation failed", str(exc))
        self.signed_calls["verified"] += 1
        return web.Response(body=orjson.dumps({
            "href": str(request.url), "total": 1, "limit": 20, "offset": 0,
            "transactions": [{"transactionId": "sim-" + uuid.uuid4().hex[:12],
                              "transactionType": "SALE", "transactionStatus": "PAYOUT",
                              "amount": {"value": "42.00", "currency": "EUR"},
                              "bookingEntry": "CREDIT"}]}), content_type="application/json")

    def _code_grant(self, form: dict[str, str]) -> web.Response:
        code = form.get("code", "")
        if not code or not form.get("redirect_uri"):
            return self._error(400, "invalid_request",
                               "request is missing a required parameter: code or redirect_uri")
        issued = self._codes.get(code)
        if issued is None or issued.used or time.monotonic() >= issued.expires:
            return self._error(400, "invalid_grant",
                               "the provided authorization grant code is invalid or was "
                               "issued to another client")
        issued.used = True  # single use, whatever follows
        if issued.redirect_uri != form["redirect_uri"] or issued.client_id != self.client_id:
            return self._error(400, "invalid_grant",
                               "the redirect_uri does not match the one of the authorization")
        if issued.challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if not verifier or not hmac.compare_digest(digest.rstrip(b"=").decode(),
                                                       issued.challenge):
                return self._error(400, "invalid_grant", "PKCE verification failed")
        self.code_exchanges += 1
        access, refresh = _new_token("r"), _new_token("r")
        self._consent[refresh] = issued.scopes
        self._users[access] = self._users[refresh] = issued.seller
        answer: dict[str, Any] = {
            "access_token": access, "expires_in": self.expires_in,
            "refresh_token": refresh,
            "refresh_token_expires_in": self.refresh_token_expires_in,
            "token_type": self.token_type,
        }
        if self.grant_scopes is not None:  # RFC 6749 5.1: say so when the grant is narrower
            answer["scope"] = " ".join(sorted(issued.scopes))
        self.successes += 1
        self.by_status[200] += 1
        return web.Response(body=orjson.dumps(answer), content_type="application/json",
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _consent_problem(self, params: Any) -> str | None:
        if params.get("client_id") != self.client_id:
            return "unknown client_id"
        if params.get("redirect_uri") not in self.redirects:
            return "redirect_uri is not a registered RuName of this application"
        if params.get("response_type") != "code":
            return "response_type must be code"
        if params.get("code_challenge") and params.get("code_challenge_method") != "S256":
            return "code_challenge_method must be S256"
        return None

    async def _authorize_page(self, request: web.Request) -> web.Response:
        problem = self._consent_problem(request.query)
        if problem is not None:
            return web.Response(status=400, text=f"<h1>Bad request</h1><p>{html.escape(problem)}",
                                content_type="text/html")
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(request.query[name])}">'
            for name in ("client_id", "redirect_uri", "response_type", "scope", "state",
                         "code_challenge", "code_challenge_method") if name in request.query)
        scopes = "".join(f"<li>{html.escape(s)}</li>"
                         for s in request.query.get("scope", "").split())
        page = (f"<!doctype html><html><head><title>Grant application access</title></head>"
                f"<body><h1>Grant application access</h1>"
                f"<p id=\"seller\">Signed in as {html.escape(self.seller.username)}</p>"
                f"<ul>{scopes}</ul><form method=\"post\" action=\"{AUTHORIZE_PATH}\">{hidden}"
                f"<button id=\"agree\" name=\"decision\" value=\"accept\">Agree</button>"
                f"<button id=\"decline\" name=\"decision\" value=\"decline\">"
                f"Not now</button></form></body></html>")
        return web.Response(text=page, content_type="text/html")

    async def _authorize_decision(self, request: web.Request) -> web.Response:
        form = await request.post()
        problem = self._consent_problem(form)
        if problem is not None:
            return web.Response(status=400, text=problem)
        target = self.redirects[str(form["redirect_uri"])]
        back: dict[str, str] = {"state": str(form.get("state", ""))}
        if form.get("decision") != "accept":
            back["error"] = "access_denied"
        else:
            asked = frozenset(str(form.get("scope", "")).split())
            code = "v^1.1#i^1#f^0#p^3#I^3#r^1#t^" + secrets.token_urlsafe(48)
            self._codes[code] = _Code(
                client_id=str(form["client_id"]), redirect_uri=str(form["redirect_uri"]),
                scopes=asked if self.grant_scopes is None else asked & self.grant_scopes,
                seller=self.seller, expires=time.monotonic() + self.code_lifetime_seconds,
                challenge=str(form["code_challenge"]) if form.get("code_challenge") else None)
            back |= {"code": code, "expires_in": str(int(self.code_lifetime_seconds))}
        separator = "&" if "?" in target else "?"
        raise web.HTTPFound(target + separator + urllib.parse.urlencode(back))

    async def _get_user(self, request: web.Request) -> web.Response:
        self.identity_calls += 1
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        seller = self._users.get(token) if scheme.lower() == "bearer" else None
        if seller is None:
            body = {"errors": [{"errorId": 1001, "domain": "OAuth", "category": "REQUEST",
                                "message": "Invalid access token",
                                "longMessage": "Invalid access token. Check the value of the "
                                               "Authorization HTTP request header."}]}
            return web.Response(status=401, body=orjson.dumps(body),
                                content_type="application/json")
        return web.Response(body=orjson.dumps({
            "userId": seller.user_id, "username": seller.username, "accountType": "BUSINESS",
            "registrationMarketplaceId": "EBAY_US"}), content_type="application/json")

    def _authenticated(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization")
        if header is None:
            if not self.body_auth:
                return False
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        else:
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            # RFC 6749 2.3.1: each part was form-urlencoded before base64.
            raw_id, _, raw_secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
        return hmac.compare_digest(client_id.encode(), self.client_id.encode()) and \
            hmac.compare_digest(secret.encode(), self.client_secret.encode())

    def _error(self, status: int, code: str, description: str,
               headers: dict[str, str] | None = None) -> web.Response:
        self.by_status[status] += 1
        self.by_error[code] += 1
        body = orjson.dumps({"error": code, "error_description": description})
        return web.Response(status=status, body=body, content_type="application/json",
                            headers=headers)

    # -- faults -----------------------------------------------------------------------
    def _fault(self) -> str | None:
        if self.fail_mode is not None:
            if self.fail_times is None:
                return self.fail_mode
            if self.fail_times > 0:
                self.fail_times -= 1
                mode = self.fail_mode
                if self.fail_times == 0:
                    self.fail_mode, self.fail_times = None, None
                return mode
        if self.error_rate > 0 and random.random() < self.error_rate:
            return "500"
        return None

    async def _fail(self, request: web.Request, mode: str) -> web.StreamResponse:
        if mode == "500":
            return self._error(500, "server_error", "internal error, please retry")
        if mode == "502_html":
            self.by_status[502] += 1
            return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")
        if mode == "429":
            self.by_status[429] += 1
            body = orjson.dumps({"errors": [{
                "errorId": 2001, "domain": "ACCESS", "category": "REQUEST",
                "message": "Too many requests. The request limit has been reached.",
            }]})
            return web.Response(status=429, body=body, content_type="application/json",
                                headers={"Retry-After": str(self.retry_after_seconds)})
        if mode == "huge":
            return await self._huge(request)
        self.aborted += 1
        if mode == "hang":
            # Until the client gives up (its disconnect cancels us) or the simulator stops.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
        _reset(request)
        # The transport is gone: this handler is cancelled as the connection drops.
        await asyncio.sleep(self.hang_seconds)
        return web.Response(status=503)

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        self.by_status[200] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = HUGE_BODY_BYTES
        await response.prepare(request)
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < HUGE_BODY_BYTES:
                chunk = _HUGE_CHUNK[:HUGE_BODY_BYTES - sent]
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
        return response

    # -- steering over HTTP -----------------------------------------------------------
    async def _get_stats(self, request: web.Request) -> web.Response:
        """`?tokens=0` leaves out the per-token map, which grows with every token seen."""
        stats = self.stats(tokens=request.query.get("tokens", "1") != "0")
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    async def _get_config(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.config()), content_type="application/json")

    async def _post_config(self, request: web.Request) -> web.Response:
        """JSON knobs, plus `revoke: [tokens]`, `consent: {token: [scopes]}`, `reset_stats`."""
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            revoke = body.pop("revoke", [])
            consent = body.pop("consent", {})
            reset = body.pop("reset_stats", False)
            if not isinstance(revoke, list) or not all(isinstance(t, str) for t in revoke):
                raise ValueError("revoke must be a list of strings")
            if not isinstance(consent, dict):
                raise ValueError("consent must be an object of token -> scopes")
            self.configure(**body)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            return web.Response(status=400, body=orjson.dumps({"error": str(exc)}),
                                content_type="application/json")
        for token in revoke:
            self.revoke(token)
        for token, scopes in consent.items():
            self.consent(token, scopes)
        if reset:
            self.reset_stats()
        return web.Response(body=orjson.dumps(self.config()), content_type="application/json")


def _ebay_error(status: int, error_id: int, message: str, long_message: str) -> web.Response:
    """An error the way eBay's REST APIs answer one."""
    body = {"errors": [{"errorId": error_id, "domain": "API_NOTIFICATION",
                        "category": "REQUEST", "message": message,
                        "longMessage": long_message}]}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST, the way a crashing proxy does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _serve(args: argparse.Namespace) -> None:
    simulator = Simulator(
        client_id=args.client_id,
        client_secret=os.environ.get("TOKEND_SIM_CLIENT_SECRET", DEFAULT_CLIENT_SECRET),
        latency_seconds=args.latency_ms / 1000.0, rotate=args.rotate,
        expires_in=args.expires_in, body_auth=args.body_auth,
    )
    simulator.error_rate = args.error_rate
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        url = await simulator.start(args.host, args.port)
        print(url, flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await simulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokend.testing.simulator",
        description="An eBay identity token endpoint on loopback. Prints its base URL; "
                    f"the token URL is that plus {TOKEN_PATH}. The client secret comes "
                    "from TOKEND_SIM_CLIENT_SECRET (default: the well-known fake).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rotate", action="store_true",
                        help="issue a new refresh token on every refresh; the old one dies "
                             "(a generic provider's habit; eBay never does)")
    parser.add_argument("--expires-in", type=int, default=DEFAULT_EXPIRES_IN)
    parser.add_argument("--error-rate", type=float, default=0.0,
                        help="fraction of requests answered with a 500")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--body-auth", action="store_true",
                        help="also accept client_id/client_secret in the form body")
    args = parser.parse_args(argv)
    if not 0.0 <= args.error_rate <= 1.0:
        parser.error("--error-rate must be between 0 and 1")
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
