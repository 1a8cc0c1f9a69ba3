"""What a provider call produces: the prepared request, the grant, the classified result.

Plaintext secrets live only in attributes that `repr` and serializers never show, so
neither a log line nor a traceback can carry one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tokend import vocabulary

# What the refresher does about a failure.
REAUTH = "reauth"  # the refresh token is dead: the account needs a new one
PROVIDER = "provider"  # our client credentials are refused: pause the whole provider
CONFIG = "config"  # the request itself is wrong: retrying as is will not help
TRANSIENT = "transient"  # try again later, honouring retry_after_seconds
DECRYPT = "decrypt"  # the stored refresh token is unusable; nothing was sent
KINDS = (REAUTH, PROVIDER, CONFIG, TRANSIENT, DECRYPT)

DECRYPT_FAILED = "decrypt_failed"
INVALID_GRANT = "invalid_grant"
INVALID_CLIENT = "invalid_client"
UNAUTHORIZED_CLIENT = "unauthorized_client"
INVALID_SCOPE = "invalid_scope"
INVALID_REQUEST = "invalid_request"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
UNSUPPORTED_TOKEN_TYPE = "unsupported_token_type"  # noqa: S105 - ours: not a bearer token
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
BAD_RESPONSE = "bad_response"


class RefreshError(Exception):
    """A refresh that cannot even be attempted. The message never contains a secret."""

    def __init__(self, code: str, message: str, kind: str = DECRYPT) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message


class _Secretive:
    """Keyword-built, read-only by convention; `repr` shows only the `_public` fields.

    Deliberately not a dataclass: orjson (our log renderer) serializes dataclasses field
    by field, `repr=False` or not, and these objects hold plaintext tokens.
    """

    __slots__ = ()
    _public: tuple[str, ...] = ()

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, fields.pop(name))
        if fields:
            raise TypeError(f"unexpected fields: {', '.join(sorted(fields))}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._public)
        return f"{type(self).__name__}({shown})"


class Prepared(_Secretive):
    """One ready-to-send token request. `request` is its masked form, for the HTTP log.

    `secrets` are the plaintexts the provider might echo back; they are scrubbed from
    everything kept of the exchange.
    """

    __slots__ = ("account_id", "body", "headers", "method", "provider", "request", "secrets",
                 "url")
    _public = ("account_id", "provider", "method", "url", "request")
    account_id: str | None
    provider: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: str
    secrets: tuple[str, ...]
    request: Mapping[str, Any]


class Grant(_Secretive):
    """A successful answer. Expiries are seconds counted from `Result.sent_at`."""

    __slots__ = ("access_token", "expires_in", "expires_in_assumed", "refresh_token",
                 "refresh_token_expires_in", "scope")
    _public = ("expires_in", "expires_in_assumed", "refresh_token_expires_in", "scope")
    access_token: str
    expires_in: float
    expires_in_assumed: bool  # the answer had no expires_in: the provider's default
    refresh_token: str | None
    refresh_token_expires_in: float | None
    scope: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """One exchange with the token endpoint: a grant, or a classified error."""

    sent_at: datetime
    duration_ms: float
    request: Mapping[str, Any]
    response: Mapping[str, Any] | None
    grant: Grant | None = None
    error_code: str | None = None
    error_description: str | None = None
    kind: str | None = None
    retry_after_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.grant is not None

    @property
    def error(self) -> dict[str, Any] | None:
        """The failure as the HTTP log entry's `error` field; None on success."""
        if self.grant is not None:
            return None
        return vocabulary.error(self.error_code or "error", self.error_description,
                                kind=self.kind, retry_after_seconds=self.retry_after_seconds)
