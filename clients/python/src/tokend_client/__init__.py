"""The app's side of tokend: access tokens, a rejected-token retry for httpx and aiohttp
(`tokend_client.aiohttp`, the `aiohttp` extra), and webhook verification."""

from tokend_client._async import AsyncTokend
from tokend_client._common import AccessToken, Rejection, TokendError, refused, sha256
from tokend_client._sync import Tokend
from tokend_client.auth import TokendAuth
from tokend_client.webhooks import WebhookVerificationError
from tokend_client.webhooks import verify as verify_webhook

__all__ = ["AccessToken", "AsyncTokend", "Rejection", "Tokend", "TokendAuth", "TokendError",
           "WebhookVerificationError", "refused", "sha256", "verify_webhook"]
