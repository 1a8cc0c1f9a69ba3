"""`POST /api/providers/{name}/signature`: eBay's digital signature for one request of an
app (consumer token). The app sends the method, the URL and the body's Content-Digest;
the private key never leaves tokend."""

from __future__ import annotations

from aiohttp import web

from tokend.ebay import signatures, signing
from tokend.web import auth, common, errors

FIELDS = frozenset({"method", "url", "content_digest"})
URL_LENGTH_MAX = 8192
NO_STORE = {"Cache-Control": "no-store"}


async def _request(request: web.Request) -> tuple[str, str, str | None]:
    data = common.json_object(await request.read(), FIELDS)
    method, url, digest = data.get("method"), data.get("url"), data.get("content_digest")
    if not isinstance(method, str):
        raise common.ApiError(400, "method is required, a string such as \"POST\"")
    if not isinstance(url, str) or not 0 < len(url) <= URL_LENGTH_MAX:
        raise common.ApiError(400, f"url is required, 1-{URL_LENGTH_MAX} characters")
    if digest is not None and not isinstance(digest, str):
        raise common.ApiError(400, "content_digest must be a string (only with a body)")
    return method, url, digest


async def signature(request: web.Request) -> web.Response:
    auth.consumer(request)  # the key is the app's, not a seller's: any consumer token
    method, url, digest = await _request(request)
    signer = request.app.get(common.SIGNER)
    if signer is None:
        raise common.ApiError(404, "unknown provider")
    try:
        signed = await signer.sign(request.match_info["name"], method, url, digest)
    except signing.UnknownProvider:
        raise common.ApiError(404, "unknown provider (signing needs an eBay provider)") \
            from None
    except signatures.SigningError as exc:
        raise common.ApiError(400, str(exc)) from None
    except signing.NoKey:
        raise common.ApiError(409, "the provider has no signing key; create one with "
                                   "`tokend ebay signing-key create`") from None
    return common.json_response({"headers": signed.headers,
                                 "signing_key_id": signed.signing_key_id}, headers=NO_STORE)


def setup(routes: errors.Routes) -> None:
    routes.post("/api/providers/{name}/signature", signature)
