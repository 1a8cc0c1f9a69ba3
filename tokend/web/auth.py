"""Bearer tokens: whom a request speaks for. Compared in constant time, never logged.

Admin tokens (the admin token and the org tokens) reach the admin API and the stream;
consumer tokens only vend access tokens. A principal with an org sees that org alone.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Mapping

from aiohttp import web

from tokend import config, reload
from tokend.web import common


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    org: str | None  # None: every org

    def sees(self, org: str | None) -> bool:
        return self.org is None or org == self.org


Candidates = tuple[tuple[bytes, Principal], ...]


def _candidates(token: str, org_tokens: Mapping[str, str]) -> Candidates:
    """The token that sees every org, then one per org; empty ones match nothing."""
    pairs = ((token, Principal(None)), *((t, Principal(org)) for org, t in org_tokens.items()))
    return tuple((t.encode(), principal) for t, principal in pairs if t)


class Bearers:
    """The admin and consumer tokens of the running secrets, encoded once, and again only
    when a reload swapped the server settings: apps present a consumer token per vend."""

    def __init__(self, secrets: reload.Secrets) -> None:
        self.secrets = secrets
        self._server: config.ServerConfig | None = None
        self._admin: Candidates = ()
        self._consumer: Candidates = ()

    def _follow(self) -> None:
        server = self.secrets.server
        if server is not self._server:
            self._admin = _candidates(server.admin_token, server.org_tokens)
            self._consumer = _candidates(server.consumer_token, server.consumer_org_tokens)
            self._server = server

    def admin(self) -> Candidates:
        self._follow()
        return self._admin

    def consumer(self) -> Candidates:
        self._follow()
        return self._consumer


BEARERS = web.AppKey("bearers", Bearers)


def match(presented: str, candidates: Candidates) -> Principal | None:
    """The principal whose token equals `presented`; every candidate is compared.
    aiohttp keeps header bytes that are not UTF-8 as surrogates: they match no token."""
    if not presented:
        return None
    given = presented.encode(errors="surrogateescape")
    found = None
    for token, principal in candidates:
        if hmac.compare_digest(given, token) and found is None:
            found = principal
    return found


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _require(request: web.Request, candidates: Candidates) -> Principal:
    principal = match(_bearer(request), candidates)
    if principal is None:
        raise common.ApiError(401, "missing or invalid bearer token",
                              headers={"WWW-Authenticate": "Bearer"})
    return principal


def admin(request: web.Request) -> Principal:
    return _require(request, request.app[BEARERS].admin())


def consumer(request: web.Request) -> Principal:
    return _require(request, request.app[BEARERS].consumer())
