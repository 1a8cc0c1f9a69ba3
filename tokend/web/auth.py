"""Bearer tokens: whom a request speaks for. Compared in constant time, never logged.

Admin tokens (the admin token and the org tokens) reach the admin API and the stream;
consumer tokens only vend access tokens. A principal with an org sees that org alone.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterable

from aiohttp import web

from tokend import config
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


def match(presented: str, candidates: Iterable[tuple[str, Principal]]) -> Principal | None:
    """The principal whose token equals `presented`; every candidate is compared.
    aiohttp keeps header bytes that are not UTF-8 as surrogates: they match no token."""
    given = presented.encode(errors="surrogateescape")
    found = None
    for token, principal in candidates:
        if token and hmac.compare_digest(given, token.encode()) and found is None:
            found = principal
    return found if presented else None


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _require(request: web.Request, candidates: list[tuple[str, Principal]]) -> Principal:
    principal = match(_bearer(request), candidates)
    if principal is None:
        raise common.ApiError(401, "missing or invalid bearer token",
                              headers={"WWW-Authenticate": "Bearer"})
    return principal


def admin(request: web.Request) -> Principal:
    return _require(request, admin_tokens(request.app[common.SECRETS].server))


def consumer(request: web.Request) -> Principal:
    return _require(request, consumer_tokens(request.app[common.SECRETS].server))
