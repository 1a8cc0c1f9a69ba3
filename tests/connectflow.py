"""A daemon's web side with connect links configured against the simulator's consent page,
and the browser's walk through it done over plain HTTP."""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import webstack

from tokend import connect, crypto, store
from tokend.testing import simulator

RUNAME = "tokend_sim-tokendsi-PRD-1a2b3c4d5-e6f7a8b9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def stack(db: store.Store, keyring: crypto.Keyring, *, generic: bool = False,
                refresh: Mapping[str, Any] | None = None,
                server: Mapping[str, Any] | None = None,
                notifications: bool = False) -> AsyncIterator[webstack.Stack]:
    """eBay (RuName, Identity API) or, with `generic`, an RFC 6749 provider with PKCE;
    `notifications` turns on eBay's notifications against the simulator."""
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    callback = public_url + connect.CALLBACK_PATH
    async with simulator.Simulator() as sim:
        if generic:
            sim.token_type = "Bearer"
            provider = {"type": "oauth2", "environment": None, "daily_quota": None,
                        "authorize_url": sim.authorize_url}
            sim.register_redirect(callback, callback)
        else:
            provider = {"authorize_url": sim.authorize_url, "identity_url": sim.identity_url,
                        "redirect_uri": RUNAME}
            sim.register_redirect(RUNAME, callback)
        async with webstack.running(db, keyring, sim=sim, port=port, refresh=refresh,
                                    server={"public_url": public_url, **(server or {})},
                                    provider=provider, notifications=notifications) as s:
            yield s


async def create_link(s: webstack.Stack, token: str = webstack.ADMIN,
                      **body: Any) -> tuple[int, Any]:
    body = {"provider": webstack.PROVIDER, "org": "acme", **body}
    async with s.http.post(s.url + "/api/connect-links", json=body,
                           headers=s.auth(token)) as response:
        return response.status, await response.json(content_type=None)


async def open_link(s: webstack.Stack, url: str) -> tuple[int, str, str | None]:
    async with s.http.get(url, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Location")


async def consent(s: webstack.Stack, authorize_url: str, decision: str = "accept") -> str:
    """Click Agree (or Not now) on the simulator's page; returns where it sends the browser."""
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize_url).query))
    async with s.http.post(s.sim.authorize_url, data={**fields, "decision": decision},
                           allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def get(s: webstack.Stack, url: str) -> tuple[int, str, Mapping[str, str]]:
    async with s.http.get(url, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers


async def walk(s: webstack.Stack, decision: str = "accept",
               **link: Any) -> tuple[int, str, str]:
    """Link -> consent page -> callback: (callback status, page, callback URL)."""
    status, body = await create_link(s, **link)
    assert status == 201, body
    status, _, authorize = await open_link(s, body["url"])
    assert status == 302 and authorize is not None
    back = await consent(s, authorize, decision)
    status, page, _ = await get(s, back)
    return status, page, back
