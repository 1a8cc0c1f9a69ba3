"""Provider clients: build the token request, send it, parse the answer, classify errors.

eBay and any RFC 6749 provider share one implementation (`client.Provider`); the eBay
profile only changes the defaults and checks that a refresh token looks like eBay's.
No database and no keys here: the refresher hands in the plaintext refresh token it
opened and stores what comes back.
"""

from __future__ import annotations

from collections.abc import Callable

from tokend import config
from tokend.providers.client import BODY_LIMIT_BYTES, Provider
from tokend.providers.result import (
    BAD_RESPONSE,
    CONFIG,
    CONNECTION_ERROR,
    DECRYPT,
    DECRYPT_FAILED,
    INVALID_CLIENT,
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    KINDS,
    PROVIDER,
    RATE_LIMITED,
    REAUTH,
    SERVER_ERROR,
    TIMEOUT,
    TRANSIENT,
    UNAUTHORIZED_CLIENT,
    UNSUPPORTED_GRANT_TYPE,
    UNSUPPORTED_TOKEN_TYPE,
    Grant,
    Prepared,
    RefreshError,
    Result,
)

__all__ = [
    "BAD_RESPONSE", "BODY_LIMIT_BYTES", "CONFIG", "CONNECTION_ERROR", "DECRYPT",
    "DECRYPT_FAILED", "INVALID_CLIENT",
    "INVALID_GRANT", "INVALID_REQUEST", "INVALID_SCOPE", "KINDS",
    "PROVIDER", "RATE_LIMITED", "REAUTH", "SERVER_ERROR",
    "TIMEOUT", "TRANSIENT", "UNAUTHORIZED_CLIENT", "UNSUPPORTED_GRANT_TYPE",
    "UNSUPPORTED_TOKEN_TYPE", "Grant",
    "Prepared", "Provider", "RefreshError", "Result", "build",
]


def build(
    provider_config: config.ProviderConfig, *, request_timeout_seconds: float,
    client_secret: Callable[[], str] | None = None,
) -> Provider:
    """The client for one `[providers.NAME]` table; `client_secret` (default: the table's)
    is asked at every request."""
    profile = config.PROFILES.get(provider_config.type)
    if profile is None:
        raise ValueError(
            f"provider {provider_config.name!r}: unknown type {provider_config.type!r}")
    return Provider(
        provider_config, request_timeout_seconds=request_timeout_seconds,
        token_prefix=profile.token_prefix, token_types=profile.token_types,
        client_secret=client_secret,
    )
