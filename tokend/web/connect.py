"""Connect links over HTTP: `POST /api/connect-links` (admin and org tokens), the link
itself (`GET /connect/{token}`) and the provider's way back (`GET /oauth/callback`).

The two browser routes answer small static HTML pages: every value escaped, no script,
a CSP that allows nothing, and no referrer (the callback URL carries the code).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from tokend import connect
from tokend.web import auth, common, errors

PAGE = Path(__file__).parent / "static" / "connect.html"
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LINK_FIELDS = frozenset({"provider", "org", "account_id", "scopes"})
MAX_FIELD_CHARS = 200


@functools.cache
def _template() -> str:
    return PAGE.read_text()


def page(status: int, title: str, message: str,
         details: Sequence[tuple[str, str]] = ()) -> web.Response:
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in details)
    text = (_template().replace("__DETAILS__", f'<dl id="details">{rows}</dl>' if rows else "")
            .replace("__TITLE__", html.escape(title)).replace("__MESSAGE__", html.escape(message))
            .replace("__KIND__", "ok" if status < 400 else "refused"))
    return web.Response(text=text, status=status, content_type="text/html",
                        headers=PAGE_HEADERS)


def _text(data: dict, name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if (not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS
            or not value.isprintable()):
        raise common.bad(f"{name} must be a string of 1-{MAX_FIELD_CHARS} printable characters")
    return value


async def create_link(request: web.Request) -> web.Response:
    principal = auth.admin(request)
    data = common.json_object(await request.read(), LINK_FIELDS)
    provider = _text(data, "provider", required=True)
    org = _text(data, "org", required=True)
    account_id = _text(data, "account_id", required=False)
    scopes = data.get("scopes", [])
    if not isinstance(scopes, list) or not all(
            isinstance(s, str) and s and s.isprintable() and " " not in s
            and len(s) <= MAX_FIELD_CHARS
            for s in scopes):
        raise common.bad("scopes must be a list of scope strings")
    if not principal.sees(org):
        raise common.ApiError(403, "this token cannot make links for that org")
    try:
        link = await request.app[common.CONNECT].create_link(
            provider=provider, org=org, account_id=account_id, scopes=scopes)
    except connect.LinkError as exc:
        raise common.ApiError(exc.status, exc.message) from None
    return common.json_response({"url": link.url, "expires_at": link.expires_at.isoformat()},
                                status=201, headers={"Cache-Control": "no-store"})


async def open_link(request: web.Request) -> web.Response:
    try:
        url = await request.app[common.CONNECT].open_link(request.match_info["token"])
    except connect.Refused as exc:
        return page(exc.status, exc.title, exc.message)
    # Only ever the configured authorize URL: the link chooses nothing about the target.
    return web.Response(status=302, headers={"Location": url, **PAGE_HEADERS})


async def callback(request: web.Request) -> web.Response:
    try:
        done = await request.app[common.CONNECT].callback(request.query)
    except connect.Refused as exc:
        return page(exc.status, exc.title, exc.message)
    account = done.account
    details = [("Account", account.id), ("Organisation", account.org),
               ("Provider", account.provider)]
    if account.provider_user_name or account.provider_user_id:
        details.append(("Signed in as", account.provider_user_name or account.provider_user_id))
    details.append(("Scopes granted", " ".join(account.scopes) or "-"))
    if done.not_granted:
        details.append(("Asked for but not granted", " ".join(done.not_granted)))
    verb = "reconnected" if done.reconnected else "connected"
    return page(200, f"Account {verb}", f"The account is {verb} and active; tokend keeps its "
                f"access token fresh from now on. You can close this page.", details)


def setup(routes: errors.Routes) -> None:
    routes.post("/api/connect-links", create_link)
    # No HEAD: only a real visit may spend a one-time link or state.
    # Any token (empty, with a slash or a newline) is a link that does not exist, said as a
    # page, not a JSON 404.
    routes.get(r"/connect/{token:[\s\S]*}", open_link, allow_head=False)
    routes.get(connect.CALLBACK_PATH, callback, allow_head=False)
