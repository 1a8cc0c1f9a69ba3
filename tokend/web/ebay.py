"""`GET|POST /ebay/notifications`: eBay's Notification API (SPEC 10.1). No bearer token:
eBay proves itself by the signature, checked before anything changes."""

from __future__ import annotations

from aiohttp import web

from tokend.ebay import notifications
from tokend.web import common, errors

CHALLENGE_LIMIT = 512
RETRY_AFTER_SECONDS = "60"


def _receiver(request: web.Request) -> notifications.Receiver:
    receiver = request.app.get(common.EBAY_RECEIVER)
    if receiver is None:
        raise common.ApiError(404, "eBay notifications are not configured")
    return receiver


async def challenge(request: web.Request) -> web.Response:
    receiver = _receiver(request)
    code = request.query.get("challenge_code", "")
    if not code or len(code) > CHALLENGE_LIMIT or not code.isprintable():
        raise common.ApiError(400, "challenge_code is required")
    return common.json_response({"challengeResponse": receiver.challenge(code)},
                                headers={"Cache-Control": "no-store"})


async def notification(request: web.Request) -> web.Response:
    receiver = _receiver(request)
    body = await request.read()
    try:
        await receiver.receive(request.headers.get(notifications.SIGNATURE_HEADER), body)
    except notifications.Refused as exc:
        raise common.ApiError(exc.status, exc.message, code=exc.code) from None
    except notifications.KeyUnavailable:
        # Nothing changed; eBay delivers the notification again later.
        raise common.ApiError(503, "eBay's public key cannot be fetched now",
                              headers={"Retry-After": RETRY_AFTER_SECONDS}) from None
    return web.Response(status=204)


def setup(routes: errors.Routes) -> None:
    routes.get("/ebay/notifications", challenge)
    routes.post("/ebay/notifications", notification)
