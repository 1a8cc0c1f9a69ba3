"""The RFC 6749 refresh_token grant: one request builder and one send, for every provider.

`prepare` takes the plaintext refresh token (the refresher opened it) and refuses an
unusable one before anything is sent; `send` makes one bounded call and turns whatever
happens into a Result.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDictProxy

from tokend import clock, config, masking
from tokend.providers import answer, result

log = structlog.get_logger("tokend.providers")

FORM = "application/x-www-form-urlencoded"
BODY_LIMIT_BYTES = 1024 * 1024
_READ_CHUNK_BYTES = 64 * 1024


class Provider:
    """One configured provider: how to ask it for a fresh access token."""

    def __init__(
        self, provider_config: config.ProviderConfig, *, request_timeout_seconds: float,
        token_prefix: str | None, token_types: tuple[str, ...],
        client_secret: Callable[[], str] | None = None,
    ) -> None:
        self.config = provider_config
        # Asked at every request, so a reloaded secret is used from the next call on.
        self.client_secret = client_secret or (lambda: provider_config.client_secret)
        self.name = provider_config.name
        self.type = provider_config.type
        self.environment = provider_config.environment
        self.request_timeout_seconds = request_timeout_seconds
        self.default_expires_in_seconds = provider_config.expires_in_fallback_seconds
        self.token_prefix = token_prefix
        self.token_types = token_types  # lower-cased token_type values we can use
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)

    def __repr__(self) -> str:
        return f"Provider(name={self.name!r}, type={self.type!r}, url={self.config.token_url!r})"

    def scopes_for(self, account_scopes: Sequence[str]) -> tuple[str, ...]:
        """The account's own consented scopes when it has them, else the provider's."""
        return tuple(account_scopes) or tuple(self.config.scopes)

    def prepare(
        self, refresh_token: str, scopes: Sequence[str] = (), *, account_id: str | None = None,
    ) -> result.Prepared:
        """Build the request for this plaintext refresh token and the account's scopes
        (empty: the provider's), or raise RefreshError(decrypt_failed): then send nothing."""
        token = self._usable(refresh_token, account_id)
        form = [("grant_type", "refresh_token"), ("refresh_token", token)]
        scopes = self.scopes_for(scopes)
        if scopes and self.config.refresh_sends_scope:
            form.append(("scope", " ".join(scopes)))
        return self._prepared(form, (token,), account_id=account_id)

    def prepare_client_credentials(self, scopes: Sequence[str]) -> result.Prepared:
        """The client_credentials grant: an application token for `scopes`, asked for
        with the same client authentication as every other grant."""
        form = [("grant_type", "client_credentials")]
        if scopes:
            form.append(("scope", " ".join(scopes)))
        return self._prepared(form, (), account_id=None)

    def prepare_code(
        self, code: str, *, redirect_uri: str, code_verifier: str | None = None,
    ) -> result.Prepared:
        """The authorization_code grant (RFC 6749 4.1.3, RFC 7636): the same client
        authentication, send and classification as a refresh."""
        form = [("grant_type", "authorization_code"), ("code", code),
                ("redirect_uri", redirect_uri)]
        if code_verifier is not None:
            form.append(("code_verifier", code_verifier))
        return self._prepared(form, (code, code_verifier or ""), account_id=None)

    def _prepared(
        self, form: list[tuple[str, str]], secrets: tuple[str, ...], *,
        account_id: str | None,
    ) -> result.Prepared:
        headers = {"Content-Type": FORM, "Accept": "application/json"}
        secret = self.client_secret()
        echoes = (*secrets, secret)
        if self.config.client_auth == "body":
            form += [("client_id", self.config.client_id), ("client_secret", secret)]
        elif self.config.client_auth == "none":  # a public client identifies itself only
            form.append(("client_id", self.config.client_id))
        else:
            encoded = basic_credentials(self.config.client_id, secret)
            headers["Authorization"] = "Basic " + encoded
            # A proxy that echoes our request headers shows the secret base64-encoded.
            echoes += (encoded,)
        # %20 between scopes, the way eBay documents it.
        body = urllib.parse.urlencode(form, quote_via=urllib.parse.quote)
        return result.Prepared(
            account_id=account_id, provider=self.name, method="POST",
            url=self.config.token_url, headers=headers, body=body,
            secrets=echoes,
            request={
                "method": "POST", "url": self.config.token_url,
                "headers": masking.mask_headers(headers), "body": masking.mask_body(body, FORM),
            },
        )

    def _usable(self, refresh_token: str, account_id: str | None) -> str:
        def refuse(message: str) -> result.RefreshError:
            return result.RefreshError(result.DECRYPT_FAILED, message)

        whose = f"refresh_token of account {account_id!r}" if account_id else "refresh_token"
        token = refresh_token.strip() if isinstance(refresh_token, str) else ""
        if not token:
            raise refuse(f"{whose} decrypts to an empty value")
        if token.startswith("ENC:"):
            raise refuse(f"{whose} is still an ENC: envelope after decryption "
                         "(encrypted twice)")
        if self.token_prefix and not token.startswith(self.token_prefix):
            raise refuse(f"{whose} does not look like a {self.type} token "
                         f"(expected it to start with {self.token_prefix!r})")
        return token

    async def send(
        self, session: aiohttp.ClientSession, prepared: result.Prepared,
    ) -> result.Result:
        """One call to the token URL, bounded in time and size. Never raises for its answer."""
        sent_at = clock.now()
        started = time.monotonic()

        def failed(code: str, description: str, kind: str) -> result.Result:
            return result.Result(
                sent_at=sent_at, duration_ms=_since(started), request=prepared.request,
                response=None, error_code=code,
                error_description=_safe_text(description, _echoes(prepared.secrets)),
                kind=kind,
            )

        try:
            async with session.request(
                prepared.method, prepared.url, data=prepared.body.encode(),
                headers=prepared.headers, timeout=self._timeout, allow_redirects=False,
                raise_for_status=False,
            ) as response:
                raw, too_big = await read_limited(response.content, response.content_length)
                if too_big:
                    response.close()  # drop the connection rather than drain the rest
                status, reason, headers = response.status, response.reason, response.headers
                charset = response.charset
        except TimeoutError:
            return failed(result.TIMEOUT, f"no complete answer within "
                          f"{self.request_timeout_seconds:g} s", result.TRANSIENT)
        except aiohttp.InvalidURL:
            return failed(result.CONNECTION_ERROR, "the token URL is not valid", result.CONFIG)
        except aiohttp.ClientResponseError as exc:
            return failed(result.BAD_RESPONSE, _exception(exc), result.TRANSIENT)
        except (aiohttp.ClientError, OSError) as exc:
            return failed(result.CONNECTION_ERROR, _exception(exc), result.TRANSIENT)
        return self.classify(prepared, sent_at, started, status, reason, headers, raw,
                              too_big, charset)

    def classify(
        self, prepared: result.Prepared, sent_at: datetime, started: float, status: int,
        reason: str | None, headers: CIMultiDictProxy[str], raw: bytes, too_big: bool,
        charset: str | None,
    ) -> result.Result:
        """What an HTTP answer means: pure, so every answer shape can be tried without a
        server (tests/test_properties.py)."""
        content_type = headers.get("Content-Type")
        text = _decode(raw, charset)
        echoes = _echoes(prepared.secrets)
        if too_big:
            body: Any = f"(more than {BODY_LIMIT_BYTES} bytes, not read)"
            outcome: result.Grant | answer.Error = answer.Error(
                result.BAD_RESPONSE,
                f"HTTP {status}: response body is larger than {BODY_LIMIT_BYTES} bytes",
                result.TRANSIENT,
            )
        else:
            body = _masked_body(text, content_type, echoes)
            outcome = answer.interpret(
                status, reason, text, content_type,
                default_expires_in_seconds=self.default_expires_in_seconds,
                reauth_codes=self.config.reauth_error_codes, token_types=self.token_types,
            )
            if isinstance(outcome, result.Grant) and outcome.expires_in_assumed:
                log.warning("expires_in_missing", provider=self.name,
                            assumed_seconds=outcome.expires_in)
        response = {
            "status": status, "reason": reason,
            "headers": {name: _safe_text(value, echoes) for name, value
                        in masking.mask_headers(_flat(headers)).items()},
            "body": body,
        }
        common = {"sent_at": sent_at, "duration_ms": _since(started),
                  "request": prepared.request, "response": response}
        if isinstance(outcome, result.Grant):
            return result.Result(grant=outcome, **common)
        code = outcome.code
        if _scrub(code, echoes) != code:  # our secret echoed back as the code
            code = result.BAD_RESPONSE
        return result.Result(
            error_code=code,
            error_description=_safe_text(outcome.description, echoes),
            kind=outcome.kind,
            retry_after_seconds=answer.retry_after_seconds(headers.get("Retry-After")),
            **common,
        )


def basic_credentials(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: each part form-urlencoded, then `id:secret` base64-encoded. Without
    the encoding a secret holding `+`, `%` or `:` reaches the server as another secret."""
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
    return base64.b64encode(pair.encode()).decode("ascii")


async def read_limited(
    stream: aiohttp.StreamReader, content_length: int | None, limit: int = BODY_LIMIT_BYTES,
) -> tuple[bytes, bool]:
    """(body, False), or (b"", True) as soon as more than `limit` bytes show up."""
    if content_length is not None and content_length > limit:
        return b"", True
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await stream.read(min(_READ_CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return b"".join(chunks), False
        total += len(chunk)
        if total > limit:
            return b"", True
        chunks.append(chunk)


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _flat(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Plain str keys (orjson refuses aiohttp's `istr`), repeated headers joined."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        key = str(key)
        out[key] = f"{out[key]}, {value}" if key in out else str(value)
    return out


# (shape of one of our secrets as a provider may echo it, its mask); see `_echoes`.
_Echoes = list[tuple[str, str]]


def _masked_body(text: str, content_type: str | None, echoes: _Echoes) -> Any:
    """The response body as the HTTP log keeps it: masked by field, with no echo of ours."""
    return _scrub_value(masking.mask_body(_scrub(text, echoes), content_type), echoes)


def _safe_text(text: str, echoes: _Echoes) -> str:
    return masking.mask_text(_scrub(text, echoes))


def _scrub_value(value: Any, echoes: _Echoes) -> Any:
    if isinstance(value, str):
        return _scrub(value, echoes)
    if isinstance(value, dict):
        return {key: _scrub_value(item, echoes) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_value(item, echoes) for item in value]
    return value


def _echoes(secrets: tuple[str, ...]) -> _Echoes:
    """Each shape in which a provider may echo one of our secrets (plain or URL-encoded),
    with the mask that replaces it. Built once per exchange: quoting a secret costs far
    more than looking for it, and one answer has a dozen strings to look in."""
    out = []
    for secret in secrets:
        if not secret:
            continue
        masked = masking.mask_secret(secret)
        for shape in {secret, urllib.parse.quote(secret, safe=""),
                      urllib.parse.quote_plus(secret, safe="")}:
            out.append((shape, masked))
    return out


def _scrub(text: str, echoes: _Echoes) -> str:
    """Mask our own secrets wherever the provider echoed them, plain or URL-encoded."""
    for shape, masked in echoes:
        if shape in text:
            text = text.replace(shape, masked)
    return text


def _exception(exc: BaseException) -> str:
    try:
        detail = str(exc)
    except Exception:  # some aiohttp errors cannot describe themselves when half-built
        detail = ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 1)
