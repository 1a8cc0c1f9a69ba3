"""eBay's OAuth profile: endpoints, scopes, token shape and daily limits, in one place.

The provider client, the configuration, the quota projection and the simulator all read
these values, so a change on eBay's side is a change here only.
"""

from __future__ import annotations

ENVIRONMENTS = ("production", "sandbox")

TOKEN_PATH = "/identity/v1/oauth2/token"  # noqa: S105 - a path
TOKEN_URLS = {
    "production": "https://api.ebay.com" + TOKEN_PATH,
    "sandbox": "https://api.sandbox.ebay.com" + TOKEN_PATH,
}
AUTHORIZE_URLS = {
    "production": "https://auth.ebay.com/oauth2/authorize",
    "sandbox": "https://auth.sandbox.ebay.com/oauth2/authorize",
}
IDENTITY_URLS = {
    "production": "https://apiz.ebay.com/commerce/identity/v1/user/",
    "sandbox": "https://apiz.sandbox.ebay.com/commerce/identity/v1/user/",
}

DEFAULT_SCOPES = ("https://api.ebay.com/oauth/api_scope",)
# The scopes an eBay seller application typically holds.
SELLER_SCOPES = (
    "https://api.ebay.com/oauth/api_scope",
    "https://api.ebay.com/oauth/api_scope/sell.account",
    "https://api.ebay.com/oauth/api_scope/sell.account.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.analytics.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.finances",
    "https://api.ebay.com/oauth/api_scope/sell.fulfillment",
    "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.inventory",
    "https://api.ebay.com/oauth/api_scope/sell.inventory.readonly",
    "https://api.ebay.com/oauth/api_scope/sell.marketing",
    "https://api.ebay.com/oauth/api_scope/sell.marketing.readonly",
    "https://api.ebay.com/oauth/api_scope/commerce.identity.readonly",
)

# Every eBay user token (access and refresh) starts like this; anything else stored for
# an eBay account is a sign of corruption, not a token worth sending.
TOKEN_PREFIX = "v^"  # noqa: S105 - a shape, not a secret
# What eBay puts in `token_type`; RFC 6749 servers say `Bearer`.
TOKEN_TYPES = ("user access token", "application access token", "bearer")

# User access tokens live two hours, refresh tokens 18 months.
ACCESS_TOKEN_LIFETIME_SECONDS = 7200.0
REFRESH_TOKEN_LIFETIME_SECONDS = 47_304_000.0

# Calls per application and day to the token endpoint, by grant type.
DAILY_QUOTAS = {
    "refresh_token": 50_000,
    "authorization_code": 10_000,
    "client_credentials": 1_000,
}
REFRESH_DAILY_QUOTA = DAILY_QUOTAS["refresh_token"]


def looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)

# The client_credentials grant: what an application token asks for when no scope is named.
APP_SCOPES = ("https://api.ebay.com/oauth/api_scope",)
APP_TOKEN_TYPE = "Application Access Token"  # noqa: S105 - what eBay says, not a secret

# The Notification API: getPublicKey is this plus the key id; the sandbox signs with keys
# that only the sandbox host serves.
PUBLIC_KEY_PATH = "/commerce/notification/v1/public_key/"
PUBLIC_KEY_URLS = {
    "production": "https://api.ebay.com" + PUBLIC_KEY_PATH,
    "sandbox": "https://api.sandbox.ebay.com" + PUBLIC_KEY_PATH,
}
# The topics tokend acts on.
ACCOUNT_DELETION = "MARKETPLACE_ACCOUNT_DELETION"
AUTHORIZATION_REVOCATION = "AUTHORIZATION_REVOCATION"
# eBay's rule for the endpoint verification token.
VERIFICATION_TOKEN_CHARS = "A-Za-z0-9_-"  # noqa: S105 - a character class
VERIFICATION_TOKEN_LENGTHS = (32, 80)

# The Key Management API (createSigningKey: POST {url}/signing_key), with an application
# token; the keys sign calls made for sellers in the EU and the UK (digital signatures).
KEY_MANAGEMENT_PATH = "/developer/key_management/v1"
KEY_MANAGEMENT_URLS = {
    "production": "https://apiz.ebay.com" + KEY_MANAGEMENT_PATH,
    "sandbox": "https://apiz.sandbox.ebay.com" + KEY_MANAGEMENT_PATH,
}
