"""Provider clients: build the token request, send it, parse the answer, classify errors.

eBay and any RFC 6749 provider share one implementation (`client.Provider`); the eBay
profile only changes the defaults and checks that a refresh token looks like eBay's.
No database here: the refresher hands in an Account and stores what comes back.
"""

from __future__ import annotations

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
    Grant,
    Prepared,
    RefreshError,
    Result,
)

# eBay user access tokens live two hours; its answers always say so, but if one does
# not, assume the documented lifetime. Elsewhere one hour is the common default.
EBAY_DEFAULT_EXPIRES_IN_SECONDS = 7200.0
OAUTH2_DEFAULT_EXPIRES_IN_SECONDS = 3600.0
EBAY_TOKEN_PREFIX = "v^"  # noqa: S105 - a shape, not a secret

__all__ = [
    "BAD_RESPONSE", "BODY_LIMIT_BYTES", "CONFIG", "CONNECTION_ERROR", "DECRYPT",
    "DECRYPT_FAILED", "EBAY_DEFAULT_EXPIRES_IN_SECONDS", "EBAY_TOKEN_PREFIX", "INVALID_CLIENT",
    "INVALID_GRANT", "INVALID_REQUEST", "INVALID_SCOPE", "KINDS",
    "OAUTH2_DEFAULT_EXPIRES_IN_SECONDS", "PROVIDER", "RATE_LIMITED", "REAUTH", "SERVER_ERROR",
    "TIMEOUT", "TRANSIENT", "UNAUTHORIZED_CLIENT", "UNSUPPORTED_GRANT_TYPE", "Grant",
    "Prepared", "Provider", "RefreshError", "Result", "build",
]


def build(provider_config: config.ProviderConfig, *, request_timeout_seconds: float) -> Provider:
    """The client for one `[providers.NAME]` table."""
    if provider_config.type == "ebay":
        return Provider(
            provider_config, request_timeout_seconds=request_timeout_seconds,
            default_expires_in_seconds=EBAY_DEFAULT_EXPIRES_IN_SECONDS,
            token_prefix=EBAY_TOKEN_PREFIX,
        )
    if provider_config.type == "oauth2":
        return Provider(
            provider_config, request_timeout_seconds=request_timeout_seconds,
            default_expires_in_seconds=OAUTH2_DEFAULT_EXPIRES_IN_SECONDS, token_prefix=None,
        )
    raise ValueError(f"provider {provider_config.name!r}: unknown type {provider_config.type!r}")
