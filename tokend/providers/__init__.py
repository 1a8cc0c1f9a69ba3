"""Provider clients: build the token request, send it, parse the answer, classify errors.

eBay and any RFC 6749 provider share one implementation (`client.Provider`); the eBay
profile only changes the defaults and checks that a refresh token looks like eBay's.
No database and no keys here: the refresher hands in the plaintext refresh token it
opened and stores what comes back.
"""

from __future__ import annotations

from collections.abc import Callable

from tokend import config
from tokend.ebay import profile as ebay_profile
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
    if provider_config.type == "ebay":
        return Provider(
            provider_config, request_timeout_seconds=request_timeout_seconds,
            token_prefix=ebay_profile.TOKEN_PREFIX, token_types=ebay_profile.TOKEN_TYPES,
            client_secret=client_secret,
        )
    if provider_config.type == "oauth2":
        return Provider(
            provider_config, request_timeout_seconds=request_timeout_seconds,
            token_prefix=None, token_types=("bearer",), client_secret=client_secret,
        )
    raise ValueError(f"provider {provider_config.name!r}: unknown type {provider_config.type!r}")
