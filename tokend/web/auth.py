"""Bearer tokens: whom a request speaks for. Compared in constant time, never logged.

Admin tokens (the admin token and the org tokens) reach the admin API and the stream;
consumer tokens only vend access tokens. A principal with an org sees that org alone.
"""

from __future__ import annotations

import dataclasses
import hmac

from aiohttp import web

from tokend import config, reload
from tokend.web import common


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    org: str | None  # None: every org

    def sees(self, org: str | None) -> bool:
        return self.org is None or org == self.org


def admin_tokens(server: config.ServerConfig) -> list[tuple[str, Principal]]:
    return [(server.admin_token, Principal(None)),
            *((token, Principal(org)) for org, token in server.org_tokens.items())]


def consumer_tokens(server: config.ServerConfig) -> list[tuple[str, Principal]]:
    return [(server.consumer_token, Principal(None)),
            *((token, Principal(org)) for org, token in server.consumer_org_tokens.items())]


Candidates = tuple[tuple[bytes, Principal], ...]


def _encoded(tokens: list[tuple[str, Principal]]) -> Candidates:
    return tuple((token.encode(), principal) for token, principal in tokens if token)


class Bearers:
    """The admin and consumer tokens of the running secrets, encoded once and again only
    when a reload swapped the server settings: apps present a consumer token per vend."""

    def __init__(self, secrets: reload.Secrets) -> None:
        self.secrets = secrets
        self._server: config.ServerConfig | None = None
        self._admin: Candidates = ()
        self._consumer: Candidates = ()

    def _current(self) -> config.ServerConfig:
        server = self.secrets.server
        if server is not self._server:
            self._admin = _encoded(admin_tokens(server))
            self._consumer = _encoded(consumer_tokens(server))
            self._server = server
        return server

    def admin(self) -> Candidates:
        self._current()
        return self._admin

    def consumer(self) -> Candidates:
        self._current()
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
